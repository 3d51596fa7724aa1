"""The ``self_instruct`` generator (Wang et al., 2022).

1. The task pool starts with the seed tasks' instructions (a seed's first user turn, without the
   input the Self-Instruct and Alpaca readers folded into it).
2. Each round sends ``requests_per_round`` prompts; each shows ``num_prompt_instructions`` tasks
   (``human_examples`` seeds, the rest machine-made once there are any) and asks for a numbered
   continuation. New instructions pass the filters (length, keyword blacklist, first character,
   duplicates, ROUGE-L against the whole pool) and join the pool at once, so later candidates of
   the same round are compared with them too.
3. Rounds stop at ``target_instructions``, after ``max_rounds`` or after ``stop_after_empty_rounds``
   rounds that added nothing (a model that writes no usable list).
4. Each new instruction is classified (classification task or not; optional) and gets one instance:
   output first for classification tasks, input first otherwise. Each becomes a conversation record:
   user = instruction (+ blank line + input), assistant = output.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.generation.generator_base import (
    Completion, Estimate, GenerationContext, Generator, RunStopped, first_user_text,
)
from studio.records import Record, Turn
from studio_generate_common import RowFailed, ask, in_order, normalised_key, parse_yes_no, settle, total_cost
from studio_generate_self_instruct.rouge import RougePool
from studio_generate_self_instruct.tasks import (
    DEFAULT_BLACKLIST, Instance, blacklist_pattern, brainstorm_prompt, classification_prompt, input_first_prompt,
    output_first_prompt, parse_instance, parse_numbered_list, screen,
)

NAME = "self_instruct"
CLASSIFY_MAX_TOKENS = 5


class SelfInstructConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_instructions: int = Field(100, ge=1, le=1_000_000,
                                     description="new instructions to make (each becomes one record)")
    max_rounds: int = Field(20, ge=1, le=100_000, description="most brainstorming rounds before giving up")
    requests_per_round: int = Field(4, ge=1, le=1024, description="brainstorming prompts sent per round")
    num_prompt_instructions: int = Field(8, ge=1, le=64, description="example tasks shown in each prompt")
    human_examples: int = Field(6, ge=0, le=64, description="of the examples, how many are seed tasks (the rest "
                                                            "machine-made ones, once the pool has any)")
    new_per_request: int = Field(8, ge=1, le=100, description="new tasks asked for in each prompt")
    rouge_threshold: float = Field(0.7, ge=0.0, le=1.0, description="reject a new instruction whose ROUGE-L with "
                                                                    "any pool instruction is above this")
    min_words: int = Field(3, ge=1, le=1000, description="reject instructions with fewer words")
    max_words: int = Field(150, ge=1, le=10_000, description="reject instructions with more words")
    keyword_blacklist: list[str] = Field(list(DEFAULT_BLACKLIST), description="reject instructions containing "
                                         "any of these words (whole words, any case): tasks a text-only model "
                                         "cannot do")
    identify_classification: bool = Field(True, description="ask whether each new task is a classification task "
                                                            "(then its instance is made output first)")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature for brainstorming")
    top_p: float = Field(0.5, gt=0.0, le=1.0, description="nucleus sampling for brainstorming")
    max_tokens: int = Field(1024, ge=16, le=32_768, description="token limit of each brainstorming answer")
    instance_temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature for instances")
    instance_max_tokens: int = Field(512, ge=16, le=32_768, description="token limit of each instance answer")
    stop_after_empty_rounds: int = Field(3, ge=0, le=1000, description="stop after this many rounds in a row that "
                                                                      "add no instruction (0: never)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is larger than max_words ({self.max_words})")
        if self.human_examples > self.num_prompt_instructions:
            raise ValueError(f"human_examples ({self.human_examples}) is larger than num_prompt_instructions "
                             f"({self.num_prompt_instructions})")
        return self


def seed_instruction(record: Record) -> str | None:
    """A seed's instruction: its first user turn without the input a reader folded into it."""
    text = first_user_text(record)
    if text is None:
        return None
    hint = record.meta.get("_layout")
    extra = hint.get("input") if isinstance(hint, dict) else None
    if isinstance(extra, str) and extra and text.endswith("\n\n" + extra):
        text = text[: -len("\n\n" + extra)]
    return text.strip() or None


