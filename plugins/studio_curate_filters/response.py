"""response_filter: missing, empty and truncated answers."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_filters.common import build_result, judged_texts, verdict

TruncationCheck = Literal["ellipsis", "code_fence", "dangling", "mid_sentence"]

ELLIPSIS_END = re.compile(r"(?:\.\.\.|…)[\s\"'”’)\]*_]*\Z")
# A last character that cannot end a finished answer: a comma, an opening bracket, a dash...
DANGLING_CHAR = set(",([{-–—/\\&=<")
# A last word that cannot end a finished sentence (articles, conjunctions, possessives; not
# prepositions or verbs, which end sentences like "what it is for" or "log in").
DANGLING_WORDS = frozenset(
    "a an the and or but nor of from into than which whose because although though whereas unless "
    "such my your our their".split())
LAST_WORD = re.compile(r"([A-Za-z]+)[\s\"'”’*_]*\Z")
# Last lines that legitimately end without a full stop: list items, headings, table rows, quotes,
# links, key: value lines, signatures.
NON_PROSE_LINE = re.compile(r"^\s*(?:[-*+•>|#]|\d+[.)]\s|[A-Za-z][.)]\s|\w[\w ]{0,30}:\s|https?://|[-–—]{1,2}\s?\w)")
ATTRIBUTION = re.compile(r"[\"”']\s*[-–—~]+\s*[\w.' ]{1,40}\Z")  # ..." -C.S. Lewis
SENTENCE_END = re.compile(r"[.!?。！？][\"'”’)\]]*\s")


def truncation(text: str, checks: frozenset[str], mid_sentence_min_words: int) -> tuple[str, str] | None:
    """``(rule, evidence)`` when the answer looks cut off, else None."""
    stripped = text.rstrip()
    if not stripped:
        return None
    # Counting every ``` (not only fence lines): some data uses ```x``` as inline code.
    if "code_fence" in checks and stripped.count("```") % 2 == 1:
        return "code_fence", "odd number of ``` fences"
    if "ellipsis" in checks and ELLIPSIS_END.search(stripped):
        return "ellipsis", stripped[-30:]
    last = stripped[-1]
    if "dangling" in checks:
        if last in DANGLING_CHAR or last == ":" and not stripped.endswith("://"):
            return "dangling", stripped[-30:]
        match = LAST_WORD.search(stripped) if last.isalpha() or last in "\"'”’*_" else None
        if match and match.group(1).lower() in DANGLING_WORDS and len(stripped.split()) > 1:
            return "dangling", stripped[-30:]
    if "mid_sentence" in checks and last.isalpha():
        line = stripped.rsplit("\n", 1)[-1]
        if line.split()[-1][0] in "#@" or ATTRIBUTION.search(line):  # hashtags, handles, "quote" -Author
            return None
        # Prose (it has finished sentences before) whose last line is a long sentence with no end.
        if (len(line.split()) >= mid_sentence_min_words and not NON_PROSE_LINE.match(line)
                and SENTENCE_END.search(stripped)):
            return "mid_sentence", stripped[-30:]
    return None


def judge_response(row: dict[str, Any], cfg: dict[str, Any], checks: frozenset[str]) -> Any:
    texts = judged_texts(row, "response", cfg["check_rejected"])
    if not texts:
        if cfg["require_response"]:
            return verdict("no response", "require_response", 0, 1)
        return None
    for side, text in texts:
        size = len(text.strip())
        if size < cfg["min_chars"]:
            return verdict("empty response", "min_chars", size, cfg["min_chars"], side=side)
    for side, text in texts:
        found = truncation(text, checks, cfg["mid_sentence_min_words"])
        if found:
            rule, evidence = found
            return verdict(REASONS[rule], rule, evidence, "finished answer", side=side)
    return None


REASONS = {
    "code_fence": "unclosed code fence",
    "ellipsis": "ends with an ellipsis",
    "dangling": "ends mid-sentence",
    "mid_sentence": "ends mid-sentence",
}


class ResponseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_response: bool = Field(True, description="remove rows with no answer at all (a conversation that "
                                                     "ends on a user turn)")
    min_chars: int = Field(1, ge=0, description="an answer with fewer non-blank characters than this is empty")
    truncation: list[TruncationCheck] = Field(
        ["ellipsis", "code_fence", "dangling", "mid_sentence"],
        description="truncation checks: ellipsis (ends with '...'), code_fence (unclosed ```), dangling (ends on "
                    "a comma, colon, dash, open bracket or a word like 'the'/'and'), mid_sentence (prose whose "
                    "last long line has no closing punctuation); [] turns them off")
    mid_sentence_min_words: int = Field(8, ge=1, description="mid_sentence only judges last lines of at least "
                                                            "this many words (short lines are often labels)")
    check_rejected: bool = Field(True, description="judge the rejected answer of a pair too (not only chosen)")


class ResponseFilter(CurationOp):
    name = "response_filter"
    title = "Response filter"
    summary = "remove rows with missing, empty or truncated answers"
    category = "filter"
    config_model = ResponseConfig

    def run(self, data: OpInput, config: ResponseConfig, ctx: OpContext) -> OpResult:
        verdicts = ctx.map_rows(data, judge_response, what="checking answers", cfg=config.model_dump(),
                                checks=frozenset(config.truncation))
        return build_result(verdicts)
