"""A scripted stand-in for the host's GenerationContext, for unit tests of generator plugins.

``FakeContext(answer)`` answers every request with ``answer(request)``, where ``request`` is a
:class:`Request` (endpoint, messages or prompt, sample, params). The answer may be a string, a
list of strings (one per choice, for ``n``), a ``(text, finish_reason)`` tuple, or an exception
instance, which is raised (``GenerationFailed`` for a failed row, ``RunStopped`` to stop).
:func:`route` builds such a function from ``{substring: answer}`` rules. Every request, failure
and progress report is recorded, so tests can assert on what a generator sent and in what order.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from pydantic import BaseModel, Field

from studio.generation.generator_base import (
    Completion, Estimate, GenerationContext, GenerationFailed, Generator, RunStopped,
)
from studio.records import Record, Turn

Answer = Any  # str | list[str] | tuple[str, str] | BaseException | Callable[[Request], Answer]


@dataclass
class Request:
    endpoint: str  # "chat" | "complete"
    messages: list[dict[str, Any]] | None
    prompt: str | None
    sample: int
    params: dict[str, Any]

    @property
    def text(self) -> str:
        """What the request says: the prompt, or the chat messages' contents joined."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(str(m.get("content") or "") for m in self.messages or [])

    @property
    def last_user(self) -> str:
        users = [m["content"] for m in self.messages or [] if m.get("role") == "user"]
        return users[-1] if users else (self.prompt or "")

    def signature(self) -> tuple:
        return (self.endpoint, json.dumps(self.messages, sort_keys=True), self.prompt, self.sample,
                json.dumps(self.params, sort_keys=True))


def route(rules: dict[str, Answer] | list[tuple[str, Answer]], default: Answer = "") -> Callable[[Request], Answer]:
    """An answer function: the first rule whose substring occurs in the request text wins."""
    items = list(rules.items()) if isinstance(rules, dict) else list(rules)

    def answer(request: Request) -> Answer:
        for needle, value in items:
            if needle in request.text:
                return value(request) if callable(value) else value
        return default(request) if callable(default) else default

    return answer


@dataclass
class Failure:
    error: BaseException | str
    source: Record | None
    source_index: int | None
    stage: str

    @property
    def message(self) -> str:
        return str(self.error)


@dataclass
class FakeContext(GenerationContext):
    answer: Callable[[Request], Answer] = field(default=lambda request: "")
    seeds: list[Record] = field(default_factory=list)
    seed: int = 0
    model: str = "fake-model"
    concurrency: int = 4
    requests: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    progress_events: list[tuple[int, int | None, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # --- requests ----------------------------------------------------------------------------

    async def chat(self, messages: list[dict[str, Any]], *, sample: int = 0, **params: Any) -> Completion:
        request = Request("chat", [dict(m) for m in messages], None, sample, dict(params))
        return await self._answer(request)

    async def complete(self, prompt: str, *, sample: int = 0, **params: Any) -> Completion:
        request = Request("complete", None, prompt, sample, dict(params))
        return await self._answer(request)

    async def _answer(self, request: Request) -> Completion:
        self.requests.append(request)
        await asyncio.sleep(0)  # let other rows interleave, as a real host would
        value = self.answer(request)
        if callable(value):
            value = value(request)
        if isinstance(value, BaseException):
            raise value
        n = int(request.params.get("n") or 1)
        if isinstance(value, tuple):
            texts, reasons = [value[0]] * n, [value[1]] * n
        elif isinstance(value, list):
            texts, reasons = list(value), ["stop"] * len(value)
        else:
            texts, reasons = [str(value)] * n, ["stop"] * n
        prompt_tokens = self.count_tokens(request.text)
        key = hashlib.sha256(repr(request.signature()).encode()).hexdigest()[:16]
        model = request.params.get("model", self.model)
        return Completion(texts=texts, finish_reasons=reasons, prompt_tokens=prompt_tokens,
                          completion_tokens=sum(self.count_tokens(t) for t in texts), cost=0.001, key=key,
                          model=model, params=dict(request.params), cached=False)

    async def gather(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        return [result async for _, result in self.imap(items, fn)]

    async def imap(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[tuple[int, Any]]:
        """In item order, at most ``concurrency`` rows in flight, exceptions in place of results."""
        async def guarded(item: Any) -> Any:
            try:
                return await fn(item)
            except RunStopped:
                raise
            except Exception as exc:  # noqa: BLE001 - returned in place, as the host does
                return exc

        pending: deque[asyncio.Task] = deque()
        iterator = iter(items)
        index = 0
        try:
            while True:
                for item in iterator:
                    pending.append(asyncio.ensure_future(guarded(item)))
                    if len(pending) >= self.concurrency:
                        break
                if not pending:
                    return
                result = await pending.popleft()
                yield index, result
                index += 1
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # --- bookkeeping -------------------------------------------------------------------------

    def fail(self, error: BaseException | str, *, source: Record | None = None, source_index: int | None = None,
             stage: str = "") -> None:
        self.failures.append(Failure(error, source, source_index, stage))

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        self.progress_events.append((done, total, message))

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    # --- for assertions ----------------------------------------------------------------------

    def sent(self) -> list[tuple]:
        return [r.signature() for r in self.requests]

    def stages(self) -> list[str]:
        return [f.stage for f in self.failures]


async def _collect(generator, config, ctx) -> list[Record]:
    return [record async for record in generator.generate(config, ctx)]


def run_generator(generator, ctx: FakeContext, **config: Any) -> list[Record]:
    """Run a generator to the end with a validated config; returns the records it yielded."""
    cfg = generator.config_model(**config)
    return asyncio.run(_collect(generator, cfg, ctx))


def run_until_stopped(generator, ctx: FakeContext, **config: Any) -> tuple[list[Record], RunStopped | None]:
    """Like :func:`run_generator`, but keeps the records yielded before a RunStopped (what the host
    stores when a budget or a cancel stops a run) and returns the stop too."""
    cfg = generator.config_model(**config)
    records: list[Record] = []

    async def main() -> None:
        async for record in generator.generate(cfg, ctx):
            records.append(record)

    try:
        asyncio.run(main())
    except RunStopped as exc:
        return records, exc
    return records, None


def failed(status: int | None = 500, message: str = "request failed") -> GenerationFailed:
    return GenerationFailed(message, key="k", status=status)


# --- a real row-wise generator for host-side tests (engine, runner, TUI) ------------------


class EchoConfig(BaseModel):
    prefix: str = Field("", description="text put before each prompt")
    max_answer_tokens: int = Field(16, ge=1, le=256, description="max_tokens of each request")


class EchoGenerator(Generator):
    """One answer per seed prompt: the simplest row-wise generator."""

    name = "echo"
    title = "Echo"
    summary = "one answer per seed prompt"
    config_model = EchoConfig
    seeds = "required"

    def estimate(self, config, seeds, count_tokens):
        return Estimate(len(seeds), sum(count_tokens(config.prefix + s.messages[0].content) for s in seeds),
                        config.max_answer_tokens * len(seeds))

    async def generate(self, config, ctx):
        async def ask(record):
            return await ctx.chat([{"role": "user", "content": config.prefix + record.messages[0].content}],
                                  max_tokens=config.max_answer_tokens)

        async for index, result in ctx.imap(ctx.seeds, ask):
            seed = ctx.seeds[index]
            if isinstance(result, GenerationFailed):
                ctx.fail(result, source=seed, source_index=index, stage="answer")
                continue
            if isinstance(result, Exception):
                raise result
            yield Record(seed.messages + [Turn("assistant", result.text)],
                         meta={"generation": result.provenance(self.name)})
