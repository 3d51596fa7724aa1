"""Snapshot tests of the terminal app (pytest-textual-snapshot). The workspace is built with a
fixed clock and time zone and the header's workspace path is replaced, so the pictures depend
on neither the machine nor the day. Update after checking the report:
``pytest tests/test_tui_snapshots.py --snapshot-update``."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

import eval_tasks  # noqa: E402
from generation_fakes import EchoGenerator  # noqa: E402
from test_generate_tui import GeneratorsPlugin  # noqa: E402
from test_train_tui import BackendsPlugin, ToyBackend, finished_sft_run  # noqa: E402
from test_tui import (  # noqa: E402
    broken_plugin, chat_records, make_host, numbered_records, preference_records, unpaired_records,
)
from test_tui_curate import ops_plugin  # noqa: E402

from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402

SIZE = (120, 36)
FIXED_TIME = 1_767_225_600.0  # 2026-01-01 00:00 UTC


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def workspace(tmp_path, monkeypatch, utc) -> Workspace:
    with monkeypatch.context() as patch:
        clock = iter(FIXED_TIME + 60 * i for i in range(1000))
        patch.setattr(time, "time", lambda: next(clock))
        ws = Workspace.init(tmp_path / "demo-workspace")
        first = ws.write_version("chat", chat_records(), operation={"name": "import", "format": "sharegpt"},
                                 source={"path": "/data/chat.json", "format": "sharegpt", "container": "json",
                                         "reason": "turns with from/value"})
        ws.write_version("chat", chat_records()[:2], operation={"name": "filter", "min_turns": 2}, parent=first.id)
        ws.write_version("prefs", preference_records(), operation={"name": "import", "format": "trl_preference"})
        ws.write_version("feedback", unpaired_records(), operation={"name": "import", "format": "kto"})
        ws.write_version("numbers", numbered_records(60), operation={"name": "import", "format": "alpaca"})
    return ws


def prepare(ref: str | None = None, keys: tuple[str, ...] = ()):
    async def run_before(pilot) -> None:
        app = pilot.app
        await pilot.pause()
        if ref is not None:
            app.open_dataset(ref)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press(*keys)
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.sub_title = "demo-workspace"  # instead of the temporary path

    return run_before


def test_snapshot_dataset_list(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host())
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare())


def test_snapshot_browser_conversation_with_tools(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host())
    ref = "chat@" + workspace.versions("chat")[0].id
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare(ref))


def test_snapshot_browser_preference_pair(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host())
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare("prefs"))


def test_snapshot_browser_search_hit(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host())
    keys = ("slash", *"needle", "enter")
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare("numbers", keys))


def test_snapshot_stats_panel(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host())
    ref = "chat@" + workspace.versions("chat")[0].id
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare(ref, ("s",)))


def test_snapshot_plugins_screen_with_a_failed_plugin(snap_compare, workspace):
    app = StudioApp(workspace, host=make_host((broken_plugin(), "broken")))
    assert snap_compare(app, terminal_size=SIZE, run_before=prepare(None, ("2", "down")))


# --- every mode in the smallest terminal the studio supports (80×24) ------------------------------

SMALL = (80, 24)


def every_kind_host():
    """A format, curation ops, a generator and a back-end: every mode has something to show."""
    return make_host((ops_plugin(), "test-ops"), (GeneratorsPlugin(EchoGenerator()), "generators-test"),
                     (BackendsPlugin(ToyBackend()), "toy-backends"))


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6"])
def test_snapshot_every_mode_at_80x24(snap_compare, workspace, key):
    with pytest.MonkeyPatch.context() as patch:  # the run folder's times, like the workspace's
        patch.setattr(time, "time", lambda: FIXED_TIME)
        finished_sft_run(workspace)
    app = StudioApp(workspace, host=every_kind_host())
    assert snap_compare(app, terminal_size=SMALL, run_before=prepare(None, (key,)))


def test_snapshot_evaluate_mode_at_80x24(snap_compare, workspace):
    # Mode 7 with a task to pick (the runner tests' small evaluator): its pickers, forms and tabs.
    app = StudioApp(workspace, host=make_host((eval_tasks, "studio-test-evals")))
    assert snap_compare(app, terminal_size=SMALL, run_before=prepare(None, ("7",)))
