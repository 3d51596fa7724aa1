"""Continuous batching for one causal language model: many generations share each forward pass.

    batcher = Batcher(model, tokenizer, max_batch=16, max_queued=64)
    handle = batcher.submit(prompt_ids, SamplingParams(temperature=0.0, max_tokens=64))
    for step in handle:            # one Step per generated token, as soon as it is made
        print(step.text, end="")
    handle.result.text, handle.result.finish_reason

A scheduler thread owns the model. Each turn it first admits waiting requests (up to ``max_batch``
running at once): a newcomer's prompt gets a forward of its own, and its KV cache then joins the
running batch's cache, left-padded to a common length (the attention mask hides the padding, and
each row carries its own position ids). Then one decoding forward advances every running sequence
by one token. So a request that arrives while others are generating starts at the next step instead
of waiting for them to finish, and a finished or cancelled one leaves the batch at once (its cache
rows are dropped, and cache columns that only padding still uses are cut away).

Each request keeps its own sampling (temperature, top_p, a torch generator seeded per request, so a
seeded request samples the same tokens alone or in a batch), its own stop tokens and stop strings.
The first token comes from the request's own prompt forward, exactly as unbatched generation
computes it; later tokens come from the padded batch, which in float32 matches unbatched generation
up to rounding in the last bits.

Memory is bounded: at most ``max_batch`` sequences hold a cache and at most ``max_queued`` wait;
``submit`` raises :class:`QueueFull` (with a retry estimate) beyond that. Nothing here imports torch
at module import time.
"""
from __future__ import annotations

import collections
import inspect
import itertools
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>")
RATE_WINDOW_SECONDS = 10.0  # tokens/s is measured over this trailing window


