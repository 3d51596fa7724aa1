"""``preference_pairs``: several answers per prompt, scored by an LLM judge; the best becomes
``chosen`` and the worst ``rejected`` (the UltraFeedback recipe, binarised by best vs worst).

Answers come from one request with ``n`` choices or from separate requests (``sample`` 0..k-1),
optionally spread over several models (answer ``i`` from ``models[i % len(models)]``). Each
answer is judged on its own. Ties are broken by answer order (the first best, the first worst);
a pair whose margin is below ``min_margin`` is not made (``ctx.fail`` says why), so with the default
margin an all-equal set of scores never becomes a pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field

from studio.generation.generator_base import Completion, Estimate, GenerationContext, Generator, chat_messages
from studio.records import Record, Turn
from studio_generate_common import RowFailed, ask, in_order, settle, total_cost
from studio_generate_preference.judge import JudgeConfig, Verdict, judge, judge_prompt

NAME = "preference_pairs"
LAYOUT_KEY = "_layout"


class _AnswerOptions(BaseModel):
    responses_per_prompt: int = Field(4, ge=2, le=32, description="answers sampled per prompt")
    use_n: bool = Field(False, description="ask for all answers of a model in one request with n choices "
                                           "(cheaper prompts; not every endpoint supports n)")
    models: list[str] = Field(default_factory=list, description="models that answer, in turn (empty: the run's "
                                                                "model)")
    system_prompt: str | None = Field(None, description="system turn sent instead of the seed's own")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="sampling temperature for the answers (keep it "
                                                                "high: the answers must differ)")
    max_tokens: int = Field(1024, ge=1, le=32_768, description="token limit of each answer")
    min_margin: float = Field(1.0, ge=0.0, description="make a pair only when best minus worst score is at least "
                                                       "this (0 keeps ties, taking answer order)")


# Listed last so that pydantic puts these fields first (forms show the answer options, then the judge).
class PairsConfig(JudgeConfig, _AnswerOptions):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Answer:
    index: int
    text: str
    completion: Completion
    model: str


def prompt_messages(record: Record, system_prompt: str | None) -> list[dict[str, Any]]:
    messages = chat_messages(record)
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]
    return messages


class PreferencePairs(Generator):
    name = NAME
    title = "Preference pairs"
    summary = "sample several answers per prompt, score them with an LLM judge, pair the best with the worst"
    config_model = PairsConfig
    seeds = "required"
    produces = "preference"

    def estimate(self, config: PairsConfig, seeds: list[Record], count_tokens: Callable[[str], int]) -> Estimate:
        prompts = [m for m in (prompt_messages(s, config.system_prompt) for s in seeds)
                   if any(x["role"] == "user" for x in m)]
        k = config.responses_per_prompt
        models = max(1, len(config.models))
        answer_requests = min(models, k) if config.use_n else k
        prompt_in = sum(count_tokens("\n".join(m["content"] for m in p)) for p in prompts)
        judge_in = sum(count_tokens(judge_prompt(p, "", list(config.aspects), config.scale)) + config.max_tokens
                       for p in prompts)
        return Estimate(
            requests=len(prompts) * (answer_requests + k),
            prompt_tokens=prompt_in * answer_requests + judge_in * k,
            completion_tokens=len(prompts) * k * (config.max_tokens + config.judge_max_tokens),
            notes=[f"{answer_requests} answer request(s) and {k} judge requests per prompt",
                   "completion tokens assume every answer uses its whole max_tokens; judge prompts assume "
                   "answers that long"],
        )

    async def generate(self, config: PairsConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        jobs = []
        for i, seed in enumerate(ctx.seeds):
            messages = prompt_messages(seed, config.system_prompt)
            if not any(m["role"] == "user" for m in messages):
                ctx.fail("the seed has no user turn to answer", source=seed, source_index=i, stage="seed")
                continue
            jobs.append((i, seed, messages))
        made = 0
        async for (i, seed, _), result in in_order(ctx, jobs, lambda job: self._pair(config, ctx, *job)):
            record = settle(ctx, result, source=seed, source_index=i)
            if record is not None:
                made += 1
                yield record
            ctx.progress(made, len(jobs), f"{made} pairs of {len(jobs)} prompts")

    async def _answers(self, config: PairsConfig, ctx: GenerationContext,
                       messages: list[dict[str, Any]]) -> list[Answer]:
        k = config.responses_per_prompt
        slots = [config.models[i % len(config.models)] if config.models else None for i in range(k)]
        base = dict(temperature=config.temperature, max_tokens=config.max_tokens)
        answers: list[Answer] = []
        if config.use_n:
            for model in dict.fromkeys(slots):  # each model once, in first-use order
                indices = [i for i, m in enumerate(slots) if m == model]
                params = {**base, "n": len(indices), **({"model": model} if model else {})}
                completion = await ask("response", ctx.chat(messages, **params))
                for i, text in zip(indices, completion.texts):
                    answers.append(Answer(i, text.strip(), completion, completion.model))
            answers.sort(key=lambda a: a.index)
        else:
            for i, model in enumerate(slots):
                params = {**base, **({"model": model} if model else {})}
                completion = await ask("response", ctx.chat(messages, sample=i, **params))
                answers.append(Answer(i, completion.text.strip(), completion, completion.model))
        return answers

    async def _pair(self, config: PairsConfig, ctx: GenerationContext, index: int, seed: Record,
                    messages: list[dict[str, Any]]) -> Record:
        answers = await self._answers(config, ctx, messages)
        verdicts: dict[int, Verdict] = {}
        judged: dict[int, Completion] = {}
        problems: dict[int, str] = {}
        for answer in answers:
            if not answer.text:
                problems[answer.index] = "empty answer (not judged)"
                continue
            completion, verdict = await judge(ctx, config, messages, answer.text)
            judged[answer.index] = completion
            if isinstance(verdict, Verdict):
                verdicts[answer.index] = verdict
            else:
                problems[answer.index] = str(verdict)
        if len(verdicts) < 2:
            why = "; ".join(f"answer {i}: {p}" for i, p in sorted(problems.items())) or "too few answers"
            raise RowFailed("judge", f"only {len(verdicts)} of {len(answers)} answers got a score ({why})")
        ranked = sorted(verdicts, key=lambda i: (-verdicts[i].score, i))
        best = ranked[0]
        worst = min((i for i in verdicts if i != best), key=lambda i: (verdicts[i].score, i))
        margin = round(verdicts[best].score - verdicts[worst].score, 3)
        by_index = {a.index: a for a in answers}
        if margin < config.min_margin:
            scores = ", ".join(f"{verdicts[i].score:g}" for i in sorted(verdicts))
            raise RowFailed("pair", f"no clear preference: best and worst scores differ by {margin:g} "
                                    f"< min_margin {config.min_margin:g} (scores {scores})")
        if by_index[best].text == by_index[worst].text:
            raise RowFailed("pair", "the best and worst answers are the same text")
        chosen, rejected = by_index[best], by_index[worst]
        judge_model = next(iter(judged.values())).model
        scored = [{"index": a.index, "model": a.model,
                   "score": verdicts[a.index].score if a.index in verdicts else None,
                   "aspects": verdicts[a.index].aspects if a.index in verdicts else {},
                   "rationale": verdicts[a.index].rationale if a.index in verdicts else None,
                   "problem": problems.get(a.index)} for a in answers]
        provenance = chosen.completion.provenance(
            NAME, chosen_index=best, rejected_index=worst, margin=margin, scale=config.scale,
            judge_model=judge_model, chosen_model=chosen.model, rejected_model=rejected.model,
            rejected_key=rejected.completion.key, judge_keys=[judged[i].key for i in sorted(judged)],
            responses=scored, total_cost=total_cost(*{id(a.completion): a.completion for a in answers}.values(),
                                                    *judged.values()))
        meta: dict[str, Any] = {"generation": provenance,
                                "judge": {**verdicts[best].as_meta(judge_model, config.scale),
                                          "rejected": verdicts[worst].as_meta(judge_model, config.scale),
                                          "agreement": True, "margin": margin}}
        seed_meta = {k: v for k, v in seed.meta.items() if k != LAYOUT_KEY}
        if seed_meta:
            meta["seed"] = seed_meta
        return Record([Turn(m["role"], m["content"]) for m in messages],
                      chosen=[Turn("assistant", chosen.text)], rejected=[Turn("assistant", rejected.text)], meta=meta)
