"""What the built-in generators share: per-row failure handling, running rows concurrently in
order, and the small text checks every generator needs on messy model output.

This package registers nothing (no hooks); the generator plugins import it.

Row coroutines raise :class:`RowFailed` for a row that cannot be made (a failed request, an
answer that does not parse, an eliminated evolution). :func:`in_order` runs them concurrently and
hands back each result in submission order as soon as it (and every one before it) is done;
:func:`settle` turns a result into either its value or one ``ctx.fail`` call. So a generator reads
top to bottom, and a run stopped half-way (budget, cancel) has already yielded every row it could.
"""
from __future__ import annotations

import re
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence, TypeVar

from studio.generation.generator_base import GenerationContext, GenerationFailed
from studio.records import Record

T = TypeVar("T")

# GenerationFailed statuses that mean "this endpoint cannot do this at all", not "this row failed".
UNSUPPORTED_STATUSES = frozenset({400, 404, 405, 501})


class RowFailed(Exception):
    """One row could not be made. ``error`` is the request's GenerationFailed or a reason string
    (a decision: unparseable answer, eliminated, filtered); ``stage`` names the step."""

    def __init__(self, stage: str, error: BaseException | str):
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


async def ask(stage: str, request: Awaitable[T]) -> T:
    """Await one request; a failed request becomes a RowFailed of ``stage`` (RunStopped passes)."""
    try:
        return await request
    except GenerationFailed as exc:
        raise RowFailed(stage, exc) from exc


def settle(ctx: GenerationContext, result: Any, *, source: Record | None = None,
           source_index: int | None = None) -> Any:
    """The value of one gathered result, or None after recording its failure with ``ctx.fail``.
    RunStopped and unexpected exceptions (bugs) are raised, not swallowed."""
    if isinstance(result, RowFailed):
        ctx.fail(result.error, source=source, source_index=source_index, stage=result.stage)
        return None
    if isinstance(result, GenerationFailed):
        ctx.fail(result, source=source, source_index=source_index, stage="request")
        return None
    if isinstance(result, BaseException):
        raise result
    return result


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive chunks of ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def in_order(ctx: GenerationContext, items: Iterable[T],
                   fn: Callable[[T], Awaitable[Any]]) -> AsyncIterator[tuple[T, Any]]:
    """``ctx.imap`` with the items instead of their indices: ``(item, result)`` in item order, each
    as soon as it and those before it are done (results are values or exceptions; RunStopped
    raises)."""
    items = list(items)
    async for index, result in ctx.imap(items, fn):
        yield items[index], result


def total_cost(*completions: Any) -> float:
    return round(sum(c.cost for c in completions if c is not None), 8)


_YES = re.compile(r"\b(yes|yeah|yep|true|correct)\b", re.I)
_NO = re.compile(r"\b(no|nope|false|incorrect)\b", re.I)


def parse_yes_no(text: str) -> bool | None:
    """True/False for a yes/no answer, None when the answer says neither (or both first)."""
    head = text.strip().lstrip("*#>\"'`-: \t").lower()
    if head.startswith(("yes", "true")):
        return True
    if head.startswith(("no", "false")):
        return False
    yes, no = _YES.search(text), _NO.search(text)
    if yes and not no:
        return True
    if no and not yes:
        return False
    if yes and no:
        # "Answer: No, ... yes..." - the earlier one is the answer.
        return yes.start() < no.start()
    return None


def cut_at_markers(text: str, markers: Iterable[str]) -> str:
    """The text up to the first of ``markers`` (template tokens a raw completion ran into)."""
    end = len(text)
    for marker in markers:
        if marker:
            at = text.find(marker)
            if at != -1:
                end = min(end, at)
    return text[:end]


def normalised_key(text: str) -> str:
    """What two texts must share to count as duplicates: case and whitespace don't matter."""
    return " ".join(text.lower().split())


def is_unsupported(exc: GenerationFailed) -> bool:
    """The endpoint refuses this kind of request outright (no such route, bad request shape)."""
    return exc.status in UNSUPPORTED_STATUSES


__all__ = ["RowFailed", "ask", "settle", "batched", "in_order", "total_cost", "parse_yes_no", "cut_at_markers",
           "normalised_key", "is_unsupported"]
