"""An OpenAI-compatible HTTP server for one local model, on the standard library's HTTP server.

    GET  /health                 liveness (no key needed)
    GET  /v1/models              the one served model
    GET  /v1/models/{name}
    POST /v1/chat/completions    messages -> chat completion (stream: SSE chunks, then [DONE])
    POST /v1/completions         prompt (a string, a list of strings, a list of token ids or a list
                                 of token-id lists) -> text completion
    GET  /tokenizer_info         the tokenizer's special tokens and chat template   (vLLM's tokenizer
    POST /tokenize               {prompt, add_special_tokens} -> {tokens, count}     endpoints, which
    POST /detokenize             {tokens} -> {prompt}                                lm-eval looks for)

Honoured: max_tokens / max_completion_tokens, temperature (0 = greedy), top_p, n, stop, seed,
stream, stream_options.include_usage, and on chat ``response_format`` with a JSON schema
(structured outputs, decoded under the schema's constraint: :mod:`studio.serving.structured`).
On completions also ``echo`` and ``logprobs`` (top-k, 0..20): the legacy logprobs object of
:mod:`studio.serving.token_logprobs`, over the echoed prompt and the generated tokens;
``max_tokens: 0`` with ``echo`` scores the prompt only; streamed, each chunk carries the logprobs of
the tokens whose text it starts. That is what lm-eval's ``local-completions`` model sends and reads
(``echo: true, logprobs: 1, max_tokens: 1``, prompts as token ids).
Errors have OpenAI's shape ``{"error": {message, type, param, code}}``.

Plain generations (chat, and completions without logprobs) go through a continuous batcher
(:mod:`studio.serving.batching`): requests that arrive while others generate join them at the next
step, a client that hangs up leaves the batch, and when ``max_queued`` generations already wait the
answer is 429 with ``Retry-After``. Structured outputs and log-prob scoring use the model alone, one
request at a time, between batch steps.

    GET  /metrics                Prometheus text: queue depth, batch size, tokens/s, generations, 429s

Each request logs one line (method, path without query, status, time) to stderr; headers, and with
them API keys, are never logged.
"""
from __future__ import annotations

import bisect
import functools
import hmac
import json
import os
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

# END_OF_TURN_TOKENS stays importable from here (studio.evaluation.generation reads it from this module).
from studio.serving.batching import (END_OF_TURN_TOKENS, Batcher, Detokenizer, FairLock, Handle,  # noqa: F401
                                     QueueFull, SamplingParams, cache_keyword, output_cache, pick_token,
                                     stop_token_ids)
from studio.serving.structured import Fixed, OneOf, Piece, SchemaError, TokenTable, min_tokens, plan_for
from studio.serving.token_logprobs import (MAX_LOGPROBS, TextOffsets, TokenScore, char_offsets, join_logprobs,
                                           legacy_logprobs)

MAX_BODY_BYTES = 16 * 1024 * 1024
CLIENT_POLL_SECONDS = 0.25  # how often a waiting request checks that its client is still connected
MAX_CHOICES = 16
MAX_STOP_STRINGS = 4
COMPLETIONS_DEFAULT_TOKENS = 16  # OpenAI's default for /v1/completions
CHAT_DEFAULT_TOKEN_CAP = 1024  # chat has no default limit; a tiny model may never stop on its own
DEFAULT_MAX_BATCH = 16  # sequences decoded together; each holds a KV cache
DEFAULT_MAX_QUEUED = 64  # generations waiting for a batch slot; more are answered 429
SCORE_BATCH_LOGITS = 2 ** 26  # logits (tokens x vocabulary) one scoring forward may hold: 256 MB of float32
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class ApiError(Exception):
    """A request the server refuses, answered with OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --- request parameters ---------------------------------------------------------------------


def _int(body: dict, key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"{key} must be an integer {bounds}, got {value!r}", param=key)
    return value


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value > high or value < low \
            or (low_open and value == low):
        raise ApiError(400, f"{key} must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}",
                       param=key)
    return float(value)


@dataclass
class Sampling:
    max_tokens: int | None
    temperature: float
    top_p: float
    n: int
    stop: list[str]
    seed: int | None

    @classmethod
    def from_body(cls, body: dict[str, Any], min_tokens: int = 1) -> "Sampling":
        """``min_tokens`` 0 lets an echo request score its prompt without generating."""
        max_tokens = _int(body, "max_completion_tokens", min_tokens)
        if max_tokens is None:
            max_tokens = _int(body, "max_tokens", min_tokens)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is None:
            stop = []
        if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS \
                or not all(isinstance(s, str) and s for s in stop):
            raise ApiError(400, f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS} of them",
                           param="stop")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
        return cls(max_tokens=max_tokens,
                   temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                   top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
                   n=_int(body, "n", 1, MAX_CHOICES) or 1,
                   stop=stop, seed=seed)


def _refuse_unsupported(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if body.get(key):
            raise ApiError(400, f"{key} is not supported by this server", param=key, code="unsupported_parameter")


def _response_plan(body: dict[str, Any], sampling: Sampling):
    """The structured-output plan of a chat request, or None; a schema this server can't keep is a 400."""
    try:
        plan = plan_for(body.get("response_format"))
    except SchemaError as exc:
        raise ApiError(400, str(exc), param="response_format") from None
    if plan is not None and sampling.stop:
        raise ApiError(400, "stop can't be combined with a response_format json_schema on this server",
                       param="stop")
    return plan


