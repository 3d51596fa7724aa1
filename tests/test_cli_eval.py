"""`studio eval`: tasks, run (flags and recipes) with the --json shape scripts read, ls / show /
compare, errors with exit codes, and a run killed with SIGKILL that a re-run completes with the
same metrics as an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import eval_tasks
from conftest import ROOT
from studio.cli import main
from studio.cli.evaluate import json_result
from studio.evaluation.runner import run_evaluation
from studio.recipes.evaluate import EvalRecipe
from studio.cli.shared import EXIT_ERROR, EXIT_OK
from studio.plugins import reset_host
from studio.store import Workspace


@pytest.fixture
def host():
    yield eval_tasks.install_in_process()
    reset_host()


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


@pytest.fixture
def items(tmp_path) -> Path:
    return eval_tasks.write_items(tmp_path / "items.jsonl", 8)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_tasks_lists_registered_evaluators_with_their_options(capsys, host):
    code, out, _ = run(capsys, "eval", "tasks", "--json")
    assert code == EXIT_OK
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["tiny_choice"]["uses"] == ["loglikelihood"] and rows["tiny_choice"]["default_fewshot"] == 0
    assert [f["name"] for f in rows["tiny_choice"]["fields"]] == ["path", "num_fewshot"]
    code, out, _ = run(capsys, "eval", "tasks")
    assert code == EXIT_OK and "tiny_choice" in out and "tiny_generate" in out


def test_eval_run_json_names_each_metric_and_compares_models(capsys, ws, items, host):
    code, out, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--task",
                         f"tiny_choice={items}", "--limit", "6", "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    task = data["tasks"]["tiny_choice"]
    assert set(task) >= {"acc", "acc_stderr", "logprob_gold", "logprob_gold_stderr", "n"} and task["n"] == 6
    assert "models" not in data and (ws.root / "evaluations" / data["id"] / "metrics.json").is_file()

    code, out, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--model", "embedded",
                         "--label", "base", "--label", "again", "--task", f"tiny_choice={items}", "--num-fewshot",
                         "0", "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert set(data["models"]) == {"base", "again"} and data["tasks"] == data["models"]["base"]["tasks"]
    assert data["models"]["again"]["tasks"]["tiny_choice"]["n"] == 8
    acc = next(c for c in data["comparisons"] if c["metric"] == "acc")
    assert acc["delta"] == 0 and acc["gained"] == [] and acc["lost"] == [] and not acc["significant"]

    # The human table: a column per model, the delta and the p-value, within 80 columns.
    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--model", "embedded",
                       "--task", f"tiny_choice={items}")
    assert code == EXIT_OK
    assert "embedded-2" in out and "delta" in out and "completed" in out
    assert max(len(line) for line in out.splitlines() if "│" in line) <= 80


def test_eval_errors_name_the_problem_and_exit_nonzero(capsys, ws, items, host):
    code, _, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--task",
                       f"tiny_chocie={items}")
    assert code == EXIT_ERROR and "unknown task 'tiny_chocie'" in err and "did you mean 'tiny_choice'" in err
    code, _, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--task", "tiny_choice")
    assert code == EXIT_ERROR and "expected NAME=PATH" in err
    code, _, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--task",
                       f"tiny_choice={items}", "--fewshot-from", str(items))
    assert code == EXIT_ERROR and "--fewshot-from: none of the tasks (tiny_choice) takes it" in err
    code, _, err = run(capsys, "-w", str(ws.root), "eval", "show", "nothing-like-this")
    assert code == EXIT_ERROR and "studio eval ls" in err


def test_eval_recipe_with_overrides_check_and_the_report_commands(capsys, ws, tmp_path, items, host):
    recipe = tmp_path / "eval-tiny.yaml"
    recipe.write_text(f"# studio eval {recipe}\nmodels: [embedded, embedded]\nlabels: [base, tuned]\n"
                      f"tasks:\n  - task: tiny_choice\n    path: {items.name}\n")
    code, out, err = run(capsys, "-w", str(ws.root), "eval", str(recipe), "limit=4", "--check", "--json")
    assert code == EXIT_OK, err
    plan = json.loads(out)
    assert plan["tasks"][0]["items"] == 4 and [m["label"] for m in plan["models"]] == ["base", "tuned"]
    assert not (ws.root / "evaluations").exists()

    code, out, err = run(capsys, "-w", str(ws.root), "eval", str(recipe), "limit=4", "--json")
    assert code == EXIT_OK, err
    first = json.loads(out)
    assert first["tasks"]["tiny_choice"]["n"] == 4
    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded", "--task",
                       f"tiny_choice={items}", "--json")
    second = json.loads(out)

    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "ls", "--json")
    assert [row["id"] for row in json.loads(out)] == [second["id"], first["id"]]
    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "show", first["id"], "--flips", "3", "--json")
    shown = json.loads(out)
    assert shown["id"] == first["id"] and shown["status"]["status"] == "completed"
    assert shown["config"]["models"][0]["fingerprint"] and shown["tasks"]["tiny_choice"]["tuned"]["acc"]["n"] == 4
    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "compare", f"{first['id']}:tuned", second["id"], "--json")
    compared = json.loads(out)
    assert compared["base"]["label"] == "tuned" and compared["tuned"]["label"] == "embedded"
    acc = next(c for c in compared["comparisons"] if c["metric"] == "acc")
    # The same model on the 4 items both reports scored: no change, no flip.
    assert acc["n_paired"] == 4 and acc["delta"] == 0 and acc["gained"] == acc["lost"] == []
    code, out, _ = run(capsys, "-w", str(ws.root), "eval", "compare", first["id"], second["id"])
    assert code == EXIT_OK and "tiny_choice" in out and "acc" in out


def _cached(ws: Workspace) -> int:
    path = ws.root / "evaluations" / "cache.sqlite"
    if not path.is_file():
        return 0
    try:
        with sqlite3.connect(str(path), timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_an_evaluation_killed_with_sigkill_reruns_to_the_same_metrics(tmp_path, ws, host):
    site = eval_tasks.write_plugin_distribution(tmp_path / "site")
    items = eval_tasks.write_items(tmp_path / "items.jsonl", 70)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), str(ROOT / "plugins")]),
           "STUDIO_TEST_SCORE_DELAY": "0.03"}
    command = [sys.executable, "-m", "studio", "-w", str(ws.root), "eval", "run", "--model", "embedded",
               "--task", f"tiny_choice={items}", "--json"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 300
    while _cached(ws) == 0 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    kept = _cached(ws)
    assert 0 < kept < 70  # killed after its first chunk was cached, before the end
    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads(rerun.stdout)
    assert resumed["scored"] == {"embedded": {"tiny_choice": 70 - kept}}
    # An uninterrupted run, in this process, on a fresh cache.
    clean = run_evaluation(Workspace.init(tmp_path / "clean"),
                           EvalRecipe(tasks=[{"task": "tiny_choice", "path": str(items)}]), host=host)
    assert json_result(clean)["tasks"] == resumed["tasks"]


EVAL_RECIPES = sorted((ROOT / "recipes").glob("eval-*.yaml"))


@pytest.mark.parametrize("path", EVAL_RECIPES, ids=[p.name for p in EVAL_RECIPES])
def test_every_shipped_evaluation_recipe_runs_on_its_sample_files(path, capsys, ws, monkeypatch):
    """The shipped recipes, with the real evaluators on the shipped samples (a few items each)."""
    assert path.read_text(encoding="utf-8").startswith(f"# studio eval recipes/{path.name}\n")
    monkeypatch.chdir(ROOT)
    overrides = ["limit=2"]
    if "embedded:small" in path.read_text(encoding="utf-8"):
        overrides.append('models=["embedded","embedded"]')  # building the small model costs minutes
    code, out, err = run(capsys, "-w", str(ws.root), "eval", path.stem, *overrides, "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    recipe_tasks = [t["task"] for t in yaml.safe_load(path.read_text(encoding="utf-8"))["tasks"]]
    assert list(data["tasks"]) == recipe_tasks
    for task, metrics in data["tasks"].items():
        assert metrics["n"] == 2 and all(0 <= v <= 1 for k, v in metrics.items()
                                         if k in ("acc", "acc_norm", "exact_match,strict-match"))


def test_bad_rows_are_named_by_file_line_and_field_and_the_good_ones_scored(tmp_path, capsys, ws):
    source = tmp_path / "arc.jsonl"
    good = (ROOT / "datasets" / "eval" / "arc_challenge_sample.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    source.write_text("\n".join(good + [
        '{"id": "x", "question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "A"}',
        "not json"]) + "\n", encoding="utf-8")
    before = source.read_bytes()
    code, out, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "embedded",
                         "--task", f"arc_challenge={source}", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["tasks"]["arc_challenge"]["n"] == 3
    assert "2 row(s) skipped" in err
    assert f"{source}, line 4, field 'question.choices'" in err and f"{source}, line 5" in err
    assert source.read_bytes() == before
    report = json.loads(next(ws.root.glob("evaluations/*/metrics.json")).read_text(encoding="utf-8"))
    assert [r["line"] for r in report["rejected"]["arc_challenge"]] == [4, 5]


def test_a_dead_endpoint_is_one_clear_error(tmp_path, capsys, ws):
    code, out, err = run(capsys, "-w", str(ws.root), "eval", "run", "--model", "endpoint:http://127.0.0.1:9/v1#m",
                         "--task", f"gsm8k={ROOT / 'datasets' / 'eval' / 'gsm8k_sample.jsonl'}", "--limit", "1")
    assert code == EXIT_ERROR
    assert "evaluation failed" in err and "http://127.0.0.1:9/v1" in err and "Traceback" not in err