@dataclass
class NewTask:
    instruction: str
    round: int
    request_key: str
    similarity: float
    most_similar: str | None


@dataclass
class RoundStats:
    parsed: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    answers_without_list: int = 0

    def add(self, other: "RoundStats") -> None:
        self.parsed += other.parsed
        self.kept += other.kept
        self.rejected.update(other.rejected)
        self.answers_without_list += other.answers_without_list

    def summary(self) -> str:
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        text = f"{self.kept} kept of {self.parsed} parsed" + (f" (rejected: {why})" if why else "")
        if self.answers_without_list:
            text += f"; {self.answers_without_list} answers held no numbered list"
        return text


class SelfInstruct(Generator):
    name = NAME
    title = "Self-Instruct"
    summary = "bootstrap new instructions from seed tasks, filter them by ROUGE-L, then make an instance for each"
    config_model = SelfInstructConfig
    seeds = "required"
    produces = "conversation"

    # --- estimate ---------------------------------------------------------------------------

    def estimate(self, config: SelfInstructConfig, seeds: list[Record],
                 count_tokens: Callable[[str], int]) -> Estimate:
        pool = [s for s in (seed_instruction(r) for r in seeds) if s] or ["an example task of average length"]
        examples = [pool[i % len(pool)] for i in range(config.num_prompt_instructions)]
        brainstorm_in = count_tokens(brainstorm_prompt(examples, config.new_per_request))
        max_requests = config.max_rounds * config.requests_per_round
        min_rounds = math.ceil(config.target_instructions / (config.requests_per_round * config.new_per_request))
        average = examples[len(examples) // 2]
        instance_in = count_tokens(input_first_prompt(average))
        per_task = 1 + int(config.identify_classification)
        classify_in = count_tokens(classification_prompt(average)) if config.identify_classification else 0
        n = config.target_instructions
        empty = (f" or after {config.stop_after_empty_rounds} rounds in a row that add nothing"
                 if config.stop_after_empty_rounds else "")
        notes = [
            f"upper bound: brainstorming runs at most {config.max_rounds} rounds of {config.requests_per_round} "
            f"requests; it stops when {n} instructions pass the filters (at the earliest after {min_rounds} "
            f"round{'s' if min_rounds != 1 else ''}){empty}",
            "completion tokens assume every answer uses its whole max_tokens",
            f"instances: {per_task} request{'s' if per_task > 1 else ''} per new instruction, at most {n}",
        ]
        return Estimate(
            requests=max_requests + n * per_task,
            prompt_tokens=max_requests * brainstorm_in + n * (instance_in + classify_in),
            completion_tokens=max_requests * config.max_tokens
            + n * (config.instance_max_tokens + (CLASSIFY_MAX_TOKENS if config.identify_classification else 0)),
            notes=notes,
        )

    # --- generation -------------------------------------------------------------------------

    async def generate(self, config: SelfInstructConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        # Seeds in order, each instruction once (a repeated seed would be shown twice in a prompt).
        human = list(dict.fromkeys(t for t in (seed_instruction(s) for s in ctx.seeds) if t))
        if not human:
            raise RunStopped("self_instruct needs seed tasks: a seed dataset whose records have a user turn "
                             f"({len(ctx.seeds)} seed records, none with one)")
        pool = RougePool()
        seen: set[str] = set()
        for text in human:
            pool.add(text)
            seen.add(normalised_key(text))
        tasks = await self._brainstorm(config, ctx, human, pool, seen)
        if not tasks:  # the brainstorming summary stays the last word: it says why nothing was made
            return
        ctx.progress(len(tasks), config.target_instructions, f"{len(tasks)} new instructions; making instances")

        made = 0
        async for task, result in in_order(ctx, tasks, lambda task: self._instance(config, ctx, task)):
            value = settle(ctx, result, source=Record([Turn("user", task.instruction)]))
            if value is None:
                continue
            made += 1
            yield value
            ctx.progress(made, len(tasks), f"instances made for {made} of {len(tasks)} instructions")

    async def _brainstorm(self, config: SelfInstructConfig, ctx: GenerationContext, human: list[str],
                          pool: RougePool, seen: set[str]) -> list[NewTask]:
        blacklist = blacklist_pattern(config.keyword_blacklist)
        machine: list[NewTask] = []
        totals = RoundStats()
        empty_rounds = 0
        for round_no in range(1, config.max_rounds + 1):
            if len(machine) >= config.target_instructions:
                break
            prompts = [self._prompt(config, ctx, human, machine) for _ in range(config.requests_per_round)]
            params = dict(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
            results = await ctx.gather(prompts, lambda p: ask("instructions", ctx.chat(
                [{"role": "user", "content": p}], **params)))
            stats = RoundStats()
            for result in results:
                answer: Completion | None = settle(ctx, result)
                if answer is None:
                    continue
                truncated = (answer.finish_reasons or ["stop"])[0] == "length"
                candidates = parse_numbered_list(answer.text, truncated=truncated)
                if not candidates:
                    stats.answers_without_list += 1
                for text in candidates:
                    if len(machine) >= config.target_instructions:
                        break
                    stats.parsed += 1
                    reason = screen(text, config.min_words, config.max_words, blacklist)
                    key = normalised_key(text)
                    if reason is None and key in seen:
                        reason = "duplicate"
                    score, nearest = (0.0, None)
                    if reason is None:
                        score, nearest = pool.most_similar(text)
                        if score > config.rouge_threshold:
                            reason = "too similar (ROUGE-L)"
                    if reason is not None:
                        stats.rejected[reason] += 1
                        continue
                    pool.add(text)
                    seen.add(key)
                    machine.append(NewTask(text, round_no, answer.key, round(score, 4),
                                           None if nearest is None else pool.texts[nearest]))
                    stats.kept += 1
            totals.add(stats)
            ctx.progress(len(machine), config.target_instructions, f"round {round_no}: {stats.summary()}")
            empty_rounds = 0 if stats.kept else empty_rounds + 1
            if config.stop_after_empty_rounds and empty_rounds >= config.stop_after_empty_rounds:
                ctx.progress(len(machine), config.target_instructions,
                             f"stopping: {empty_rounds} rounds in a row added no instruction")
                break
        ctx.progress(len(machine), config.target_instructions, f"brainstorming done: {totals.summary()}")
        return machine

    @staticmethod
    def _prompt(config: SelfInstructConfig, ctx: GenerationContext, human: list[str], machine: list[NewTask]) -> str:
        k = config.num_prompt_instructions
        from_machine = min(k - config.human_examples, len(machine))
        picked = [t.instruction for t in ctx.rng.sample(machine, from_machine)] if from_machine else []
        picked += ctx.rng.sample(human, min(k - len(picked), len(human)))
        ctx.rng.shuffle(picked)
        return brainstorm_prompt(picked, config.new_per_request)

    async def _instance(self, config: SelfInstructConfig, ctx: GenerationContext, task: NewTask) -> Record:
        classify: Completion | None = None
        is_classification: bool | None = None
        if config.identify_classification:
            classify = await ask("classify", ctx.chat(
                [{"role": "user", "content": classification_prompt(task.instruction)}],
                temperature=0.0, max_tokens=CLASSIFY_MAX_TOKENS))
            is_classification = parse_yes_no(classify.text)
        classification = bool(is_classification)
        prompt = output_first_prompt(task.instruction) if classification else input_first_prompt(task.instruction)
        answer = await ask("instance", ctx.chat([{"role": "user", "content": prompt}],
                                                temperature=config.instance_temperature,
                                                max_tokens=config.instance_max_tokens))
        instance = parse_instance(answer.text, classification)
        if not isinstance(instance, Instance):
            raise RowFailed("instance", f"{instance}: {answer.text[:120]!r}")
        user = f"{task.instruction}\n\n{instance.input}" if instance.input else task.instruction
        provenance = answer.provenance(
            NAME, stage="instance", round=task.round, instruction=task.instruction, input=instance.input,
            instruction_key=task.request_key, rouge_l_max=task.similarity, most_similar=task.most_similar,
            classification=("unclear" if is_classification is None and classify is not None
                            else "skipped" if classify is None else is_classification),
            instance_order="output-first" if classification else "input-first",
            classify_key=None if classify is None else classify.key, total_cost=total_cost(answer, classify))
        return Record([Turn("user", user), Turn("assistant", instance.output)],
                      meta={"generation": provenance, "is_classification": classification})
