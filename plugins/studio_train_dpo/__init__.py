"""Direct preference optimisation back-end: trl's DPOTrainer on chosen/rejected pairs.

The reference policy is a frozen copy of the starting model, the same model with its LoRA adapter
switched off, or log-probs precomputed before training (``config.ref_model``). ``rpo_alpha`` adds
an NLL term on the chosen answers (RPO), which trl 1.16 spells as the extra loss ``sft``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.hookspecs import hookimpl
from studio.training.backend_base import Backend
from studio_train_dpo.common import REF_MODEL_FIELD, RefMode, ref_mode_problems, resolve_ref_mode

# The loss names trl 1.16's DPOTrainer accepts (trl/trainer/dpo_trainer.py, _compute_loss).
DPOLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]


class DPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="how far the policy may move from the reference (higher = closer); "
                        "for ipo the regularisation tau")
    loss_type: DPOLoss | list[DPOLoss] = Field(
        "sigmoid", description="sigmoid (DPO), ipo, hinge (SLiC), robust, exo_pair, nca_pair, bco_pair, sppo_hard, "
        "aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm; a list combines losses (MPO)")
    loss_weights: list[float] | None = Field(None, description="one weight per loss when loss_type is a list "
                                             "(default: 1 each)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed share of flipped labels (robust, "
                                   "aot) or the epsilon of exo_pair")
    rpo_alpha: float | None = Field(None, ge=0, description="weight of an NLL loss on the chosen answers (RPO); "
                                    "guards against both answers' likelihood falling")
    ref_model: RefMode = REF_MODEL_FIELD

    @model_validator(mode="after")
    def _weights_match(self):
        losses = self.losses()
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} weights for {len(losses)} losses "
                             f"({', '.join(losses)})")
        if self.rpo_alpha is not None and "sft" in losses:
            raise ValueError("rpo_alpha adds the 'sft' loss; drop 'sft' from loss_type or leave rpo_alpha unset")
        if "exo_pair" in losses and self.label_smoothing == 0:
            raise ValueError("exo_pair needs label_smoothing > 0 (its epsilon; the paper uses 1e-3)")
        return self

    def losses(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def trl_losses(self) -> tuple[list[str], list[float] | None]:
        """loss_type and loss_weights as DPOConfig takes them, with RPO's NLL term appended."""
        losses, weights = self.losses(), self.loss_weights
        if self.rpo_alpha is not None:
            weights = (weights or [1.0] * len(losses)) + [self.rpo_alpha]
            losses = losses + ["sft"]
        return losses, weights


class DPOBackend(Backend):
    name = "dpo"
    title = "Direct preference optimisation"
    summary = "trl DPOTrainer on chosen/rejected pairs, against a reference copy, adapter or precomputed log-probs"
    config_model = DPOOptions
    data_kind = "preference"

    def check(self, recipe, config):
        return ref_mode_problems(config.ref_model, recipe.adapter.method)

    def train(self, ctx):
        from trl import DPOConfig, DPOTrainer

        from studio_train_dpo.common import load_policy, reference

        config = ctx.config
        mode = resolve_ref_mode(config.ref_model, ctx.recipe.adapter.method)
        model, tokenizer = load_policy(ctx)
        ref_model, precompute = reference(model, mode)
        losses, weights = config.trl_losses()
        args = DPOConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length, beta=config.beta,
                         loss_type=losses, loss_weights=weights, label_smoothing=config.label_smoothing,
                         precompute_ref_log_probs=precompute)
        ctx.emit("info", message=f"dpo: loss {'+'.join(losses)}, beta {config.beta}, reference: {mode}")
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ctx.dataset("preference"),
                             eval_dataset=ctx.eval_dataset("preference"), processing_class=tokenizer,
                             peft_config=ctx.peft_config(), callbacks=ctx.callbacks())
        return ctx.fit(trainer)

    def preview(self, ctx, record):
        from studio_train_dpo.common import preference_preview

        return preference_preview(ctx, record, "DPO raises the chosen answer's log-probability relative to the "
                                               "reference and lowers the rejected one's; the prompt is context only")


@hookimpl
def register_backends(register):
    register(DPOBackend())
