"""Magpie-style self-synthesis (Xu et al., 2024): an aligned model given only the chat template's
opening of a user turn writes a plausible user instruction itself; asking it to answer that
instruction gives a conversation with no seed data at all.

Each row sends the pre-query prefix (``template``, or a custom ``prefix``) as a raw completion
(``/v1/completions``) with its own ``sample`` index, keeps the text up to the end-of-turn marker
as the instruction, drops empty, too short and duplicate instructions, and then gets the answer
through chat or through a second raw completion with the full template.

An endpoint without raw completions stops the run with one clear error after the first request
instead of failing every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.generation.generator_base import (
    Completion, Estimate, GenerationContext, GenerationFailed, Generator, RunStopped,
)
from studio.hookspecs import hookimpl
from studio.records import Record, Turn
from studio_generate_common import (
    RowFailed, ask, batched, cut_at_markers, in_order, is_unsupported, normalised_key, settle, total_cost,
)

NAME = "magpie"
# Instructions sampled (then filtered and answered) together; rows are yielded chunk by chunk.
CHUNK = 256


@dataclass(frozen=True)
class Template:
    """How a chat template writes turns, as far as Magpie needs it. No template starts with the
    BOS token: servers add it when they tokenize a raw prompt (the embedded server does, as do
    servers using Hugging Face tokenizers), and a second BOS would push the model off its template."""

    system: str  # a system turn; {content} is replaced
    user: str  # opening of a user turn: the pre-query prefix ends with it
    end: str  # end-of-turn marker
    after_end: str  # what follows the marker before the next turn
    assistant: str  # opening of an assistant turn
    markers: tuple[str, ...]  # template tokens that never belong in an instruction

    def prefix(self, system: str | None) -> str:
        head = self.system.format(content=system) + self.end + self.after_end if system else ""
        return head + self.user

    def answer_prompt(self, system: str | None, instruction: str) -> str:
        return self.prefix(system) + instruction + self.end + self.after_end + self.assistant


CHATML = Template("<|im_start|>system\n{content}", "<|im_start|>user\n", "<|im_end|>", "\n",
                  "<|im_start|>assistant\n", ("<|im_end|>", "<|im_start|>", "<|endoftext|>"))
LLAMA3 = Template("<|start_header_id|>system<|end_header_id|>\n\n{content}",
                  "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>", "",
                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
                  ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>", "<|begin_of_text|>"))
# The studio's embedded model (studio.models.embedded): ChatML, with its own special tokens.
EMBEDDED = Template(CHATML.system, CHATML.user, CHATML.end, CHATML.after_end,
                    CHATML.assistant, CHATML.markers + ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"))
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "embedded": EMBEDDED}


class MagpieConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_instructions: int = Field(100, ge=1, le=1_000_000, description="instructions to sample (one request each; "
                                                                       "empty, short and duplicate ones are dropped)")
    template: Literal["chatml", "llama3", "embedded"] = Field(
        "chatml", description="chat template of the served model: chatml (<|im_start|>user), llama3 "
                              "(<|start_header_id|>user), embedded (the studio's own model: ChatML); the server "
                              "adds the BOS token")
    prefix: str | None = Field(None, description="custom pre-query prefix sent instead of the template's (the text "
                                                 "that opens a user turn); needs end_marker")
    end_marker: str | None = Field(None, description="end-of-turn marker for a custom prefix (the instruction is "
                                                     "the text before it)")
    system_prompt: str | None = Field(None, description="system turn placed before the user turn (steers the topic)")
    min_words: int = Field(3, ge=1, le=1000, description="drop instructions with fewer words")
    response_via: Literal["chat", "completion"] = Field(
        "chat", description="get answers through chat completions, or a raw completion with the full template")
    instruction_temperature: float = Field(1.0, ge=0.0, le=2.0, description="sampling temperature for instructions")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling for instructions")
    instruction_max_tokens: int = Field(256, ge=8, le=32_768, description="token limit of each instruction")
    response_temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature for answers")
    response_max_tokens: int = Field(1024, ge=16, le=32_768, description="token limit of each answer")

    @model_validator(mode="after")
    def _custom_prefix(self):
        if self.prefix is not None and not self.end_marker:
            raise ValueError("a custom prefix needs end_marker (where the sampled instruction ends)")
        if self.prefix is not None and self.response_via == "completion":
            raise ValueError("response_via=completion needs a named template; use response_via=chat with a "
                             "custom prefix")
        return self

    def pre_query(self) -> str:
        if self.prefix is not None:
            return self.prefix
        return TEMPLATES[self.template].prefix(self.system_prompt)

    def markers(self) -> tuple[str, ...]:
        if self.prefix is not None:
            return (self.end_marker or "",)
        return TEMPLATES[self.template].markers


def no_completions_error(exc: GenerationFailed) -> RunStopped:
    return RunStopped(
        f"the endpoint has no /v1/completions (raw completions): the first request failed with "
        f"{'HTTP ' + str(exc.status) if exc.status else 'an error'} ({exc}). Magpie needs raw completions to "
        f"send the chat template's pre-query prefix; serve the model with a completions route (the studio's "
        f"embedded server has one) or use another generator")


@dataclass
class Sampled:
    index: int
    instruction: str
    completion: Completion


class Magpie(Generator):
    name = NAME
    title = "Magpie"
    summary = "self-synthesis: the model writes instructions from the chat template's user-turn prefix, then answers"
    config_model = MagpieConfig
    seeds = "none"
    produces = "conversation"
    uses_completions = True

    def estimate(self, config: MagpieConfig, seeds: list[Record], count_tokens: Callable[[str], int]) -> Estimate:
        n = config.num_instructions
        prefix_tokens = count_tokens(config.pre_query())
        if config.response_via == "completion":
            answer_in = prefix_tokens + config.instruction_max_tokens + count_tokens(
                TEMPLATES[config.template].answer_prompt(None, ""))
        else:
            answer_in = config.instruction_max_tokens + (count_tokens(config.system_prompt) if config.system_prompt
                                                         else 0)
        return Estimate(
            requests=2 * n,
            prompt_tokens=n * (prefix_tokens + answer_in),
            completion_tokens=n * (config.instruction_max_tokens + config.response_max_tokens),
            notes=["upper bound: dropped instructions (empty, short, duplicate) get no answer request",
                   "completion tokens assume every answer uses its whole max_tokens; answer prompts assume "
                   "instructions as long as instruction_max_tokens"],
        )

    async def generate(self, config: MagpieConfig, ctx: GenerationContext) -> AsyncIterator[Record]:
        prefix, markers = config.pre_query(), config.markers()
        params = dict(temperature=config.instruction_temperature, top_p=config.top_p,
                      max_tokens=config.instruction_max_tokens, stop=[m for m in markers if m][:4])

        async def sample(i: int) -> Completion:
            return await ctx.complete(prefix, sample=i, **params)

        # One request alone first: an endpoint without raw completions is told apart from a bad row
        # before every row fails the same way.
        probe = await self._probe(sample)
        if isinstance(probe, GenerationFailed) and is_unsupported(probe):
            raise no_completions_error(probe)
        seen: set[str] = set()
        made = kept = 0
        # Chunks: instructions of a chunk are sampled together, filtered in order (duplicates need
        # the order), then answered together; rows are yielded chunk by chunk as they are made.
        for chunk in batched(range(config.num_instructions), CHUNK):
            samples = [(i, probe) for i in chunk if i == 0]
            rest = [i for i in chunk if i != 0]
            samples += [pair async for pair in in_order(ctx, rest, sample)]
            accepted: list[Sampled] = []
            for i, result in samples:
                item = self._instruction(config, ctx, i, result, markers, seen)
                if item is not None:
                    accepted.append(item)
            kept += len(accepted)
            async for item, result in in_order(ctx, accepted, lambda s: self._answer(config, ctx, s)):
                record = settle(ctx, result, source=Record([Turn("user", item.instruction)]), source_index=item.index)
                if record is not None:
                    made += 1
                    yield record
                ctx.progress(made, config.num_instructions,
                             f"{made} made; {kept} of {chunk[-1] + 1} sampled instructions kept so far")

    @staticmethod
    def _instruction(config: MagpieConfig, ctx: GenerationContext, index: int, result: Completion | BaseException,
                     markers: tuple[str, ...], seen: set[str]) -> Sampled | None:
        """The sampled instruction, or None after recording why there is none."""
        if isinstance(result, GenerationFailed):
            if is_unsupported(result):
                raise no_completions_error(result)
            ctx.fail(result, source_index=index, stage="instruction")
            return None
        if isinstance(result, BaseException):
            raise result
        instruction = cut_at_markers(result.text, markers).strip()
        reason = None
        if not instruction:
            reason = "empty instruction"
        elif len(instruction.split()) < config.min_words:
            reason = f"instruction shorter than {config.min_words} words: {instruction!r}"
        elif normalised_key(instruction) in seen:
            reason = f"duplicate instruction: {instruction[:120]!r}"
        if reason:
            ctx.fail(reason, source_index=index, stage="filter")
            return None
        seen.add(normalised_key(instruction))
        return Sampled(index, instruction, result)

    @staticmethod
    async def _probe(sample: Callable) -> Completion | GenerationFailed:
        try:
            return await sample(0)
        except GenerationFailed as exc:
            return exc

    async def _answer(self, config: MagpieConfig, ctx: GenerationContext, item: Sampled) -> Record:
        if config.response_via == "completion":
            template = TEMPLATES[config.template]
            answer = await ask("response", ctx.complete(
                template.answer_prompt(config.system_prompt, item.instruction),
                temperature=config.response_temperature, max_tokens=config.response_max_tokens,
                stop=[m for m in template.markers][:4]))
            text = cut_at_markers(answer.text, template.markers).strip()
        else:
            messages = ([{"role": "system", "content": config.system_prompt}] if config.system_prompt else [])
            messages.append({"role": "user", "content": item.instruction})
            answer = await ask("response", ctx.chat(messages, temperature=config.response_temperature,
                                                    max_tokens=config.response_max_tokens))
            text = answer.text.strip()
        if not text:
            raise RowFailed("response", "empty answer")
        turns = ([Turn("system", config.system_prompt)] if config.system_prompt else [])
        turns += [Turn("user", item.instruction), Turn("assistant", text)]
        provenance = answer.provenance(
            NAME, sample=item.index, template=None if config.prefix is not None else config.template,
            pre_query=config.pre_query(), instruction_key=item.completion.key, response_via=config.response_via,
            total_cost=total_cost(answer, item.completion))
        return Record(turns, meta={"generation": provenance})


@hookimpl
def register_generators(register):
    register(Magpie())
