"""The request engine under every generator: plain HTTP to the OpenAI-compatible API with our
own retries (so ``Retry-After`` and rate-limit headers are honoured across all workers), the
journal that answers repeated requests for free, cost metering against a hard budget, and the
:class:`GenerationContext` generators talk to.

Requests go through one pooled, keep-alive ``httpx2.AsyncClient`` (the transport the openai
client itself uses), with the body serialised once and the answer read as plain JSON: the
openai client's per-request parameter transforms and response models cost more CPU than the
whole rest of a request, and at a server's capacity that time is a slot left idle."""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from studio.generation.generator_base import Completion, GenerationContext, GenerationFailed, RunStopped
from studio.generation.journal import Journal, request_key
from studio.generation.limiter import RateLimiter, retry_after
from studio.generation.provider import ProviderConfig
from studio.records import Record

DEFAULT_COMPLETION_TOKENS = 512  # assumed when a request sets no max_tokens (estimates, TPM)
PROGRESS_INTERVAL = 0.25


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters per token for English, never below words)."""
    return max(len(text) // 4, len(text.split())) + 1


@dataclass
class Meter:
    """Live counters of a run: what the CLI bar and the TUI show, and what events carry."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0  # HTTP requests made, retries included
    answered: int = 0  # requests answered by the API in this run
    cached: int = 0  # requests answered from the journal
    failed: int = 0  # requests that failed for good
    retries: int = 0
    throttled: int = 0  # 429 responses
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # spent in this run (cached answers cost nothing again)
    rows: int = 0
    failed_rows: int = 0
    in_flight: int = 0
    target: int | None = None
    message: str = ""

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return {
            "elapsed": round(elapsed, 3), "sent": self.sent, "answered": self.answered, "cached": self.cached,
            "failed": self.failed, "retries": self.retries, "throttled": self.throttled,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 8), "rows": self.rows, "failed_rows": self.failed_rows,
            "in_flight": self.in_flight, "target": self.target, "message": self.message,
            "requests_per_s": round(self.answered / elapsed, 3),
            "tokens_per_s": round((self.prompt_tokens + self.completion_tokens) / elapsed, 1),
        }


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, wait: float | None = None):
        super().__init__(message)
        self.status = status
        self.wait = wait


