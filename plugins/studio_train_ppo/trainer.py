"""The PPO update loop.

    models, reward = load_ppo_models(spec)
    loop = PPOLoop(models, reward, prompts, options, settings, emit=emit, cancelled=cancelled)
    final_metrics = loop.run(resume=False)

One update: sample a response for each of ``batch_size`` prompts; score them; reference
log-probs and values; per-token rewards (score on the EOS token, KL penalty on every token);
GAE; ``num_ppo_epochs`` x ``num_mini_batches`` optimisation steps. Metrics go out as ``metrics``
events (``objective/scores``, ``objective/kl``, ``objective/rlhf_reward``, ``policy/approxkl``,
``policy/clipfrac``, ``policy/entropy``, ``val/ratio``, ``val/clipfrac``, ``loss/policy``,
``loss/value``, ``val/eos_rate``, ``val/response_length``, ``rewards/<name>/mean``, ``lr``,
``objective/kl_coef``, ``episode``), with ``progress``, ``checkpoint``, ``alert`` and
``cancelling`` events as the trl back-ends' callback writes them.

CONTRACT (lead's skeleton; the `ppo-core` helper implements it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class LoopSettings:
    updates: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    max_grad_norm: float = 1.0
    scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    logging_steps: int = 1
    save_steps: int | None = None
    save_total_limit: int | None = 2
    checkpoints_dir: Path | None = None


@dataclass
class PromptRow:
    input_ids: list[int]                 # the chat-rendered prompt with the generation prompt
    messages: list[dict[str, str]]
    columns: dict[str, Any]              # the row's other fields (answer, ...)


class PPOLoop:
    def __init__(self, models, reward, prompts: list[PromptRow], options, settings: LoopSettings,
                 emit: Callable[..., None] = lambda name, **fields: None,
                 cancelled: Callable[[], bool] = lambda: False):
        raise NotImplementedError("ppo-core helper")

    def run(self, resume: bool = False) -> dict[str, Any]:
        raise NotImplementedError("ppo-core helper")


def train_backend(ctx) -> dict[str, Any]:
    """The back-end's ``train``: models and reward from the recipe, prompts from the records,
    the loop, then the final model in ``ctx.final_dir``."""
    raise NotImplementedError("ppo-core helper")
