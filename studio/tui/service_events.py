"""The one way a service's events reach the screen whose thread worker runs it.

Services report with ``emit(event)`` (:mod:`studio.events`), from the worker's thread. Inside a
``@work(thread=True)`` function, ``with service_emitter(self, "curate") as emit:`` gives that
``emit``: it posts the events to the screen (or dialog) as :class:`ServiceEvent` messages, each
holding the events of one burst in order. Bursts are cut at most every ``every`` seconds, and
within one only the latest ``progress`` event is kept, so a service that reports thousands of
rows or steps a second costs a few messages and redraws, not thousands; the events that matter
(a row, a step's report, the end) are never dropped. Leaving the ``with`` block posts what is
still held, before the worker's SUCCESS or ERROR state reaches the screen.

The screen handles them in ``on_service_event`` and reads each event's name with
:func:`studio.events.event_name`.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from textual.message import Message
from textual.message_pump import MessagePump

from studio.events import event_name

EVERY = 0.1  # seconds: at most this long between a burst's first event and its message


class ServiceEvent(Message):
    """Events a service emitted in a thread worker, in order; ``source`` says which service."""

    def __init__(self, source: str, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.source = source
        self.events = events


class ServiceEmitter:
    """The ``emit`` of a service run in a thread worker; see the module docstring."""

    def __init__(self, target: MessagePump, source: str, every: float = EVERY,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.target, self.source, self.every = target, source, every
        self.cancelled = cancelled or (lambda: False)
        self._pending: list[dict[str, Any]] = []
        self._last_post = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.cancelled():
            return
        with self._lock:
            if event_name(event) == "progress" and self._pending and event_name(self._pending[-1]) == "progress":
                self._pending[-1] = event  # only the latest progress of a burst matters
            else:
                self._pending.append(event)
            wait = self._last_post + self.every - time.monotonic()
            if wait <= 0:
                self._post()
            elif self._timer is None:
                # Quiet after this burst: its events still arrive, ``every`` seconds later at most.
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._post()

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._post()

    def _post(self) -> None:
        # Called with the lock held.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            events, self._pending = self._pending, []
            self.target.post_message(ServiceEvent(self.source, events))
        self._last_post = time.monotonic()


@contextmanager
def service_emitter(target: MessagePump, source: str, every: float = EVERY,
                    cancelled: Callable[[], bool] | None = None) -> Iterator[ServiceEmitter]:
    """An ``emit`` for the service a thread worker runs; what it holds is posted on leaving."""
    emitter = ServiceEmitter(target, source, every, cancelled)
    try:
        yield emitter
    finally:
        emitter.close()
