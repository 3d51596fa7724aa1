"""The four roles PPO needs (policy, reference, value, reward) behind one small interface, so
the update loop never knows how they are laid out.

Layouts:
- **full**: the policy trains in full; the reference is a frozen copy; the value model is a
  backbone with a one-output head, started from the reward model or from the policy with a
  zero-initialised head.
- **LoRA**: one base model carries everything. Policy and value are two adapters on it, the value
  head a small separate linear layer; the reference is the base with adapters off; a LoRA reward
  run on the same base is a third adapter. About one model's memory, where trl 1.12 held three or
  four models.

Dropout is off in every role (PPO's ratio must be 1 on the first mini-batch of an update).

CONTRACT (lead's skeleton; the `ppo-models` helper implements it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

Emit = Callable[..., None]


@dataclass
class ModelSpec:
    """Everything needed to build the roles; the back-end fills it from the recipe, the benchmark
    by hand."""
    policy: str                                  # resolved model folder (an adapter run is merged first)
    options: Any                                 # PPOOptions (reward sources, value_init, ...)
    adapter: Any = None                          # recipe AdapterSettings; None or method "none" = full
    reward_model: str | None = None              # resolved reward model / reward run folder
    seed: int = 0
    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)   # dtype, ... for from_pretrained
    emit: Emit = lambda name, **fields: None


@dataclass
class Episodes:
    """One batch of finished rollouts as the reward sees them.

    ``query_responses``: [B, P + R] left-padded prompt ids then the response ids, padded after
    the response's end token; ``attention_mask`` and ``position_ids`` the same shape;
    ``response_ids``: each response as sampled and truncated (ending with its end token when it
    closed its turn); ``prompts``: each prompt's chat messages; ``completions``: the decoded
    responses (end token stripped); ``columns``: the prompt rows' other fields (``answer``)."""
    query_responses: Any
    attention_mask: Any
    position_ids: Any
    context_length: int
    response_ids: list[list[int]]
    prompts: list[list[dict[str, str]]]
    completions: list[str]
    ended: list[bool]
    columns: dict[str, list[Any]] = field(default_factory=dict)


class RewardSource(Protocol):
    """Scores finished episodes: one float per episode (before normalisation and the EOS penalty),
    plus each source's mean for the ``rewards/<name>/mean`` metrics."""

    def score(self, episodes: Episodes) -> tuple[Any, dict[str, float]]: ...


class PPOModels(Protocol):
    tokenizer: Any

    def policy_logits(self, input_ids, attention_mask, position_ids):
        """[B, T, V] logits of the policy (with gradient)."""

    def reference_logits(self, input_ids, attention_mask, position_ids):
        """[B, T, V] logits of the reference (no gradient)."""

    def values(self, input_ids, attention_mask, position_ids):
        """[B, T] value estimates (with gradient)."""

    def generator(self):
        """A context manager giving the policy as a causal LM to sample from (adapters set)."""

    def parameters_to_train(self) -> list:
        """Policy and value parameters the optimiser steps (value head included)."""

    def train_state(self) -> dict[str, Any]:
        """The trainable weights, for a checkpoint."""

    def load_train_state(self, state: dict[str, Any]) -> None: ...

    def save(self, final_dir: Path) -> None:
        """The policy in ``final_dir`` (a full model, or its adapter on its base) with its
        tokenizer, loadable wherever the studio takes a run; the value model in
        ``final_dir / "value"``."""

    def memory(self) -> dict[str, int]:
        """Bytes of weights, gradients held and parameters that train (for the benchmark)."""


def load_ppo_models(spec: ModelSpec) -> tuple[PPOModels, RewardSource]:
    raise NotImplementedError("ppo-models helper")
