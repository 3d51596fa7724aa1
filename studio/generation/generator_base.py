"""The contract of a synthetic-data generator plugin.

A generator is a small async program: it reads its validated config and (optionally) the seed
records of a stored dataset, asks the model through ``ctx.chat`` / ``ctx.complete`` and yields
the records it makes. The host owns everything else: concurrency, rate limits, retries, the
journal that makes re-runs free, cost metering, budgets, failed-row bookkeeping and storage.

Re-runs and resumes replay the generator from the start; every request whose answer is already
in the journal returns at once without touching the API. For that replay to reach the same
requests, a generator must be deterministic given its config, its seeds and the answers it got:
draw randomness only from ``ctx.rng`` and consume concurrent results in submission order
(``ctx.gather`` and ``ctx.imap`` keep order).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, Iterable, Literal

from pydantic import BaseModel

from studio.records import Record


class GenerationFailed(Exception):
    """A request that could not be answered (after retries, or replayed as failed from the
    journal). Generators catch it per row and call ``ctx.fail`` so the row is kept, not lost."""

    def __init__(self, message: str, key: str | None = None, status: int | None = None):
        super().__init__(message)
        self.key = key
        self.status = status


class RunStopped(Exception):
    """The run must stop now (budget reached, cancelled, fatal API error such as a bad key).
    Generators let it propagate; the host stores what was made so far."""


@dataclass
class Completion:
    """One answered request: ``texts`` holds one string per choice (``n``)."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    cost: float  # in the provider's currency, from its price table; 0 when prices are unknown
    key: str  # journal key: hash of (model, request, sample index)
    model: str
    params: dict[str, Any]
    cached: bool  # answered from the journal, no request sent

    @property
    def text(self) -> str:
        return self.texts[0]

    def provenance(self, generator: str, **extra: Any) -> dict[str, Any]:
        """What each generated row records about how it was made (stored in ``meta``)."""
        return {"generator": generator, "model": self.model, "params": self.params, "key": self.key,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": round(self.cost, 8), **extra}


@dataclass
class Estimate:
    """What a run is expected to send, before it starts (the cost estimate)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    notes: list[str] = field(default_factory=list)  # e.g. "upper bound: stops early when target reached"


class GenerationContext:
    """What the host hands a generator. Implemented in :mod:`studio.generation.runner`."""

    rng: random.Random  # seeded from the run's seed
    seeds: list[Record]  # records of the seed dataset ([] when the generator takes none)
    model: str

    async def chat(self, messages: list[dict[str, Any]], *, sample: int = 0, **params: Any) -> Completion:
        """One chat completion. ``params`` are OpenAI parameters (temperature, max_tokens, n, top_p,
        stop, seed...) merged over the run's defaults. ``sample`` distinguishes deliberate repeats
        of the same request (several responses to one prompt) in the journal. Raises
        :class:`GenerationFailed` or :class:`RunStopped`."""
        raise NotImplementedError

    async def complete(self, prompt: str, *, sample: int = 0, **params: Any) -> Completion:
        """One raw completion through ``/v1/completions`` (Magpie). Raises GenerationFailed with a
        clear message when the endpoint has no raw completions."""
        raise NotImplementedError

    async def gather(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        """Run ``fn`` over items concurrently (the host bounds concurrency) and return results in
        item order. Exceptions are returned in place of results (like ``return_exceptions``), so
        one failed row doesn't cancel the others; RunStopped is re-raised."""
        raise NotImplementedError

    def imap(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[tuple[int, Any]]:
        """Like :meth:`gather`, but yields ``(index, result)`` in item order as soon as each result
        and all before it are ready, so row-wise generators stream their output. Items are consumed
        lazily with a bounded window, so millions of rows don't become millions of tasks."""
        raise NotImplementedError

    def fail(self, error: BaseException | str, *, source: Record | None = None, source_index: int | None = None,
             stage: str = "") -> None:
        """Keep a row that could not be made: the error, the seed it came from and the stage."""
        raise NotImplementedError

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        """Report the generator's own progress (rows made of the target)."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        """Token count estimate for cost estimates and TPM limits."""
        raise NotImplementedError


class Generator:
    """Base class of generator plugins (subclass it, or provide the same attributes)."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    # What the seed dataset must hold: nothing, prompts (the first user turn is used) or full
    # records (instruction + answer, e.g. Self-Instruct seed tasks, or records to judge).
    seeds: ClassVar[Literal["none", "optional", "required"]] = "optional"
    # Kind of records produced: conversation, preference, or the seeds annotated (judging).
    produces: ClassVar[str] = "conversation"
    uses_completions: ClassVar[bool] = False  # needs raw /v1/completions (Magpie)

    def estimate(self, config: BaseModel, seeds: list[Record], count_tokens: Callable[[str], int]) -> Estimate:
        raise NotImplementedError

    def generate(self, config: BaseModel, ctx: GenerationContext) -> AsyncIterator[Record]:
        """An async generator yielding the records made, each with ``meta["generation"]`` from
        :meth:`Completion.provenance`."""
        raise NotImplementedError


def first_user_text(record: Record) -> str | None:
    """The instruction a seed record carries: its first user turn."""
    return next((t.content for t in record.messages if t.role == "user"), None)


def chat_messages(record: Record) -> list[dict[str, Any]]:
    """The record's conversation as OpenAI chat messages, up to and including its last user turn
    (what a model is asked to answer). Tool turns are not sent."""
    turns = [t for t in record.messages if t.role in ("system", "user", "assistant")]
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    return [{"role": t.role, "content": t.content} for t in turns[: last_user + 1]]
