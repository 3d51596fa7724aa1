"""PPO: the studio's own RLHF back-end (torch + transformers + peft, no trl trainer).

The policy samples a response to each prompt of a batch; a reward (rule rewards shared with
GRPO/RLOO, and/or a studio reward run) scores it on its EOS token; a per-token KL penalty towards
the reference model is added; GAE turns rewards and value estimates into advantages; and
``num_ppo_epochs`` passes of mini-batches take clipped policy and value steps. One update is one
optimiser "step" of the run (``training.max_steps`` updates of ``training.batch_size`` episodes).

Modules:
    core.py     the arithmetic (masked statistics, GAE, KL estimators and controllers, losses),
                pure torch functions that the unit tests check against hand-computed examples
    models.py   the policy, reference, value and reward: separate models for full fine-tuning, or
                one base carrying policy/value (and a LoRA reward run's) adapters under LoRA
    rollout.py  sampling: left-padded prompts, explicit position ids, temperature, truncation at
                the end-of-turn token
    trainer.py  the update loop: rollouts, scores, advantages, optimisation, events, checkpoints,
                resume, several processes over gloo

Follows "The N Implementation Details of RLHF with PPO" / "The N+ Implementation Details of RLHF
with PPO" (Huang et al.) and trl 1.12's ``trl.experimental.ppo``, except that the score sits on the
EOS token itself (trl put it on the first pad after EOS: trl issues #1893, #3750).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training import rule_rewards
from studio.training.backend_base import Backend


class PPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # -- reward --------------------------------------------------------------------------------
    reward_funcs: list[str] = Field(default_factory=list,
                                    description="built-in rule rewards: " + rule_rewards.SHORT_HELP)
    reward_model: str | None = Field(None, description="a trained reward model: a `reward` run (folder or id) or "
                                                        "model folder on the policy's tokenizer; `previous` in a "
                                                        "pipeline")
    reward_weights: list[float] | None = Field(None, description="weight per reward (the rule rewards in order, "
                                                                  "then the reward model); none = all 1")
    target_length: int = Field(40, ge=1, description="length_target: the wanted response length in characters")
    keywords: list[str] = Field(default_factory=list, description="contains: words the response should contain")
    normalize_reward: bool = Field(False, description="divide scores by their running standard deviation "
                                                     "(running mean/std over all updates)")
    reward_clip: float | None = Field(None, gt=0, description="clip (normalised) scores to +-this; none = off")
    missing_eos_penalty: float | None = Field(1.0, ge=0, description="subtracted from the score of a response "
                                                                     "that never closed its turn; none = off")
    # -- rollouts ------------------------------------------------------------------------------
    response_length: int = Field(16, ge=1, description="tokens sampled per response at most")
    temperature: float = Field(0.7, gt=0, description="sampling temperature; logits are divided by it in "
                                                     "every forward pass of the update")
    # -- KL ------------------------------------------------------------------------------------
    kl_coef: float = Field(0.05, ge=0, description="beta: per-token KL penalty towards the reference model")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="k1: log-ratio; k3: (r - 1) - log r, unbiased "
                                                                 "and never negative")
    adaptive_kl: bool = Field(False, description="adjust beta towards kl_target (Ziegler et al.'s controller)")
    kl_target: float = Field(6.0, gt=0, description="adaptive_kl: the KL per response it steers to")
    kl_horizon: int = Field(10000, ge=1, description="adaptive_kl: episodes over which beta adapts")
    # -- advantages and losses -----------------------------------------------------------------
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    whiten_rewards: bool = Field(False, description="whiten the per-token rewards before GAE")
    num_ppo_epochs: int = Field(4, ge=1, description="optimisation passes over each batch of rollouts")
    num_mini_batches: int = Field(1, ge=1, description="mini-batches per pass; must divide batch_size")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip")
    cliprange_value: float = Field(0.2, gt=0, description="value clip around the rollout's values")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight (0 = off)")
    # -- value model ---------------------------------------------------------------------------
    value_init: Literal["auto", "reward", "policy"] = Field(
        "auto", description="value model start: the reward model, or the policy with a zero-initialised head "
                            "(auto: the reward model when there is one)")
    # -- alerts --------------------------------------------------------------------------------
    kl_alert: float = Field(10.0, gt=0, description="alert when objective/kl passes this")
    log_responses: int = Field(0, ge=0, description="print this many sampled responses per update to the log")


class PPOBackend(Backend):
    name = "ppo"
    title = "PPO (RLHF)"
    summary = ("the studio's own PPO: clipped policy and value losses, GAE, per-token KL to the reference, "
               "rule rewards or a reward model; full or LoRA on one base")
    config_model = PPOOptions
    data_kind = "prompt"
    adapter_methods = ("none", "lora", "dora", "freeze")

    def check(self, recipe, config) -> list[str]:
        problems = rule_rewards.reward_problems(config)
        if config.value_init == "reward" and not config.reward_model:
            problems.append("config.value_init: 'reward' needs a reward_model")
        batch = recipe.training.batch_size
        if batch % config.num_mini_batches:
            problems.append(f"config.num_mini_batches: {config.num_mini_batches} must divide training.batch_size "
                            f"{batch}")
        return problems

    def train(self, ctx) -> dict[str, Any]:
        from .trainer import train_backend

        return train_backend(ctx)


@hookimpl
def register_backends(register):
    register(PPOBackend())
