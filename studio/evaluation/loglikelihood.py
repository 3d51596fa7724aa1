"""Log-likelihoods of continuations, tokenised exactly as lm-evaluation-harness 0.4.13's HF back-end does.

    score_requests(model, tokenizer, [(context, continuation), ...], batch_size=16)
        -> [(sum of log P(continuation | context), whether every continuation token is the argmax), ...]

Tokenisation (``RequestEncoder``) follows lm-eval so numbers agree with it: trailing spaces of the context
move to the continuation; the continuation's tokens are ``encode(context + continuation)`` past
``len(encode(context))``; an empty context becomes the prefix token (BOS, else EOS); the tokenizer's own
special-token rule applies unless the text already starts with that token; a pair longer than the
model's window keeps its last ``max_length + 1`` tokens.

``score_requests_plain`` is the straightforward computation (one forward per pair, right padded, like
lm-eval). It is the reference the tests hold the fast path to, and the path for pairs the fast one
does not take.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

Progress = Callable[[int, int], None]
Request = tuple[str, str]
Result = tuple[float, bool]
# lm-eval's fallback window when neither the config nor the tokenizer names one.
DEFAULT_MAX_LENGTH = 2048
# transformers' "no limit" value of tokenizer.model_max_length.
TOKENIZER_INFINITY = 1000000000000000019884624838656
WINDOW_CONFIG_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")


class RequestEncoder:
    """(context, continuation) strings -> (context tokens, continuation tokens), lm-eval's rules."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id = bos if bos is not None else eos
        self.prefix_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        if add_special_tokens is None:
            # A text that already starts with BOS gets no second one.
            if self.prefix_text and text.startswith(self.prefix_text):
                return self.tokenizer.encode(text, add_special_tokens=False)
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            tokens = self.encode(continuation, add_special_tokens=False)
            if tokens and tokens[0] == self.prefix_token_id:
                return tokens[:1], tokens[1:]
            return [self.prefix_token_id], tokens
        stripped = context.rstrip()
        if len(stripped) < len(context):
            continuation = context[len(stripped):] + continuation
            context = stripped
        whole = self.encode(context + continuation)
        context_tokens = self.encode(context)
        return context_tokens, whole[len(context_tokens):]


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The window lm-eval uses: the config's positions, else the tokenizer's limit, else 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in WINDOW_CONFIG_ATTRS:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def encode_requests(tokenizer: Any, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
    encoder = RequestEncoder(tokenizer)
    return [encoder.pair(context, continuation) for context, continuation in requests]


def _device(model: Any):
    return next(model.parameters()).device


def score_tokens_plain(model: Any, pairs: Sequence[tuple[list[int], list[int]]], max_length: int,
                       batch_size: int = 16, progress: Progress | None = None) -> list[Result]:
    """One forward per pair over ``(context + continuation)[-(max_length + 1):][:-1]``, right padded."""
    import torch

    device = _device(model)
    results: list[Result | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    done = 0
    with torch.inference_mode():
        for start in range(0, len(order), max(1, batch_size)):
            chunk = [i for i in order[start:start + max(1, batch_size)]]
            rows = []
            for i in chunk:
                context, continuation = pairs[i]
                if not continuation:
                    results[i] = (0.0, True)
                    continue
                rows.append((i, (context + continuation)[-(max_length + 1):][:-1], continuation))
            if rows:
                width = max(len(tokens) for _, tokens, _ in rows)
                batch = torch.zeros((len(rows), width), dtype=torch.long, device=device)
                for r, (_, tokens, _) in enumerate(rows):
                    batch[r, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                logits = model(batch).logits
                for r, (i, tokens, continuation) in enumerate(rows):
                    n = len(continuation)
                    picked = torch.log_softmax(logits[r, len(tokens) - n:len(tokens)].float(), dim=-1)
                    target = torch.tensor(continuation, dtype=torch.long, device=device)
                    logprob = picked.gather(1, target[:, None]).sum().item()
                    greedy = bool((picked.argmax(dim=-1) == target).all().item())
                    results[i] = (float(logprob), greedy)
            done += len(chunk)
            if progress is not None:
                progress(done, len(pairs))
    return results  # type: ignore[return-value]


def score_requests_plain(model: Any, tokenizer: Any, requests: Sequence[Request], batch_size: int = 16,
                         progress: Progress | None = None) -> list[Result]:
    pairs = encode_requests(tokenizer, requests)
    return score_tokens_plain(model, pairs, model_max_length(model, tokenizer), batch_size, progress)


def score_requests(model: Any, tokenizer: Any, requests: Sequence[Request], batch_size: int = 16,
                   progress: Progress | None = None) -> list[Result]:
    """(log-likelihood, is_greedy) of each (context, continuation), in the order given."""
    return score_requests_plain(model, tokenizer, requests, batch_size=batch_size, progress=progress)
