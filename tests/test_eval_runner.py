"""The evaluation runner: per-item caching and resume, the report folder and its pins, comparisons
with paired tests and flips, task and option errors, the evaluate recipe kind, training-data
overlap, and (slow) a pipeline that trains and then evaluates `previous` against its base."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import eval_tasks
from conftest import ROOT
from studio.cli import main
from studio.evaluation import reports
from studio.evaluation.cache import EvalCache, cache_path
from studio.evaluation.runner import run_evaluation
from studio.events import event_name
from studio.plugins import reset_host
from studio.recipe_runs import recipe_problems, run_pipeline, run_recipe
from studio.recipes import load_recipe
from studio.recipes.evaluate import EvalRecipe
from studio.store import Workspace, file_sha256


@pytest.fixture
def host():
    host = eval_tasks.install_in_process()
    for evaluator in eval_tasks.EVALUATORS:
        evaluator.scored_items = evaluator.score_calls = 0
        evaluator.options_seen = []
    yield host
    reset_host()


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> str:
    """A second local model folder (the tiny model with noise on its weights)."""
    return str(eval_tasks.perturbed_copy(tmp_path_factory.mktemp("models") / "noisy"))


@pytest.fixture
def items(tmp_path) -> Path:
    return eval_tasks.write_items(tmp_path / "items.jsonl", 12)


def recipe(items: Path, models=("embedded",), **extra) -> EvalRecipe:
    return EvalRecipe(models=list(models), tasks=[{"task": "tiny_choice", "path": str(items)}], **extra)


def test_a_second_run_scores_nothing_and_gives_the_same_metrics(ws, items, host):
    evaluator = eval_tasks.EVALUATORS[0]
    events: list[dict] = []
    first = run_evaluation(ws, recipe(items), emit=events.append, host=host, chunk_items=5)
    assert first["status"] == "completed"
    assert evaluator.scored_items == 12 and evaluator.score_calls == 3  # chunks of 5, 5 and 2
    # One options dict for the whole run: what a task keeps there (a judge's spending) spans its chunks.
    assert all(options is evaluator.options_seen[0] for options in evaluator.options_seen)
    assert evaluator.options_seen[0]["seed"] == 0 and evaluator.options_seen[0]["allow_code_execution"] is False
    assert first["scored"] == {"embedded": {"tiny_choice": 12}}
    names = [event_name(e) for e in events]
    for name in ("started", "model_loaded", "task_started", "progress", "task_done", "finished"):
        assert name in names
    progress = [e for e in events if event_name(e) == "progress" and e["task"] == "tiny_choice"]
    assert progress[-1]["done"] == progress[-1]["total"] == 12
    assert all(0 <= e["done"] <= 12 for e in progress)

    second = run_evaluation(ws, recipe(items), host=host, chunk_items=5)
    assert evaluator.scored_items == 12 and evaluator.score_calls == 3  # nothing new was scored
    assert second["scored"] == {"embedded": {"tiny_choice": 0}}
    assert second["id"] != first["id"]
    assert second["tasks"] == first["tasks"]
    acc = first["tasks"]["tiny_choice"]["embedded"]["acc"]
    assert acc["n"] == 12 and 0 <= acc["value"] <= 1

    # Other options are another cache entry: a changed config is scored again.
    run_evaluation(ws, EvalRecipe(models=["embedded"], tasks=[{"task": "tiny_choice", "path": str(items),
                                                               "num_fewshot": 1}]), host=host)
    assert evaluator.scored_items == 24

    # An item edited in its file (same id, other text) is scored again; the others come from the cache.
    lines = items.read_text().splitlines()
    edited = json.loads(lines[0])
    edited["question"] += " Think again."
    items.write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n")
    third = run_evaluation(ws, recipe(items), host=host)
    assert third["scored"] == {"embedded": {"tiny_choice": 1}}


def test_a_cancelled_run_keeps_its_chunks_and_a_rerun_finishes_with_the_same_metrics(ws, tmp_path, items, host):
    evaluator = eval_tasks.EVALUATORS[0]
    done: list[int] = []

    def note(event):
        if event_name(event) == "progress" and event.get("model") == "embedded":
            done.append(event["done"])

    stopped = run_evaluation(ws, recipe(items), emit=note, cancelled=lambda: bool(done) and done[-1] >= 4,
                             host=host, chunk_items=4)
    assert stopped["status"] == "stopped"
    assert reports.find_report(ws, stopped["id"]).status()["status"] == "stopped"
    with EvalCache(cache_path(ws)) as cache:
        assert cache.count(task="tiny_choice") == 4  # the one chunk that completed
    resumed = run_evaluation(ws, recipe(items), host=host, chunk_items=4)
    assert resumed["scored"] == {"embedded": {"tiny_choice": 8}}
    assert evaluator.scored_items == 12

    clean = run_evaluation(Workspace.init(tmp_path / "other"), recipe(items), host=host, chunk_items=12)
    assert resumed["tasks"] == clean["tasks"]


def test_the_report_folder_pins_models_and_data_and_keeps_every_sample(ws, items, host, other):
    summary = run_evaluation(ws, recipe(items, models=("embedded", other), name="pins"), host=host)
    seen = eval_tasks.EVALUATORS[0].options_seen
    assert len(seen) == 2 and seen[0] is seen[1]  # one options dict across models (a judge's budget spans them)
    report = reports.find_report(ws, summary["id"])
    assert report.path == ws.root / "evaluations" / summary["id"] and "pins" in summary["id"]
    assert summary["id"].endswith("embedded-vs-noisy")
    config = yaml.safe_load((report.path / "config.yaml").read_text())
    assert [m["label"] for m in config["models"]] == ["embedded", "noisy"]
    for model in config["models"]:
        assert model["fingerprint"] and Path(model["location"]).is_dir()
    assert config["models"][0]["fingerprint"] != config["models"][1]["fingerprint"]
    task = config["tasks"][0]
    assert task["data"] == [{"path": str(items.resolve()), "sha256": file_sha256(items)}]
    assert task["items"] == 12 and task["options"]["path"] == str(items)
    assert report.status()["status"] == "completed"
    samples = report.samples("noisy", "tiny_choice")
    assert [s["id"] for s in samples] == [f"q{i}" for i in range(12)]
    assert all(set(s) >= {"prompt", "choices", "scores", "prediction", "metrics"} for s in samples)
    metrics = json.loads((report.path / "metrics.json").read_text())
    assert set(metrics) >= {"id", "models", "tasks", "comparisons", "pairwise", "overlap"}
    assert set(metrics["tasks"]["tiny_choice"]) == {"embedded", "noisy"}
    acc = sum(s["metrics"]["acc"] for s in samples) / 12
    assert metrics["tasks"]["tiny_choice"]["noisy"]["acc"]["value"] == pytest.approx(acc)
    events = [json.loads(line) for line in (report.path / "events.jsonl").read_text().splitlines()]
    assert event_name(events[0]) == "started" and event_name(events[-1]) == "finished"
    listed = reports.list_reports(ws)
    assert listed[0]["id"] == summary["id"] and listed[0]["models"] == ["embedded", "noisy"]


def test_a_comparison_gives_the_delta_a_paired_test_and_the_flipped_items():
    base = [{"id": f"i{k}", "metrics": {"acc": 0.0, "loss": 2.0}} for k in range(20)]
    tuned = [{"id": f"i{k}", "metrics": {"acc": 1.0 if k < 12 else 0.0, "loss": 1.0}} for k in range(20)]
    base[19]["metrics"]["acc"] = 1.0  # one item the tuned model lost
    agg = {"acc": {"value": 0.05, "stderr": 0.05, "n": 20}, "loss": {"value": 2.0, "stderr": 0.0, "n": 20}}
    tuned_agg = {"acc": {"value": 0.6, "stderr": 0.1, "n": 20}, "loss": {"value": 1.0, "stderr": 0.0, "n": 20}}
    rows = {r["metric"]: r for r in reports.compare_samples("t", "base", "sft", base, tuned, agg, tuned_agg,
                                                            lower_is_better=("loss",), primary="acc")}
    acc = rows["acc"]
    assert acc["delta"] == pytest.approx(0.55) and acc["better"] is True and acc["primary"]
    assert acc["test"] == "mcnemar" and acc["gained"] == [f"i{k}" for k in range(12)] and acc["lost"] == ["i19"]
    assert acc["p_value"] < 0.05 and acc["significant"]
    loss = rows["loss"]
    # Lower is better: every item's loss fell, so every item counts as gained.
    assert loss["test"] == "paired_bootstrap" and loss["better"] is True and len(loss["gained"]) == 20
    assert loss["significant"]
    # A change of one item either way is no evidence.
    few = reports.compare_samples("t", "a", "b", base[:3], [dict(s, metrics={"acc": 1.0}) if s["id"] == "i0" else s
                                                            for s in base[:3]],
                                  {"acc": {"value": 0.0}}, {"acc": {"value": 1 / 3}})
    assert few[0]["gained"] == ["i0"] and not few[0]["significant"]


def test_two_reports_are_compared_by_item_id_with_drill_down(ws, items, host, other):
    a = run_evaluation(ws, recipe(items), host=host)
    b = run_evaluation(ws, recipe(items, models=(other,)), host=host)
    base, tuned = reports.find_report(ws, a["id"]), reports.find_report(ws, b["id"])
    result = reports.compare(base, tuned)
    assert result["base"] == {"report": a["id"], "label": "embedded"}
    assert result["tuned"] == {"report": b["id"], "label": "noisy"}
    acc = next(c for c in result["comparisons"] if c["metric"] == "acc")
    left = {s["id"]: s["metrics"]["acc"] for s in base.samples("embedded", "tiny_choice")}
    right = {s["id"]: s["metrics"]["acc"] for s in tuned.samples("noisy", "tiny_choice")}
    assert acc["gained"] == [i for i in left if right[i] > left[i]]
    assert acc["lost"] == [i for i in left if right[i] < left[i]]
    assert acc["delta"] == pytest.approx(sum(right.values()) / 12 - sum(left.values()) / 12)
    flips = reports.flip_details(base, tuned, acc)
    for side in ("gained", "lost"):
        assert [f["id"] for f in flips[side]] == acc[side]
        assert all(f["prompt"].startswith("Question:") for f in flips[side])


def test_unknown_tasks_options_and_models_that_cannot_run_a_task_fail_before_any_work(ws, items, host):
    with pytest.raises(ValueError, match=r"tasks.0: unknown task 'tiny_choise' \(did you mean 'tiny_choice'\?"):
        run_evaluation(ws, EvalRecipe(tasks=[{"task": "tiny_choise", "path": str(items)}]), host=host)
    with pytest.raises(ValueError, match=r"tasks.0 \(tiny_choice\): num_fewshots: .*did you mean 'num_fewshot'"):
        run_evaluation(ws, EvalRecipe(tasks=[{"task": "tiny_choice", "path": str(items), "num_fewshots": 2}]),
                       host=host)
    with pytest.raises(ValueError, match="cannot run tiny_choice: it needs log-likelihoods"):
        run_evaluation(ws, recipe(items, models=("embedded", "endpoint:http://127.0.0.1:9/v1#m")), host=host)
    assert not (ws.root / "evaluations").exists() or not any(
        p.is_dir() for p in (ws.root / "evaluations").iterdir())
    assert eval_tasks.EVALUATORS[0].score_calls == 0


def test_an_evaluation_recipe_is_told_by_its_tasks_and_its_data_paths_resolve_beside_it(ws, tmp_path, host):
    folder = tmp_path / "recipes"
    folder.mkdir()
    eval_tasks.write_items(folder / "mine.jsonl", 6)
    path = folder / "eval-mine.yaml"
    path.write_text("# studio eval eval-mine.yaml\nmodels: [embedded]\ntasks:\n  - task: tiny_choice\n"
                    "    path: mine.jsonl\nlimit: 3\n")
    loaded = load_recipe(path, ["batch_size=4"])
    assert isinstance(loaded, EvalRecipe) and loaded.batch_size == 4
    assert loaded.tasks[0].options()["path"] == str((folder / "mine.jsonl").resolve())
    assert recipe_problems(path, host) == []
    path.with_name("bad.yaml").write_text("# studio eval bad.yaml\ntasks:\n  - task: tiny_choice\n    pth: x\n")
    assert "did you mean 'path'" in " ".join(recipe_problems(path.with_name("bad.yaml"), host))
    checked = run_recipe(ws, loaded, check=True, host=host)
    assert checked.status == "checked" and checked.result["tasks"][0]["items"] == 3
    outcome = run_recipe(ws, loaded, host=host)
    assert outcome.kind == "evaluate" and outcome.status == "completed"
    assert outcome.result["tasks"]["tiny_choice"]["embedded"]["acc"]["n"] == 3


def test_the_overlap_of_a_runs_training_data_with_each_benchmark_is_reported(ws, tmp_path, host):
    from studio.data.workflows import import_file
    from studio.evaluation.overlap import training_overlap
    from studio.plugins import get_host

    train = tmp_path / "train.jsonl"
    leaked = "the quick brown fox jumps over the lazy dog near the old river bank every single morning"
    rows = [{"instruction": f"Tell me: {leaked}?", "output": "It does."},
            {"instruction": "Name a colour of the sky on a clear day", "output": "Blue."}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = import_file(ws, train, get_host().formats(), name="train").version
    run = ws.root / "runs" / "20261206-000000-sft-ab12"
    (run / "final").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"backend": "sft", "dataset": f"train@{version.id}"}))
    (run / "status.json").write_text(json.dumps({"status": "completed", "workspace": str(ws.root)}))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "a", "question": leaked, "choices": ["x", "y"], "answer": 0}) + "\n"
                     + json.dumps({"id": "b", "question": "What is two plus two, said slowly and twice over "
                                   "by a very patient teacher?", "choices": ["4", "5"], "answer": 0}) + "\n")

    class Tuned:
        label, location = "sft", str(run / "final")

    class Base:
        label, location = "embedded", str(tmp_path / "elsewhere")

    evaluator = eval_tasks.EVALUATORS[0]
    config = evaluator.config_model(path=str(bench))
    found = training_overlap(ws, [Base(), Tuned()], [("tiny_choice", evaluator, config)], get_host())
    assert set(found) == {"sft"}
    entry = found["sft"]
    assert entry["dataset"] == f"train@{version.id}" and entry["rows"] == 2
    assert entry["tasks"]["tiny_choice"] == {"items": 2, "items_overlapping": 1, "share": 0.5, "rows_overlapping": 1}


def test_a_training_recipes_eval_tasks_are_checked_before_anything_trains(ws, tmp_path, items, host):
    def train_recipe(name: str, task: dict) -> Path:
        path = tmp_path / name
        path.write_text("# studio run " + name + "\n" + yaml.safe_dump({
            "backend": "sft", "dataset": str(ROOT / "datasets" / "train" / "sft_chat.jsonl"), "eval": [task]}))
        return path

    misspelt = train_recipe("a.yaml", {"task": "tiny_choise", "path": str(items)})
    assert any("eval.0: unknown task 'tiny_choise'" in p for p in recipe_problems(misspelt, host))
    bad_option = load_recipe(train_recipe("b.yaml", {"task": "tiny_choice", "path": str(items), "num_fewshots": 1}))
    with pytest.raises(ValueError, match=r"eval.0 \(tiny_choice\): num_fewshots"):
        run_recipe(ws, bad_option, host=host)
    missing = load_recipe(train_recipe("c.yaml", {"task": "tiny_choice", "path": str(tmp_path / "none.jsonl")}))
    with pytest.raises(OSError):
        run_recipe(ws, missing, host=host)
    assert not (ws.root / "runs").exists()
    plan = run_recipe(ws, load_recipe(train_recipe("d.yaml", {"task": "tiny_choice", "path": "items.jsonl"})),
                      check=True, host=host).result
    assert plan["eval"] == {"tiny_choice": 12}  # the task's path was resolved beside the recipe


@pytest.mark.slow
def test_a_pipeline_trains_then_evaluates_previous_against_its_base(ws, tmp_path, monkeypatch, capsys):
    """A training step with `eval:` tasks (scored before and after training into one report linked
    from the run), then an evaluation step comparing `previous` with the base model."""
    site = eval_tasks.write_plugin_distribution(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{ROOT}:{ROOT / 'plugins'}")
    monkeypatch.syspath_prepend(str(site))
    reset_host()
    items = eval_tasks.write_items(tmp_path / "items.jsonl", 6)
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({
        "backend": "sft", "model": "embedded", "dataset": str(ROOT / "datasets" / "train" / "sft_chat.jsonl"),
        "limit": 16, "training": {"max_steps": 2, "batch_size": 4, "save_steps": 2, "report_to": []},
        "adapter": {"method": "lora"}, "eval": [{"task": "tiny_choice", "path": str(items)}]}))
    evaluate = tmp_path / "eval.yaml"
    evaluate.write_text(yaml.safe_dump({"models": ["embedded", "previous"], "labels": ["base", "sft"],
                                        "tasks": [{"task": "tiny_choice", "path": str(items)}]}))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"steps": [{"recipe": "train.yaml"}, {"recipe": "eval.yaml"}]}))
    try:
        outcomes = run_pipeline(ws, pipeline)
    finally:
        reset_host()
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.reason for o in outcomes]
    run = outcomes[0].result
    status = run.status()
    linked = reports.find_report(ws, status["evaluation"])
    assert linked.labels() == ["base", "tuned"]
    assert main(["-w", str(ws.root), "runs", "show", run.run_id]) == 0
    assert f"evaluation (base against tuned): {linked.run_id}" in capsys.readouterr().out
    stages = [e.get("stage") for e in run.events() if event_name(e) == "evaluation"]
    assert "task_done" in stages and stages.index("task_done") < len(stages) - 1
    summary = outcomes[1].result
    assert [m["label"] for m in summary["models"]] == ["base", "sft"]
    assert summary["models"][1]["ref"] == str(run.path)
    # The same weights as the run's own report: both sides came from the cache.
    assert summary["scored"] == {"base": {"tiny_choice": 0}, "sft": {"tiny_choice": 0}}
    assert summary["tasks"]["tiny_choice"]["sft"] == linked.metrics()["tasks"]["tiny_choice"]["tuned"]
    assert summary["comparisons"] and summary["comparisons"][0]["tuned"] == "sft"
    assert summary["overlap"]["sft"]["dataset"].endswith("sft_chat.jsonl")
    assert summary["overlap"]["sft"]["tasks"]["tiny_choice"]["items"] == 6


def test_a_judged_task_is_cached_per_judge_and_other_tasks_ignore_the_judge():
    from studio.evaluation.runner import plan_tasks
    from studio.recipes.evaluate import EvalRecipe

    def digests(judge):
        recipe = EvalRecipe(tasks=[{"task": "mt_bench", "path": "datasets/eval/mt_bench_sample.jsonl"},
                                   {"task": "arc_easy", "path": "datasets/eval/arc_challenge_sample.jsonl"}],
                            judge=judge)
        return [task.digest for task in plan_tasks(recipe)]

    one, other, again = digests("judge-a"), digests({"base_url": "http://127.0.0.1:9/v1"}), digests("judge-a")
    assert one == again
    assert one[0] != other[0]          # another judge's grades are never reused
    assert one[1] == other[1]          # a log-likelihood task does not consult the judge
