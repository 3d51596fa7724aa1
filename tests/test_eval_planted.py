"""The planted base-against-tuned proof: a multiple-choice test whose right answers follow a rule,
an SFT set that teaches it, and the evaluation that must show the difference: accuracy rises
significantly (McNemar on the items that flipped) and the held-out loss falls."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATASETS, ROOT

EVAL = DATASETS / "eval" / "planted_rule.jsonl"
HELDOUT = DATASETS / "eval" / "planted_heldout.jsonl"
SFT = DATASETS / "train" / "planted_sft.jsonl"
MARK = "indeed"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _stem_of_chat(row: dict) -> str:
    return row["messages"][-1]["content"].split("\n")[0].removeprefix("Question: ")


def test_the_planted_files_follow_the_rule_and_share_no_question(tmp_path):
    items = _rows(EVAL)
    assert len(items) == 60 and len({i["id"] for i in items}) == 60
    for item in items:
        texts = {c["label"]: c["text"] for c in item["question"]["choices"]}
        assert [label for label, text in texts.items() if text.endswith(f" {MARK}")] == [item["answerKey"]]
    # The right letter moves around: no position gives the answer away.
    assert len({i["answerKey"] for i in items}) == 4
    sft, heldout = _rows(SFT), _rows(HELDOUT)
    assert all(r["messages"][-1]["content"].startswith("Question: ") and r["messages"][-1]["content"].endswith(MARK)
               for r in sft + heldout)
    eval_stems = {i["question"]["stem"] for i in items}
    sft_stems, heldout_stems = {_stem_of_chat(r) for r in sft}, {_stem_of_chat(r) for r in heldout}
    assert not (eval_stems & sft_stems) and not (heldout_stems & sft_stems) and not (eval_stems & heldout_stems)
    # The script makes the same files again, byte for byte.
    spec = importlib.util.spec_from_file_location("make_planted", ROOT / "scripts" / "make_planted.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for shipped in (EVAL, HELDOUT, SFT):
        assert (tmp_path / shipped.relative_to(ROOT)).read_bytes() == shipped.read_bytes()


def test_the_embedded_model_never_pretrains_on_benchmark_samples():
    # A base model that has seen the test is contaminated: the planted rule would be half-known
    # before any tuning (and every benchmark sample would be in its pretraining text).
    from studio.sample_workspace import sample_files

    files = sample_files()
    assert files and EVAL not in files and HELDOUT not in files and SFT not in files
    assert not [p for p in files if p.is_relative_to(DATASETS / "eval")]


def test_the_eval_recipe_and_the_training_recipe_score_the_same_tasks():
    from studio.recipes import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "eval-planted.yaml")
    assert recipe.models == ["embedded"]  # the run goes beside it: models='["embedded","RUN_ID"]'
    assert [(t.task, Path(t.options()["path"])) for t in recipe.tasks] == [("arc_easy", EVAL), ("heldout", HELDOUT)]
    train = load_recipe(ROOT / "recipes" / "train-planted.yaml")
    assert [(t.task, Path(t.options()["path"])) for t in train.eval] == [("arc_easy", EVAL), ("heldout", HELDOUT)]
    assert Path(train.dataset) == SFT


@pytest.mark.slow
def test_sft_on_the_planted_set_raises_accuracy_significantly_and_lowers_heldout_loss(tmp_path):
    # One command, as a user runs it: the training recipe trains, then its `eval:` tasks score the
    # base model and the tuned one into one report.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    ws = tmp_path / "ws"
    studio = [sys.executable, "-m", "studio"]
    subprocess.run(studio + ["init", str(ws)], env=env, check=True, capture_output=True, timeout=120)
    trained = subprocess.run(studio + ["run", "recipes/train-planted.yaml", "--workspace", str(ws), "--quiet"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (run_dir,) = [p for p in (ws / "runs").iterdir() if (p / "status.json").is_file()]
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status["status"] == "completed" and "evaluation_error" not in status, status
    report = ws / "evaluations" / status["evaluation"]
    result = json.loads((report / "metrics.json").read_text(encoding="utf-8"))

    comparisons = {(c["task"], c["metric"]): c for c in result["comparisons"]}
    acc = comparisons[("arc_easy", "acc")]
    assert result["tasks"]["arc_easy"]["base"]["acc"]["value"] < 0.5  # the base model does not know the rule
    assert acc["tuned_value"] > acc["base_value"] + 0.3
    assert acc["test"] == "mcnemar" and acc["p_value"] < 0.05 and acc["significant"] and acc["better"]
    assert len(acc["gained"]) > len(acc["lost"])
    loss = comparisons[("heldout", "loss")]
    assert loss["lower_is_better"] and loss["tuned_value"] < loss["base_value"] and loss["better"]

    # The report says so: `studio eval show` marks the accuracy change significant.
    shown = subprocess.run(studio + ["eval", "show", status["evaluation"], "--workspace", str(ws)], env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout
    acc_row = next(line for line in shown.splitlines() if line.replace("│", " ").split()[:1] == ["acc"])
    assert "*" in acc_row, shown
