"""compare_runs: the recipe keys that differ (flattened to dotted keys), metrics side by side
(final where the run has them, else the last logged value) with deltas, and learning checks."""
from __future__ import annotations

import json

import pytest
import yaml

from studio.training.compare import (
    checks_side_by_side, compare_runs, config_diff, final_metrics, flatten, last_logged, metrics_side_by_side,
)
from studio.recipes import validate_recipe
from studio.training.runs import TrainRun


def write_run(root, run_id, recipe, events=(), metrics=None, status="completed") -> TrainRun:
    folder = root / run_id
    folder.mkdir(parents=True)
    data = validate_recipe({"dataset": "chat@0123456789abcdef", **recipe}).model_dump(mode="json")
    (folder / "recipe.yaml").write_text("# resolved recipe\n" + yaml.safe_dump(data, sort_keys=False))
    (folder / "status.json").write_text(json.dumps({"status": status}))
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return TrainRun(folder)


def test_flatten_makes_dotted_keys_and_indexes_lists_of_mappings():
    flat = flatten({"a": 1, "b": {"c": 2, "d": {"e": [1, 2]}}, "empty": {},
                    "expect": [{"metric": "loss", "below": 3}]})
    assert flat == {"a": 1, "b.c": 2, "b.d.e": [1, 2], "expect[0].metric": "loss", "expect[0].below": 3}


def test_config_diff_lists_only_what_differs_in_order():
    a = {"backend": "sft", "training": {"learning_rate": 1e-3, "max_steps": 10}, "config": {}}
    b = {"backend": "sft", "training": {"learning_rate": 5e-4, "max_steps": 10}, "config": {"beta": 0.1}}
    assert config_diff(a, b) == [{"key": "training.learning_rate", "a": 1e-3, "b": 5e-4},
                                 {"key": "config.beta", "a": None, "b": 0.1}]
    assert config_diff(a, a) == []


def test_last_logged_takes_the_latest_step_and_skips_epoch():
    history = [{"step": 2, "values": {"loss": 2.0, "epoch": 0.5}}, {"step": 1, "values": {"loss": 9.0}},
               {"step": 4, "values": {"eval_loss": 1.5}}, {"step": 4, "values": {"loss": 1.0}}]
    assert last_logged(history) == {"loss": 1.0, "eval_loss": 1.5}


def test_metrics_side_by_side_orders_key_metrics_first_and_computes_deltas():
    rows = metrics_side_by_side({"zeta": 1, "loss": 2.0, "eval_loss": 1.0, "flag": True},
                                {"loss": 1.5, "eval_loss": "nan", "alpha": 3})
    assert [r["name"] for r in rows] == ["loss", "eval_loss", "alpha", "zeta"]
    assert rows[0] == {"name": "loss", "a": 2.0, "b": 1.5, "delta": -0.5}
    assert rows[1]["delta"] is None and rows[2] == {"name": "alpha", "a": None, "b": 3, "delta": None}


def test_checks_side_by_side_by_metric():
    rows = checks_side_by_side([{"metric": "loss", "passed": True, "details": []}],
                               [{"metric": "loss", "passed": False, "details": ["loss went up"]},
                                {"metric": "reward", "passed": True, "details": []}])
    assert rows == [{"metric": "loss", "a": True, "b": False, "a_details": [], "b_details": ["loss went up"]},
                    {"metric": "reward", "a": None, "b": True, "a_details": [], "b_details": []}]


def test_compare_runs_uses_recipes_final_metrics_and_last_logged_values(tmp_path):
    a = write_run(tmp_path, "run-a", {"backend": "sft", "training": {"learning_rate": 1e-3}},
                  events=[{"kind": "metrics", "step": 1, "values": {"loss": 3.0}},
                          {"kind": "metrics", "step": 2, "values": {"loss": 2.0}},
                          {"kind": "eval", "step": 2, "values": {"eval_loss": 2.5}}],
                  metrics={"final": {"eval_loss": 2.4, "train_loss": 2.5},
                           "checks": [{"metric": "loss", "passed": True, "details": []}]})
    # A cancelled run: no metrics.json, so its last logged values stand in.
    b = write_run(tmp_path, "run-b", {"backend": "sft", "training": {"learning_rate": 5e-4},
                                      "adapter": {"method": "lora"}},
                  events=[{"kind": "metrics", "step": 1, "values": {"loss": 2.8}},
                          {"kind": "progress", "step": 1, "max_steps": 60}],
                  status="cancelled")
    result = compare_runs(a, b)
    assert result["a"] == "run-a" and result["b"] == "run-b"
    assert result["status"] == {"a": "completed", "b": "cancelled"}
    assert result["config_diff"] == [{"key": "training.learning_rate", "a": 1e-3, "b": 5e-4},
                                     {"key": "adapter.method", "a": "none", "b": "lora"}]
    metrics = {row["name"]: row for row in result["metrics"]}
    assert metrics["loss"] == {"name": "loss", "a": 2.0, "b": 2.8, "delta": pytest.approx(0.8)}
    assert metrics["eval_loss"]["a"] == 2.4  # metrics.json "final" wins over the logged 2.5
    assert metrics["train_loss"] == {"name": "train_loss", "a": 2.5, "b": None, "delta": None}
    assert result["checks"] == [{"metric": "loss", "a": True, "b": None, "a_details": [], "b_details": []}]
    assert final_metrics(b) == {"loss": 2.8}
    json.dumps(result)  # the CLI prints it as JSON


def test_compare_runs_reports_an_unreadable_recipe(tmp_path):
    a = write_run(tmp_path, "run-a", {"backend": "sft"})
    b = write_run(tmp_path, "run-b", {"backend": "sft"})
    (b.path / "recipe.yaml").write_text("backend: sft\n")  # no dataset
    with pytest.raises(ValueError, match="dataset"):
        compare_runs(a, b)
