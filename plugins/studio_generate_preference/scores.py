"""``judge_scores``: LLM-as-judge scores for an existing dataset, written into each record's
``meta["judge"]`` = ``{"score", "rationale", "aspects", "model", ...}``.

A conversation (or unpaired row) is judged on its last assistant turn, given the turns before it.
A preference pair has both sides judged: ``score`` is the chosen answer's, ``rejected`` holds the
other side's verdict and ``agreement`` says whether the judge agrees with the label (None on a
tie). The records pass through otherwise unchanged (``produces = "annotated"``); an answer the
judge gave no usable score for is still passed through, with ``score`` None and the reason in
``error``, so that ``judge_filter`` can keep or drop unscored rows as configured.
"""
from __future__ import annotations

import copy
from typing import Any, AsyncIterator, Callable

from pydantic import ConfigDict

from studio.generation.generator_base import Completion, Estimate, GenerationContext, Generator
from studio.records import Record
from studio_generate_common import RowFailed, in_order, settle, total_cost
from studio_generate_preference.judge import JudgeConfig, JudgeParseError, Verdict, judge, judge_prompt

NAME = "judge_scores"


class JudgeScoresConfig(JudgeConfig):
    model_config = ConfigDict(extra="forbid")


def _turns(turns) -> list[dict[str, Any]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def judged_parts(record: Record) -> list[tuple[str, list[dict[str, Any]], str]]:
    """``(side, conversation before the answer, answer)`` for each answer the judge scores."""
    if record.kind == "preference":
        context = _turns(record.messages)
        return [(side, context, "\n".join(t.content for t in turns or []))
                for side, turns in (("chosen", record.chosen), ("rejected", record.rejected))]
    last = max((i for i, t in enumerate(record.messages) if t.role == "assistant"), default=None)
    if last is None:
        return []
    return [("response", _turns(record.messages[:last]), record.messages[last].content)]


def _verdict_meta(completion: Completion, verdict: Verdict | JudgeParseError, scale: int) -> dict[str, Any]:
    if isinstance(verdict, Verdict):
        return verdict.as_meta(completion.model, scale)
    return {"score": None, "rationale": None, "aspects": {}, "model": completion.model, "scale": scale,
            "error": str(verdict)}


class JudgeScores(Generator):
    name = NAME
    title = "Judge scores"
    summary = "score every answer of a dataset with an LLM judge (meta.judge); feeds judge_filter"
    config_model = JudgeScoresConfig
    seeds = "required"
    produces = "annotated"

    def estimate(self, config: JudgeScoresConfig, seeds: list[Record],
                 count_tokens: Callable[[str], int]) -> Estimate:
        requests = prompt_tokens = 0
        for seed in seeds:
            for _, context, answer in judged_parts(seed):
                requests += 1
                prompt_tokens += count_tokens(judge_prompt(context, answer, list(config.aspects), config.scale))
        skipped = sum(1 for s in seeds if not judged_parts(s))
        notes = ["completion tokens assume every judge answer uses its whole judge_max_tokens"]
        if skipped:
            notes.append(f"{skipped} records have no answer to judge and are skipped")
        return Estimate(requests=requests, prompt_tokens=prompt_tokens,
                        completion_tokens=requests * config.judge_max_tokens, notes=notes)

    async def generate(self, config: JudgeScoresConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        indexed = list(enumerate(ctx.seeds))
        made = unscored = 0
        async for (i, seed), result in in_order(ctx, indexed, lambda item: self._annotate(config, ctx, item[1])):
            record = settle(ctx, result, source=seed, source_index=i)
            if record is None:
                continue
            made += 1
            unscored += record.meta["judge"]["score"] is None
            yield record
            ctx.progress(made, len(indexed), f"{made} of {len(indexed)} judged"
                                             + (f" ({unscored} without a usable score)" if unscored else ""))

    async def _annotate(self, config: JudgeScoresConfig, ctx: GenerationContext, seed: Record) -> Record:
        parts = judged_parts(seed)
        if not parts:
            raise RowFailed("seed", "the record has no assistant answer to judge")
        judged = []
        for side, context, answer in parts:
            completion, verdict = await judge(ctx, config, context, answer)
            judged.append((side, completion, verdict))
        side, completion, verdict = judged[0]
        annotation = _verdict_meta(completion, verdict, config.scale)
        if len(judged) == 2:
            _, other_completion, other = judged[1]
            annotation["rejected"] = _verdict_meta(other_completion, other, config.scale)
            if isinstance(verdict, Verdict) and isinstance(other, Verdict):
                margin = round(verdict.score - other.score, 3)
                annotation["margin"] = margin
                annotation["agreement"] = None if margin == 0 else margin > 0
            else:
                annotation["margin"] = annotation["agreement"] = None
        record = copy.deepcopy(seed)
        previous = record.meta.get("generation")
        if isinstance(previous, dict) and previous.get("generator") == NAME:
            previous = previous.get("source")  # re-judged: keep what made the row, not the old judging
        provenance = completion.provenance(NAME, judged=[s for s, _, _ in judged],
                                           judge_keys=[c.key for _, c, _ in judged],
                                           total_cost=total_cost(*(c for _, c, _ in judged)))
        if previous:
            provenance["source"] = previous
        record.meta["judge"] = annotation
        record.meta["generation"] = provenance
        return record
