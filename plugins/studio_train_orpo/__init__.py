"""Reference-free preference back-ends from trl.experimental: ORPO (odds-ratio preference
optimisation: SFT on the chosen answer plus an odds-ratio penalty on the rejected one) and CPO
(contrastive preference optimisation, whose ``loss_type: simpo`` is SimPO: a length-normalised
margin with a target gap ``simpo_gamma``; ``cpo_alpha: 0`` drops CPO's NLL term for pure SimPO).

Neither keeps a reference model, so they cost one model's memory and one forward per pair.
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training.backend_base import Backend


class ORPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term against the NLL term (lambda in "
                        "the ORPO paper)")


class CPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field(
        "sigmoid", description="sigmoid (CPO), hinge, ipo, simpo (SimPO), alphapo (SimPO with cpo_alpha 0)")
    beta: float = Field(0.1, gt=0, description="scale of the preference margin (SimPO uses about 2)")
    cpo_alpha: float = Field(1.0, ge=0, description="weight of the NLL term on the chosen answers "
                             "(0 with simpo = pure SimPO)")
    simpo_gamma: float = Field(0.5, ge=0, description="target reward margin of the simpo loss")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed share of flipped labels (sigmoid loss)")
    alpha: float = Field(0.0, description="AlphaPO reward shape; 0 = plain log-probability rewards")


def _experimental():
    # trl.experimental warns on every import; the back-end summaries already say where they come from.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trainer_kwargs(ctx) -> dict:
    return {"train_dataset": ctx.dataset("preference"), "eval_dataset": ctx.eval_dataset("preference"),
            "peft_config": ctx.peft_config(), "callbacks": ctx.callbacks()}


class ORPOBackend(Backend):
    name = "orpo"
    title = "Odds-ratio preference optimisation"
    summary = "trl.experimental ORPOTrainer: SFT and preference in one loss, no reference model"
    config_model = ORPOOptions
    data_kind = "preference"

    def train(self, ctx):
        _experimental()
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        from studio_train_dpo.common import load_policy

        model, tokenizer = load_policy(ctx)
        args = ORPOConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length, beta=ctx.config.beta)
        trainer = ORPOTrainer(model=model, args=args, processing_class=tokenizer, **_trainer_kwargs(ctx))
        return ctx.fit(trainer)

    def preview(self, ctx, record):
        from studio_train_dpo.common import preference_preview

        return preference_preview(ctx, record, "ORPO trains the chosen answer with NLL and penalises the odds of "
                                               "the rejected one; no reference model")


class CPOBackend(Backend):
    name = "cpo"
    title = "Contrastive preference optimisation / SimPO"
    summary = "trl.experimental CPOTrainer (loss_type simpo = SimPO), no reference model"
    config_model = CPOOptions
    data_kind = "preference"

    def train(self, ctx):
        _experimental()
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        from studio_train_dpo.common import load_policy

        c = ctx.config
        model, tokenizer = load_policy(ctx)
        args = CPOConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length, loss_type=c.loss_type,
                         beta=c.beta, cpo_alpha=c.cpo_alpha, simpo_gamma=c.simpo_gamma,
                         label_smoothing=c.label_smoothing, alpha=c.alpha)
        trainer = CPOTrainer(model=model, args=args, processing_class=tokenizer, **_trainer_kwargs(ctx))
        return ctx.fit(trainer)

    def preview(self, ctx, record):
        from studio_train_dpo.common import preference_preview

        return preference_preview(ctx, record, f"{ctx.config.loss_type} pushes the chosen answer's (average) "
                                               "log-probability above the rejected one's; no reference model")


@hookimpl
def register_backends(register):
    register(ORPOBackend())
    register(CPOBackend())
