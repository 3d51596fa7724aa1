"""The Train (5) and Runs (6) modes driven with Pilot, and the pure plot renderer.

Train: back-ends come from the plugin host (a third-party "toy" back-end defined here shows up
beside "sft" with its own options form), recipes from the catalogue (a workspace recipe here),
the loss-mask preview, a preflight problem for data of the wrong shape, and Start, which creates
a run folder and a subprocess that trains a tiny model for a few steps.
Runs: hand-written run folders (recipe.yaml, status.json, events.jsonl, metrics.json; fast, no
training) for the metrics table, plots, checks, alerts and compare, and one real run cancelled
from the screen.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

pytest.importorskip("textual")

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from textual.widgets import DataTable, Input, Select, Static  # noqa: E402

import studio_format_openai  # noqa: E402
import studio_train_sft  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402
from studio.records import Record, Turn  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.training import runs as train_runs  # noqa: E402
from studio.training.backend_base import Backend  # noqa: E402
from studio.recipes import validate_recipe  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.runs import CompareScreen, RunsScreen  # noqa: E402
from studio.tui.screens.recipe_form import put_form_values  # noqa: E402
from studio.tui.screens.train import TrainScreen  # noqa: E402
from studio.tui.widgets import run_live  # noqa: E402
from studio.tui.widgets.plot import (  # noqa: E402
    BRAILLE, LinePlot, Series, finite_points, format_number, plot_cells, render_plot,
)
from test_tui import make_host, plain  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (150, 48)
FIXED_TIME = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DATASET_REF = "chat@0123456789abcdef"
QA = [("What is the capital of France?", "Paris is the capital of France."),
      ("Name a prime number.", "Seven is a prime number."),
      ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
      ("How many legs does a spider have?", "A spider has eight legs."),
      ("What do bees make?", "Bees make honey."),
      ("What is two plus two?", "Two plus two is four."),
      ("Which planet is known as the red planet?", "Mars is known as the red planet."),
      ("What is frozen water called?", "Frozen water is called ice."),
      ("What do you call a baby cat?", "A baby cat is called a kitten."),
      ("How many days are in a week?", "A week has seven days.")]


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- back-ends and workspace ---------------------------------------------------------------


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, gt=0, description="strength of the toy objective")
    mode: Literal["fast", "slow"] = Field("fast", description="how the toy trains")


class ToyBackend(Backend):
    """A third-party back-end: listed, configured and previewed like any other (never trained here)."""

    name = "toy"
    title = "Toy trainer"
    summary = "a back-end from a third-party plugin"
    config_model = ToyOptions
    data_kind = "conversation"
    adapter_methods = ("none", "lora")

    def preview(self, ctx, record):
        segments = []
        for turn in record.messages:
            segments.append({"text": f"<{turn.role}> ", "loss": False})
            segments.append({"text": turn.content + "\n", "loss": turn.role == "assistant"})
        text = "".join(s["text"] for s in segments)
        return {"text": text, "segments": segments, "tokens": len(text.split()),
                "loss_tokens": sum(len(s["text"].split()) for s in segments if s["loss"])}


class PlainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlainBackend(Backend):
    name = "plain"
    title = "Plain trainer"
    summary = "a back-end without a preview"
    config_model = PlainOptions


class BackendsPlugin:
    def __init__(self, *backends: Backend):
        self.backends = backends

    @hookimpl
    def register_backends(self, register):
        for backend in self.backends:
            register(backend)


def train_host(sft: bool = True):
    extra = [(studio_format_openai, "openai_chat"), (BackendsPlugin(ToyBackend(), PlainBackend()), "toy-backends")]
    if sft:
        extra.insert(0, (studio_train_sft, "train_sft"))
    return make_host(*extra)


def chat_records() -> list[Record]:
    return [Record([Turn("user", q), Turn("assistant", a)]) for q, a in QA]


def make_workspace(root: Path) -> Workspace:
    ws = Workspace.init(root)
    ws.write_version("chat", chat_records(), operation={"op": "test"})
    ws.write_version("prompts", [Record([Turn("user", q)]) for q, _ in QA], operation={"op": "test"})
    return ws


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def chat_file(tmp_path) -> Path:
    """The same conversations as a data file (OpenAI chat format) for the runs that really train."""
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in QA), encoding="utf-8")
    return path


def write_recipe(ws: Workspace, name: str, data: dict[str, Any], comment: str = "") -> Path:
    folder = Path(ws.root) / "recipes"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    header = f"# {comment or name}\n# studio run {path.name}\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


TINY_TRAINING = {"max_steps": 6, "batch_size": 2, "logging_steps": 1, "save_steps": 3, "report_to": [],
                 "max_length": 64}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained embedded-architecture model whose tokenizer is built from the built-in
    conversations only (a few seconds, mostly imports), outside the shared studio home."""
    import studio.sample_workspace
    from studio.models.embedded import build_embedded_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(studio.sample_workspace, "sample_files", lambda: [])
        return build_embedded_model(tmp_path_factory.mktemp("tiny-model") / "tiny", pretrain_steps=0)


