"""repetition_filter: Gopher's repetition rules (Rae et al. 2021, table A1) on each answer.

* duplicate lines / paragraphs: share of lines (paragraphs) that repeat an earlier one, and share
  of characters in them;
* top n-gram (n = 2, 3, 4): characters covered by the most frequent *repeated* n-gram over all
  characters (an n-gram seen once is no repetition; Gopher's definition counts it, which removes
  every short text);
* duplicate n-grams (n = 5..10): characters in n-grams that repeat an earlier one (non-overlapping),
  over all characters.

Line and paragraph thresholds are Gopher's. Gopher's n-gram thresholds (top 0.20/0.18/0.16, duplicate
0.15..0.10) were set for web pages; on instruction data (answers are structured: "Step 1: ... Step 2:
...", GSM8K's "The total charge for the ...") they removed 1-7% of clean answers in real Alpaca, LIMA,
GSM8K, hh-rlhf and LLaMA-Factory files, so the defaults here are twice as lenient (about 0.3% of those
answers), while a sentence repeated a few times still scores 0.6 and more. Set Gopher's values in
the config to get Gopher's behaviour. The n-gram rules need ``min_words`` words: on a two-sentence
answer one repeated name already covers a large share of the characters.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.curation.text import TextPart
from studio_curate_filters.common import (
    build_result, first_failing_side, strip_code,
)

PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
WORD = re.compile(r"\w+")
HAS_WORD = re.compile(r"\w")


def _duplicates(elements: list[str]) -> tuple[int, int]:
    """(how many elements repeat an earlier one, characters in them)."""
    seen: set[str] = set()
    count = chars = 0
    for element in elements:
        if element in seen:
            count += 1
            chars += len(element)
        else:
            seen.add(element)
    return count, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    counts = Counter(zip(*(words[i:] for i in range(n))))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0
    return (sum(map(len, gram)) + n - 1) * count


def _duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram; a repeat is skipped whole, so
    overlapping repeats are not counted twice (as Gopher/datatrove do)."""
    grams = list(zip(*(words[i:] for i in range(n))))
    if len(set(grams)) == len(grams):  # the common case: nothing repeats, no Python loop
        return 0
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i < len(grams):
        gram = grams[i]
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def _repeat_bound(words: list[str], n: int) -> int:
    """An upper bound of :func:`_duplicate_ngram_chars` for this ``n`` and every longer one:
    characters of every non-first occurrence of every repeated n-gram (a repeated longer n-gram is
    made of repeated n-grams). Counting is in C; Python only visits the repeated grams."""
    counts = Counter(zip(*(words[i:] for i in range(n))))
    if len(counts) == len(words) - n + 1:
        return 0
    return sum((c - 1) * sum(map(len, g)) for g, c in counts.items() if c > 1)


def repetition(text: str, cfg: dict[str, Any]) -> tuple[str, str, float, float] | None:
    """(reason, rule, value, threshold) of the first rule the text breaks."""
    if cfg["code_aware"]:
        text = strip_code(text)
    text = text.strip()
    size = len(text)
    if not size:
        return None
    # Lines without a word character ("$$", "---", "|---|") are markup that repeats by design.
    lines = [line.strip() for line in text.split("\n") if HAS_WORD.search(line)]
    if len(lines) > 1:
        count, chars = _duplicates(lines)
        if cfg["dup_line_frac"] is not None and count / len(lines) > cfg["dup_line_frac"]:
            return "repeated lines", "dup_line_frac", count / len(lines), cfg["dup_line_frac"]
        if cfg["dup_line_char_frac"] is not None and chars / size > cfg["dup_line_char_frac"]:
            return "repeated lines", "dup_line_char_frac", chars / size, cfg["dup_line_char_frac"]
    paragraphs = [p.strip() for p in PARAGRAPH_SPLIT.split(text) if p.strip()]
    if len(paragraphs) > 1:
        count, chars = _duplicates(paragraphs)
        if cfg["dup_para_frac"] is not None and count / len(paragraphs) > cfg["dup_para_frac"]:
            return "repeated paragraphs", "dup_para_frac", count / len(paragraphs), cfg["dup_para_frac"]
        if cfg["dup_para_char_frac"] is not None and chars / size > cfg["dup_para_char_frac"]:
            return "repeated paragraphs", "dup_para_char_frac", chars / size, cfg["dup_para_char_frac"]
    words = WORD.findall(text.lower())
    if len(words) < cfg["min_words"]:
        return None
    for n, limit in sorted(cfg["top_ngram_frac"].items()):
        share = _top_ngram_chars(words, int(n)) / size
        if share > limit:
            return "repeated n-gram", f"top_{n}gram_frac", share, limit
    dup = sorted((int(n), limit) for n, limit in cfg["dup_ngram_frac"].items())
    if dup and _repeat_bound(words, dup[0][0]) <= min(limit for _, limit in dup) * size:
        return None  # even counting every repeat of the shortest n-gram, no rule can fire
    for n, limit in dup:
        chars = _duplicate_ngram_chars(words, int(n))
        if chars == 0:
            break  # no repeated n-gram means no repeated longer one either
        if chars / size > limit:
            return "repeated n-grams", f"dup_{n}gram_frac", chars / size, limit
    return None


def judge_repetition(row: dict[str, Any], cfg: dict[str, Any]) -> Any:
    return first_failing_side(row, cfg, repetition)


class RepetitionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part: TextPart = Field("response", description="text to judge: response (each answer on its own), all, "
                                                   "prompt, user, assistant, chosen or rejected")
    dup_line_frac: float | None = Field(0.30, ge=0, le=1, description="max share of lines repeating an earlier line")
    dup_line_char_frac: float | None = Field(0.20, ge=0, le=1, description="max share of characters in repeated lines")
    dup_para_frac: float | None = Field(0.30, ge=0, le=1, description="max share of paragraphs repeating an "
                                                                      "earlier one")
    dup_para_char_frac: float | None = Field(0.20, ge=0, le=1, description="max share of characters in repeated "
                                                                           "paragraphs")
    top_ngram_frac: dict[int, float] = Field({2: 0.30, 3: 0.30, 4: 0.30},
                                             description="n -> max share of characters covered by the most "
                                                         "frequent repeated n-gram")
    dup_ngram_frac: dict[int, float] = Field({5: 0.30, 6: 0.28, 7: 0.26, 8: 0.24, 9: 0.22, 10: 0.20},
                                             description="n -> max share of characters in repeated n-grams")
    min_words: int = Field(50, ge=1, description="n-gram rules only judge texts of at least this many words")
    code_aware: bool = Field(True, description="ignore fenced and inline code (code repeats lines by nature)")
    check_rejected: bool = Field(True, description="judge the rejected answer of a pair too (not only chosen)")


class RepetitionFilter(CurationOp):
    name = "repetition_filter"
    title = "Repetition filter"
    summary = "remove degenerate answers: repeated lines, paragraphs and n-grams (Gopher rules)"
    category = "filter"
    config_model = RepetitionConfig

    def run(self, data: OpInput, config: RepetitionConfig, ctx: OpContext) -> OpResult:
        verdicts = ctx.map_rows(data, judge_repetition, what="measuring repetition", cfg=config.model_dump())
        return build_result(verdicts)
