"""A run's config.reward_model (GRPO, RLOO, PPO) is checked before the run starts."""
from __future__ import annotations

import pytest

from conftest import ROOT
from studio.recipes import load_recipe
from studio.store import Workspace
from studio.training.preflight import preflight


def test_a_missing_reward_model_stops_the_run_before_it_starts(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    recipe = load_recipe(ROOT / "recipes" / "train-ppo.yaml", ["config.reward_model=runs/nope"])
    with pytest.raises(ValueError, match="config.reward_model: no reward model at runs/nope"):
        preflight(ws, recipe)


def test_a_pipeline_reference_is_left_to_the_pipeline(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    for ref in ("previous", "step:rm"):
        checked = preflight(ws, load_recipe(ROOT / "recipes" / "train-ppo.yaml", [f"config.reward_model={ref}"]))
        assert checked.config.reward_model == ref
