"""Answers for instruction-only datasets: each seed's conversation up to its last user turn is sent
to the model, and the record made is that conversation plus the model's answer.

``n_responses`` > 1 asks the same prompt several times (``sample`` 0..n-1, one journal entry each)
and keeps every answer as its own record. The seed's own metadata travels under ``meta["seed"]``
(without the format reader's layout hints, which describe the seed file, not the new record).
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field

from studio.generation.generator_base import Estimate, GenerationContext, Generator, chat_messages
from studio.hookspecs import hookimpl
from studio.records import Record, Turn
from studio_generate_common import RowFailed, ask, in_order, settle

NAME = "responses"
LAYOUT_KEY = "_layout"


class ResponsesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(None, description="system turn sent instead of the seed's own (empty: keep "
                                                        "the seed's, if any)")
    n_responses: int = Field(1, ge=1, le=64, description="answers per seed, each kept as its own record")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    max_tokens: int = Field(1024, ge=1, le=32_768, description="token limit of each answer")


def prompt_messages(record: Record, system_prompt: str | None) -> list[dict[str, Any]]:
    messages = chat_messages(record)
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]
    return messages


def seed_meta(record: Record) -> dict[str, Any]:
    return {k: v for k, v in record.meta.items() if k != LAYOUT_KEY}


class Responses(Generator):
    name = NAME
    title = "Responses"
    summary = "answer the prompts of an instruction-only dataset (one or more answers per prompt)"
    config_model = ResponsesConfig
    seeds = "required"
    produces = "conversation"

    def estimate(self, config: ResponsesConfig, seeds: list[Record], count_tokens: Callable[[str], int]) -> Estimate:
        prompts = [m for m in (prompt_messages(s, config.system_prompt) for s in seeds) if m]
        prompt_tokens = sum(count_tokens("\n".join(m["content"] for m in messages)) for messages in prompts)
        n = len(prompts) * config.n_responses
        return Estimate(requests=n, prompt_tokens=prompt_tokens * config.n_responses,
                        completion_tokens=n * config.max_tokens,
                        notes=["completion tokens assume every answer uses its whole max_tokens"]
                        + ([f"{len(seeds) - len(prompts)} seeds have no user turn and are skipped"]
                           if len(prompts) < len(seeds) else []))

    async def generate(self, config: ResponsesConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        jobs = []
        for i, seed in enumerate(ctx.seeds):
            if not any(t.role == "user" for t in seed.messages):
                ctx.fail("the seed has no user turn to answer", source=seed, source_index=i, stage="seed")
                continue
            jobs.extend((i, seed, k) for k in range(config.n_responses))
        made = 0
        async for (i, seed, _), result in in_order(ctx, jobs, lambda job: self._answer(config, ctx, *job)):
            record = settle(ctx, result, source=seed, source_index=i)
            if record is not None:
                made += 1
                yield record
            ctx.progress(made, len(jobs), f"{made} answers of {len(jobs)}")

    async def _answer(self, config: ResponsesConfig, ctx: GenerationContext, index: int, seed: Record,
                      sample: int) -> Record:
        messages = prompt_messages(seed, config.system_prompt)
        answer = await ask("response", ctx.chat(messages, sample=sample, temperature=config.temperature,
                                                max_tokens=config.max_tokens))
        text = answer.text.strip()
        if not text:
            raise RowFailed("response", "empty answer")
        turns = [Turn(m["role"], m["content"]) for m in messages] + [Turn("assistant", text)]
        meta: dict[str, Any] = {"generation": answer.provenance(NAME, seed_index=index, sample=sample)}
        if seed.meta:
            meta["seed"] = seed_meta(seed)
        return Record(turns, meta=meta)


@hookimpl
def register_generators(register):
    register(Responses())
