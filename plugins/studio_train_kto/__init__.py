"""Kahneman-Tversky optimisation back-end: trl's KTOTrainer on unpaired feedback (one completion
with a desirable/undesirable label per record).

KTO needs both kinds of label in the training data and at least two examples per batch (its KL
baseline pairs each completion with a neighbour's prompt); both are checked before training.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training.backend_base import Backend
from studio_train_dpo.common import REF_MODEL_FIELD, RefMode, ref_mode_problems, resolve_ref_mode


class KTOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="how far the policy may move from the reference (higher = closer)")
    desirable_weight: float = Field(1.0, gt=0, description="loss weight of desirable (label true) examples")
    undesirable_weight: float = Field(1.0, gt=0, description="loss weight of undesirable (label false) examples; "
                                      "raise the rarer side so weight x count is about even")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="kto, or apo_zero_unpaired "
                                                           "(anchored, no KL baseline)")
    ref_model: RefMode = REF_MODEL_FIELD


def label_problems(records, where: str) -> list[str]:
    desirable = sum(1 for r in records if r.label)
    undesirable = len(records) - desirable
    if desirable and undesirable:
        return []
    only = "desirable (true)" if desirable else "undesirable (false)"
    return [f"{where}: all {len(records)} records are labelled {only}; KTO learns from the contrast and needs "
            "both desirable and undesirable examples (field 'label')"]


class KTOBackend(Backend):
    name = "kto"
    title = "Kahneman-Tversky optimisation"
    summary = "trl KTOTrainer on unpaired thumbs-up/down feedback"
    config_model = KTOOptions
    data_kind = "unpaired"

    def check(self, recipe, config):
        problems = ref_mode_problems(config.ref_model, recipe.adapter.method)
        if config.loss_type == "kto" and recipe.training.batch_size < 2:
            problems.append("training.batch_size: KTO's KL baseline pairs each example with another one in its "
                            "batch, so batch_size must be 2 or more")
        return problems

    def train(self, ctx):
        problems = label_problems(ctx.train_records, "dataset")
        if problems:  # the data is only known here, not in check()
            raise ValueError("the run cannot start:\n  " + "\n  ".join(problems))
        from trl import KTOConfig, KTOTrainer

        from studio_train_dpo.common import load_policy, reference

        config = ctx.config
        mode = resolve_ref_mode(config.ref_model, ctx.recipe.adapter.method)
        desirable = sum(1 for r in ctx.train_records if r.label)
        ctx.emit("info", message=f"kto: {desirable} desirable and {len(ctx.train_records) - desirable} undesirable "
                                 f"examples, beta {config.beta}, reference: {mode}")
        model, tokenizer = load_policy(ctx)
        ref_model, precompute = reference(model, mode)
        args = KTOConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length, beta=config.beta,
                         desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight,
                         loss_type=config.loss_type, precompute_ref_log_probs=precompute)
        trainer = KTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ctx.dataset("unpaired"),
                             eval_dataset=ctx.eval_dataset("unpaired"), processing_class=tokenizer,
                             peft_config=ctx.peft_config(), callbacks=ctx.callbacks())
        return ctx.fit(trainer)

    def preview(self, ctx, record):
        from studio.training.data import check_records, unpaired_row
        from studio_train_dpo.common import completions_preview

        problems = check_records([record], "unpaired", "preview")
        if problems:
            raise ValueError(problems[0])
        row = unpaired_row(record)
        label = "desirable" if row["label"] else "undesirable"
        return completions_preview(ctx.load_tokenizer(), row["prompt"], [(label, row["completion"])],
                                   [f"KTO {'raises' if row['label'] else 'lowers'} this {label} completion's "
                                    "log-probability relative to the reference; the prompt is context only"])


@hookimpl
def register_backends(register):
    register(KTOBackend())
