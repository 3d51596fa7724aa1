"""The ``evol_instruct`` generator.

The pool starts with the seeds' instructions (first user turns). Each of ``generations`` rounds
evolves every pool instruction once with an operation drawn from ``ctx.rng``, checks the
elimination rules (the cheap ones before spending a request), asks the model to answer the evolved
instruction, and yields a record for each survivor. A survivor replaces its parent in the pool;
an eliminated evolution (or a failed request) leaves the parent there for the next round, as in
the paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio.generation.generator_base import (
    Completion, Estimate, GenerationContext, Generator, RunStopped, first_user_text,
)
from studio.records import Record, Turn
from studio_generate_common import RowFailed, ask, in_order, parse_yes_no, settle, total_cost
from studio_generate_evol.evolution import (
    DEFAULT_OPERATIONS, elimination, equality_prompt, evolve_prompt,
)

NAME = "evol_instruct"
EQUALITY_MAX_TOKENS = 5

Operation = Literal["add_constraints", "deepening", "concretizing", "increase_reasoning", "complicate_input",
                    "breadth"]


class EvolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generations: int = Field(2, ge=1, le=20, description="evolution rounds; each evolves every instruction once")
    operations: list[Operation] = Field(
        list(DEFAULT_OPERATIONS),
        description="operations drawn from (uniformly) for each evolution: in-depth add_constraints, deepening, "
                    "concretizing, increase_reasoning, complicate_input; in-breadth 'breadth' (a new, rarer "
                    "instruction in the same domain)")
    equality_check: bool = Field(True, description="ask the model whether the evolved instruction adds anything "
                                                   "over its parent, and drop it when not (elimination rule 1)")
    sorry_max_words: int = Field(80, ge=1, le=10_000, description="an answer containing 'sorry' with fewer words "
                                                                  "than this eliminates the evolution (rule 2)")
    max_seeds: int | None = Field(None, ge=1, description="use only the first this many seed instructions")
    evolve_temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature for evolutions")
    evolve_max_tokens: int = Field(512, ge=16, le=32_768, description="token limit of each evolved instruction")
    response_temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature for the answers")
    response_max_tokens: int = Field(1024, ge=16, le=32_768, description="token limit of each answer")

    @field_validator("operations")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("pick at least one operation")
        return list(dict.fromkeys(value))


@dataclass
class Lineage:
    """One pool entry: the current instruction and how it came to be."""

    instruction: str
    seed_index: int
    seed: Record
    operations: list[str] = field(default_factory=list)


@dataclass
class Evolved:
    instruction: str
    response: Completion
    evolution: Completion
    equality: Completion | None
    verdict: str


class EvolInstruct(Generator):
    name = NAME
    title = "Evol-Instruct"
    summary = "evolve seed instructions in depth (harder) and in breadth (new topics) and answer them (WizardLM)"
    config_model = EvolConfig
    seeds = "required"
    produces = "conversation"

    def estimate(self, config: EvolConfig, seeds: list[Record], count_tokens: Callable[[str], int]) -> Estimate:
        texts = [t for t in (first_user_text(s) for s in seeds) if t]
        if config.max_seeds:
            texts = texts[: config.max_seeds]
        rounds, k, grown = config.generations, len(texts), config.evolve_max_tokens
        n = k * rounds
        # Round 1 evolves the seeds; later rounds evolve evolved instructions, at most
        # evolve_max_tokens long. Answers are asked for instructions of that bound too.
        evolve_in = (sum(count_tokens(evolve_prompt(t, "add_constraints")) for t in texts)
                     + (rounds - 1) * k * (count_tokens(evolve_prompt("", "add_constraints")) + grown))
        equality_in = 0
        if config.equality_check:
            equality_in = (sum(count_tokens(equality_prompt(t, "")) + grown for t in texts)
                           + (rounds - 1) * k * (count_tokens(equality_prompt("", "")) + 2 * grown))
        per = 2 + int(config.equality_check)
        return Estimate(
            requests=n * per,
            prompt_tokens=evolve_in + equality_in + n * grown,
            completion_tokens=n * (config.evolve_max_tokens + config.response_max_tokens
                                   + (EQUALITY_MAX_TOKENS if config.equality_check else 0)),
            notes=[
                f"upper bound: {k} instructions x {rounds} rounds x {per} requests; an evolution eliminated "
                "by the cheap rules (copied prompt words, empty) or judged equal skips its later requests",
                "completion tokens assume every answer uses its whole max_tokens; prompts after the first "
                "round assume evolved instructions as long as evolve_max_tokens",
            ],
        )

    async def generate(self, config: EvolConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        pool = [Lineage(text, i, s) for i, s in enumerate(ctx.seeds) if (text := first_user_text(s))]
        if config.max_seeds:
            pool = pool[: config.max_seeds]
        if not pool:
            raise RunStopped(f"evol_instruct needs seed instructions: none of the {len(ctx.seeds)} seed records "
                             f"has a user turn")
        made = 0
        total = len(pool) * config.generations
        for round_no in range(1, config.generations + 1):
            operations = [ctx.rng.choice(config.operations) for _ in pool]
            kept = eliminated = 0
            jobs = list(zip(pool, operations))
            async for (entry, operation), result in in_order(ctx, jobs, lambda job: self._evolve(config, ctx, *job)):
                evolved: Evolved | None = settle(ctx, result, source=entry.seed, source_index=entry.seed_index)
                if evolved is None:
                    eliminated += 1
                    continue  # the parent stays in the pool for the next round
                parent = entry.instruction
                entry.instruction = evolved.instruction
                entry.operations.append(operation)
                kept += 1
                made += 1
                yield self._record(entry, parent, operation, round_no, evolved)
                ctx.progress(made, total, f"round {round_no}: {made} evolutions kept")
            ctx.progress(made, total, f"round {round_no}: {kept} evolutions kept, {eliminated} eliminated or failed")

    async def _evolve(self, config: EvolConfig, ctx: GenerationContext, entry: Lineage, operation: str) -> Evolved:
        evolution = await ask("evolve", ctx.chat(
            [{"role": "user", "content": evolve_prompt(entry.instruction, operation)}],
            temperature=config.evolve_temperature, max_tokens=config.evolve_max_tokens))
        evolved = evolution.text.strip()
        ruled = elimination(evolved, None, config.sorry_max_words)
        if ruled:
            raise RowFailed("eliminate", f"{ruled[1]} [{operation}]: {evolved[:120]!r}")
        equality: Completion | None = None
        verdict = "skipped"
        if config.equality_check:
            equality = await ask("equality", ctx.chat(
                [{"role": "user", "content": equality_prompt(entry.instruction, evolved)}],
                temperature=0.0, max_tokens=EQUALITY_MAX_TOKENS))
            same = parse_yes_no(equality.text)
            if same:
                raise RowFailed("eliminate", f"the evolved instruction adds nothing to its parent (rule 1) "
                                             f"[{operation}]: {evolved[:120]!r}")
            verdict = "unclear" if same is None else "not equal"
        response = await ask("response", ctx.chat([{"role": "user", "content": evolved}],
                                                  temperature=config.response_temperature,
                                                  max_tokens=config.response_max_tokens))
        ruled = elimination(evolved, response.text, config.sorry_max_words)
        if ruled:
            raise RowFailed("eliminate", f"{ruled[1]} [{operation}]: {response.text[:120]!r}")
        return Evolved(evolved, response, evolution, equality, verdict)

    @staticmethod
    def _record(entry: Lineage, parent: str, operation: str, round_no: int, evolved: Evolved) -> Record:
        provenance = evolved.response.provenance(
            NAME, operation=operation, kind="in-breadth" if operation == "breadth" else "in-depth", round=round_no,
            parent=parent, lineage=list(entry.operations), seed_index=entry.seed_index,
            evolve_key=evolved.evolution.key, equality=evolved.verdict,
            equality_key=None if evolved.equality is None else evolved.equality.key,
            total_cost=total_cost(evolved.response, evolved.evolution, evolved.equality))
        return Record([Turn("user", evolved.instruction), Turn("assistant", evolved.response.text.strip())],
                      meta={"generation": provenance})
