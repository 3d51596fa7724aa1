"""``judge_filter``: a curation op that removes rows an LLM judge scored low.

It reads ``meta["judge"]["score"]`` as written by the ``judge_scores`` and ``preference_pairs``
generators (for a pair: the chosen answer's score). Rows with no score (never judged, or the judge
gave no usable score) are kept or removed as configured. Optionally, pairs whose judge preferred
the rejected side are removed too.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult, Removal


class JudgeFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(3.0, ge=0.0, le=10.0, description="remove rows whose judge score is below this "
                                                               "(on the judge's scale: 1-5 or 1-10)")
    unscored: Literal["keep", "drop"] = Field("keep", description="rows without a judge score: keep or drop them")
    drop_disagreeing: bool = Field(False, description="also remove preference pairs whose judge scored the "
                                                      "rejected answer above the chosen one")


def judge_of(row: dict[str, Any]) -> dict[str, Any] | None:
    raw = row.get("meta")
    if not raw:
        return None
    try:
        meta = json.loads(raw) if isinstance(raw, str) else raw
    except (json.JSONDecodeError, TypeError):
        return None
    judge = meta.get("judge") if isinstance(meta, dict) else None
    return judge if isinstance(judge, dict) else None


def judge_verdict(row: dict[str, Any], cfg: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """None to keep the row, else ``(reason, detail)``."""
    judge = judge_of(row)
    score = judge.get("score") if judge else None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        if cfg["unscored"] == "drop":
            why = (judge or {}).get("error") or ("not judged" if judge is None else "no score")
            return "no judge score", {"rule": "unscored", "value": None, "threshold": "drop", "why": why}
        return None
    if score < cfg["min_score"]:
        return "low judge score", {"rule": "min_score", "value": score, "threshold": cfg["min_score"],
                                   "model": judge.get("model"), "rationale": judge.get("rationale")}
    if cfg["drop_disagreeing"] and judge.get("agreement") is False:
        rejected = (judge.get("rejected") or {}).get("score")
        return "judge prefers rejected", {"rule": "drop_disagreeing", "value": rejected, "threshold": score}
    return None


class JudgeFilter(CurationOp):
    name = "judge_filter"
    title = "Judge score filter"
    summary = "remove rows an LLM judge scored below a threshold (meta.judge from judge_scores)"
    category = "filter"
    config_model = JudgeFilterConfig

    def run(self, data: OpInput, config: JudgeFilterConfig, ctx: OpContext) -> OpResult:
        verdicts = ctx.map_rows(data, judge_verdict, what="checking judge scores", cfg=config.model_dump())
        removals = {i: Removal(v[0], v[1]) for i, v in enumerate(verdicts) if v is not None}
        by_reason = Counter(r.reason for r in removals.values())
        report = {"rows": len(verdicts), "kept": len(verdicts) - len(removals), "removed": len(removals),
                  "by_reason": dict(by_reason.most_common())}
        return OpResult(keep=[v is None for v in verdicts], removals=removals, report=report)
