"""The PPO recipes learn on the embedded model: recipes/train-ppo.yaml (rule rewards),
recipes/train-ppo-rm.yaml (a reward model, then PPO against it) and recipes/rlhf.yaml (SFT, a
reward model on preference pairs, PPO from the SFT model), each passing its own `expect:` checks.
For the RLHF pipeline, courtesy phrases (which only the preference data prefers) are counted in
answers sampled on held-out prompts from the SFT model and from the PPO model."""
from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT
from studio.recipe_runs import run_pipeline
from studio.recipes import load_recipe
from studio.store import Workspace
from studio.training import runs
from training_helpers import run_to_end

pytestmark = pytest.mark.slow

RECIPES = ROOT / "recipes"
HELD_OUT = ROOT / "datasets" / "train" / "rlhf_heldout.jsonl"
# The courtesy words of rm_style.jsonl: in its polite (chosen) answers, in none of its curt ones.
COURTESY = re.compile(r"\b(please|hope|help|helps|happy|thanks)\b", re.IGNORECASE)
SAMPLES_PER_PROMPT = 8


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.init(tmp_path_factory.mktemp("ppo-recipes") / "ws")


def logged(run: runs.TrainRun, metric: str) -> list[float]:
    return [e["values"][metric] for e in run.metric_history() if metric in e["values"]]


def assert_checks_pass(run: runs.TrainRun) -> None:
    assert run.status()["status"] == "completed", run.status()
    checks = run.metrics()["checks"]
    assert checks and all(c["passed"] for c in checks), checks


def pipeline_runs(ws: Workspace, name: str) -> list[runs.TrainRun]:
    outcomes = run_pipeline(ws, RECIPES / name)
    assert [o.status for o in outcomes] and all(o.status == "completed" for o in outcomes), \
        [(o.status, o.reason) for o in outcomes]
    return [o.result for o in outcomes]


def courtesy_rate(model_dir, prompts: list[str], seed: int = 0) -> float:
    """The share of sampled answers (temperature 1, up to 16 tokens) with a courtesy word."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(seed)
    polite = total = 0
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16,
                                 num_return_sequences=SAMPLES_PER_PROMPT, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, ids["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            polite += bool(COURTESY.search(text))
            total += 1
    return polite / total


def test_train_ppo_raises_the_rule_reward(ws):
    """recipes/train-ppo.yaml: format_chatml + length_target."""
    run = run_to_end(ws, load_recipe(RECIPES / "train-ppo.yaml"))
    assert_checks_pass(run)
    scores = logged(run, "objective/scores")
    assert len(scores) == run.recipe().training.max_steps
    assert max(logged(run, "objective/kl")) < 10.0
    assert (run.final_dir / "config.json").is_file()


def test_train_ppo_rm_learns_against_the_reward_model_it_trains(ws):
    """recipes/train-ppo-rm.yaml: the reward run, then PPO with `config.reward_model: step:rm`."""
    reward, ppo = pipeline_runs(ws, "train-ppo-rm.yaml")
    assert reward.recipe().backend == "reward" and ppo.recipe().backend == "ppo"
    assert ppo.recipe().config["reward_model"] == str(reward.path)
    assert_checks_pass(reward)
    assert_checks_pass(ppo)


def test_rlhf_pipeline_makes_courtesy_more_frequent_than_sft_alone(ws):
    """recipes/rlhf.yaml: SFT, a reward model on polite-vs-curt pairs, PPO from the SFT model.
    The SFT data has a courtesy in under a fifth of its answers and does not prefer it; only the
    preference pairs do. On prompts no step trained on, the PPO model's answers carry a courtesy
    word clearly more often than the SFT model's."""
    sft, reward, ppo = pipeline_runs(ws, "rlhf.yaml")
    assert [r.recipe().backend for r in (sft, reward, ppo)] == ["sft", "reward", "ppo"]
    assert ppo.recipe().model == str(sft.path)  # `model: step:sft`
    assert ppo.recipe().config["reward_model"] == str(reward.path)  # `config.reward_model: previous`
    for run in (sft, reward, ppo):
        assert_checks_pass(run)
    prompts = [json.loads(line)["messages"][0]["content"] for line in HELD_OUT.read_text().splitlines()]
    before = courtesy_rate(sft.final_dir, prompts)
    after = courtesy_rate(ppo.final_dir, prompts)
    assert after >= before + 0.2, (before, after)
