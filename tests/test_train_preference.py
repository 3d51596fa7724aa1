"""The preference back-ends (dpo, kto, orpo, cpo): every shipped recipe trains the embedded model
as a run process and its learning checks pass; DPO's reference modes each train; wrong data and
impossible settings are refused before a run starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from studio.store import Workspace
from studio.training import runs
from studio.recipes import load_recipe

RECIPES = ["train-dpo.yaml", "train-kto.yaml", "train-orpo.yaml", "train-simpo.yaml"]
# Metric names trl 1.16 logs that the recipes, the alerts and the Runs screen rely on.
LOGGED = {
    "dpo": {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected"},
    "kto": {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"},
    "orpo": {"loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "nll_loss", "log_odds_ratio"},
    "cpo": {"loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "nll_loss"},
}


@pytest.fixture
def ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


def run_to_end(ws, recipe):
    run = runs.prepare_run(ws, recipe)
    events = list(runs.follow(run, runs.start(run), poll_s=0.5))
    return run, events


def logged_names(events, kind="metrics") -> set[str]:
    return {name for e in events if e["event"] == kind for name in e["values"]}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_and_its_learning_checks_pass(ws, name):
    path = ROOT / "recipes" / name
    assert path.read_text().startswith(f"# studio run recipes/{name}\n")
    recipe = load_recipe(path)
    assert recipe.model == "embedded" and recipe.expect
    run, events = run_to_end(ws, recipe)
    status = run.status()
    assert status["status"] == "completed", run.log_tail()
    checks = run.metrics()["checks"]
    assert len(checks) == len(recipe.expect)
    assert all(c["passed"] for c in checks), checks
    assert status["checks_passed"] is True
    assert LOGGED[recipe.backend] <= logged_names(events)
    assert (run.final_dir / "config.json").is_file()


def _dpo_recipe(**overrides):
    items = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=2", "limit=24",
             "eval_fraction=0.2", *[f"{k}={v}" for k, v in overrides.items()]]
    return load_recipe(ROOT / "recipes" / "train-dpo.yaml", items)


@pytest.fixture
def in_process(monkeypatch, tmp_path):
    # TrainContext.trainer_args sets TENSORBOARD_LOGGING_DIR with setdefault: keep it out of later tests.
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
    return _train_in_process


def _train_in_process(ws, recipe, run_dir: Path):
    """Run a back-end in this process (the trl import is paid once for the module)."""
    from studio.training.backend_base import TrainContext
    from studio.training.preflight import preflight

    checked = preflight(ws, recipe)
    events = []
    ctx = TrainContext(recipe=recipe, config=checked.config, run_dir=run_dir, train_records=checked.train,
                       eval_records=checked.eval, emit=lambda name, **f: events.append({"event": name, **f}))
    return checked.backend.train(ctx), events


@pytest.mark.parametrize("mode, method", [("copy", "none"), ("adapter", "lora"), ("precomputed", "none"),
                                          ("precomputed", "lora")])
def test_dpo_reference_modes_train(ws, tmp_path, in_process, mode, method):
    recipe = _dpo_recipe(**{"config.ref_model": mode, "adapter.method": method})
    final, events = in_process(ws, recipe, tmp_path / "run")
    first = next(e for e in events if e["event"] == "metrics")["values"]
    # Before the first update the policy is its reference: whatever the mode, the implied rewards are 0.
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-4)
    assert first["rewards/margins"] == pytest.approx(0, abs=1e-4)
    assert "eval_rewards/accuracies" in final and final["train_runtime"] > 0
    marker = "adapter_config.json" if method == "lora" else "config.json"
    assert (tmp_path / "run" / "final" / marker).is_file()


def test_dpo_starts_from_a_previous_runs_lora_adapter(ws, tmp_path, in_process):
    # A run folder whose final/ is a LoRA adapter: the base is loaded, the adapter merged, then tuned.
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.models.loading import load_model

    base, tokenizer = load_model("embedded", device="cpu")
    adapted = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)  # a non-zero adapter, so merging changes the weights
    sft_run = tmp_path / "sft-run"
    adapted.save_pretrained(sft_run / "final")
    tokenizer.save_pretrained(sft_run / "final")
    recipe = _dpo_recipe(model=str(sft_run))
    final, events = in_process(ws, recipe, tmp_path / "run")
    assert any("merged the adapter" in e.get("message", "") for e in events)
    assert final["train_runtime"] > 0 and (tmp_path / "run" / "final" / "config.json").is_file()


def test_conversation_data_is_refused_by_dpo_before_the_run(ws, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello."}]}
            for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(ROOT / "recipes" / "train-dpo.yaml", [f"dataset={data}"])
    with pytest.raises(ValueError) as err:
        runs.prepare_run(ws, recipe)
    assert "record 1" in str(err.value) and "field 'chosen'" in str(err.value)
    assert not runs.list_runs(ws)


def test_adapter_reference_without_lora_is_refused_at_preflight(ws):
    recipe = load_recipe(ROOT / "recipes" / "train-dpo.yaml", ["config.ref_model=adapter", "adapter.method=none"])
    with pytest.raises(ValueError, match=r"config.ref_model: 'adapter'.*needs adapter.method lora or dora"):
        runs.prepare_run(ws, recipe)
    assert not runs.list_runs(ws)


def test_kto_needs_two_examples_per_batch(ws):
    recipe = load_recipe(ROOT / "recipes" / "train-kto.yaml", ["training.batch_size=1"])
    with pytest.raises(ValueError, match="batch_size must be 2 or more"):
        runs.prepare_run(ws, recipe)


def test_kto_run_with_one_label_fails_with_a_clear_reason(ws, tmp_path):
    source = ROOT / "datasets" / "train" / "kto_style.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    data = tmp_path / "thumbs_up.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"]))
    recipe = load_recipe(ROOT / "recipes" / "train-kto.yaml", [f"dataset={data}"])
    run, events = run_to_end(ws, recipe)
    assert run.status()["status"] == "failed"
    reason = run.status()["reason"]
    assert "labelled desirable (true)" in reason and "field 'label'" in reason
    assert any(e["event"] == "error" for e in events)


def test_planted_data_carries_its_signal_and_both_labels():
    pairs = [json.loads(line) for line in (ROOT / "datasets/train/pref_style.jsonl").read_text().splitlines()]
    assert 200 <= len(pairs) <= 400
    assert all(p["chosen"][0]["content"].endswith("I hope this helps!") for p in pairs)
    assert not any("I hope this helps" in p["rejected"][0]["content"] for p in pairs)
    unpaired = [json.loads(line) for line in (ROOT / "datasets/train/kto_style.jsonl").read_text().splitlines()]
    assert {r["label"] for r in unpaired} == {True, False}
    assert all(r["completion"][0]["content"].endswith("I hope this helps!") == r["label"] for r in unpaired)


def test_dpo_options_map_onto_trl_losses():
    from studio_train_dpo import DPOOptions

    assert DPOOptions().trl_losses() == (["sigmoid"], None)
    assert DPOOptions(loss_type=["sigmoid", "bco_pair"], loss_weights=[0.8, 0.2], rpo_alpha=0.5).trl_losses() == (
        ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 0.5])
    with pytest.raises(ValueError, match="loss_weights has 1 weights for 2 losses"):
        DPOOptions(loss_type=["sigmoid", "ipo"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="label_smoothing > 0"):
        DPOOptions(loss_type="exo_pair")


def test_backends_are_registered_with_their_data_kinds():
    from studio.plugins import get_host

    backends = dict(get_host().items("backend"))
    kinds = {name: backends[name].data_kind for name in ("dpo", "kto", "orpo", "cpo")}
    assert kinds == {"dpo": "preference", "kto": "unpaired", "orpo": "preference", "cpo": "preference"}
