"""The Evaluate mode (7) driven with Pilot: a recipe picked from the workspace fills the pickers
and the task's options form, a tiny evaluation runs on the embedded tiny model against a second
model (a run of the workspace), the results show both models side by side with the delta and
the paired test, the flipped items open for drill-down, and the arena streams two answers.

The task is the runner tests' small multiple-choice evaluator (:mod:`eval_tasks`), registered on
the plugin host like any plugin: the models really score every choice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, Select, TabbedContent  # noqa: E402

from studio.evaluation.reports import find_report, list_reports  # noqa: E402
from studio.models.embedded import build_embedded_model, ensure_embedded_model  # noqa: E402
from studio.models.loading import load_model, resolve_model_ref  # noqa: E402
from studio.plugins import get_host  # noqa: E402
from studio.recipes import load_recipe  # noqa: E402
from studio.recipes.evaluate import EvalRecipe  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.evaluate import EvaluateScreen, result_rows  # noqa: E402
from studio.tui.screens.evaluate_flips import EvalFlipsScreen  # noqa: E402
from studio.tui.widgets.arena import ArenaPane, load_engine, stream_answer  # noqa: E402
import eval_tasks  # noqa: E402
from test_train_tui import make_run  # noqa: E402
from test_tui import make_host, plain  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (150, 48)
RUN_ID = "20260101-000000-sft-eval"
TOKENS = 24  # answer length in the arena test
LIMIT = 6  # items per model in the recipe


@pytest.fixture
def anyio_backend():
    return "asyncio"


def evaluate_host():
    # The runner tests' small real task (multiple choice by summed log-probability), as a plugin.
    return make_host((eval_tasks, "studio-test-evals"))


# --- the workspace -------------------------------------------------------------------------------


def plant_flips(path: Path, other: Path) -> Path:
    """Where the two models pick different choices, make the compared model's pick the right
    answer: those items flip (base wrong, compared right) whatever the models' weights are."""
    picks = []
    for location in (resolve_model_ref("embedded"), str(other)):
        model, tokenizer = load_model(location)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        picks.append([max(range(len(row["choices"])), key=lambda i: eval_tasks._continuation_logprob(
            model, tokenizer, f"Question: {row['question']}\nAnswer:", " " + row["choices"][i])) for row in rows])
    planted = 0
    for row, base, tuned in zip(rows[:LIMIT], *picks):
        if base != tuned and planted < 3:
            row["answer"], planted = tuned, planted + 1
    assert planted, "the two test models pick the same choice everywhere"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ensure_embedded_model("tiny")  # cached for the session: built once
    ws = Workspace.init(tmp_path / "ws")
    # The compared model: a run of the workspace whose model is the embedded one never pretrained.
    run = make_run(ws, RUN_ID)
    build_embedded_model(run.path / "final", seed=1, pretrain_steps=0)
    items = plant_flips(eval_tasks.write_items(tmp_path / "tiny_choice.jsonl", 8), run.path / "final")
    recipes = ws.root / "recipes"
    recipes.mkdir()
    (recipes / "eval-tiny.yaml").write_text(
        "# studio eval eval-tiny\n# The tiny choice task, the embedded model against a short run.\n"
        + yaml.safe_dump({"models": ["embedded", RUN_ID], "tasks": [{"task": "tiny_choice", "path": str(items)}],
                          "limit": LIMIT, "batch_size": 4}))
    (recipes / "eval-twice.yaml").write_text(yaml.safe_dump(
        {"tasks": [{"task": "tiny_choice", "path": str(items)}, {"task": "tiny_choice", "path": str(items),
                                                                 "num_fewshot": 2}]}))
    return ws


# --- helpers -------------------------------------------------------------------------------------


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_evaluate(pilot) -> EvaluateScreen:
    await settle(pilot)
    await pilot.press("7")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, EvaluateScreen)
    return screen


async def pick_recipe(pilot, screen: EvaluateScreen, name: str) -> None:
    select = screen.query_one("#eval-recipe", Select)
    select.value = next(value for label, value in select._options if str(label).split()[0] == name)
    await settle(pilot)
    await pilot.pause()


def text_of(screen, selector: str) -> str:
    return " ".join(plain(screen.query_one(selector).content, width=200).split())


def table_rows(table: DataTable) -> list[list[str]]:
    return [[plain(cell, width=300).strip() for cell in table.get_row_at(i)] for i in range(table.row_count)]


# --- tests ---------------------------------------------------------------------------------------


