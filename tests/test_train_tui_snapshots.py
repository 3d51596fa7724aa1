"""Snapshots of the Train screen (a third-party back-end chosen, its options form and the
loss-mask preview) and of the Runs screen (hand-written run folders: plots of loss, reward and
KL, the metrics table, an alert, checks and the log) and its compare dialog. Fixed data, fixed
timestamps shown in UTC and the toy back-end (no model) keep the pictures independent of the
machine. Update after checking the report:
``pytest tests/test_train_tui_snapshots.py --snapshot-update``."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

from test_train_tui import (  # noqa: E402
    SIZE, dpo_events, finished_sft_run, make_run, make_workspace, train_host, write_recipe,
)

from studio.tui.app import StudioApp  # noqa: E402


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_snapshot_train_screen_with_preview(snap_compare, tmp_path):
    ws = make_workspace(tmp_path / "demo-workspace")
    # There is always a recipe to choose from, whatever the project ships.
    write_recipe(ws, "toy-chat", {"backend": "toy", "dataset": "chat"}, "Toy training on the chat dataset.")
    app = StudioApp(ws, host=train_host(sft=False))

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("5")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#train-dataset").value = "chat"
        await pilot.pause()
        screen.query_one("#train-backend").value = "toy"
        await pilot.pause()
        await pilot.pause()
        screen.query_one("#train-settings #field-max_steps").value = "30"
        screen.query_one("#train-config #field-beta").value = "0.5"
        await pilot.pause()
        screen.query_one("#train-start-button").focus()
        await pilot.press("p")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.sub_title = "demo-workspace"  # instead of the temporary path

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def _runs_workspace(tmp_path):
    ws = make_workspace(tmp_path / "demo-workspace")
    finished_sft_run(ws, "20260101-000000-sft-aaaa")
    make_run(ws, "20260101-000100-dpo-bbbb", backend="dpo", events=dpo_events(),
             recipe={"training": {"max_steps": 12, "learning_rate": 5e-6}, "config": {"beta": 0.1},
                     "expect": [{"metric": "rewards/margins", "rises_by": 0.2}]},
             metrics={"final": {"train_loss": 0.55, "rewards/margins": 0.6},
                      "checks": [{"metric": "rewards/margins", "passed": True, "details": [],
                                  "first": 0.05, "last": 0.6}]},
             log="$ python -m studio.training.worker RUN\n{'loss': '0.45', 'rewards/margins': '0.6'}\n",
             checkpoints=(12,), started=1_767_225_660.0)
    return ws


def test_snapshot_runs_screen(snap_compare, tmp_path, utc):
    app = StudioApp(_runs_workspace(tmp_path), host=train_host())

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("6")
        await pilot.pause()
        await pilot.pause()
        app.sub_title = "demo-workspace"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_runs_compare_dialog(snap_compare, tmp_path, utc):
    app = StudioApp(_runs_workspace(tmp_path), host=train_host())

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("6")
        await pilot.pause()
        app.screen.marked = "20260101-000000-sft-aaaa"  # as `m` on it would (without its toast)
        app.screen.refresh_bindings()
        await pilot.press("d")
        await pilot.pause()
        await pilot.pause()
        app.sub_title = "demo-workspace"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
