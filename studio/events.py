"""One event vocabulary for every service (curation, generation, training, evaluation).

Services report progress by calling ``emit(event)`` with a plain dict whose ``"event"`` key
names what happened (``"start"``, ``"progress"``, ``"step_done"``, ``"metrics"``, ``"done"``...);
the other keys are that event's data. The CLI prints them, the TUI turns them into messages and
run folders keep them in ``events.jsonl``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

EVENT_KEY = "event"
# Run folders written before the key was unified named events under these keys.
LEGACY_KEYS = ("kind", "type")

Emit = Callable[[dict[str, Any]], None]


def event_name(event: Mapping[str, Any]) -> str | None:
    """The name of an event, also for events read back from older run folders."""
    name = event.get(EVENT_KEY)
    if isinstance(name, str):
        return name
    for key in LEGACY_KEYS:
        if isinstance(event.get(key), str):
            return event[key]
    return None


def ignore(event: dict[str, Any]) -> None:
    """The ``emit`` of a caller that does not watch progress."""
