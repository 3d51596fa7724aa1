"""Pieces every filter shares: turning per-row verdicts into an :class:`OpResult`, the texts a
filter judges, and removing code so that prose rules do not misfire on it.

A per-row verdict is ``None`` (keep) or ``(reason, detail)``. Reasons name the rule ("too few
words", "unclosed code fence"...); details carry ``rule``, the measured ``value`` and the
``threshold`` so a reviewer sees why without re-running anything.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

from studio.curation.op_base import OpResult, Removal
from studio.curation.text import responses, row_text

FENCED_CODE = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")
# A line that reads as source code rather than prose.
CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |return\b|#include|if \(|for \(|while \(|\}|\{|//|/\*|@\w)"
    r"|[;{}]\s*$|^\s{4,}\S|^\s*(?:>>>|\$ )|^\s*\w+\s*=\s*\S.*[)\]]\s*$"
)


def strip_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    if "`" not in text and "~~~" not in text:
        return text
    return INLINE_CODE.sub(" ", FENCED_CODE.sub("\n", text))


def code_line_share(text: str) -> float:
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return 0.0
    return sum(1 for line in lines if CODE_LINE.search(line)) / len(lines)


def judged_texts(row: dict[str, Any], part: str, check_rejected: bool = True) -> list[tuple[str, str]]:
    """``(label, text)`` pairs a filter judges: each answer on its own for ``response`` (a pair has
    two, labelled chosen/rejected), otherwise the one text of ``part``."""
    if part != "response":
        return [(part, row_text(row, part))]
    texts = responses(row)
    if row.get("chosen") is not None or row.get("rejected") is not None:
        labelled = [("chosen", texts[0]), ("rejected", texts[1])]
        return labelled if check_rejected else labelled[:1]
    return [("response", t) for t in texts]


def verdict(reason: str, rule: str, value: Any, threshold: Any, **extra: Any) -> tuple[str, dict[str, Any]]:
    detail = {"rule": rule, "value": round(value, 4) if isinstance(value, float) else value, "threshold": threshold}
    detail.update(extra)
    return reason, detail


def first_failing_side(row: dict[str, Any], cfg: dict[str, Any], measure) -> Any:
    """The verdict for the first judged text that ``measure(text, cfg)`` fails, else None.
    ``measure`` returns ``(reason, rule, value, threshold)`` or None."""
    for side, text in judged_texts(row, cfg["part"], cfg["check_rejected"]):
        found = measure(text, cfg)
        if found:
            reason, rule, value, threshold = found
            return verdict(reason, rule, value, threshold, side=side)
    return None


def build_result(verdicts: Iterable[Any], report: dict[str, Any] | None = None) -> OpResult:
    verdicts = list(verdicts)
    keep = [v is None for v in verdicts]
    removals = {i: Removal(v[0], v[1]) for i, v in enumerate(verdicts) if v is not None}
    by_reason = Counter(v[0] for v in verdicts if v is not None)
    out = {"rows": len(verdicts), "kept": len(verdicts) - len(removals), "removed": len(removals),
           "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1]))}
    out.update(report or {})
    return OpResult(keep=keep, removals=removals, report=out)


def check_bounds(low: int | float | None, high: int | float | None, what: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_{what} ({low}) is larger than max_{what} ({high})")
