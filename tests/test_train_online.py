"""The online RL back-ends (GRPO, RLOO): the shipped recipes learn, the preflight checks, the
rule rewards, and a reward model as the reward."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT
from training_helpers import run_to_end
from studio.store import Workspace
from studio.training import runs
from studio.recipes import load_recipe
from studio.training import rule_rewards as rewards

GRPO = ROOT / "recipes" / "train-grpo.yaml"
RLOO = ROOT / "recipes" / "train-rloo.yaml"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.init(tmp_path_factory.mktemp("online") / "ws")


def logged(run: runs.TrainRun, metric: str) -> list[float]:
    return [e["values"][metric] for e in run.metric_history() if metric in e["values"]]


# --- the recipes ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GRPO, RLOO], ids=["grpo", "rloo"])
def test_the_recipe_raises_the_reward(ws, path):
    run = run_to_end(ws, load_recipe(path))
    checks = run.metrics()["checks"]
    assert checks and all(c["passed"] for c in checks), checks
    rewards_seen = logged(run, "reward")
    assert len(rewards_seen) >= 10 and max(rewards_seen[-3:]) > min(rewards_seen[:2])
    recipe = run.recipe()
    for name in recipe.config["reward_funcs"]:
        assert logged(run, f"rewards/{name}/mean"), f"trl did not log rewards/{name}/mean"
    final = run.metrics()["final"]
    assert "eval_reward" in final  # the held-out prompts are scored after training
    assert (run.final_dir / "config.json").is_file() and (run.final_dir / "tokenizer.json").is_file()


# --- preflight ------------------------------------------------------------------------------


def test_num_generations_must_divide_the_generation_batch(ws):
    runs_before = len(runs.list_runs(ws))
    recipe = load_recipe(GRPO, ["config.num_generations=3"])
    with pytest.raises(ValueError, match=r"config.num_generations: 3 must divide the generation batch .* = 8 "
                                         r"completions.*choose one of 2, 4, 8"):
        runs.prepare_run(ws, recipe)
    assert len(runs.list_runs(ws)) == runs_before  # refused before any run folder exists
    # Gradient accumulation is part of the generation batch: 8 x 3 = 24 completions.
    assert not rewards_problems(load_recipe(RLOO, ["config.num_generations=6", "training.grad_accum=3"]))
    assert rewards_problems(load_recipe(RLOO, ["config.num_generations=16"]))


def rewards_problems(recipe) -> list[str]:
    from studio.training.preflight import backend_config, find_backend

    backend, _ = find_backend(recipe.backend)
    return backend.check(recipe, backend_config(backend, recipe))


def test_preflight_names_unknown_rewards_missing_keywords_and_weights(ws):
    recipe = load_recipe(GRPO, ['config.reward_funcs=["contains", "politeness"]', "config.reward_weights=[1]"])
    problems = rewards_problems(recipe)
    assert any("unknown 'politeness'" in p and "format_chatml" in p for p in problems)
    assert any(p.startswith("config.keywords:") for p in problems)
    assert any("1 weight(s) for 2 reward(s)" in p for p in problems)
    with pytest.raises(ValueError, match="the run cannot start"):
        runs.prepare_run(ws, recipe)
    assert rewards_problems(load_recipe(GRPO, ["config.reward_funcs=[]"])) == [
        "config: no reward: name reward_funcs and/or a reward_model"]
    with pytest.raises(ValueError, match="num_generations"):
        runs.prepare_run(ws, load_recipe(GRPO, ["config.num_generations=1"]))  # trl needs a group of 2+


# --- rule rewards ---------------------------------------------------------------------------


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_length_target_contains_and_exact_answer():
    assert rewards.length_target([chat("x" * 10), chat(" " + "x" * 15 + "\n"), chat("x" * 40), "x" * 5],
                                 target=10) == [1.0, 0.5, 0.0, 0.5]
    assert rewards.contains([chat("Happy to HELP, thanks"), chat("help"), "nothing"],
                            keywords=("help", "thanks")) == [1.0, 0.5, 0.0]
    got = rewards.exact_answer([chat("Paris!"), chat("It is paris, I think"), chat("Lyon"), chat("Parisian"),
                                chat("four")], answer=["paris", "Paris", "Paris", "Paris", ""])
    assert got == [1.0, 0.5, 0.0, 0.0, None]


def test_format_chatml_wants_a_closed_turn_and_no_new_one():
    end, start = 4, 3
    ids = [[10, 11, end], [10, 11, 12], [10, start, 11, end], [end], []]
    assert rewards.format_chatml([chat("")] * 5, completion_ids=ids, end_ids=(1, end), open_ids=(start,)) == [
        1.0, 0.0, 0.0, 1.0, 0.0]


def test_built_rewards_keep_their_names_for_trl():
    from trl.trainer.utils import get_callable_name

    from studio_train_online import GRPOOptions

    class Tokenizer:
        eos_token = "<|im_end|>"

        def get_vocab(self):
            return {"<|im_end|>": 4, "<|im_start|>": 3}

    options = GRPOOptions(reward_funcs=list(rewards.NAMES), keywords=["x"])
    for name in rewards.NAMES:
        func = rewards.build(name, options, Tokenizer(), end_ids=(1,))
        assert get_callable_name(func) == name
    chatml = rewards.build("format_chatml", options, Tokenizer(), end_ids=(1,))
    assert chatml.keywords["end_ids"] == (1, 4) and chatml.keywords["open_ids"] == (3,)


# --- a reward model as the reward -----------------------------------------------------------


def test_grpo_with_a_reward_model_from_a_folder(ws, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from studio.models.loading import resolve_model_ref

    # An untrained reward model is enough to check the plumbing: it loads, scores every completion
    # and trl logs it under its own name.
    location = resolve_model_ref("embedded")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model.config.pad_token_id = tokenizer.pad_token_id
    folder = ws.root / "rm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recipe = load_recipe(GRPO, ["config.reward_model=rm", "config.reward_funcs=[\"format_chatml\"]",
                                "config.reward_weights=[1, 0.5]", "training.max_steps=2", "training.logging_steps=1",
                                "eval_fraction=0", "expect=[]"])
    run = run_to_end(ws, recipe)
    values = logged(run, "rewards/reward_model/mean")
    assert len(values) == 2 and all(isinstance(v, float) for v in values)
    first = run.metric_history()[0]["values"]
    expected = first["rewards/format_chatml/mean"] + 0.5 * first["rewards/reward_model/mean"]
    assert first["reward"] == pytest.approx(expected, abs=1e-4)
    assert any("reward model:" in e.get("message", "") for e in run.events())
    assert json.loads((run.path / "status.json").read_text())["status"] == "completed"