async def test_a_picked_recipe_fills_the_form_and_the_draft_is_that_recipe(workspace):
    app = StudioApp(workspace, host=evaluate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_evaluate(pilot)
        assert screen.value("base") == "embedded"
        assert list(screen.problems().choices) == ["task"]  # a blank recipe: only the task is missing
        await pick_recipe(pilot, screen, "eval-tiny")
        assert screen.value("base") == "embedded" and screen.value("other") == RUN_ID
        assert screen.value("task") == "tiny_choice" and screen.task_order == ["tiny_choice"]
        assert "in this evaluation: tiny_choice" in text_of(screen, "#eval-task-info")
        path = screen.query_one("#eval-config #field-path", Input).value
        assert path.endswith("tiny_choice.jsonl")
        assert screen.query_one("#eval-settings-run #field-limit", Input).value == str(LIMIT)
        recipe, problems = screen.draft()
        assert problems.messages() == []
        # c checks without scoring: the task's items are read (the recipe's limit) and the models found.
        screen.query_one("#eval-check-button").focus()
        await pilot.press("c")
        await settle(pilot)
        assert f"tiny_choice ({LIMIT} items)" in text_of(screen, "#eval-status")
        assert RUN_ID in text_of(screen, "#eval-problems") and list_reports(workspace) == []
        assert isinstance(recipe, EvalRecipe)
        assert recipe.models == ["embedded", RUN_ID] and recipe.limit == LIMIT and recipe.batch_size == 4
        assert [t.task for t in recipe.tasks] == ["tiny_choice"] and recipe.tasks[0].options()["path"] == path
        # A typed-in model joins the comparison; an emptied required option is said under its field.
        screen.query_one("#eval-settings-models #field-more_models", Input).value = "some/folder"
        screen.query_one("#eval-config #field-path", Input).value = ""
        await pilot.pause()
        recipe, problems = screen.draft()
        assert recipe is None and "path" in problems.options
        screen.query_one("#eval-config #field-path", Input).value = path
        await pilot.pause()
        assert screen.draft()[0].models == ["embedded", RUN_ID, "some/folder"]
        # x takes the task out of the evaluation: nothing is left to run.
        await pilot.press("escape")
        await pilot.press("x")
        await pilot.pause()
        assert screen.task_order == [] and screen.draft()[0] is None
        assert "choose a task" in screen.problems().choices["task"]
        # A recipe listing a task twice is not flattened into one entry: the form says to run it headless.
        await pick_recipe(pilot, screen, "eval-twice")
        recipe, problems = screen.draft()
        assert recipe is None and "tiny_choice more than once" in problems.recipe


async def test_run_a_tiny_evaluation_see_results_and_open_the_flips(workspace):
    app = StudioApp(workspace, host=evaluate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_evaluate(pilot)
        await pick_recipe(pilot, screen, "eval-tiny")
        screen.query_one("#eval-start-button").focus()
        await pilot.press("r")
        await settle(pilot)
        assert screen.busy is None
        reports = list_reports(workspace)
        assert len(reports) == 1 and reports[0]["status"] == "completed"
        # The live progress followed both models through the task.
        assert {key: (p["done"], p["total"], p["state"]) for key, p in screen.progress.items()} == {
            ("embedded", "tiny_choice"): (LIMIT, LIMIT, "done"), (RUN_ID, "tiny_choice"): (LIMIT, LIMIT, "done")}
        report = find_report(workspace, reports[0]["id"])
        assert screen.query_one("#eval-report", Select).value == reports[0]["id"]
        # The table shows what the report holds: both models' acc, the delta and the test's p-value.
        metrics = report.metrics()
        comparison = next(c for c in metrics["comparisons"] if c["metric"] == "acc")
        rows = table_rows(screen.query_one("#eval-results", DataTable))
        acc_row = next(r for r in rows if r[:2] == ["tiny_choice", "acc"])
        assert acc_row[2] == f"{comparison['delta']:+.4f}" and acc_row[3] == f"{comparison['p_value']:.3f}"
        assert acc_row[5] == f"{comparison['base_value']:.4f}" and acc_row[6] == f"{comparison['tuned_value']:.4f}"
        assert acc_row[4] == ("*" if comparison["significant"] else "")
        base_samples = report.samples("embedded", "tiny_choice")
        tuned_samples = report.samples(RUN_ID, "tiny_choice")
        assert len(base_samples) == len(tuned_samples) == LIMIT
        flipped = {s["id"] for s, t in zip(base_samples, tuned_samples) if s["metrics"]["acc"] != t["metrics"]["acc"]}
        assert flipped, "the two models should disagree on some of the items"
        # Enter on the row: the items that flipped, each with its prompt, choices and both predictions.
        table = screen.query_one("#eval-results", DataTable)
        table.focus()
        table.move_cursor(row=rows.index(acc_row))
        await pilot.press("enter")
        await pilot.pause()
        flips = app.screen
        assert isinstance(flips, EvalFlipsScreen)
        assert {f["id"] for f in flips.flips} == flipped
        shown = flips.flips[0]
        sample = next(s for s in base_samples if s["id"] == shown["id"])
        detail = plain(flips.query_one("#flips-detail").content, width=140)
        assert sample["prompt"] in detail and all(choice in detail for choice in sample["choices"])
        assert ("fixed" if shown["fixed"] else "broken") in detail
        if len(flips.flips) > 1:
            await pilot.press("down")
            assert flips.index == 1
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_the_arena_streams_two_answers(workspace):
    prompt = "What is the studio?"
    expected = [stream_answer(load_engine(ref, workspace), prompt, lambda text: None, max_tokens=TOKENS)["text"]
                for ref in ("embedded", RUN_ID)]
    app = StudioApp(workspace, host=evaluate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_evaluate(pilot)
        await pick_recipe(pilot, screen, "eval-tiny")
        await pilot.press("escape")
        await pilot.press("a")
        await pilot.pause()
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-arena"
        arena = screen.query_one("#eval-arena", ArenaPane)
        arena.max_tokens = TOKENS
        assert arena.models == {"left": "embedded", "right": RUN_ID}
        assert app.focused is screen.query_one("#arena-prompt", Input)
        await pilot.press(*prompt, "enter")
        await settle(pilot)
        assert not arena.busy
        assert [arena.answers["left"], arena.answers["right"]] == expected
        assert all(expected)
        for side, text in zip(("left", "right"), expected):
            assert plain(screen.query_one(f"#arena-{side}").content, width=200).split() == text.split()
            assert "tokens" in plain(screen.query_one(f"#arena-{side}-title").content)


def test_result_rows_of_one_model_list_each_metric():
    metrics = {"models": [{"label": "embedded"}],
               "tasks": {"arc_easy": {"embedded": {"acc": {"value": 0.5, "stderr": 0.1, "n": 20},
                                                   "acc_norm": {"value": 0.25, "stderr": None, "n": 20}}}},
               "comparisons": []}
    rows = result_rows(metrics)
    assert [(r["task"], r["metric"], r["base_value"], r["n"], r["other"]) for r in rows] == [
        ("arc_easy", "acc", 0.5, 20, None), ("arc_easy", "acc_norm", 0.25, 20, None)]



async def test_esc_stops_a_run_and_r_scores_only_the_rest(workspace, monkeypatch):
    task = eval_tasks.EVALUATORS[0]
    monkeypatch.setenv("STUDIO_TEST_SCORE_DELAY", "0.8")  # slow enough to stop half-way
    app = StudioApp(workspace, host=evaluate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_evaluate(pilot)
        await pick_recipe(pilot, screen, "eval-tiny")
        screen.query_one("#eval-start-button").focus()
        await pilot.press("r")
        # Stop once the base model is through: its samples are cached, the second model's are not.
        for _ in range(1200):
            if screen.progress.get(("embedded", "tiny_choice"), {}).get("state") == "done":
                break
            await pilot.pause(0.05)
        await pilot.press("escape")
        await settle(pilot)
        assert "stopped" in text_of(screen, "#eval-status")
        assert [r["status"] for r in list_reports(workspace)] == ["stopped"]
        monkeypatch.delenv("STUDIO_TEST_SCORE_DELAY")
        before = task.scored_items
        await pilot.press("r")
        await settle(pilot)
        assert [r["status"] for r in list_reports(workspace)] == ["completed", "stopped"]
        assert task.scored_items - before == LIMIT  # only the second model's items: the base's were cached
        assert screen.query_one("#eval-report", Select).value == list_reports(workspace)[0]["id"]


async def test_every_shipped_evaluation_recipe_round_trips_through_the_form(workspace):
    # With the real plugins: what the form would run is the recipe as the CLI loads it.
    host = get_host()
    app = StudioApp(workspace, host=host)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_evaluate(pilot)
        shipped = [r for r in screen.recipes if r["shipped"]]
        assert shipped, "the project ships evaluation recipes"
        for entry in shipped:
            await pick_recipe(pilot, screen, entry["name"])
            recipe, problems = screen.draft()
            assert problems.messages() == [], entry["name"]
            loaded = load_recipe(Path(entry["path"]), kind="evaluate")
            assert recipe.models == loaded.models and recipe.labels == loaded.labels, entry["name"]
            assert recipe.limit == loaded.limit and recipe.batch_size == loaded.batch_size, entry["name"]
            assert [t.task for t in recipe.tasks] == [t.task for t in loaded.tasks], entry["name"]
            for drafted, given in zip(recipe.tasks, loaded.tasks):
                assert given.options().items() <= drafted.options().items(), (entry["name"], given.task)