@pytest.fixture
def kill_runs():
    """Whatever a test started is stopped at its end, passed or failed."""
    started: list[train_runs.TrainRun] = []
    yield started
    for run in started:
        pid = run.status().get("pid")
        if pid and run.status().get("status") == "running":
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for run_id, process in list(run_live.PROCESSES.items()):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait(timeout=10)
        run_live.PROCESSES.pop(run_id, None)


# --- hand-written run folders --------------------------------------------------------------


def make_run(ws: Workspace, run_id: str, *, backend: str = "sft", status: str = "completed",
             recipe: dict[str, Any] | None = None, events: list[dict[str, Any]] = (),
             metrics: dict[str, Any] | None = None, log: str = "", checkpoints: tuple[int, ...] = (),
             started: float = FIXED_TIME, extra_status: dict[str, Any] | None = None) -> train_runs.TrainRun:
    """A run folder as a run process leaves it, written by hand (no training)."""
    folder = train_runs.runs_dir(ws) / run_id
    folder.mkdir(parents=True)
    data = {"backend": backend, "dataset": DATASET_REF, **(recipe or {})}
    resolved = validate_recipe(data)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False),
                                        encoding="utf-8")
    steps = [e.get("step") for e in events if isinstance(e.get("step"), int)]
    max_steps = resolved.training.max_steps
    state = {"status": status, "backend": backend, "model": resolved.model, "dataset": DATASET_REF,
             "train_records": 9, "eval_records": 1, "created": started, "started": started + 1,
             "max_steps": max_steps, "step": max(steps) if steps else 0, "workspace": str(ws.root),
             **(extra_status or {})}
    (folder / "status.json").write_text(json.dumps(state), encoding="utf-8")
    with open(folder / "events.jsonl", "w", encoding="utf-8") as fh:
        for index, event in enumerate(events):
            fh.write(json.dumps({"t": started + 2 + index, **event}) + "\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "train.log").write_text(log, encoding="utf-8")
    for step in checkpoints:
        point = folder / "checkpoints" / f"checkpoint-{step}"
        point.mkdir(parents=True)
        (point / "trainer_state.json").write_text("{}", encoding="utf-8")
    return train_runs.TrainRun(folder)


def sft_events(max_steps: int = 12, start_loss: float = 5.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"kind": "start", "backend": "sft", "model": "embedded", "resume": False},
                                    {"kind": "train_begin", "step": 0, "max_steps": max_steps}]
    for step in range(1, max_steps + 1):
        loss = round(start_loss - 1.5 * math.log(step) + 0.1 * ((step * 7) % 3), 4)
        events.append({"kind": "progress", "step": step, "max_steps": max_steps, "elapsed": step * 1.5})
        events.append({"kind": "metrics", "step": step,
                       "values": {"loss": loss, "grad_norm": round(1.0 / step, 4),
                                  "learning_rate": round(1e-3 * (1 - step / (max_steps + 1)), 6)}})
        if step % 6 == 0:
            events.append({"kind": "eval", "step": step, "values": {"eval_loss": round(loss + 0.2, 4)}})
            events.append({"kind": "checkpoint", "step": step, "path": f"checkpoints/checkpoint-{step}"})
    events.append({"kind": "end", "status": "completed"})
    return events