def _chat_messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise ApiError(400, f"messages[{i}] needs a role among {', '.join(CHAT_ROLES)}", param=f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text can be read by a text model
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise ApiError(400, f"messages[{i}]: only text content parts are supported", param=f"messages[{i}]")
            content = "".join(str(p.get("text", "")) for p in content)
        if content is not None and not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string, a list of text parts or null",
                           param=f"messages[{i}].content")
        turn = {"role": CHAT_ROLES[message["role"]], "content": content or ""}
        if message.get("tool_calls"):
            turn["tool_calls"] = message["tool_calls"]
        messages.append(turn)
    return messages


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompts(value: Any, vocab_size: int) -> list[str | list[int]]:
    """The prompts of a completions request: each a string, or token ids (what lm-eval sends)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return value
        if all(_is_token(t) for t in value):
            prompts = [value]
        elif all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in value):
            prompts = value
        else:
            prompts = None
        if prompts is not None:
            for i, ids in enumerate(prompts):
                wrong = next((t for t in ids if not 0 <= t < vocab_size), None)
                if wrong is not None:
                    raise ApiError(400, f"prompt {i} has token id {wrong}, outside this model's vocabulary "
                                        f"(0..{vocab_size - 1})", param="prompt")
            return prompts
    raise ApiError(400, "prompt must be a string, a non-empty list of strings, a non-empty list of token ids, "
                        "or a list of non-empty token-id lists", param="prompt")


def _echo(body: dict[str, Any]) -> bool:
    value = body.get("echo")
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"echo must be true or false, got {value!r}", param="echo")
    return bool(value)


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token ``logprobs`` asks for; None: no logprobs object."""
    value = body.get("logprobs")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        hint = " (true/false is the chat API's form; completions take a count)" if isinstance(value, bool) else ""
        raise ApiError(400, f"logprobs must be an integer between 0 and {MAX_LOGPROBS}, got {value!r}{hint}",
                       param="logprobs")
    return value


# --- generation -----------------------------------------------------------------------------


@dataclass
class Choice:
    text: str = ""
    finish_reason: str = "length"
    tokens: int = 0
    ids: list[int] = field(default_factory=list)  # every sampled token, an end-of-turn one included
    scores: list[TokenScore] = field(default_factory=list)  # per sampled token, when logprobs were asked for
    cut: bool = False  # a stop string ended the text, possibly inside the last tokens


@dataclass
class PromptScores:
    scores: list[TokenScore]  # one per prompt token; the first has no logprob
    next_logits: Any  # the model's logits for the token after the prompt, to start generating from


