"""Causal language modelling on raw text (continued pretraining / domain adaptation) as a studio
tuning back-end.

Each record becomes one plain-text document, its turn contents joined with ``join_with`` (no chat
template, no roles), followed by the tokenizer's EOS. The documents are tokenized, concatenated
and cut into blocks of ``block_size`` tokens (default: the recipe's ``training.max_length``), and
every token of a block carries loss. Training is a plain ``transformers.Trainer`` with
``DataCollatorForLanguageModeling(mlm=False)``; everything around it (events, checkpoints, resume,
cancellation, adapters, learning checks, the final model) comes from the ``TrainContext``.
"""
from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.records import Record
from studio.training.backend_base import Backend

__version__ = "0.1.0"


class CLMOptions(BaseModel):
    """The recipe's ``config:`` section (also the CLI's and the Train screen's form)."""

    model_config = ConfigDict(extra="forbid")
    block_size: int | None = Field(None, ge=8, description="tokens per packed block (None = training.max_length)")
    join_with: str = Field("\n\n", description="separator between the turns of one record")
    add_eos: bool = Field(True, description="end each record with the EOS token so documents do not run together")
    drop_remainder: bool = Field(False, description="drop the last, shorter block instead of training on it")


def document(record: Record, join_with: str) -> str:
    """The record as raw text: every turn's content, in order, with no template."""
    return join_with.join(turn.content for turn in record.messages if turn.content)


def pack(token_lists: Iterable[list[int]], block_size: int, drop_remainder: bool = False) -> list[list[int]]:
    """Concatenate token sequences and cut them into blocks of ``block_size`` (the last one may
    be shorter unless ``drop_remainder``)."""
    stream = [token for tokens in token_lists for token in tokens]
    blocks = [stream[i:i + block_size] for i in range(0, len(stream), block_size)]
    if blocks and drop_remainder and len(blocks[-1]) < block_size:
        blocks.pop()
    return blocks


class CLMBackend(Backend):
    name = "clm"
    title = "Continued pretraining (raw text)"
    summary = "causal LM on the records' text, packed into blocks; transformers Trainer"
    config_model = CLMOptions
    data_kind = "conversation"
    # Soft prompts are left out: their virtual tokens would be prepended to every packed block.
    adapter_methods = ("none", "lora", "dora", "qlora", "freeze")

    def check(self, recipe, config) -> list[str]:
        if config.block_size is None and recipe.training.max_length is None:
            return ["config.block_size: set it (or training.max_length): packing needs a block size"]
        return []

    def block_size(self, ctx) -> int:
        return ctx.config.block_size or ctx.recipe.training.max_length

    def documents(self, ctx, records: list[Record], tokenizer) -> list[list[int]]:
        texts = [document(r, ctx.config.join_with) for r in records]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if ctx.config.add_eos and tokenizer.eos_token_id is not None:
            ids = [tokens + [tokenizer.eos_token_id] for tokens in ids]
        return ids

    def blocks(self, ctx, records: list[Record], tokenizer):
        from datasets import Dataset

        blocks = pack(self.documents(ctx, records, tokenizer), self.block_size(ctx), ctx.config.drop_remainder)
        if not blocks:
            return None
        return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})

    def train(self, ctx) -> dict[str, Any]:
        from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

        model, tokenizer = ctx.load_causal_lm()
        adapter = ctx.peft_config()
        if adapter is not None:
            # trl trainers wrap the model themselves; a plain Trainer needs it done here.
            from peft import get_peft_model, prepare_model_for_kbit_training

            if ctx.recipe.adapter.method == "qlora":
                model = prepare_model_for_kbit_training(model)
            model = get_peft_model(model, adapter)
        train = self.blocks(ctx, ctx.train_records, tokenizer)
        if train is None:
            raise ValueError("the training records hold no text to train on")
        evaluation = self.blocks(ctx, ctx.eval_records, tokenizer)
        size = self.block_size(ctx)
        ctx.emit("info", message=f"clm: {len(train)} training blocks of {size} tokens"
                                 f"{f', {len(evaluation)} held out' if evaluation is not None else ''}",
                 blocks=len(train), eval_blocks=len(evaluation) if evaluation is not None else 0, block_size=size)
        trainer = Trainer(model=model, args=TrainingArguments(**ctx.trainer_args()), train_dataset=train,
                          eval_dataset=evaluation, processing_class=tokenizer,
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                          callbacks=ctx.callbacks())
        return ctx.fit(trainer)

    def preview(self, ctx, record: Record) -> dict[str, Any]:
        """The record's text as the model reads it: every token carries loss."""
        tokenizer = ctx.load_tokenizer()
        text = document(record, ctx.config.join_with)
        segments = [{"text": text, "loss": True}]
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ctx.config.add_eos and tokenizer.eos_token:
            segments.append({"text": tokenizer.eos_token, "loss": True})
            tokens += 1
        return {"segments": segments, "tokens": tokens, "loss_tokens": tokens}


@hookimpl
def register_backends(register):
    register(CLMBackend())