def dpo_events(max_steps: int = 12) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"kind": "start", "backend": "dpo", "model": "embedded", "resume": False}]
    for step in range(1, max_steps + 1):
        margin = round(0.05 * step + (2.0 if step == 9 else 0.0), 4)
        events.append({"kind": "metrics", "step": step,
                       "values": {"loss": round(0.69 - 0.02 * step, 4), "rewards/margins": margin,
                                  "rewards/chosen": round(0.02 * step, 4), "logps/chosen": round(-40 - step, 3),
                                  "kl": round(0.01 * step, 4)}})
        if step == 9:
            events.append({"kind": "alert", "rule": "reward_spike", "metric": "rewards/margins", "step": 9,
                           "message": "reward spike: rewards/margins = 2.45 at step 9 against a mean of 0.2 "
                                      "(sd 0.072); watch for reward hacking or a bad batch"})
    events.append({"kind": "end", "status": "completed"})
    return events


def finished_sft_run(ws: Workspace, run_id: str = "20260101-000000-sft-aaaa", **recipe: Any) -> train_runs.TrainRun:
    return make_run(
        ws, run_id, recipe={"training": {"max_steps": 12, **recipe.pop("training", {})},
                            "expect": [{"metric": "loss", "falls_by": 0.2}], **recipe},
        events=sft_events(),
        metrics={"final": {"train_loss": 2.9, "eval_loss": 1.65}, "seconds": 20.0,
                 "checks": [{"metric": "loss", "passed": True, "details": [], "first": 5.0, "last": 1.47}]},
        log="$ python -m studio.training.worker RUN\n{'loss': '1.47', 'grad_norm': '0.083'}\ntraining done\n",
        checkpoints=(6, 12))


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_mode(pilot, key: str, cls):
    await settle(pilot)
    await pilot.press(key)
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, cls)
    await pilot.pause()
    return screen


def text_of(screen, selector: str, width: int = 200) -> str:
    return " ".join(plain(screen.query_one(selector, Static).content, width=width).split())


def select_values(screen, selector: str) -> list[str]:
    return [str(value) for _, value in screen.query_one(selector, Select)._options if value is not Select.NULL]


