"""Supervised fine-tuning back-end: trl's SFTTrainer on conversations.

Defaults chosen for throughput: examples are packed best-fit-decreasing into rows of
``training.max_length`` tokens (no padding, no example cut in two), and the loss covers only
what the assistant writes (its replies and their end-of-turn token, marked by the chat
template's ``{% generation %}`` blocks). Without flash-attention the packed rows stay separate
rows rather than one flattened sequence per batch (see ``packing.py``): 2-3x the tokens/second of
trl's documented padded set-up on length-skewed chats, at the same peak memory
(``bench/bench_train_sft.py``). Full fine-tuning, LoRA, DoRA, QLoRA (CUDA only), prompt tuning and
layer freezing all work; prompt tuning trains without packing (see ``packing_for``).
``preview`` shows how one record is rendered and which of its tokens carry loss.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.records import Record
from studio.training.backend_base import Backend, TrainContext
from studio.training.recipe import ADAPTER_METHODS, TrainRecipe
from studio_train_sft.templates import override_problems


class SFTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    packing: bool = Field(True, description="pack several examples into each row of training.max_length tokens "
                          "(no padding); off by itself for prompt tuning")
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = Field(
        "bfd", description="bfd: best-fit decreasing, whole examples (longer ones are truncated); bfd_split: long "
        "examples continue in another row; wrapped: cut anywhere, examples attend across boundaries")
    padding_free: bool = Field(False, description="without packing: flatten each batch into one unpadded sequence "
                               "(pays off with flash-attention; needs training.max_length: null)")
    assistant_only_loss: bool = Field(True, description="loss only on assistant replies and their end-of-turn token "
                                      "(needs {% generation %} marks in the chat template)")
    completion_only_loss: bool = Field(False, description="loss only on the last assistant reply (the completion "
                                       "of a prompt/completion pair); works with any chat template")
    chat_template: str | None = Field(None, description="override the model's chat template: 'chatml' (the studio's, "
                                      "with generation marks) or a Jinja template string")
    neftune_noise_alpha: float | None = Field(None, ge=0, description="NEFTune: noise added to input embeddings "
                                              "while training (5 is typical; None = off)")


def packing_for(recipe: TrainRecipe, config: SFTOptions) -> bool:
    """Packing as it will run: prompt tuning prepends its soft prompt to each sequence the model
    sees, so a packed row would give one prompt to several examples and none to the others
    (and peft drops the position_ids that keep packed examples apart). It trains unpacked, whatever
    config.packing says (a form that sends every default must not make prompt tuning fail)."""
    if recipe.adapter.method == "prompt_tuning":
        return False
    return config.packing


class SFTBackend(Backend):
    name = "sft"
    title = "Supervised fine-tuning"
    summary = "trl SFTTrainer: packed, assistant-only loss; full, LoRA/DoRA/QLoRA, prompt tuning, freeze"
    config_model = SFTOptions
    data_kind = "conversation"
    adapter_methods = ADAPTER_METHODS

    def check(self, recipe: TrainRecipe, config: SFTOptions) -> list[str]:
        problems = []
        prompt_tuning = recipe.adapter.method == "prompt_tuning"
        max_length = recipe.training.max_length
        if prompt_tuning and config.padding_free:
            problems.append("config.padding_free: prompt tuning prepends its soft prompt to every sequence, so "
                            "examples cannot share a flattened batch; set it false")
        if packing_for(recipe, config) and max_length is None:
            problems.append("training.max_length: packing fills rows of max_length tokens; set it (e.g. 256) or "
                            "set config.packing: false")
        if config.padding_free and not packing_for(recipe, config) and max_length is not None:
            problems.append("config.padding_free: without packing trl cannot truncate a flattened batch; set "
                            "training.max_length: null, or use packing (padding-free already)")
        # The model's own template is checked when the run starts (prepare_template): trl can add
        # the marks to some popular unmarked templates, which needs the tokenizer loaded.
        problems += override_problems(config.chat_template, config.assistant_only_loss)
        return problems

    def train(self, ctx: TrainContext) -> dict[str, Any]:
        from trl import SFTConfig

        from studio_train_sft.packing import StudioSFTTrainer
        from studio_train_sft.templates import prepare_template

        config: SFTOptions = ctx.config
        recipe = ctx.recipe
        model, tokenizer = ctx.load_causal_lm()
        template = prepare_template(tokenizer, config, recipe.model)
        if template == "chatml" and "<|im_end|>" not in tokenizer.get_vocab():
            ctx.emit("warning", message="chat_template chatml: <|im_end|> is not a token of this tokenizer, so it "
                                        "trains as plain text and generation will not stop on it")
        packing = packing_for(recipe, config)
        if config.packing and not packing:
            ctx.emit("info", message="prompt tuning: packing is off (each example needs its own soft prompt)")
        args = SFTConfig(**ctx.trainer_args(), max_length=recipe.training.max_length, packing=packing,
                         packing_strategy=config.packing_strategy, padding_free=config.padding_free,
                         assistant_only_loss=config.assistant_only_loss,
                         completion_only_loss=config.completion_only_loss,
                         neftune_noise_alpha=config.neftune_noise_alpha)
        trainer = StudioSFTTrainer(model=model, args=args, train_dataset=self.rows(ctx.train_records, config),
                                   eval_dataset=self.rows(ctx.eval_records, config) if ctx.eval_records else None,
                                   processing_class=tokenizer, peft_config=ctx.peft_config(),
                                   callbacks=ctx.callbacks())
        ctx.emit("info", message=self.layout_summary(trainer, len(ctx.train_records), template), template=template,
                 packing=packing, packed_rows=trainer.packed_rows)
        if ctx.is_main_process and hasattr(trainer.model, "print_trainable_parameters"):
            trainable, total = trainer.model.get_nb_trainable_parameters()
            ctx.emit("info", message=f"{recipe.adapter.method}: training {trainable:,} of {total:,} parameters",
                     trainable=trainable, total=total)
        return ctx.fit(trainer)

    @staticmethod
    def rows(records: list[Record], config: SFTOptions):
        """Conversations as trl rows: ``messages``, or prompt/completion split at the last
        assistant reply when only that reply carries loss."""
        from datasets import Dataset

        from studio.training.data import conversation_row

        rows = [conversation_row(r) for r in records]
        if config.completion_only_loss:
            split = []
            for row in rows:
                turns = row["messages"]
                last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
                split.append({"prompt": turns[:last], "completion": turns[last:]})
            rows = split
        return Dataset.from_list(rows)

    @staticmethod
    def layout_summary(trainer, examples: int, template: str) -> str:
        import pyarrow.compute as pc

        dataset = trainer.train_dataset
        if trainer.args.packing:
            rows = len(dataset)
            tokens = pc.sum(pc.list_value_length(dataset.with_format("arrow")["input_ids"])).as_py() or 0
            fill = tokens / (rows * trainer.args.max_length) if rows else 0.0
            layout = "separate rows" if trainer.packed_rows else "one flattened sequence per batch"
            return (f"sft: packed {examples} examples into {rows} rows of <= {trainer.args.max_length} "
                    f"tokens ({fill:.0%} full; {layout}); template {template}")
        layout = "flattened per batch (padding-free)" if trainer.padding_free else "padded per batch"
        return f"sft: {len(dataset)} examples, {layout}; template {template}"

    def preview(self, ctx: TrainContext, record: Record) -> dict[str, Any]:
        from studio.training.data import check_records, conversation_row
        from studio_train_sft.templates import prepare_template, preview_record

        problems = check_records([record], self.data_kind, "preview")
        if problems:
            raise ValueError(problems[0])
        tokenizer = ctx.load_tokenizer()
        template = prepare_template(tokenizer, ctx.config, ctx.recipe.model)
        return preview_record(tokenizer, conversation_row(record)["messages"], ctx.config, template)


@hookimpl
def register_backends(register):
    register(SFTBackend())
