"""Where the reward model a recipe names lives, resolved the same way for GRPO, RLOO and PPO.

``config.reward_model`` is a model folder, a run folder (its ``final/``), a path relative to the
workspace root, or a run id of the run's workspace. A LoRA/DoRA ``reward`` run also keeps its
unmerged adapter and score head in ``<run>/reward_adapter/`` beside the merged ``final/``, so PPO
can run it as an adapter on the policy's own base.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio.store import StoreError, Workspace
from studio.training.reward_workbench import reward_model_folder

REWARD_ADAPTER = "reward_adapter"           # <run>/reward_adapter: a LoRA reward run's unmerged adapter
SCORE_HEAD_FILE = "score_head.safetensors"  # ... and its trained score head (weight, bias)


def reward_model_ref(ref: str, run_dir: Path) -> tuple[str, Any]:
    """The reference and the workspace to look run ids up in, for a run in ``run_dir``
    (``<workspace>/runs/<run-id>``): a relative path that exists under the workspace root is
    taken from there."""
    root = Path(run_dir).parent.parent
    if not Path(ref).expanduser().exists() and (root / ref).exists():
        ref = str(root / ref)
    try:
        ws = Workspace(root)
    except StoreError:
        ws = None
    return ref, ws


def resolve_reward_model(ref: str, run_dir: Path) -> Path:
    """The reward model's folder (a full sequence classifier, or a peft adapter of one)."""
    return reward_model_folder(*reward_model_ref(ref, run_dir))


def reward_adapter_folder(folder: str | Path) -> Path | None:
    """The unmerged adapter of a LoRA reward run, given the run's folder or its ``final/``; None
    when the run merged a full model only."""
    folder = Path(folder)
    for run in (folder, folder.parent):
        candidate = run / REWARD_ADAPTER
        if (candidate / "adapter_config.json").is_file() and (candidate / SCORE_HEAD_FILE).is_file():
            return candidate
    return None


def adapter_base(adapter: Path) -> str | None:
    """The base model a saved peft adapter names."""
    return json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get(
        "base_model_name_or_path")
