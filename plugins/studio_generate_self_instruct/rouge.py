"""ROUGE-L F-measure, as Self-Instruct uses it to keep the task pool diverse.

Tokens are lower-cased runs of ``[a-z0-9]`` (what the ``rouge_score`` package does without a
stemmer). With precision ``L/m`` and recall ``L/n`` for an LCS of length ``L`` between token lists
of lengths ``m`` and ``n``, the F-measure (beta = 1) is ``2L / (m + n)``.

A new instruction is compared with every instruction in the pool. :class:`RougePool` keeps that
cheap for pools of thousands: the multiset overlap of two token lists bounds their LCS from above,
an inverted index gives the overlaps of all pool entries sharing a token in one pass, and exact
LCS lengths (bit-parallel, one big-integer step per token) are computed best bound first until no
remaining bound can beat the best exact score.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _match_masks(tokens: Sequence[object]) -> dict[object, int]:
    masks: dict[object, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


def _lcs_with_masks(masks: dict[object, int], m: int, other: Sequence[object]) -> int:
    # Bit-parallel LCS (Allison-Dix / Crochemore et al.): bit i of v is 0 where the LCS grows at
    # position i of the first sequence; the LCS length is the number of zero bits.
    full = (1 << m) - 1
    v = full
    for token in other:
        u = v & masks.get(token, 0)
        if u:
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if not a or not b:
        return 0
    return _lcs_with_masks(_match_masks(a), len(a), b)


def rouge_l(candidate: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """ROUGE-L F-measure of two texts (or token lists): 1.0 identical, 0.0 nothing in common."""
    a = rouge_tokens(candidate) if isinstance(candidate, str) else list(candidate)
    b = rouge_tokens(reference) if isinstance(reference, str) else list(reference)
    if not a or not b:
        return 0.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))


class RougePool:
    """Instructions to compare new ones against, with the index that makes it fast."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._tokens: list[list[int]] = []
        self._ids: dict[str, int] = {}
        self._postings: dict[int, list[tuple[int, int]]] = {}  # token id -> [(entry, count)]

    def __len__(self) -> int:
        return len(self.texts)

    def _encode(self, text: str, grow: bool) -> list[int]:
        out = []
        for token in rouge_tokens(text):
            tid = self._ids.get(token)
            if tid is None:
                if not grow:
                    tid = -1 - len(out)  # unseen in the pool: matches nothing there
                else:
                    tid = self._ids[token] = len(self._ids)
            out.append(tid)
        return out

    def add(self, text: str) -> int:
        index = len(self.texts)
        tokens = self._encode(text, grow=True)
        self.texts.append(text)
        self._tokens.append(tokens)
        for tid, count in Counter(tokens).items():
            self._postings.setdefault(tid, []).append((index, count))
        return index

    def most_similar(self, text: str) -> tuple[float, int | None]:
        """``(score, entry index)`` of the pool entry with the highest ROUGE-L F against ``text``
        (``(0.0, None)`` when nothing shares a token)."""
        tokens = self._encode(text, grow=False)
        m = len(tokens)
        if m == 0:
            return 0.0, None
        overlap: dict[int, int] = {}
        for tid, count in Counter(tokens).items():
            for entry, entry_count in self._postings.get(tid, ()):
                overlap[entry] = overlap.get(entry, 0) + min(count, entry_count)
        if not overlap:
            return 0.0, None
        bounds = sorted(((2.0 * shared / (m + len(self._tokens[entry])), entry) for entry, shared in overlap.items()),
                        key=lambda pair: (-pair[0], pair[1]))
        masks = _match_masks(tokens)
        best, best_entry = 0.0, None
        for bound, entry in bounds:
            if bound <= best:
                break  # no entry left can beat the best exact score
            other = self._tokens[entry]
            score = 2.0 * _lcs_with_masks(masks, m, other) / (m + len(other))
            if score > best:
                best, best_entry = score, entry
        return best, best_entry
