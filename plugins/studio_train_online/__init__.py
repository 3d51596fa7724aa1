"""Online RL back-ends: GRPO and RLOO (trl GRPOTrainer / RLOOTrainer) on prompts.

For each prompt the policy samples ``num_generations`` completions; each is scored by the rule
rewards named in ``config.reward_funcs`` (see ``rewards.py``) and/or a trained reward model
(``config.reward_model``: a ``reward`` run or model folder); the policy moves towards the
completions that beat their group's average (GRPO) or the mean of the others (RLOO), with an
optional KL pull (``beta``) towards the starting model. trl logs the mean total as ``reward`` and
each source as ``rewards/<name>/mean`` (``rewards/reward_model/mean`` for the model); recipes
prove learning with ``expect: {metric: reward, rises_by: ...}``.

Generation runs on the training device with transformers' ``generate``: on a CPU keep
``max_completion_length`` small.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training import rule_rewards as rewards
from studio.training.backend_base import Backend
from studio.training.reward_refs import reward_model_ref


class OnlineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward_funcs: list[str] = Field(default_factory=lambda: ["format_chatml"],
                                    description="built-in rule rewards: " + rewards.SHORT_HELP)
    reward_model: str | None = Field(None, description="a trained reward model: a `reward` run folder or model "
                                                        "folder (scores prompt + completion)")
    reward_weights: list[float] | None = Field(None, description="weight per reward (the rule rewards in order, "
                                                                  "then the reward model); none = all 1")
    target_length: int = Field(40, ge=1, description="length_target: the wanted completion length in characters")
    keywords: list[str] = Field(default_factory=list, description="contains: words the completion should contain")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt (the group); must divide "
                                                      "batch_size x grad_accum x processes")
    max_completion_length: int = Field(16, ge=1, description="tokens generated per completion at most")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the completions")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the top tokens holding this mass")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the starting model (0: no reference model)")
    num_iterations: int = Field(1, ge=1, description="optimisation passes over each batch of completions")
    log_completions: bool = Field(False, description="print sampled completions with their rewards to the log")


class GRPOOptions(OnlineOptions):
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="how token losses are aggregated (dapo: over all tokens of the batch)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide advantages by the reward sd of the group, the batch, or not at all")


class RLOOOptions(OnlineOptions):
    beta: float = Field(0.05, ge=0, description="KL penalty towards the starting model (0: no reference model)")
    normalize_advantages: bool = Field(False, description="normalise advantages to mean 0, sd 1 per batch")


class OnlineBackend(Backend):
    data_kind = "prompt"
    trainer_name = ""

    def check(self, recipe, config) -> list[str]:
        problems = rewards.reward_problems(config)
        t = recipe.training
        processes = recipe.launcher.nproc if recipe.launcher.kind != "none" else 1
        batch = t.batch_size * t.grad_accum * processes
        if batch % config.num_generations:
            divisors = [g for g in range(2, batch + 1) if batch % g == 0]
            problems.append(
                f"config.num_generations: {config.num_generations} must divide the generation batch "
                f"(batch_size {t.batch_size} x grad_accum {t.grad_accum} x {processes} process(es) = {batch} "
                f"completions, i.e. {batch} / num_generations prompts per step); choose one of "
                f"{', '.join(map(str, divisors)) or 'none: raise batch_size'} or change batch_size")
        return problems

    def reward_sources(self, ctx, tokenizer, end_ids) -> tuple[list, list]:
        funcs = [rewards.build(name, ctx.config, tokenizer, end_ids) for name in ctx.config.reward_funcs]
        classes: list = [None] * len(funcs)
        if ctx.config.reward_model:
            from studio.training.reward_workbench import load_reward_model

            scorer = load_reward_model(*reward_model_ref(ctx.config.reward_model, ctx.run_dir))
            # trl names a model's reward metrics after its folder ("final" for every run): say what it is.
            scorer.model.config._name_or_path = "reward_model"
            funcs.append(scorer.model)
            classes.append(scorer.tokenizer)
            ctx.emit("info", message=f"reward model: {scorer.location}")
        return funcs, classes

    def config_args(self, config) -> dict[str, Any]:
        return {}

    def train(self, ctx) -> dict[str, Any]:
        import trl

        config_cls = getattr(trl, f"{self.trainer_name}Config")
        trainer_cls = getattr(trl, f"{self.trainer_name}Trainer")
        c = ctx.config
        model, tokenizer = ctx.load_causal_lm()  # (also picks one CPU thread for a tiny model)
        end_ids = model.generation_config.eos_token_id
        end_ids = tuple(end_ids if isinstance(end_ids, list) else [end_ids] if end_ids is not None else [])
        funcs, classes = self.reward_sources(ctx, tokenizer, end_ids)
        group = c.num_generations
        # Evaluation samples whole groups too: its batch must be a multiple of the group.
        args = config_cls(
            **ctx.trainer_args(per_device_eval_batch_size=group * max(1, ctx.recipe.training.batch_size // group)),
            num_generations=group, max_completion_length=c.max_completion_length, temperature=c.temperature,
            top_p=c.top_p, beta=c.beta, num_iterations=c.num_iterations, reward_weights=c.reward_weights,
            log_completions=c.log_completions, **self.config_args(c))
        trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=ctx.dataset("prompt"),
                              eval_dataset=ctx.eval_dataset("prompt"), processing_class=tokenizer,
                              reward_processing_classes=classes, peft_config=ctx.peft_config(),
                              callbacks=ctx.callbacks())
        return ctx.fit(trainer)


class GRPOBackend(OnlineBackend):
    name = "grpo"
    title = "GRPO (online RL)"
    summary = "trl GRPOTrainer: group-relative policy optimisation with rule rewards or a reward model"
    config_model = GRPOOptions
    trainer_name = "GRPO"

    def config_args(self, config) -> dict[str, Any]:
        return {"loss_type": config.loss_type, "scale_rewards": config.scale_rewards}


class RLOOBackend(OnlineBackend):
    name = "rloo"
    title = "RLOO (online RL)"
    summary = "trl RLOOTrainer: REINFORCE leave-one-out with rule rewards or a reward model"
    config_model = RLOOOptions
    trainer_name = "RLOO"

    def config_args(self, config) -> dict[str, Any]:
        return {"normalize_advantages": config.normalize_advantages}


@hookimpl
def register_backends(register):
    register(GRPOBackend())
    register(RLOOBackend())