class Engine:
    """One model and tokenizer; every direct use goes through ``lock`` (models and tokenizers aren't
    thread-safe). Plain generations go through ``batcher``, which takes the same lock step by step."""

    def __init__(self, model, tokenizer, name: str, max_batch: int = DEFAULT_MAX_BATCH,
                 max_queued: int = DEFAULT_MAX_QUEUED):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.lock = FairLock()
        self.created = int(time.time())
        self.device = next(model.parameters()).device
        config = getattr(model, "config", None)
        self.context_length = int(getattr(config, "max_position_embeddings", None) or 2048)
        self.vocab_size = int(getattr(config, "vocab_size", None) or len(tokenizer))
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.max_batch, self.max_queued = max_batch, max_queued
        self._batcher: Batcher | None = None
        self._batcher_guard = threading.Lock()
        self._cache_keyword = cache_keyword(model)
        self._token_table: TokenTable | None = None

    @property
    def batcher(self) -> Batcher:
        """The continuous-batching scheduler, started on first use."""
        with self._batcher_guard:
            if self._batcher is None:
                self._batcher = Batcher(self.model, self.tokenizer, max_batch=self.max_batch,
                                        max_queued=self.max_queued, lock=self.lock, stop_ids=self.stop_ids,
                                        context_length=self.context_length, name=f"batcher-{self.name}")
            return self._batcher

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def submit(self, prompt_ids: list[int], sampling: Sampling, max_new: int, copies: int = 1) -> list[Handle]:
        """Queue ``copies`` generations of one prompt (a chat request's n choices)."""
        return self.submit_many([(prompt_ids, max_new)] * copies, sampling)

    def submit_many(self, jobs: list[tuple[list[int], int]], sampling: Sampling) -> list[Handle]:
        """Queue one generation per (prompt ids, token budget), all or none; a full queue is a 429.
        Job i of a seeded request samples with seed + i, so a request's first choice is what the
        same request with n=1 gives, alone or batched with others."""
        requests = [(ids, SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_new,
                                         stop=sampling.stop, seed=None if sampling.seed is None else sampling.seed + i))
                    for i, (ids, max_new) in enumerate(jobs)]
        try:
            return self.batcher.submit_all(requests)
        except QueueFull as exc:
            raise ApiError(429, f"the server is busy: {exc}", code="rate_limit_exceeded", kind="rate_limit_error",
                           headers={"Retry-After": str(exc.retry_after)}) from None

    def _forward(self, ids: list[int], cache):
        import torch

        return self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                          **{self._cache_keyword: cache})

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list | None = None) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ApiError(400, f"model {self.name} has no chat template; use /v1/completions", param="messages")
        encoded = self.tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                                     tokenize=True, return_dict=True)
        return list(encoded["input_ids"])

    def text_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def budget(self, prompt_tokens: int, requested: int | None, default: int, param: str) -> int:
        room = self.context_length - prompt_tokens
        if room < (0 if requested == 0 else 1):
            raise ApiError(400, f"the prompt has {prompt_tokens} tokens; this model's context is "
                                f"{self.context_length}", param=param, code="context_length_exceeded")
        return min(room, requested if requested is not None else default)

    def new_generator(self, seed: int | None):
        import torch

        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed)

    def _pick(self, logits, sampling: Sampling, generator) -> int:
        return pick_token(logits, sampling.temperature, sampling.top_p, generator)

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @staticmethod
    def _step_score(token: int, logits, top_k: int | None) -> TokenScore:
        """The score of a token sampled from ``logits``: the model's own distribution, before temperature."""
        import torch

        logprobs = torch.log_softmax(logits.float(), dim=-1)
        top = []
        if top_k:
            values, indices = torch.topk(logprobs, top_k)
            top = list(zip(indices.tolist(), values.tolist()))
        return TokenScore(token, float(logprobs[token]), top)

    def score_prompts(self, prompts: list[list[int]], top_k: int) -> list[PromptScores]:
        """Each prompt token's log-probability given the tokens before it, with its ``top_k`` alternatives.

        Prompts go through the model in right-padded batches (longest first, so padding stays small),
        as many as ``SCORE_BATCH_LOGITS`` allows; the chosen tokens' values and the alternatives come
        from the same log-softmax, so a greedy token's value equals the top one exactly."""
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        per_batch = max(1, SCORE_BATCH_LOGITS // self.vocab_size)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[PromptScores | None] = [None] * len(prompts)
        with torch.inference_mode():
            start = 0
            while start < len(order):
                width = len(prompts[order[start]])
                batch = order[start:start + max(1, per_batch // width)]
                start += len(batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, :len(prompts[i])] = torch.tensor(prompts[i])
                    mask[row, :len(prompts[i])] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for row, i in enumerate(batch):
                    ids = prompts[i]
                    logprobs = torch.log_softmax(logits[row, :len(ids) - 1].float(), dim=-1)
                    chosen = logprobs.gather(1, torch.tensor(ids[1:], device=logprobs.device)[:, None])[:, 0].tolist()
                    if top_k:
                        values, indices = torch.topk(logprobs, top_k, dim=-1)
                        tops = [list(zip(t, v)) for t, v in zip(indices.tolist(), values.tolist())]
                    else:
                        tops = [[] for _ in chosen]
                    scores = [TokenScore(ids[0], None)]
                    scores += [TokenScore(t, lp, top) for t, lp, top in zip(ids[1:], chosen, tops)]
                    results[i] = PromptScores(scores, logits[row, len(ids) - 1])
        return results

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_table(self, size: int) -> TokenTable:
        if self._token_table is None or self._token_table.safe.shape[0] != size:
            self._token_table = TokenTable(self.tokenizer, size)  # once per model: a pass over the vocabulary
        return self._token_table

    def generate_structured(self, prompt_ids: list[int], plan: list[Piece], sampling: Sampling, max_new: int,
                            generator, choice: Choice) -> Iterator[str]:
        """Yield text deltas of an answer that follows ``plan`` (see :mod:`studio.serving.structured`).

        Fixed text is fed to the model as it is; at a choice the model picks each token among those
        the remaining options allow; in a free string it picks any token that needs no escaping,
        or ends the string. Every token written, fixed ones included, counts against ``max_new``;
        the free strings end early so that the rest of the plan still fits."""
        import torch

        need_after = min_tokens(plan, self.encode)
        state: dict[str, Any] = {"past": None, "logits": None}

        def feed(ids: list[int]) -> None:
            out = self._forward(ids, state["past"])
            state["past"], state["logits"] = output_cache(out), out.logits[0, -1]

        def pick(allowed) -> int:
            masked = torch.full_like(state["logits"], float("-inf"))
            masked[allowed] = state["logits"][allowed]
            return self._pick(masked, sampling, generator)

        def room() -> int:
            return max_new - choice.tokens

        with torch.inference_mode():
            feed(prompt_ids)
            for index, piece in enumerate(plan):
                if isinstance(piece, Fixed):
                    ids = self.encode(piece.text)
                    if len(ids) > room():
                        ids = ids[:room()]
                        text = self.tokenizer.decode(ids)
                        choice.tokens += len(ids)
                        choice.text += text
                        if text:
                            yield text
                        return  # finish_reason stays "length"
                    feed(ids)
                    choice.tokens += len(ids)
                    choice.text += piece.text
                    yield piece.text
                elif isinstance(piece, OneOf):
                    options = [(option, self.encode(option)) for option in piece.options]
                    depth = 0
                    while len(options) > 1 and room() > 0:
                        allowed = sorted({ids[depth] for _, ids in options if len(ids) > depth})
                        token = pick(torch.tensor(allowed, device=self.device))
                        options = [(text, ids) for text, ids in options if len(ids) > depth and ids[depth] == token]
                        feed([token])
                        choice.tokens += 1
                        depth += 1
                    if len(options) != 1 or len(options[0][1]) - depth > room():
                        return  # out of room mid-value: a truncated answer, like any other
                    text, ids = options[0]
                    if ids[depth:]:
                        feed(ids[depth:])
                    choice.tokens += len(ids) - depth
                    choice.text += text
                    yield text
                else:
                    table = self.token_table(state["logits"].shape[-1])
                    close = torch.zeros_like(table.safe)
                    close[list(self.stop_ids | set(table.quotes))] = True
                    written = ""
                    while room() > need_after[index] + 1:
                        allowed = table.safe.clone()
                        if piece.max_chars is not None:
                            allowed &= table.lengths <= piece.max_chars - len(written)
                        token = pick((allowed | close).to(self.device))
                        if close[token]:
                            break
                        feed([token])
                        choice.tokens += 1
                        written += table.texts[token]
                        choice.text += table.texts[token]
                        yield table.texts[token]
                        if piece.max_chars is not None and len(written) >= piece.max_chars:
                            break
            choice.finish_reason = "stop"

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new: int, generator,
                 choice: Choice, first_logits=None, top_k: int | None = None) -> Iterator[str]:
        """Yield text deltas for one choice; fills ``choice`` (text, finish_reason, tokens, ids) as it goes.

        A plain token loop over the KV cache rather than ``model.generate``: streaming, stop strings and
        a seeded generator per request stay in one place. ``first_logits`` (from scoring the prompt)
        spares the prompt's forward when only one token is wanted, lm-eval's case; ``top_k`` not None
        records each sampled token's score in ``choice.scores``."""
        import torch

        detok = Detokenizer(self.tokenizer, sampling.stop)
        pending, past, logits = list(prompt_ids), None, first_logits
        with torch.inference_mode():
            for _ in range(max_new):
                if logits is None:
                    out = self._forward(pending, past)
                    past, logits = output_cache(out), out.logits[0, -1]
                token = self._pick(logits, sampling, generator)
                choice.tokens += 1
                choice.ids.append(token)
                if top_k is not None:
                    choice.scores.append(self._step_score(token, logits, top_k))
                if token in self.stop_ids:
                    choice.finish_reason = "stop"
                    break
                delta = detok.add(token)
                if delta:
                    choice.text += delta
                    yield delta
                if detok.stopped:
                    choice.finish_reason, choice.cut = "stop", True
                    return
                # Without a cache yet (the first logits came from scoring), the next forward reads it all.
                pending = [token] if past is not None else pending + [token]
                logits = None
        tail = detok.finish()
        if tail:
            choice.text += tail
            yield tail


# --- HTTP -----------------------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class _ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive for the openai client's pool: every response carries a
    # Content-Length or is chunked, and every request body is read before answering.
    protocol_version = "HTTP/1.1"
    server_version = "studio-serve"
    timeout = 300  # an idle keep-alive connection frees its thread after this many seconds
    server: "ModelHTTPServer"

    # -- plumbing --

    def handle_one_request(self) -> None:
        self._status: int | None = None
        self._started = time.perf_counter()
        self._streaming = False
        super().handle_one_request()
        if self._status is not None:
            path = urlsplit(getattr(self, "path", "") or "").path  # no query string: it could carry secrets
            ms = (time.perf_counter() - self._started) * 1000
            sys.stderr.write(f"{self.client_address[0]} {self.command} {path} {self._status} {ms:.0f}ms\n")
            sys.stderr.flush()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self._status = int(code) if str(code).isdigit() else None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the one line is written above
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests and unknown methods get OpenAI's error shape too, never HTML.
        self.close_connection = True
        self._send_json(code, ApiError(code, message or HTTPStatus(code).phrase).body())

    def _send_json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json", headers)

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as exc:
            raise _ClientGone() from exc

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streaming = True

    def _event(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        payload = f"data: {text}\n\n".encode()
        self._write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")

    def _end_stream(self) -> None:
        self._event("[DONE]")
        self._write(b"0\r\n\r\n")

    def _body(self, method: str) -> dict[str, Any] | None:
        # Read whatever body came, even where none is expected, so a kept-alive connection stays in step.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413 if length > 0 else 400, "invalid or too large Content-Length")
        raw = self.rfile.read(length)
        if method != "POST":
            return None
        try:
            body = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        header = self.headers.get("Authorization") or ""
        token = header[7:] if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key")

    def _check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required", param="model")
        if name != self.server.engine.name:
            raise ApiError(404, f"The model `{name}` does not exist; this server serves `{self.server.engine.name}`",
                           param="model", code="model_not_found")

    # -- routing --

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes = {
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/tokenizer_info"): self._tokenizer_info,
            ("POST", "/tokenize"): self._tokenize,
            ("POST", "/detokenize"): self._detokenize,
        }
        try:
            body = self._body(method)
            if path not in ("/health", "/metrics"):
                self._authorize()
            handler = routes.get((method, path))
            if handler is None and method == "GET" and path.startswith("/v1/models/"):
                handler = functools.partial(self._model, path.removeprefix("/v1/models/"))
            if handler is None:
                if any(p == path for _, p in routes):
                    raise ApiError(405, f"{method} is not allowed on {path}")
                raise ApiError(404, f"no route {method} {path}", code="not_found")
            if body is None:
                handler()
            else:
                handler(body)
        except _ClientGone:
            self.close_connection = True
        except ApiError as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - one failed request must not take the server down
            traceback.print_exc(file=sys.stderr)
            self._fail(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"))

    def _fail(self, exc: ApiError) -> None:
        try:
            if exc.status == 429:
                self.server.rejected += 1
            if not self._streaming:
                self._send_json(exc.status, exc.body(), exc.headers)
            else:  # headers are out: report the error as an event and end the stream
                self._event(exc.body())
                self._end_stream()
        except (_ClientGone, OSError):
            self.close_connection = True

    # -- endpoints --

    def _model_card(self) -> dict[str, Any]:
        engine = self.server.engine
        return {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "studio"}

    def _health(self) -> None:
        self._send_json(200, {"status": "ok", "model": self.server.engine.name})

    def _metrics(self) -> None:
        self._send(200, prometheus_text(self.server).encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (a readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait(self, handles: list[Handle]) -> None:
        """Wait for generations, stopping early if the client hangs up meanwhile (the caller then
        cancels them: they leave the batch); a generation that failed raises its error."""
        for handle in handles:
            while not handle.wait_done(CLIENT_POLL_SECONDS):
                if self._client_gone():
                    raise _ClientGone()
            handle.wait()

    # vLLM's tokenizer endpoints: lm-eval's local-completions finds them and tokenizes through the
    # server (tokenizer_backend=remote, its default choice when they answer), no tokenizer folder needed.

    def _tokenizer_info(self) -> None:
        engine = self.server.engine
        tokenizer = engine.tokenizer
        self._send_json(200, {"tokenizer_class": type(tokenizer).__name__, "bos_token": tokenizer.bos_token,
                              "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
                              "unk_token": tokenizer.unk_token,
                              "chat_template": getattr(tokenizer, "chat_template", None) or None,
                              "model_max_length": engine.context_length})

    def _tokenize(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string", param="prompt")
        add_special = body.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise ApiError(400, f"add_special_tokens must be true or false, got {add_special!r}",
                           param="add_special_tokens")
        engine = self.server.engine
        with engine.lock:
            tokens = list(engine.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        self._send_json(200, {"count": len(tokens), "max_model_len": engine.context_length, "tokens": tokens})

    def _detokenize(self, body: dict[str, Any]) -> None:
        engine = self.server.engine
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(_is_token(t) and 0 <= t < engine.vocab_size for t in tokens):
            raise ApiError(400, f"tokens must be a list of token ids (0..{engine.vocab_size - 1})", param="tokens")
        with engine.lock:
            text = engine.tokenizer.decode(tokens)
        self._send_json(200, {"prompt": text})

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": [self._model_card()]})

    def _model(self, name: str) -> None:
        if name != self.server.engine.name:
            raise ApiError(404, f"The model `{name}` does not exist", param="model", code="model_not_found")
        self._send_json(200, self._model_card())

    def _chat(self, body: dict[str, Any]) -> None:
        self._check_model(body)
        _refuse_unsupported(body, ("logprobs", "top_logprobs"))
        messages = _chat_messages(body.get("messages"))
        sampling = Sampling.from_body(body)
        plan = _response_plan(body, sampling)
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        engine = self.server.engine
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        with engine.lock:
            prompt = engine.chat_prompt(messages, tools)
        max_new = engine.budget(len(prompt), sampling.max_tokens, CHAT_DEFAULT_TOKEN_CAP, "messages")
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": engine.name}
        include_usage = _include_usage(body)
        extra = {"usage": None} if include_usage else {}

        def reply(choices: list[tuple[str, str]], completion_tokens: int) -> None:
            self._send_json(200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": engine.name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish, "logprobs": None} for i, (text, finish) in enumerate(choices)],
                "usage": _usage(len(prompt), completion_tokens),
            })

        def stream(answers: Iterator[tuple[int, Iterator[str], Callable[[], tuple[str, int]]]]) -> None:
            self._start_stream()
            completion_tokens = 0
            for i, deltas, outcome in answers:
                self._event({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "finish_reason": None}], **extra})
                for delta in deltas:
                    self._event({**head, "choices": [{"index": i, "delta": {"content": delta},
                                                      "finish_reason": None}], **extra})
                finish, tokens = outcome()
                self._event({**head, "choices": [{"index": i, "delta": {}, "finish_reason": finish}], **extra})
                completion_tokens += tokens
            if include_usage:
                self._event({**head, "choices": [], "usage": _usage(len(prompt), completion_tokens)})
            self._end_stream()

        if plan is None:  # the batcher generates every choice, alongside other requests
            handles = engine.submit(prompt, sampling, max_new, sampling.n)
            try:
                if not body.get("stream"):
                    self._wait(handles)
                    reply([(h.result.text, h.result.finish_reason) for h in handles],
                          sum(h.result.tokens for h in handles))
                    return

                def deltas(handle: Handle) -> Iterator[str]:
                    return (step.text for step in handle if step.text)

                stream((i, deltas(h), lambda h=h: (h.result.finish_reason, h.result.tokens))
                       for i, h in enumerate(handles))
            finally:
                for handle in handles:  # a client gone mid-answer: its generations leave the batch
                    handle.cancel()
            return
        # Structured output steers every token: it runs alone, holding the model.
        with engine.lock:
            generator = engine.new_generator(sampling.seed)
            choices = [Choice() for _ in range(sampling.n)]
            if not body.get("stream"):
                for choice in choices:
                    for _ in engine.generate_structured(prompt, plan, sampling, max_new, generator, choice):
                        pass
                reply([(c.text, c.finish_reason) for c in choices], sum(c.tokens for c in choices))
                return
            stream((i, engine.generate_structured(prompt, plan, sampling, max_new, generator, c),
                    lambda c=c: (c.finish_reason, c.tokens)) for i, c in enumerate(choices))

    def _completions(self, body: dict[str, Any]) -> None:
        self._check_model(body)
        _refuse_unsupported(body, ("suffix",))
        engine = self.server.engine
        prompts = _prompts(body.get("prompt"), engine.vocab_size)
        echo, top_k = _echo(body), _top_logprobs(body)
        if not echo and any(_is_token(body.get(k)) and body.get(k) == 0
                            for k in ("max_tokens", "max_completion_tokens")):
            raise ApiError(400, "max_tokens 0 needs echo: true (it scores the prompt without generating)",
                           param="max_tokens")
        sampling = Sampling.from_body(body, min_tokens=0 if echo else 1)
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": completion_id, "object": "text_completion", "created": created, "model": engine.name}
        include_usage = _include_usage(body)
        with engine.lock:
            encoded = [engine.text_prompt(p) if isinstance(p, str) else list(p) for p in prompts]
            # The echoed prompts, as sent (strings) or decoded (token ids); scored when logprobs are asked for.
            echoed = [p if isinstance(p, str) else engine.decode(p) for p in prompts] if echo else [None] * len(prompts)
        for i, ids in enumerate(encoded):
            if not ids:
                raise ApiError(400, f"prompt {i} is empty: it has no tokens", param="prompt")
        budgets = [engine.budget(len(ids), sampling.max_tokens, COMPLETIONS_DEFAULT_TOKENS, "prompt")
                   for ids in encoded]
        prompt_tokens = sum(len(ids) for ids in encoded)
        # Choice k belongs to prompt k // n, as in OpenAI's API.
        jobs = [(k, budget) for k, budget in enumerate(budgets) for _ in range(sampling.n)]

        def answer(pieces: Callable[[int], Iterator[tuple[str, dict | None]]],
                   outcome: Callable[[int], tuple[str, int]]) -> None:
            """Send every choice: ``pieces(i)`` its (text, logprobs) parts, then ``outcome(i)`` its
            finish reason and token count."""
            if not body.get("stream"):
                answers, completion_tokens = [], 0
                for i in range(len(jobs)):
                    parts = list(pieces(i))
                    logprobs = join_logprobs([lp for _, lp in parts if lp is not None]) if top_k is not None else None
                    finish, tokens = outcome(i)
                    answers.append({"index": i, "text": "".join(text for text, _ in parts),
                                    "finish_reason": finish, "logprobs": logprobs})
                    completion_tokens += tokens
                self._send_json(200, {**head, "choices": answers, "usage": _usage(prompt_tokens, completion_tokens)})
                return
            self._start_stream()
            completion_tokens = 0
            for i in range(len(jobs)):
                for text, logprobs in pieces(i):
                    self._event({**head, "choices": [{"index": i, "text": text, "finish_reason": None,
                                                      "logprobs": logprobs}]})
                finish, tokens = outcome(i)
                self._event({**head, "choices": [{"index": i, "text": "", "finish_reason": finish,
                                                  "logprobs": None}]})
                completion_tokens += tokens
            if include_usage:
                self._event({**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
            self._end_stream()

        if top_k is None and all(budgets):  # plain generation: the batcher runs every choice
            handles = engine.submit_many([(encoded[k], budget) for k, budget in jobs], sampling)
            try:
                if not body.get("stream"):
                    self._wait(handles)

                def batched_pieces(i: int) -> Iterator[tuple[str, dict | None]]:
                    k = jobs[i][0]
                    if echoed[k] is not None:
                        yield echoed[k], None
                    yield from ((step.text, None) for step in handles[i] if step.text)

                answer(batched_pieces, lambda i: (handles[i].result.finish_reason, handles[i].result.tokens))
            finally:
                for handle in handles:  # a client gone mid-answer: its generations leave the batch
                    handle.cancel()
            return
        # Log-probabilities (and echo-only scoring) take the model's own path, holding it meanwhile.
        with engine.lock:
            generator = engine.new_generator(sampling.seed)
            scored = engine.score_prompts(encoded, top_k) if echo and top_k is not None else [None] * len(encoded)
            choices = [Choice() for _ in jobs]

            def pieces(i: int) -> Iterator[tuple[str, dict | None]]:
                k, budget = jobs[i]
                return self._completion_pieces(encoded[k], echoed[k], scored[k], sampling, budget, generator,
                                               choices[i], top_k)

            answer(pieces, lambda i: (choices[i].finish_reason, choices[i].tokens))

    def _completion_pieces(self, prompt_ids: list[int], echoed: str | None, prompt: PromptScores | None,
                           sampling: Sampling, budget: int, generator, choice: Choice,
                           top_k: int | None) -> Iterator[tuple[str, dict | None]]:
        """One completion choice as (text, logprobs) pieces: the echoed prompt (``echoed`` not None), then
        each text delta of the generation, and last, where tokens are left, their logprobs with no text.

        A piece carries the logprobs (``top_k`` not None) of the tokens whose text starts in it, so a
        stream's chunks add up to the whole answer; a token whose text is held back (a possible stop
        string, an unfinished character) waits for the piece that shows it, and tokens whose text a
        stop string cut off are never reported. An end-of-text token, which has no text, comes last."""
        engine = self.server.engine
        base = 0
        if echoed is not None:
            logprobs = None
            if prompt is not None:
                logprobs = legacy_logprobs(engine.token_text, prompt.scores, char_offsets(engine.decode, prompt_ids))
            yield echoed, logprobs
            base = len(echoed)
        offsets = TextOffsets(engine.decode, prompt_ids, base)
        sent = 0

        def settled() -> list[int]:  # the offsets of every token sampled so far
            return offsets.extend(choice.ids[len(offsets.offsets):])

        def report(upto: int) -> dict:
            nonlocal sent
            part = legacy_logprobs(engine.token_text, choice.scores[sent:upto], settled()[sent:upto])
            sent = upto
            return part

        def shown() -> int:  # tokens whose text starts before the end of the text given out so far
            return bisect.bisect_left(settled(), base + len(choice.text))  # offsets never decrease

        first = prompt.next_logits if prompt is not None else None
        for delta in engine.generate(prompt_ids, sampling, budget, generator, choice, first_logits=first, top_k=top_k):
            yield delta, report(shown()) if top_k is not None else None
        if top_k is not None:
            upto = shown() if choice.cut else len(choice.ids)
            if upto > sent:
                yield "", report(upto)


class ModelHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a burst of clients connects at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: Engine, api_key: str | None = None):
        if ":" in address[0]:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        self.engine, self.api_key = engine, api_key
        self.rejected = 0  # requests answered 429
        super().__init__(address, Handler)

    def server_close(self) -> None:
        super().server_close()
        self.engine.close()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def served_name(model_ref: str) -> str:
    """The name clients send as ``model``: a local folder's name, otherwise the reference itself."""
    path = Path(str(model_ref)).expanduser()
    return path.resolve().name if path.is_dir() else str(model_ref)


def prometheus_text(server: ModelHTTPServer) -> str:
    """The server's gauges and counters in Prometheus' text format."""
    stats = server.engine.batcher.stats()
    metrics = [
        ("studio_queue_depth", "gauge", "generations waiting for a batch slot", stats["queue_depth"]),
        ("studio_batch_size", "gauge", "generations decoded together in the current step", stats["batch_size"]),
        ("studio_max_batch_size", "gauge", "most generations decoded together", stats["max_batch"]),
        ("studio_max_queued", "gauge", "most generations waiting before requests are refused", stats["max_queued"]),
        ("studio_tokens_per_second", "gauge", "generated tokens per second over the last 10 s",
         round(stats["tokens_per_second"], 3)),
        ("studio_generated_tokens_total", "counter", "tokens generated", stats["generated_tokens_total"]),
        ("studio_generations_total", "counter", "generations submitted (one per choice)", stats["requests_total"]),
        ("studio_cancelled_generations_total", "counter", "generations whose client left before the end",
         stats["cancelled_total"]),
        ("studio_rejected_requests_total", "counter", "requests answered 429 (queue full)", server.rejected),
    ]
    lines = []
    for name, kind, help_text, value in metrics:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


def default_threads() -> int:
    """Torch's CPU threads for serving: half the cores, at most 4. More threads than free cores make
    intra-op threads wait on each other (on a busy 2-core machine one scoring batch took 2.2 s with
    2 threads and 0.1 s with 1), and a small model's matrices gain little beyond a few."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def make_server(model, tokenizer, name: str, host: str = "127.0.0.1", port: int = 0,
                api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                max_queued: int = DEFAULT_MAX_QUEUED) -> ModelHTTPServer:
    """A bound, not yet serving, server for an already loaded model (tests and embedding use this)."""
    engine = Engine(model, tokenizer, name, max_batch=max_batch, max_queued=max_queued)
    return ModelHTTPServer((host, port), engine, api_key=api_key)


def _stop_when_stdin_closes(server: ModelHTTPServer) -> None:
    # The parent process holds our stdin; when it exits (even killed), stdin reaches EOF.
    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        server.shutdown()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve(model_ref: str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          trust_remote_code: bool = False, api_key: str | None = None,
          ready: Callable[[str, str], None] | None = None, stop_on_stdin_eof: bool = False,
          emit: Callable[[dict[str, Any]], None] | None = None, threads: int | None = None,
          max_batch: int = DEFAULT_MAX_BATCH, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
    """Load ``model_ref`` and serve it until interrupted. ``ready(base_url, name)`` is called once
    the socket listens (with port 0, base_url carries the port the system picked). The embedded
    model is built on first use; ``emit`` gets that build's ``model_build`` events. ``threads``
    sets torch's CPU threads (default: :func:`default_threads`)."""
    import torch

    from studio.models.embedded import ensure_embedded_model
    from studio.models.loading import embedded_size, load_model

    size = embedded_size(model_ref)
    if size is not None:
        ensure_embedded_model(size, emit=emit)
    torch.set_num_threads(threads or default_threads())
    model, tokenizer = load_model(model_ref, trust_remote_code=trust_remote_code)
    server = make_server(model, tokenizer, name or served_name(model_ref), host, port, api_key,
                         max_batch=max_batch, max_queued=max_queued)
    if stop_on_stdin_eof:
        _stop_when_stdin_closes(server)
    try:
        if ready is not None:
            ready(server.base_url, server.engine.name)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