def table_rows(table: DataTable) -> list[list[str]]:
    return [[plain(cell, width=300).strip() for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def choose(pilot, screen, selector: str, value: str) -> None:
    screen.query_one(selector, Select).value = value
    await pilot.pause()
    await pilot.pause()


async def set_field(pilot, screen, form: str, name: str, value: str) -> None:
    screen.query_one(f"#{form} #field-{name}", Input).value = value
    await pilot.pause()


async def wait_for(pilot, condition, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            await pilot.pause()
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")


async def wait_idle(pilot, screen: TrainScreen, limit: float = 60.0) -> None:
    await wait_for(pilot, lambda: not screen.busy, limit, f"{screen.busy} to finish")
    await pilot.pause()


# --- Train screen --------------------------------------------------------------------------


async def test_train_screen_lists_backends_recipes_and_config_form(workspace):
    write_recipe(workspace, "sft-tiny", {"backend": "sft", "dataset": "chat", "training": TINY_TRAINING,
                                         "config": {"assistant_only_loss": False}}, "Tiny SFT for tests.")
    write_recipe(workspace, "curate-x", {"steps": [{"op": "exact_dedup"}]})  # not a training recipe
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        # Every back-end of the host, the third-party ones included; sft is the default.
        assert set(select_values(screen, "#train-backend")) == {"sft", "toy", "plain"}
        assert screen.query_one("#train-backend", Select).value == "sft"
        assert "plugin train_sft" in text_of(screen, "#train-backend-info")
        recipes = select_values(screen, "#train-recipe")
        assert any(v.endswith("sft-tiny.yaml") for v in recipes) and not any("curate-x" in v for v in recipes)
        assert set(select_values(screen, "#train-dataset")) >= {"chat", "prompts"}
        assert screen.query("#train-config #field-assistant_only_loss")  # the sft options form

        # Choosing the toy back-end swaps in its own form.
        await choose(pilot, screen, "#train-backend", "toy")
        assert screen.query("#train-config #field-beta") and screen.query("#train-config #field-mode")
        assert "third-party plugin" in text_of(screen, "#train-backend-info")
        await set_field(pilot, screen, "train-config", "beta", "-1")
        assert "greater than 0" in text_of(screen, "#train-config #error-beta")

        # A recipe fills every choice and the forms.
        path = next(v for v in recipes if v.endswith("sft-tiny.yaml"))
        await choose(pilot, screen, "#train-recipe", path)
        assert screen.query_one("#train-backend", Select).value == "sft"
        assert screen.query_one("#train-dataset", Select).value == "chat"
        assert screen.query_one("#train-settings #field-max_steps", Input).value == "6"
        assert screen.query_one("#train-config #field-assistant_only_loss").value is False
        assert "Tiny SFT for tests." in text_of(screen, "#train-recipe-info")
        recipe, problems = screen.draft()
        assert problems.messages() == []
        assert recipe.training.max_steps == 6 and recipe.training.report_to == [] and recipe.dataset == "chat"
        assert recipe.config.get("assistant_only_loss") is False


async def test_train_screen_previews_a_third_party_loss_mask_and_says_when_there_is_none(workspace):
    app = StudioApp(workspace, host=train_host(sft=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        await choose(pilot, screen, "#train-dataset", "chat")
        await choose(pilot, screen, "#train-backend", "toy")
        await pilot.press("p")
        await wait_idle(pilot, screen)
        preview = screen.query_one("#train-preview", Static).content
        shown = plain(preview)
        assert "training record 1 of 9" in shown and "carry loss" in shown and "<assistant>" in shown
        # The assistant's words are highlighted, the prompt dim.
        lines = [t for t in preview.renderables if hasattr(t, "spans")]
        body = lines[-1]
        highlighted = "".join(body.plain[s.start:s.end] for s in body.spans if "on dark_green" in str(s.style))
        dim = "".join(body.plain[s.start:s.end] for s in body.spans if str(s.style) == "dim")
        answers = {a for _, a in QA}
        assert any(a in highlighted for a in answers) and "<user>" in dim and "<assistant>" not in highlighted
        await pilot.press("right_square_bracket")
        await wait_idle(pilot, screen)
        assert "training record 2 of 9" in plain(screen.query_one("#train-preview", Static).content)

        await choose(pilot, screen, "#train-backend", "plain")
        await pilot.press("p")
        await wait_idle(pilot, screen)
        assert "has no template/loss-mask preview" in text_of(screen, "#train-preview")


async def test_train_screen_previews_the_sft_loss_mask(workspace, tiny_model):
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        await choose(pilot, screen, "#train-dataset", "chat")
        await set_field(pilot, screen, "train-settings", "model", str(tiny_model))
        screen.query_one("#train-start-button").focus()
        await pilot.press("p")
        await wait_idle(pilot, screen, 120)
        shown = text_of(screen, "#train-preview")
        if type(screen.backend()).preview is Backend.preview:
            # The SFT back-end does not preview (yet): the screen says so instead of failing.
            assert "sft has no template/loss-mask preview" in shown
            pytest.skip("the sft back-end has no preview() yet")
        assert "carry loss" in shown and "tokens" in shown
        body = screen.query_one("#train-preview", Static).content.renderables[-1]
        assert any("on dark_green" in str(span.style) for span in body.spans)


async def test_train_screen_check_reports_wrong_shape_data(workspace):
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        await choose(pilot, screen, "#train-dataset", "prompts")
        screen.query_one("#train-check-button").press()
        await pilot.pause()
        await wait_idle(pilot, screen)
        problems = text_of(screen, "#train-problems")
        assert "the run cannot start" in problems and "no assistant turn to learn from" in problems
        assert "record 1" in problems
        assert "found problems" in text_of(screen, "#train-status")

        await choose(pilot, screen, "#train-dataset", "chat")
        screen.query_one("#train-check-button").press()
        await pilot.pause()
        await wait_idle(pilot, screen)
        assert text_of(screen, "#train-problems") == ""
        assert "ready to start: 9 training / 1 held-out conversation records" in text_of(screen, "#train-status")

        # A form problem is found before any service runs.
        await set_field(pilot, screen, "train-settings", "max_steps", "0")
        screen.query_one("#train-check-button").press()
        await pilot.pause()
        assert "max_steps" in text_of(screen, "#train-status")
        assert "greater than or equal to 1" in text_of(screen, "#train-settings #error-max_steps")
        assert not list(train_runs.runs_dir(workspace).glob("*"))


async def test_start_creates_a_run_that_trains_in_a_subprocess(workspace, chat_file, tiny_model, kill_runs):
    path = write_recipe(workspace, "sft-tiny", {"backend": "sft", "dataset": str(chat_file), "training": TINY_TRAINING,
                                                "adapter": {"method": "lora"},
                                                "expect": [{"metric": "loss", "below": 100}]})
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        await choose(pilot, screen, "#train-recipe", str(path))
        assert screen.query_one("#train-dataset", Select).value == str(chat_file)  # the recipe's file
        labels = [str(label) for label, _ in screen.query_one("#train-dataset", Select)._options]
        assert "chat.jsonl  (the recipe's file)" in labels
        await set_field(pilot, screen, "train-settings", "model", str(tiny_model))
        await set_field(pilot, screen, "train-settings", "name", "tui-start")
        screen.query_one("#train-start-button").press()
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.selected, 60,
                       "the Runs screen with the new run")
        runs_screen = app.screen
        run = train_runs.find_run(workspace, runs_screen.selected)
        kill_runs.append(run)
        assert "tui-start" in run.run_id and screen.started_run == run.run_id
        assert (run.path / "recipe.yaml").is_file() and run.recipe().training.max_steps == 6
        assert run.recipe().model == str(tiny_model)
        assert run.run_id in run_live.PROCESSES
        await wait_for(pilot, lambda: run.status()["status"] in train_runs.FINISHED, 240, "the run to finish")
        assert run.status()["status"] == "completed", run.log_tail(30)
        # The live view caught up: metrics, the loss plot, the learning check, checkpoints.
        await wait_for(pilot, lambda: "✓ loss" in text_of(runs_screen, "#run-checks"), 10, "the checks")
        metrics = {row[0] for row in table_rows(runs_screen.query_one("#run-metrics", DataTable))}
        assert {"loss", "grad_norm", "learning_rate"} <= metrics
        assert runs_screen.query_one("#plot-loss", LinePlot).point_count() >= 6
        assert "checkpoint-6" in text_of(runs_screen, "#run-checkpoints")
        row = table_rows(runs_screen.query_one("#run-table", DataTable))[0]
        assert row[2] == "completed" and row[3] == "6/6"


# --- Runs screen ---------------------------------------------------------------------------


async def test_runs_screen_shows_a_finished_run(workspace):
    finished_sft_run(workspace)
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        rows = table_rows(screen.query_one("#run-table", DataTable))
        last_eval = [e for e in sft_events() if e["kind"] == "eval"][-1]["values"]["eval_loss"]
        assert rows == [["20260101-000000-sft-aaaa", "sft", "completed", "12/12", f"eval_loss {last_eval:.4g}",
                         rows[0][5]]]
        metrics = {row[0]: row[1:] for row in table_rows(screen.query_one("#run-metrics", DataTable))}
        last_loss = [e for e in sft_events() if e["kind"] == "metrics"][-1]["values"]["loss"]
        assert metrics["loss"] == [run_live.format_value(last_loss), "12"]
        assert metrics["eval_loss"][1] == "12" and "grad_norm" in metrics
        loss_plot = screen.query_one("#plot-loss", LinePlot)
        assert loss_plot.point_count() == 12 + 2  # loss and eval_loss
        assert not screen.query_one("#plot-reward").display and not screen.query_one("#plot-kl").display
        drawn = plain(loss_plot.render(), width=200)
        assert any(BRAILLE < ord(c) <= BRAILLE + 0xFF for c in drawn) and "12" in drawn
        assert "✓ loss 5 → 1.47" in text_of(screen, "#run-checks")
        assert "no alerts" in text_of(screen, "#run-alerts")
        assert "checkpoint-6 step 6 checkpoint-12 step 12" in text_of(screen, "#run-checkpoints")
        assert "training done" in text_of(screen, "#run-log")
        assert "back-end sft" in text_of(screen, "#run-summary")


async def test_runs_screen_highlights_alerts_and_plots_reward_and_kl(workspace):
    make_run(workspace, "20260101-000100-dpo-bbbb", backend="dpo", events=dpo_events(),
             recipe={"training": {"max_steps": 12}}, metrics={"final": {"train_loss": 0.5}, "checks": []})
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        alerts = screen.query_one("#run-alerts", Static).content
        assert "reward_spike" in alerts.plain and "rewards/margins = 2.45 at step 9" in alerts.plain
        assert any("on yellow" in str(span.style) for span in alerts.spans)
        for selector in ("#plot-reward", "#plot-kl"):
            plot = screen.query_one(selector, LinePlot)
            assert plot.display and plot.point_count() == 12
        assert screen.query_one("#plot-reward", LinePlot).series[0].label == "rewards/margins"
        assert "no learning checks" in text_of(screen, "#run-checks")


async def test_runs_screen_replays_alerts_of_runs_that_logged_none(workspace):
    events = [{"kind": "metrics", "step": s, "values": {"loss": 2.0 if s < 4 else 0.0001}} for s in range(1, 6)]
    make_run(workspace, "20260101-000200-sft-cccc", events=events, recipe={"training": {"max_steps": 5}})
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert "loss_collapse" in text_of(screen, "#run-alerts")


async def test_runs_screen_compares_two_runs(workspace):
    finished_sft_run(workspace, "20260101-000000-sft-aaaa")
    finished_sft_run(workspace, "20260101-000300-sft-dddd", training={"learning_rate": 5e-4},
                     adapter={"method": "lora"})
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert screen.selected == "20260101-000300-sft-dddd"  # the newest
        assert screen.check_action("compare", ()) is None
        await pilot.press("m")
        await pilot.pause()
        assert screen.marked == "20260101-000300-sft-dddd"
        assert "marked 20260101-000300-sft-dddd" in text_of(screen, "#runs-bar")
        await pilot.press("up")
        await pilot.pause()
        assert screen.selected == "20260101-000000-sft-aaaa"
        await pilot.press("d")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, CompareScreen)
        config = {row[0]: row[1:] for row in table_rows(dialog.query_one("#compare-config", DataTable))}
        assert config == {"training.learning_rate": ["0.0005", "0.001"], "adapter.method": ["lora", "none"]}
        metrics = {row[0]: row[1:] for row in table_rows(dialog.query_one("#compare-metrics", DataTable))}
        assert metrics["eval_loss"] == ["1.65", "1.65", "0"] and metrics["loss"][2] == "0"
        assert "loss: A ✓ B ✓" in " ".join(plain(dialog.query_one("#compare-checks", Static).content).split())
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_cancel_on_a_running_run_ends_cancelled(workspace, chat_file, tiny_model, kill_runs):
    recipe = validate_recipe({"backend": "sft", "dataset": str(chat_file), "model": str(tiny_model),
                              "training": {**TINY_TRAINING, "max_steps": 500, "save_steps": 1000},
                              "adapter": {"method": "lora"}})
    run = train_runs.prepare_run(workspace, recipe, train_host())
    run_live.remember_process(run.run_id, train_runs.start(run))
    kill_runs.append(run)
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert screen.selected == run.run_id
        assert screen.check_action("resume_run", ()) is None and screen.check_action("cancel_run", ()) is True
        await pilot.press("c")
        await pilot.pause()
        assert run.cancel_requested()
        await wait_for(pilot, lambda: run.status()["status"] in train_runs.FINISHED, 180, "the run to stop")
        assert run.status()["status"] == "cancelled", run.log_tail(30)
        await wait_for(pilot, lambda: "cancelled" in text_of(screen, "#run-summary"), 10, "the summary")
        assert table_rows(screen.query_one("#run-table", DataTable))[0][2] == "cancelled"
        assert screen.check_action("resume_run", ()) is True


async def test_runs_screen_tails_events_as_a_run_appends_them(workspace):
    run = make_run(workspace, "20260101-000400-sft-ffff", status="running", events=sft_events(12)[:8],
                   recipe={"training": {"max_steps": 12}}, extra_status={"pid": os.getpid()})
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert "running" in text_of(screen, "#run-summary")
        metrics = screen.query_one("#run-metrics", DataTable)
        assert dict((r[0], r[2]) for r in table_rows(metrics))["loss"] == "3"
        offset = screen.tails[run.run_id].offset
        assert offset == (run.path / "events.jsonl").stat().st_size
        for event in sft_events(12)[8:16]:  # steps 4-6, an eval and a checkpoint
            run.append("events.jsonl", event)
        run.update_status(step=5)
        await wait_for(pilot, lambda: dict((r[0], r[2]) for r in table_rows(metrics))["loss"] == "6", 10,
                       "the new events")
        assert screen.tails[run.run_id].offset > offset
        assert screen.query_one("#plot-loss", LinePlot).point_count() == 6 + 1  # loss, and eval_loss at step 6
        assert "saved at steps 6" in text_of(screen, "#run-checkpoints")  # its folder is gone (hand-written run)
        assert table_rows(screen.query_one("#run-table", DataTable))[0][3] == "5/12"


async def test_resume_restarts_a_stopped_run_and_is_refused_for_a_completed_one(workspace, monkeypatch):
    import subprocess
    import sys

    finished_sft_run(workspace, "20260101-000000-sft-aaaa")
    make_run(workspace, "20260101-000500-sft-gggg", status="cancelled", events=sft_events(12)[:10],
             recipe={"training": {"max_steps": 12}}, extra_status={"reason": "cancelled by request"})
    resumed = []

    def fake_resume(run):
        resumed.append(run.run_id)
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(train_runs, "resume", fake_resume)
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert screen.selected == "20260101-000500-sft-gggg"
        assert "cancelled by request" in text_of(screen, "#run-summary")
        assert screen.check_action("resume_run", ()) is True and screen.check_action("cancel_run", ()) is None
        await pilot.press("r")
        await settle(pilot)
        assert resumed == ["20260101-000500-sft-gggg"]
        assert "20260101-000500-sft-gggg" in run_live.PROCESSES
        run_live.PROCESSES.pop("20260101-000500-sft-gggg").wait(timeout=10)
        await pilot.press("up")
        await pilot.pause()
        assert screen.selected == "20260101-000000-sft-aaaa"
        assert screen.check_action("resume_run", ()) is None


async def test_runs_screen_with_no_runs_says_how_to_start_one(workspace):
    app = StudioApp(workspace, host=train_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        assert "No training runs yet" in text_of(screen, "#run-summary")
        assert screen.check_action("cancel_run", ()) is None


# --- pure pieces ---------------------------------------------------------------------------


def test_put_form_values_keeps_the_recipe_and_puts_the_form_in():
    base = validate_recipe({"backend": "sft", "dataset": "x.jsonl", "training": {"save_steps": 7},
                            "adapter": {"r": 4}, "expect": [{"metric": "loss", "falls_by": 0.1}]}).model_dump()
    sections = [((), ["model"], {"model": "m"}), (("training",), ["max_steps"], {"max_steps": 3}),
                (("adapter",), ["method"], {"method": "lora"})]
    data = put_form_values(base, {"backend": "toy", "dataset": "chat"}, sections, {"beta": 0.5})
    recipe = validate_recipe(data)
    assert recipe.backend == "toy" and recipe.dataset == "chat" and recipe.model == "m"
    assert recipe.training.max_steps == 3 and recipe.training.save_steps == 7
    assert recipe.adapter.method == "lora" and recipe.adapter.r == 4
    assert recipe.config == {"beta": 0.5} and recipe.expect[0].metric == "loss"
    assert base["training"]["max_steps"] == 60  # the base is not changed


def test_render_plot_draws_braille_with_axis_labels():
    points = [(step, 5.0 - step * 0.25) for step in range(1, 13)]
    text = render_plot(Series("loss", points), 40, 8)
    lines = text.plain.split("\n")
    assert len(lines) == 8 and all(len(line) <= 40 for line in lines)
    assert lines[0].startswith("4.75┤") and lines[6].startswith("   2┤")
    assert lines[-1].split() == ["1", "12"]
    dots = [c for line in lines[:-1] for c in line if BRAILLE < ord(c) <= BRAILLE + 0xFF]
    assert len(dots) >= 30  # a connected line across the canvas
    # A falling series: the first canvas column has a dot in the top row, the last in the bottom row.
    assert lines[0][5] != " " and lines[6][-1] != " "


def test_render_plot_handles_one_point_flat_series_and_no_data():
    one = render_plot(Series("loss", [(3, 2.0)]), 20, 5).plain.split("\n")
    assert sum(1 for line in one for c in line if BRAILLE < ord(c) <= BRAILLE + 0xFF) == 1
    assert one[-1].split() == ["3"]
    flat = render_plot(Series("loss", [1.0, 1.0, 1.0]), 20, 5).plain.split("\n")
    assert flat[0].startswith("1.05") and flat[3].startswith("0.95")
    assert "⠉" in flat[2] or "⣀" in flat[1] or "⠤" in flat[2]
    empty = render_plot([], 20, 3, empty="nothing").plain
    assert "nothing" in empty and len(empty.split("\n")) == 3


def test_render_plot_skips_values_that_are_not_finite_and_overlays_series():
    assert finite_points([1.0, "nan", float("inf"), 2.0, None]) == [(1.0, 1.0), (4.0, 2.0)]
    grid = plot_cells([Series("a", [(0, 0), (10, 10)], "red"), Series("b", [(0, 10), (10, 0)], "blue")], 10, 4)
    styles = {style for row in grid for bits, style in row if bits}
    assert styles == {"red", "blue"}
    assert format_number(0.000012) == "1.20e-05" and format_number(1234.5678) == "1235" and format_number(0) == "0"


def test_run_tail_reads_only_what_was_appended(workspace):
    run = make_run(workspace, "20260101-000000-sft-eeee", events=sft_events(4))
    tail = run_live.RunTail(run)
    assert tail.poll() and tail.points("loss")[0][0] == 1.0 and len(tail.points("loss")) == 4
    assert not tail.poll()
    run.append("events.jsonl", {"kind": "metrics", "step": 5, "values": {"loss": "nan"}})
    run.append("events.jsonl", {"kind": "alert", "rule": "not_finite", "metric": "loss", "step": 5,
                                "message": "loss is nan at step 5"})
    assert tail.poll()
    assert tail.latest["loss"] == (5, "nan") and tail.key_metric() == ("loss", "nan")
    assert len(finite_points(tail.points("loss"))) == 4  # the nan is not plotted
    assert [a["rule"] for a in tail.all_alerts()] == ["not_finite"]
