"""Batched text generation for generative tasks, from a local model or an OpenAI-compatible endpoint.

    generate_texts(model, tokenizer, prompts, until=["\\n\\n"], max_new_tokens=256)   # [[text] * n, ...]
    chat_prompt(tokenizer, [{"role": "user", "content": "Hi"}])                     # the templated prompt
    endpoint_generate(endpoint_model, prompts, until=[...], max_new_tokens=256)     # /v1/completions
    endpoint_chat(endpoint_model, conversations, max_new_tokens=512)                # /v1/chat/completions

Local generation follows lm-evaluation-harness's HF back-end so greedy outputs match it token for
token: the prompt is encoded with the tokenizer's own special tokens (none added again when it already
starts with BOS), left-truncated to ``max_length - max_new_tokens``, the batch left-padded with
position ids counted from each row's first real token, and the text decoded without special tokens,
then cut at the first stop string. Batches are sorted longest first. A row ends at an end-of-sequence
id or a stop string; the batch ends when every row has, and finished rows leave it (their KV cache
rows are dropped) so long stragglers don't carry dead rows. Sampling is seeded per (seed, prompt,
sample index), so a prompt's samples don't depend on which batch or chunk it was in.

Endpoint generation goes through the studio's request engine: the workspace's journal answers a
repeated request for free (a resumed evaluation pays nothing twice), and the provider's rate
limits, concurrency and retries apply.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

from studio.generation.journal import Journal
from studio.serving.model_server import END_OF_TURN_TOKENS, MAX_CHOICES, MAX_STOP_STRINGS

Progress = Callable[[int, int], None]
# lm-eval's HF back-end: what a model without a length in its config or tokenizer gets.
DEFAULT_MAX_LENGTH = 2048
# tokenizers report "no limit" as a huge number.
TOKENIZER_NO_LIMIT = 10 ** 20


# --- text helpers -----------------------------------------------------------------------------


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string (empty strings are ignored)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def chat_prompt(tokenizer, conversation: list[dict[str, str]]) -> str:
    """The conversation rendered by the tokenizer's chat template, ending with the assistant's turn opening."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template, so it can't answer conversations")
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def max_length(model, tokenizer) -> int:
    """The model's context length, looked up as lm-eval does: config, then tokenizer, then 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < TOKENIZER_NO_LIMIT:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids as lm-eval's HF back-end encodes a causal model's context: with the tokenizer's
    default special tokens, unless the text already starts with the BOS token."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def stop_token_ids(model, tokenizer, chat: bool = False) -> set[int]:
    """End-of-sequence ids: the generation config's, the model config's and the tokenizer's; with
    ``chat`` also the template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ...)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if chat:
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def sample_seed(seed: int, prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


# --- local generation -------------------------------------------------------------------------


def generate_texts(model, tokenizer, prompts: Sequence[str], *, until: Sequence[str], max_new_tokens: int,
                   batch_size: int = 16, n: int = 1, temperature: float = 0.0, seed: int = 0,
                   progress: Progress | None = None, chat: bool = False) -> list[list[str]]:
    """``n`` completions for each prompt (greedy when ``temperature`` is 0: one run, repeated ``n``
    times), each cut before the first of ``until``."""
    import torch

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    until = [s for s in until if s]
    limit = max_length(model, tokenizer)
    room = limit - max_new_tokens
    if room <= 0:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be less than the model's context ({limit})")
    encoded = [encode_prompt(tokenizer, p)[-room:] for p in prompts]
    samples = n if temperature > 0 else 1
    # One row per (prompt, sample); longest first (lm-eval's order: length, then text).
    rows = [(i, j) for i in range(len(prompts)) for j in range(samples)]
    rows.sort(key=lambda r: (-len(encoded[r[0]]), prompts[r[0]]))
    stops = stop_token_ids(model, tokenizer, chat=chat)
    results: dict[tuple[int, int], str] = {}
    total, done = len(rows), 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, total, max(1, batch_size)):
                batch = rows[start:start + max(1, batch_size)]
                generators = None
                if temperature > 0:
                    generators = [torch.Generator(device="cpu").manual_seed(sample_seed(seed, prompts[i], j))
                                  for i, j in batch]
                texts = _generate_batch(model, tokenizer, [encoded[i] for i, _ in batch], until, max_new_tokens,
                                        stops, temperature, generators)
                for row, text in zip(batch, texts):
                    results[row] = text
                done += len(batch)
                if progress is not None:
                    progress(done, total)
    finally:
        if was_training:
            model.train()
    if samples == 1:
        return [[results[(i, 0)]] * n for i in range(len(prompts))]
    return [[results[(i, j)] for j in range(n)] for i in range(len(prompts))]


