"""non_text_filter: answers that are mostly symbols, digits or markup rather than text.

Ratios are over non-whitespace characters. Letters are Unicode letters (so Chinese or Cyrillic text
counts as text); symbols are characters that are neither letters, digits nor ordinary punctuation.
With ``code_aware`` fenced and inline code is removed first, and an answer whose lines mostly read
as source code is not judged at all: code is legitimately symbol-heavy.
"""
from __future__ import annotations

import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.curation.text import TextPart
from studio_curate_filters.common import (
    build_result, code_line_share, first_failing_side, strip_code,
)

WHITESPACE = re.compile(r"\s+")
# Combining marks (Devanagari vowel signs, Thai tone marks, Arabic and Hebrew points, accents) are
# not \w to Python's re, yet they are part of letters.
MARKS = ("\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
         "\u0900-\u0dff\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u1ab0-\u1aff\u1dc0-\u1dff"
         "\u20d0-\u20ff\ufe20-\ufe2f")
NOT_LETTER = re.compile(rf"[^\w{MARKS}]+|[\d_]+")
# Letters, digits, whitespace, everyday punctuation, arithmetic and currency, table pipes; what
# remains (@ # ~ \ { } _, emoji, box drawing, control and replacement characters...) is a symbol.
NOT_SYMBOL = re.compile(rf"[^\W_]+|[{MARKS}\s.,;:!?'\"“”‘’()\[\]\-–—/%&…+*=<>^×÷±°$€£¥|。，、；：！？（）《》「」]+")
WORD_WITH_LETTER = re.compile(r"[^\W\d_]")


# ASCII texts (most of them) are measured with bytes.translate, which runs at memory speed; the
# regexes above give the same counts and handle everything else.
ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
ASCII_LETTERS = string.ascii_letters.encode()
ASCII_ORDINARY = (string.ascii_letters + string.digits).encode() + b".,;:!?'\"()[]-/%&+*=<>^$|"


NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def measure(text: str) -> tuple[int, int, int]:
    """(non-whitespace characters, letters, symbols)."""
    dense = text.encode("ascii", "ignore").translate(None, ASCII_SPACE)
    size, letters, symbols = (len(dense), len(dense) - len(dense.translate(None, ASCII_LETTERS)),
                              len(dense.translate(None, ASCII_ORDINARY)))
    if not text.isascii():  # the few non-ASCII characters (curly quotes, accents, CJK) by regex
        rest = WHITESPACE.sub("", "".join(NON_ASCII.findall(text)))
        size += len(rest)
        letters += len(NOT_LETTER.sub("", rest))
        symbols += len(NOT_SYMBOL.sub("", rest))
    return size, letters, symbols


def non_text(text: str, cfg: dict[str, Any]) -> tuple[str, str, float, float] | None:
    if cfg["code_aware"]:
        text = strip_code(text)
    found = _rules(text, cfg)
    # Code is exempt; checked only for texts a rule flags, since most texts pass anyway.
    if found and cfg["code_aware"] and code_line_share(text) > cfg["max_code_line_share"]:
        return None
    return found


def _rules(text: str, cfg: dict[str, Any]) -> tuple[str, str, float, float] | None:
    size, letters, symbols = measure(text)
    if size < cfg["min_chars"]:
        return None
    if cfg["max_symbol_ratio"] is not None and symbols / size > cfg["max_symbol_ratio"]:
        return "mostly symbols", "max_symbol_ratio", symbols / size, cfg["max_symbol_ratio"]
    if cfg["max_non_alpha_ratio"] is not None and 1 - letters / size > cfg["max_non_alpha_ratio"]:
        return "mostly non-letters", "max_non_alpha_ratio", 1 - letters / size, cfg["max_non_alpha_ratio"]
    if cfg["min_alpha_word_ratio"] is not None:
        words = text.split()
        share = sum(1 for w in words if WORD_WITH_LETTER.search(w)) / len(words)
        if share < cfg["min_alpha_word_ratio"]:
            return "few words with letters", "min_alpha_word_ratio", share, cfg["min_alpha_word_ratio"]
    return None


def judge_non_text(row: dict[str, Any], cfg: dict[str, Any]) -> Any:
    return first_failing_side(row, cfg, non_text)


class NonTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part: TextPart = Field("response", description="text to judge: response (each answer on its own), all, "
                                                   "prompt, user, assistant, chosen or rejected")
    max_non_alpha_ratio: float | None = Field(0.8, ge=0, le=1, description="max share of non-whitespace characters "
                                                                         "that are not letters (digits count: a bare "
                                                                         "'7818 x 86175 = 674667340' is removed)")
    max_symbol_ratio: float | None = Field(0.25, ge=0, le=1, description="max share of characters that are neither "
                                                                       "letters, digits nor punctuation")
    min_alpha_word_ratio: float | None = Field(None, ge=0, le=1, description="min share of words holding a letter "
                                                                           "(Gopher uses 0.8 on web pages; lists of "
                                                                           "numbers and worked sums fall below it)")
    min_chars: int = Field(20, ge=0, description="texts with fewer non-whitespace characters are not judged "
                                                 "('42' is a fine answer)")
    code_aware: bool = Field(True, description="ignore fenced/inline code, and skip answers that are mostly code")
    max_code_line_share: float = Field(0.5, ge=0, le=1, description="with code_aware: answers with a larger share "
                                                                    "of code-like lines are not judged")
    check_rejected: bool = Field(True, description="judge the rejected answer of a pair too (not only chosen)")


class NonTextFilter(CurationOp):
    name = "non_text_filter"
    title = "Non-text filter"
    summary = "remove answers that are mostly symbols, digits or markup (code-aware)"
    category = "filter"
    config_model = NonTextConfig

    def run(self, data: OpInput, config: NonTextConfig, ctx: OpContext) -> OpResult:
        verdicts = ctx.map_rows(data, judge_non_text, what="measuring text", cfg=config.model_dump())
        return build_result(verdicts)