class Engine:
    def __init__(self, provider: ProviderConfig, journal: Journal, *, run_id: str,
                 emit: Callable[[dict], None] = lambda e: None, cancelled: Callable[[], bool] = lambda: False,
                 budget: float | None = None, retry_failed: bool = False, defaults: dict[str, Any] | None = None,
                 base_url: str | None = None, model: str | None = None, count_tokens=estimate_tokens,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0):
        self.provider = provider
        self.journal = journal
        self.run_id = run_id
        self.emit = emit
        self.cancelled = cancelled
        self.budget = budget
        self.retry_failed = retry_failed
        self.defaults = dict(defaults or {})
        self.base_url = base_url or provider.base_url
        self.model = model or provider.model
        self.count_tokens = count_tokens
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.meter = Meter()
        self.reserved = 0.0
        self.stop_reason: str | None = None
        self._in_progress: dict[str, asyncio.Future] = {}
        self._last_emit = 0.0
        self._client = None
        self._urls: dict[str, Any] = {}  # endpoint -> its parsed URL
        self._limiter: RateLimiter | None = None
        self._jitter = random.Random()  # back-off jitter only; never feeds generated content

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            import httpx2

            # No retries in the transport: our own loop retries, so every worker sees one shared pause.
            # The pool keeps a warm connection for every slot the limiter may open.
            headers = {"Authorization": f"Bearer {self.provider.api_key()}", "Content-Type": "application/json",
                       "Accept": "application/json", **self.provider.headers}
            self._client = httpx2.AsyncClient(
                base_url=self.base_url.rstrip("/") + "/", headers=headers, timeout=self.provider.timeout,
                limits=httpx2.Limits(max_connections=None,
                                     max_keepalive_connections=max(20, self.provider.concurrency)))
            self._urls = {"chat": self._client.base_url.join("chat/completions"),
                          "completions": self._client.base_url.join("completions")}
        return self._client

    @property
    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(self.provider.rpm, self.provider.tpm, self.provider.concurrency)
        return self._limiter

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def progress_event(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_emit >= PROGRESS_INTERVAL:
            self._last_emit = now
            self.emit({"event": "progress", **self.meter.snapshot()})

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.emit({"event": "stopping", "reason": reason})

    def _check_running(self) -> None:
        if self.stop_reason is None and self.cancelled():
            self.stop("cancelled")
        if self.stop_reason is not None:
            raise RunStopped(self.stop_reason)

    # --- requests ---------------------------------------------------------------------------

    async def request(self, endpoint: str, payload: dict[str, Any], sample: int = 0) -> Completion:
        body = {"model": self.model, **self.defaults, **payload}
        body = {k: v for k, v in body.items() if v is not None}
        key = request_key(endpoint, body, sample)
        entry = self.journal.get(key)
        if entry is not None and (entry.status == "ok" or not self.retry_failed):
            if entry.status == "ok":
                self.meter.cached += 1
                self.progress_event()
                return Completion(entry.texts, entry.finish_reasons, entry.prompt_tokens, entry.completion_tokens,
                                  entry.cost, key, body["model"], _params(body), cached=True)
            raise GenerationFailed(f"failed earlier: {entry.error} (retry failed rows to send it again)",
                                   key=key, status=entry.http_status)
        # The same request twice in one run (e.g. two seeds with equal text) is sent once.
        if key in self._in_progress:
            return await asyncio.shield(self._in_progress[key])
        future = asyncio.get_running_loop().create_future()
        self._in_progress[key] = future
        try:
            completion = await self._send(endpoint, body, key)
            future.set_result(completion)
            return completion
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._in_progress[key]

    def _estimate(self, endpoint: str, body: dict[str, Any]) -> tuple[int, int]:
        if endpoint == "chat":
            text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
        else:
            prompt = body.get("prompt", "")
            text = prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))
        max_out = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_COMPLETION_TOKENS
        return self.count_tokens(text), int(max_out) * int(body.get("n") or 1)

    async def _send(self, endpoint: str, body: dict[str, Any], key: str) -> Completion:
        prompt_est, completion_est = self._estimate(endpoint, body)
        tokens = prompt_est + completion_est
        # The most this request could cost; held against the budget only while it is in flight,
        # so waiting requests don't block the budget and the cap can never be overshot.
        reserve = self.provider.cost(prompt_est, completion_est, body["model"])
        attempts = 0
        while True:
            self._check_running()
            attempts += 1
            ticket = await self.limiter.acquire(tokens)
            used, ok = None, False
            if self.stop_reason is None and self.budget is not None \
                    and self.meter.cost + self.reserved + reserve > self.budget:
                self.stop(f"budget reached: spent {self.meter.cost:.4f} of {self.budget:.4f}, "
                          f"the next request could cost up to {reserve:.4f}")
            if self.stop_reason is not None or self.cancelled():  # it may have stopped while we waited
                await self.limiter.release(tokens, 0, ok=True)
                self._check_running()
                raise RunStopped(self.stop_reason or "stopped")
            self.reserved += reserve
            self.meter.in_flight += 1
            self.meter.sent += 1
            retry: _Retryable | None = None
            try:
                texts, reasons, p_tok, c_tok, headers = await self._call(endpoint, body)
                used, ok = p_tok + c_tok, True
                cost = self.provider.cost(p_tok, c_tok, body["model"])
                self.meter.cost += cost  # counted before the reservation is let go
            except GenerationFailed as exc:  # not retryable (400, 422...): keep it as failed
                if exc.status in (404, 405, 501):
                    # The endpoint lacks the route (no raw completions): a fact about this server,
                    # not this request, so it isn't journaled against another server's reply.
                    self.meter.failed += 1
                    raise GenerationFailed(str(exc), key=key, status=exc.status) from None
                return self._fail(endpoint, body, key, str(exc), exc.status, attempts)
            except _Retryable as exc:
                retry = exc
                if exc.status == 429:
                    self.meter.throttled += 1
                    await self.limiter.throttle(exc.wait, ticket)
            finally:
                # The slot is free as soon as the answer (or refusal) is in: a request waiting
                # out its back-off holds none, so it neither blocks others nor counts as in flight.
                self.reserved -= reserve
                self.meter.in_flight -= 1
                await self.limiter.release(tokens, used, ok)
            if retry is not None:
                if attempts > self.provider.max_retries:
                    return self._fail(endpoint, body, key, f"{retry} (gave up after {attempts} attempts)",
                                      retry.status, attempts)
                self.meter.retries += 1
                wait = retry.wait if retry.wait is not None else self._backoff(attempts)
                self.emit({"event": "retry", "key": key, "attempt": attempts, "error": str(retry),
                           "status": retry.status, "wait": round(wait, 3)})
                await asyncio.sleep(wait)
                continue
            # Let the request waiting for the slot just freed go out before this answer is stored
            # and turned into a row: when many answers arrive together, their slots refill first.
            await asyncio.sleep(0)
            await self.limiter.observe(headers)
            self.journal.put_ok(key, endpoint, body["model"], body, texts, reasons, p_tok, c_tok, cost,
                                attempts, self.run_id)
            m = self.meter
            m.answered += 1
            m.prompt_tokens += p_tok
            m.completion_tokens += c_tok
            self.progress_event()
            return Completion(texts, reasons, p_tok, c_tok, cost, key, body["model"], _params(body), cached=False)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of many workers over the window instead of in lockstep.
        return self._jitter.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))

    def _fail(self, endpoint, body, key, message, status, attempts):
        self.journal.put_failed(key, endpoint, body["model"], body, message, status, attempts, self.run_id)
        self.meter.failed += 1
        self.progress_event()
        raise GenerationFailed(message, key=key, status=status)

    async def _call(self, endpoint: str, body: dict[str, Any]):
        """One HTTP request. Returns (texts, finish_reasons, prompt_tokens, completion_tokens,
        headers); raises _Retryable for what a retry may fix, GenerationFailed or RunStopped
        for what it can't."""
        import httpx2

        client = self.client
        # A request built from the parsed URL and headers kept with the client (send() adds the
        # client's timeout): post() would parse and merge them again for every request.
        request = httpx2.Request("POST", self._urls[endpoint], headers=client.headers,
                                 content=json.dumps(body, ensure_ascii=False).encode())
        try:
            response = await client.send(request)
        except httpx2.TimeoutException:
            raise _Retryable(f"timed out after {self.provider.timeout:g} s") from None
        except httpx2.TransportError as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
        status, headers = response.status_code, response.headers
        if status >= 400:
            message = _error_message(response)
            if status == 429 or status == 408 or status == 409 or status >= 500:
                raise _Retryable(f"HTTP {status}: {message}", status, retry_after(headers))
            if status in (401, 403):
                self.stop(f"the API refused the credentials (HTTP {status}): {message}")
                raise RunStopped(self.stop_reason)
            if endpoint == "completions" and status in (404, 405, 501):
                raise GenerationFailed(f"this endpoint has no raw completions (/v1/completions, HTTP {status}): "
                                       f"{message}", status=status)
            raise GenerationFailed(f"HTTP {status}: {message}", status=status)
        try:
            parsed = json.loads(response.content)
        except ValueError as exc:  # not JSON, or not UTF-8
            raise _Retryable(f"malformed response: {type(exc).__name__}: {str(exc)[:200]}") from None
        if not isinstance(parsed, dict):
            raise _Retryable("malformed response: not a JSON object")
        texts, reasons = _choices(endpoint, parsed)
        usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else {}
        p_tok, c_tok = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(p_tok, int) or not isinstance(c_tok, int):  # some servers omit usage: meter our estimate
            p_tok, _ = self._estimate(endpoint, body)
            c_tok = sum(self.count_tokens(t) for t in texts)
        return texts, reasons, int(p_tok), int(c_tok), headers


