"""Pure parts of the training core: data checks and row shapes, held-out split, learning
checks, alerts and the recipe schema (no training here)."""
from __future__ import annotations

import pytest

from conftest import DATASETS
from studio.records import Record, Turn
from studio.training.alerts import AlertWatch, replay
from studio.training.data import check_records, load_records, preference_row, prompt_row, split_eval, unpaired_row
from studio.training.expectations import check_all, series
from studio.recipes import load_recipe, validate_recipe
from studio.recipes.train import Expectation


def _conv(*turns):
    return Record(messages=[Turn(r, c) for r, c in turns])


def test_check_records_names_record_and_field():
    records = [_conv(("user", "hi"), ("assistant", "hello")), _conv(("user", "only a prompt"))]
    assert check_records(records, "conversation", "dataset d") == [
        "dataset d: record 2: field 'messages': no assistant turn to learn from (this is a conversation record)"]
    problems = check_records(records, "preference", "dataset d")
    assert problems[0].startswith("dataset d: record 1: field 'chosen'")
    assert check_records(records, "unpaired", "x")[0] == (
        "x: record 1: field 'label': unpaired feedback needs a true/false label (this is a conversation record)")
    assert check_records([], "prompt", "x") == ["x: no records"]
    many = check_records([_conv(("user", "q"))] * 9, "conversation", "x")
    assert len(many) == 6 and many[-1] == "x: ... 4 more records with problems"


def test_row_shapes_follow_trl():
    pair = Record(messages=[Turn("system", "s"), Turn("user", "q")], chosen=[Turn("assistant", "good")],
                  rejected=[Turn("assistant", "bad")])
    assert preference_row(pair) == {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                                    "chosen": [{"role": "assistant", "content": "good"}],
                                    "rejected": [{"role": "assistant", "content": "bad"}]}
    kto = Record(messages=[Turn("user", "q"), Turn("assistant", "a")], label=False)
    assert unpaired_row(kto) == {"prompt": [{"role": "user", "content": "q"}],
                                 "completion": [{"role": "assistant", "content": "a"}], "label": False}
    assert prompt_row(kto) == {"prompt": [{"role": "user", "content": "q"}], "answer": "a"}


def test_split_is_seeded_and_disjoint():
    records = [_conv(("user", str(i)), ("assistant", "x")) for i in range(50)]
    train, held = split_eval(records, 0.1, seed=7)
    assert len(held) == 5 and len(train) == 45
    assert {r.messages[0].content for r in train}.isdisjoint(r.messages[0].content for r in held)
    assert split_eval(records, 0.1, seed=7)[1] == held and split_eval(records, 0.1, seed=8)[1] != held
    assert split_eval(records, 0.0, seed=7) == (records, [])


def test_data_file_loads_with_its_source_pinned():
    loaded = load_records(str(DATASETS / "dolly.jsonl"))
    assert len(loaded.records) == 15 and loaded.source["format"] == "dolly" and len(loaded.source["sha256"]) == 64
    with pytest.raises(ValueError, match="no such data file"):
        load_records("missing/file.jsonl")


def test_learning_checks_use_ends_of_the_series_and_last_value_per_step():
    history = [{"step": s, "values": {"loss": v}} for s, v in enumerate([4.0, 3.8, 3.0, 2.0, 1.5, 1.0, 1.0, 0.9, 0.9, 0.8], 1)]
    history.insert(5, {"step": 3, "values": {"loss": 99.0}})  # a resumed run logs step 3 again: later wins
    assert series(history, "loss")[2] == 99.0
    history.append({"step": 3, "values": {"loss": 3.0}})
    assert series(history, "loss")[2] == 3.0
    ok, bad, final = check_all([Expectation(metric="loss", falls_by=0.7), Expectation(metric="loss", falls_by=0.9),
                                Expectation(metric="eval_accuracy", above=0.6)], history, {"eval_accuracy": 0.75})
    assert ok["passed"] and (ok["first"], ok["last"]) == pytest.approx((3.9, 0.85))
    assert not bad["passed"] and "expected a fall of 90%" in bad["details"][0]
    assert final["passed"] and final["value"] == 0.75
    missing = check_all([Expectation(metric="reward", rises_by=0.1)], history, {})[0]
    assert not missing["passed"] and "logged 0 time(s)" in missing["details"][0]


def test_alerts_fire_once_on_known_failure_signs():
    watch = AlertWatch()
    assert watch.feed(1, {"loss": 0.69, "rewards/margins": 0.0, "logps/chosen": -20.0}) == []
    for step in range(2, 8):
        assert watch.feed(step, {"loss": 0.69 - 0.01 * step, "rewards/margins": 0.1 * step,
                                 "logps/chosen": -20.0 - 0.1 * step}) == []
    fired = watch.feed(8, {"loss": 0.0001, "rewards/margins": 9.0, "logps/chosen": -40.0})
    assert {a["rule"] for a in fired} == {"loss_collapse", "reward_spike", "chosen_logps_falling"}
    assert watch.feed(9, {"loss": 0.0, "rewards/margins": 30.0, "logps/chosen": -60.0}) == []  # once each
    assert [a["rule"] for a in replay([{"step": 1, "values": {"loss": float("nan")}}])] == ["not_finite"]


def test_recipe_schema_refuses_unknown_keys_and_resolves_repo_paths(tmp_path):
    with pytest.raises(ValueError, match="trainng: Extra inputs are not permitted"):
        validate_recipe({"backend": "sft", "dataset": "d", "trainng": {}})
    with pytest.raises(ValueError, match="adapter.method"):
        validate_recipe({"backend": "sft", "dataset": "d", "adapter": {"method": "lorra"}})
    folder = tmp_path / "recipes"
    folder.mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "d.jsonl").write_text("{}\n")
    (folder / "r.yaml").write_text("backend: sft\ndataset: datasets/d.jsonl\n")
    recipe = load_recipe(folder / "r.yaml", ["training.max_steps=7", "adapter.method=lora"])
    assert recipe.dataset == str((tmp_path / "datasets" / "d.jsonl").resolve())
    assert (recipe.training.max_steps, recipe.adapter.method) == (7, "lora")