class FairLock:
    """A first-come first-served lock. The scheduler takes it for every step and asks again right
    away; with a plain Lock it would usually win again, and a request thread that needs the tokenizer
    could wait for a whole generation. Tickets make it wait one step at most."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._next = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._condition:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._condition.wait()

    def release(self) -> None:
        with self._condition:
            self._serving += 1
            self._condition.notify_all()

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class QueueFull(Exception):
    """The batcher holds ``max_queued`` waiting requests already; try again after ``retry_after`` s."""

    def __init__(self, retry_after: int):
        super().__init__(f"the generation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False  # record each sampled token's log-probability (under the model, before temperature)


@dataclass
class Step:
    token: int
    text: str  # the text this token settles: "" while it may be part of a stop string or a character
    logprob: float | None = None


@dataclass
class Result:
    text: str = ""
    finish_reason: str = "length"  # "stop", "length" or "cancelled"
    ids: list[int] = field(default_factory=list)  # every sampled token, an end-of-turn one included
    logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0

    @property
    def tokens(self) -> int:
        return len(self.ids)


class Detokenizer:
    """Turns generated tokens into text deltas, cutting at stop strings.

    Text that might be the start of a stop string, or an unfinished UTF-8 character, is held back
    until the next token settles it, so a stream never shows what the final text won't contain."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self._text()
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._advance(text, min(hits))
        safe = len(text.rstrip("\ufffd"))
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        return self._advance(text, safe)

    def finish(self) -> str:
        # A trailing replacement character is a UTF-8 sequence the model never completed.
        return self._advance(self._text().rstrip("\ufffd"), None)

    def _advance(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        delta = text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta


def stop_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the model's and tokenizer's end of text and the usual end-of-turn marks."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def cache_keyword(model) -> str:
    """The name the model's forward takes its KV cache under (transformers 5.25 renamed
    ``past_key_values`` to ``cache`` and warns on the old name)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output) -> Any:
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache


def pick_token(logits, temperature: float, top_p: float, generator) -> int:
    """Sample one token from a row of logits: greedy at temperature 0, else nucleus sampling."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs[outside] = 0.0
        return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


_FINISHED = object()


class Handle:
    """One submitted generation: iterate it for its steps; ``result`` is complete once iteration ends."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, max_new: int):
        self.prompt_ids, self.params, self.max_new = prompt_ids, params, max_new
        self.result = Result(prompt_tokens=len(prompt_ids))
        self.submitted = time.monotonic()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None

    def cancel(self) -> None:
        """Leave the batch (or the queue) at the next step; the result ends with finish_reason "cancelled"."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __iter__(self) -> Iterator[Step]:
        while True:
            item = self._events.get()
            if item is _FINISHED:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def wait_done(self, timeout: float | None = None) -> bool:
        """Whether the generation ended within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the generation ends; returns its result (raises what the scheduler hit)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the generation did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result

    # -- the scheduler's side --

    def _emit(self, step: Step) -> None:
        self._events.put(step)

    def _finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self._done.set()
        self._events.put(_FINISHED)


class _Sequence:
    """A running generation: its handle, sampler state and detokenizer."""

    def __init__(self, handle: Handle, tokenizer, stops: set[int], device):
        import torch

        self.handle, self.stops = handle, stops
        params = handle.params
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        self.generator = None if params.temperature == 0 else torch.Generator(device=device).manual_seed(seed)
        self.detok = Detokenizer(tokenizer, params.stop)
        self.length = len(handle.prompt_ids)  # tokens in this sequence's cache so far
        self.last = -1
        self.finished = False

    def take(self, logits) -> None:
        """Sample the next token from this sequence's logits row and hand it to the handle."""
        import torch

        params, result = self.handle.params, self.handle.result
        token = pick_token(logits, params.temperature, params.top_p, self.generator)
        logprob = float(torch.log_softmax(logits.float(), dim=-1)[token]) if params.logprobs else None
        result.ids.append(token)
        if logprob is not None:
            result.logprobs.append(logprob)
        self.last = token
        if token in self.stops:
            result.finish_reason = "stop"
            self._close(token, logprob)
            return
        text = self.detok.add(token)
        result.text += text
        if self.detok.stopped:
            result.finish_reason = "stop"
            self._close(token, logprob, text)
            return
        if len(result.ids) >= self.handle.max_new:
            self._close(token, logprob, text)
            return
        self.handle._emit(Step(token, text, logprob))

    def _close(self, token: int, logprob: float | None, text: str = "") -> None:
        if not self.detok.stopped:
            tail = self.detok.finish()
            text += tail
            self.handle.result.text += tail
        self.handle._emit(Step(token, text, logprob))
        self.finished = True


class Batcher:
    """The scheduler: a thread that runs every submitted generation, batched step by step.

    ``lock`` (shared with code that uses the same model or tokenizer directly) is held for each
    scheduling step, never longer. ``max_new`` caps a request's tokens by the model's context."""

    def __init__(self, model, tokenizer, *, max_batch: int = 16, max_queued: int = 64,
                 lock: FairLock | None = None, stop_ids: set[int] | None = None,
                 context_length: int | None = None, name: str = "batcher"):
        if max_batch < 1 or max_queued < 0:
            raise ValueError("max_batch must be at least 1 and max_queued at least 0")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queued = max_batch, max_queued
        self.lock = lock or FairLock()
        self.stop_ids = stop_ids if stop_ids is not None else stop_token_ids(model, tokenizer)
        config = getattr(model, "config", None)
        self.context_length = context_length or int(getattr(config, "max_position_embeddings", None) or 2048)
        self.device = next(model.parameters()).device
        self._keyword = cache_keyword(model)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._waiting: collections.deque[Handle] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._unfinished = 0  # submitted generations not yet finished: waiting, being admitted or running
        # The running batch: its sequences, their shared cache and attention mask (one row each).
        self._running: list[_Sequence] = []
        self._cache = None
        self._mask = None
        self._mergeable = True  # cleared when the model's cache can't be padded and joined
        # Counters for /metrics.
        self.requests_total = 0
        self.rejected_total = 0
        self.cancelled_total = 0
        self.tokens_total = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the clients' side --

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Handle:
        return self.submit_all([(prompt_ids, params)])[0]

    def submit_all(self, requests: list[tuple[list[int], SamplingParams]]) -> list[Handle]:
        """Queue several generations at once (the n choices of one request): all of them or none.

        A group larger than ``max_batch + max_queued`` is taken when nothing else is queued or running,
        so it is slow rather than refused forever; it waits as prompt ids, and only ``max_batch``
        generations hold a KV cache at any time."""
        handles = []
        for prompt_ids, params in requests:
            if not prompt_ids:
                raise ValueError("a prompt needs at least one token")
            room = self.context_length - len(prompt_ids)
            if room < 1:
                raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the context is {self.context_length}")
            handles.append(Handle(list(prompt_ids), params, max(1, min(params.max_tokens, room))))
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._unfinished and self._unfinished + len(handles) > self.max_queued + self.max_batch:
                self.rejected_total += len(handles)
                raise QueueFull(self._retry_after())
            self._unfinished += len(handles)
            self._waiting.extend(handles)
            self.requests_total += len(handles)
            self._wake.notify()
        return handles

    def _retry_after(self) -> int:
        # Roughly when a queue's worth of the running requests will have finished.
        rate = self.tokens_per_second()
        if rate <= 0:
            return 1
        queued_tokens = sum(h.max_new for h in self._waiting)
        return max(1, min(60, math.ceil(queued_tokens / rate)))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the scheduler; waiting and running generations end as cancelled."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def stats(self) -> dict[str, float]:
        return {"queue_depth": len(self._waiting), "batch_size": len(self._running),
                "max_batch": self.max_batch, "max_queued": self.max_queued,
                "requests_total": self.requests_total, "rejected_total": self.rejected_total,
                "cancelled_total": self.cancelled_total,
                "generated_tokens_total": self.tokens_total, "tokens_per_second": self.tokens_per_second()}

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= RATE_WINDOW_SECONDS]
        if not recent:
            return 0.0
        return sum(n for _, n in recent) / RATE_WINDOW_SECONDS

    # -- the scheduler --

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._running:
                    self._wake.wait()
                if self._closed:
                    break
            try:
                with self.lock:
                    self._admit()
                    if self._running:
                        self._decode()
            except BaseException as exc:  # noqa: BLE001 - every waiting client must hear of it
                self._fail_all(exc)
        self._cancel_all()

    def _next_waiting(self) -> Handle | None:
        with self._wake:
            while self._waiting:
                handle = self._waiting.popleft()
                if not handle.cancelled:
                    return handle
                handle.result.finish_reason = "cancelled"
                self._release(handle)
        return None

    def _forward(self, input_ids, **kwargs):
        import torch

        with torch.inference_mode():
            return self.model(input_ids=input_ids, use_cache=True, **kwargs)

    def _admit(self) -> None:
        import torch

        limit = self.max_batch if self._mergeable else 1
        while len(self._running) < limit:
            handle = self._next_waiting()
            if handle is None:
                return
            try:
                sequence = _Sequence(handle, self.tokenizer, self.stop_ids, self.device)
                out = self._forward(torch.tensor([handle.prompt_ids], device=self.device))
                sequence.take(out.logits[0, -1])
            except Exception as exc:  # noqa: BLE001 - this prompt failed; the batch goes on
                self._release(handle, exc)
                continue
            self._count(1)
            if sequence.finished:
                self._release(handle)
                continue
            self._join(sequence, output_cache(out))
            limit = self.max_batch if self._mergeable else 1

    def _join(self, sequence: _Sequence, cache) -> None:
        """Add a sequence whose prompt was just run (``cache``, one row) to the running batch."""
        import torch

        length = sequence.length
        if not self._running:
            self._running, self._cache = [sequence], cache
            self._mask = torch.ones((1, length), dtype=torch.long, device=self.device)
            self._mergeable = _plain_layers(cache) is not None
            return
        width = self._mask.shape[1]
        if length > width:  # the newcomer is longer: pad the batch on the left
            self._pad_left(self._cache, length - width)
            self._mask = torch.cat([self._mask.new_zeros((self._mask.shape[0], length - width)), self._mask], dim=1)
            width = length
        self._pad_left(cache, width - length)
        row = torch.cat([self._mask.new_zeros((1, width - length)), self._mask.new_ones((1, length))], dim=1)
        for layer, new in zip(_plain_layers(self._cache), _plain_layers(cache)):
            layer.keys = torch.cat([layer.keys, new.keys], dim=0)
            layer.values = torch.cat([layer.values, new.values], dim=0)
        self._mask = torch.cat([self._mask, row], dim=0)
        self._running.append(sequence)

    @staticmethod
    def _pad_left(cache, columns: int) -> None:
        import torch

        if columns <= 0:
            return
        for layer in _plain_layers(cache):
            shape = list(layer.keys.shape)
            shape[-2] = columns
            layer.keys = torch.cat([layer.keys.new_zeros(shape), layer.keys], dim=-2)
            layer.values = torch.cat([layer.values.new_zeros(shape), layer.values], dim=-2)

    def _decode(self) -> None:
        """One forward for the whole batch: every running sequence's last token in, its next token out."""
        import torch

        # Sequences cancelled since the last step leave before it runs.
        for sequence in self._running:
            if sequence.handle.cancelled:
                sequence.handle.result.finish_reason = "cancelled"
                sequence.finished = True
                self._release(sequence.handle)
        self._drop_finished()
        if not self._running:
            return
        input_ids = torch.tensor([[s.last] for s in self._running], device=self.device)
        positions = torch.tensor([[s.length] for s in self._running], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        out = self._forward(input_ids, attention_mask=self._mask, position_ids=positions,
                            **{self._keyword: self._cache})
        self._cache = output_cache(out)
        logits = out.logits[:, -1]
        for row, sequence in enumerate(self._running):
            sequence.length += 1
            sequence.take(logits[row])
            if sequence.finished:
                self._release(sequence.handle)
        self._count(len(self._running))
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self._running) if not s.finished]
        if len(keep) == len(self._running):
            return
        if not keep:
            self._running, self._cache, self._mask = [], None, None
            return
        index = torch_index(keep, self.device)
        mask = self._mask.index_select(0, index)
        # Columns that were padding in every remaining row are no longer needed.
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        for layer in _plain_layers(self._cache):
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]
        self._mask = mask[:, start:]
        self._running = [self._running[i] for i in keep]

    def _count(self, tokens: int) -> None:
        self.tokens_total += tokens
        now = time.monotonic()
        self._recent.append((now, tokens))
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_SECONDS:
            self._recent.popleft()

    def _release(self, handle: Handle, error: BaseException | None = None) -> None:
        """End a generation: its client's iteration stops, and its place in the queue is free."""
        with self._wake:
            self._unfinished -= 1
            if handle.result.finish_reason == "cancelled":
                self.cancelled_total += 1
        handle._finish(error)

    def _fail_all(self, exc: BaseException) -> None:
        for sequence in self._running:
            if not sequence.handle.done:
                self._release(sequence.handle, exc)
        self._running, self._cache, self._mask = [], None, None

    def _cancel_all(self) -> None:
        for sequence in self._running:
            if not sequence.handle.done:
                sequence.handle.result.finish_reason = "cancelled"
                self._release(sequence.handle)
        self._running = []
        with self._wake:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for handle in waiting:
            handle.result.finish_reason = "cancelled"
            self._release(handle)


def torch_index(rows: list[int], device):
    import torch

    return torch.tensor(rows, dtype=torch.long, device=device)


def _plain_layers(cache) -> list | None:
    """The per-layer key/value holders of a dynamic cache whose tensors can be padded and joined,
    or None (a sliding-window or quantized cache keeps more state than its tensors: no batching)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    return list(layers)


def generate_all(batcher: Batcher, prompts: list[list[int]], params: SamplingParams) -> list[Result]:
    """Generate for every prompt through ``batcher`` (as many at a time as it allows) and wait for all."""
    results: list[Result] = []
    for chunk in _chunks(prompts, max(1, batcher.max_batch + batcher.max_queued)):
        handles = batcher.submit_all([(p, params) for p in chunk])
        results.extend(h.wait() for h in handles)
    return results


def _chunks(items: list, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