def _choices(endpoint: str, parsed: dict[str, Any]) -> tuple[list[str], list[str]]:
    choices = parsed.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise _Retryable("malformed response: no choices")
    texts, reasons = [], []
    for choice in sorted(choices, key=lambda c: c.get("index") or 0):
        if endpoint == "chat":
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            content = message.get("content")
            if content is None and message.get("tool_calls"):
                content = json.dumps(message["tool_calls"])
        else:
            content = choice.get("text")
        if not isinstance(content, str):
            raise _Retryable("malformed response: a choice has no text")
        texts.append(content)
        reasons.append(str(choice.get("finish_reason") or "stop"))
    return texts, reasons


def _params(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("model", "messages", "prompt")}


def _error_message(response) -> str:
    """The API's own ``error.message`` when the body has one, else the body's text."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str) and inner:
            return inner[:300]
    text = response.content.decode("utf-8", "replace").strip()
    return text[:300] or (response.reason_phrase or "")


class RunContext(GenerationContext):
    """The :class:`GenerationContext` a generator gets from the runner."""

    def __init__(self, engine: Engine, seeds: list[Record], seed: int, on_fail: Callable[[dict], None],
                 window: int | None = None):
        self.engine = engine
        self.rng = random.Random(seed)
        self.seeds = seeds
        self.model = engine.model
        self._on_fail = on_fail
        self.window = window or max(64, engine.provider.concurrency * 4)

    async def chat(self, messages, *, sample: int = 0, **params) -> Completion:
        return await self.engine.request("chat", {"messages": messages, **params}, sample)

    async def complete(self, prompt, *, sample: int = 0, **params) -> Completion:
        return await self.engine.request("completions", {"prompt": prompt, **params}, sample)

    async def gather(self, items, fn):
        return [result async for _, result in self.imap(items, fn)]

    async def imap(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[tuple[int, Any]]:
        async def guarded(item):
            try:
                return await fn(item)
            except RunStopped:
                raise
            except Exception as exc:  # noqa: BLE001 - returned in place, the generator decides
                return exc

        pending: dict[int, asyncio.Task] = {}
        iterator = iter(enumerate(items))
        next_index = 0
        exhausted = False
        stopped: RunStopped | None = None
        try:
            while True:
                while stopped is None and not exhausted and len(pending) < self.window:
                    try:
                        index, item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[index] = asyncio.ensure_future(guarded(item))
                if next_index not in pending:
                    break
                try:
                    result = await pending.pop(next_index)
                except RunStopped as exc:
                    # Launch nothing more, but still hand over what already finished, in order:
                    # the rows are paid for, so they belong in the stored output.
                    stopped = stopped or exc
                    next_index += 1
                    continue
                yield next_index, result
                next_index += 1
        finally:
            for task in pending.values():
                task.cancel()
            if pending:
                await asyncio.gather(*pending.values(), return_exceptions=True)
        if stopped is not None:
            raise stopped

    def fail(self, error, *, source=None, source_index=None, stage="") -> None:
        self.engine.meter.failed_rows += 1
        self._on_fail({"error": str(error), "stage": stage, "source_index": source_index,
                       "key": getattr(error, "key", None), "status": getattr(error, "status", None),
                       "source": source.to_row() if source is not None else None})

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        self.engine.meter.target = total
        self.engine.meter.message = message
        self.engine.progress_event()

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)