def _cache_argument(model) -> str:
    """The name the model's forward takes its KV cache under (transformers 5 renamed it)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _generate_batch(model, tokenizer, encoded: list[list[int]], until: list[str], max_new_tokens: int,
                    stops: set[int], temperature: float, generators) -> list[str]:
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops), 0)
    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # Like transformers' generate: an all-ones mask is left out (the model's own causal mask is used).
    padded = bool((mask == 0).any())
    cache = DynamicCache(config=model.config)
    cache_arg = _cache_argument(model)
    keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    live = list(range(len(encoded)))  # batch row -> index into ``encoded``
    tokens: list[list[int]] = [[] for _ in encoded]
    finished = [False] * len(encoded)
    step_input = input_ids
    for _ in range(max_new_tokens):
        kwargs = {cache_arg: cache, "use_cache": True, "position_ids": positions}
        if padded:
            kwargs["attention_mask"] = mask
        if keep_logits:
            kwargs["logits_to_keep"] = 1
        logits = model(input_ids=step_input, **kwargs).logits[:, -1].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            picked = [int(torch.multinomial(probs[b].cpu(), 1, generator=generators[r])) for b, r in enumerate(live)]
        else:
            picked = logits.argmax(dim=-1).tolist()
        keep: list[int] = []
        for b, (row, token) in enumerate(zip(live, picked)):
            if token in stops:
                finished[row] = True
                continue
            tokens[row].append(token)
            if until and any(s in tokenizer.decode(tokens[row], skip_special_tokens=True) for s in until):
                finished[row] = True
                continue
            keep.append(b)
        if not keep:
            break
        next_tokens = torch.tensor([[picked[b]] for b in keep], device=device)
        if len(keep) < len(live):
            # Drop finished rows from the batch and its cache: only live rows cost compute.
            index = torch.tensor(keep, device=device)
            cache.reorder_cache(index)
            mask = mask.index_select(0, index)
            positions = positions.index_select(0, index)
            live = [live[b] for b in keep]
        step_input = next_tokens
        positions = positions[:, -1:] + 1
        if padded:
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=-1)
    return [cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), until) for ids in tokens]


# --- endpoints --------------------------------------------------------------------------------


def _journal_path(endpoint_model, stack: ExitStack) -> Path:
    workspace = getattr(endpoint_model, "workspace", None)
    if workspace is not None and getattr(workspace, "root", None):
        from studio.generation.runner import generation_dir

        return generation_dir(workspace) / "journal.sqlite"
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="studio-eval-journal-"))) / "journal.sqlite"


def _run_requests(endpoint_model, requests: list[tuple[str, dict[str, Any], int]],
                  progress: Progress | None, total_items: int, item_of: list[int]) -> list[list[str]]:
    """Send ``(endpoint, payload, sample index)`` requests through the engine, all in flight at once
    under the provider's limits; returns each request's texts in order."""
    from studio.generation.engine import Engine
    from studio.generation.generator_base import GenerationFailed

    provider = endpoint_model.provider
    with ExitStack() as stack:
        journal = Journal(_journal_path(endpoint_model, stack))
        stack.callback(journal.close)
        base_url, model_name = provider.base_url, provider.model
        if provider.embedded:
            from studio.serving.launch import start_background_server

            server = stack.enter_context(start_background_server(provider.serve_model))
            base_url, model_name = server.base_url, server.model_name
        # retry_failed: a request that failed in an earlier, interrupted evaluation is asked again.
        engine = Engine(provider, journal, run_id=f"eval-{uuid.uuid4().hex[:8]}", retry_failed=True,
                        base_url=base_url, model=model_name)
        remaining = [sum(1 for i in item_of if i == item) for item in range(total_items)]
        finished = [0]

        async def one(index: int) -> list[str]:
            endpoint, payload, sample = requests[index]
            completion = await engine.request(endpoint, payload, sample)
            item = item_of[index]
            remaining[item] -= 1
            if remaining[item] == 0:
                finished[0] += 1
                if progress is not None:
                    progress(finished[0], total_items)
            return completion.texts

        async def main() -> list[list[str]]:
            try:
                return await asyncio.gather(*(one(i) for i in range(len(requests))))
            finally:
                await engine.aclose()

        try:
            return asyncio.run(main())
        except GenerationFailed as exc:
            raise RuntimeError(f"the endpoint {base_url} failed a request: {exc}") from exc


def endpoint_generate(endpoint_model, prompts: Sequence[str], *, until: Sequence[str], max_new_tokens: int,
                      n: int = 1, temperature: float = 0.0, seed: int = 0,
                      progress: Progress | None = None) -> list[list[str]]:
    """``n`` completions per prompt from ``/v1/completions``. The server gets the first four stop
    strings (the API's limit); every one of them is also cut here, so all servers agree."""
    until = [s for s in until if s]
    samples = n if temperature > 0 else 1
    requests: list[tuple[str, dict[str, Any], int]] = []
    item_of: list[int] = []
    for index, prompt in enumerate(prompts):
        # n above the API's per-request limit goes out as several requests, each with its own seed.
        for chunk, first in enumerate(range(0, samples, MAX_CHOICES)):
            payload = {"prompt": prompt, "max_tokens": max_new_tokens, "temperature": temperature,
                       "n": min(MAX_CHOICES, samples - first), "seed": seed + chunk,
                       "stop": until[:MAX_STOP_STRINGS] or None}
            requests.append(("completions", payload, chunk))
            item_of.append(index)
    answers = _run_requests(endpoint_model, requests, progress, len(prompts), item_of)
    out: list[list[str]] = [[] for _ in prompts]
    for index, texts in zip(item_of, answers):
        out[index].extend(cut_at_stop(t, until) for t in texts)
    for index, texts in enumerate(out):
        if len(texts) < samples:
            raise RuntimeError(f"the endpoint returned {len(texts)} completions for prompt {index}, "
                               f"{samples} were asked for")
        out[index] = texts[:samples] * (n if samples == 1 else 1)
    return out


def endpoint_chat(endpoint_model, conversations: Sequence[list[dict[str, str]]], *, max_new_tokens: int,
                  temperature: float = 0.0, seed: int = 0, progress: Progress | None = None) -> list[str]:
    """The next assistant message for each conversation, from ``/v1/chat/completions``."""
    requests = [("chat", {"messages": list(conversation), "max_tokens": max_new_tokens,
                          "temperature": temperature, "seed": seed}, 0) for conversation in conversations]
    answers = _run_requests(endpoint_model, requests, progress, len(requests), list(range(len(requests))))
    return [texts[0] for texts in answers]
