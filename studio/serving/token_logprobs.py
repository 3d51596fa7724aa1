"""OpenAI's legacy ``logprobs`` object of ``/v1/completions``, built from scored tokens.

    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [...], "text_offset": [...]}

One entry per token: its text, its log-probability given the tokens before it (null for a prompt's
first token: nothing precedes it), a ``{token text: logprob}`` map of the ``logprobs`` most likely
tokens at that position plus the token itself (as OpenAI's API does, so up to ``logprobs + 1``
entries), and the character offset of the token in the choice's text. lm-eval's
``local-completions`` reads ``token_logprobs`` and ``top_logprobs`` of the echoed prompt: the sum of
a continuation's entries is its log-likelihood, and it is greedy when each entry equals the largest
value of its map, so both come from the same numbers, compared exactly.

No torch here: the engine hands over plain numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

MAX_LOGPROBS = 20  # as many alternatives per token as OpenAI's chat API and vLLM allow
FLOOR_LOGPROB = -9999.0  # JSON has no -Infinity: an impossible token (masked logit) reads as this, like vLLM
OFFSET_WINDOW = 8  # tokens of left context when decoding one token's text: covers any UTF-8 character split

Decode = Callable[[list[int]], str]


@dataclass
class TokenScore:
    token: int
    logprob: float | None  # None: the first token of a prompt, which nothing predicts
    top: list[tuple[int, float]] = field(default_factory=list)  # most likely first; empty where logprob is None


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR_LOGPROB


class TextOffsets:
    """Character offsets of tokens that come one after another, after ``context`` tokens, counted from ``base``.

    The offset of a token is the length of the text settled before it, measured on a short window of
    left context (a whole-prefix decode per token would cost quadratic time on long prompts). A token
    that ends inside a UTF-8 character adds no settled text; the token completing the character does,
    so every byte of a character points at the character's start."""

    def __init__(self, decode: Decode, context: list[int], base: int = 0):
        self.decode = decode
        self.ids = list(context[-OFFSET_WINDOW:])
        self.skip = len(self.ids)
        self.position = base
        self.offsets: list[int] = []

    def extend(self, tokens: list[int]) -> list[int]:
        """Add ``tokens``; return every offset so far."""
        for token in tokens:
            low = max(0, len(self.ids) - OFFSET_WINDOW)
            before = self.decode(self.ids[low:]).rstrip("\ufffd")
            after = self.decode(self.ids[low:] + [token]).rstrip("\ufffd")
            self.offsets.append(self.position)
            self.position += max(0, len(after) - len(before))
            self.ids.append(token)
        return self.offsets


def char_offsets(decode: Decode, ids: list[int], start: int = 0, base: int = 0) -> list[int]:
    """The character offset, counted from ``base``, of each token of ``ids[start:]`` in the text they decode to."""
    return TextOffsets(decode, ids[:start], base).extend(ids[start:])


def join_logprobs(parts: list[dict]) -> dict:
    """One logprobs object from the objects of consecutive pieces of a text (a stream's chunks)."""
    keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    return {key: [value for part in parts for value in part[key]] for key in keys}


def legacy_logprobs(token_text: Callable[[int], str], scores: list[TokenScore], offsets: list[int]) -> dict:
    """The ``logprobs`` object of one completion choice (or of one piece of a streamed one)."""
    if len(scores) != len(offsets):
        raise ValueError(f"{len(scores)} token scores but {len(offsets)} offsets")
    top_logprobs: list[dict[str, float] | None] = []
    for score in scores:
        if score.logprob is None:
            top_logprobs.append(None)
            continue
        # Two tokens may decode to the same text; the more likely one keeps the key.
        alternatives: dict[str, float] = {}
        for token, logprob in score.top:
            alternatives.setdefault(token_text(token), _finite(logprob))
        alternatives.setdefault(token_text(score.token), _finite(score.logprob))
        top_logprobs.append(alternatives)
    return {
        "tokens": [token_text(s.token) for s in scores],
        "token_logprobs": [None if s.logprob is None else _finite(s.logprob) for s in scores],
        "top_logprobs": top_logprobs,
        "text_offset": list(offsets),
    }
