"""The terminal app at every size: every mode, dialog and pushed screen opened with real data at
80×24, 100×30 and 200×50 (and 60×20, where only crashing is a failure).

The workspace holds every sample under ``datasets/`` (imported as `studio` does for its sample
workspace), a curated version of ``dolly_noisy`` with its side table, and two finished run
folders (written as a run process leaves them; no training here). Any exception fails: the app
ending with an error, a failed worker (the app's one error handler is watched) or a widget the
render guard had to replace. At 80×24 and up, what a user needs on each screen (its table or
list, its primary button, the screen's keys in the footer) must be on screen and not cut off.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from rich.console import Console

pytest.importorskip("textual")

from textual.command import CommandInput  # noqa: E402
from textual.widget import Widget  # noqa: E402
from textual.widgets import Footer  # noqa: E402
from textual.widgets._footer import FooterKey  # noqa: E402

from studio.curation.pipeline import run_pipeline  # noqa: E402
from studio.recipes import load_recipe  # noqa: E402
from studio.plugins import get_host  # noqa: E402
from studio.resources import datasets_dir  # noqa: E402
from studio.sample_workspace import ensure_sample_workspace  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.dialogs import ErrorDialog  # noqa: E402
from studio.tui.screens.evaluate_flips import EvalFlipsScreen  # noqa: E402
from test_train_tui import dpo_events, finished_sft_run, make_run  # noqa: E402

pytestmark = pytest.mark.anyio

CHECKED_SIZES = [(80, 24), (100, 30), (200, 50)]
CRASH_ONLY_SIZES = [(60, 20)]
SFT_RUN = "20260101-000000-sft-aaaa"
# One comparison's flipped items as the reports module gives them (flip_details), for the drill-down.
FLIP_ROW = {"task": "arc_challenge", "metric": "acc", "base": "embedded", "other": "sft-chat-lora"}
FLIP_DETAILS = {
    "gained": [{"id": f"Mercury_{i}", "prompt": f"Question: Which gas do plants take in, case {i}?\nAnswer:",
                "choices": ["carbon dioxide", "oxygen", "nitrogen", "helium"], "target": 0,
                "base_prediction": 1, "tuned_prediction": 0, "base_value": 0.0, "tuned_value": 1.0,
                "base_scores": [-4.1, -3.2, -5.0, -7.3], "tuned_scores": [-2.0, -3.9, -5.2, -7.0]}
               for i in range(30)],
    "lost": [{"id": "Mercury_99", "prompt": "Question: What is the boiling point of water at sea level?\nAnswer:",
              "choices": ["100 °C", "90 °C", "0 °C"], "target": 0, "base_prediction": 0, "tuned_prediction": 2,
              "base_value": 1.0, "tuned_value": 0.0}],
}
DPO_RUN = "20260101-000100-dpo-bbbb"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def host():
    return get_host()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, host) -> Workspace:
    if datasets_dir() is None:
        pytest.skip("the datasets/ samples are absent")
    ws = ensure_sample_workspace(host.formats(), root=tmp_path_factory.mktemp("sizes") / "ws")
    recipe = load_recipe({"dataset": "dolly_noisy", "output": "dolly_clean",
                          "steps": [{"op": "exact_dedup"}, {"op": "length_filter", "min_words": 8}]})
    run_pipeline(ws, recipe, host.items("curation_op"))
    finished_sft_run(ws, SFT_RUN)
    make_run(ws, DPO_RUN, backend="dpo", events=dpo_events(),
             metrics={"final": {"train_loss": 0.5}, "seconds": 12.0})
    return ws


# --- what a screen must show ---------------------------------------------------------------------


def screen_text(app) -> str:
    """The screen as plain text (kept for failure messages: what the user would have seen)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None)
    console.print(app.screen._compositor)
    return console.export_text()


def fully_visible(app, widget: Widget) -> bool:
    try:
        geometry = app.screen.find_widget(widget)
    except Exception:  # noqa: BLE001 - NoWidget: not laid out on the screen at all
        return False
    screen_region = app.screen.region
    return (geometry.region.area > 0 and geometry.visible_region == geometry.region
            and screen_region.contains_region(geometry.region))


def footer_key(app, action: str) -> FooterKey:
    keys = [key for key in app.screen.query(FooterKey) if key.action == action]
    assert keys, f"no footer key for {action!r} on {type(app.screen).__name__}"
    return keys[0]


class Needs:
    """What must be fully visible: widgets by selector, footer keys by action."""

    def __init__(self, *selectors: str, keys: tuple[str, ...] = ()) -> None:
        self.selectors, self.keys = selectors, keys

    def missing(self, app) -> list[str]:
        out = []
        for selector in self.selectors:
            widgets = list(app.screen.query(selector))
            if not widgets or not fully_visible(app, widgets[0]):
                out.append(selector)
        if self.keys:
            assert app.screen.query(Footer), f"{type(app.screen).__name__} has no footer"
        for action in self.keys:
            if not fully_visible(app, footer_key(app, action)):
                out.append(f"footer key {action}")
        return out


# --- the scenarios ---------------------------------------------------------------------------------

Scenario = Callable[[object], Awaitable[None]]


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def home(pilot) -> None:
    """Back to the Datasets mode, with nothing pushed on the mode a scenario ended in."""
    app = pilot.app
    for _ in range(2):
        while len(app.screen_stack) > 1:
            app.pop_screen()
            await pilot.pause()
        if app.current_mode != "datasets":
            await app.switch_mode("datasets")
    await settle(pilot)


def keys(*pressed: str, mode: str | None = None) -> Scenario:
    async def run(pilot) -> None:
        if mode is not None:
            await pilot.press(mode)
            await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)
    return run


def call(action: Callable[[StudioApp], object], *then: str) -> Scenario:
    async def run(pilot) -> None:
        action(pilot.app)
        await settle(pilot)
        for key in then:
            await pilot.press(key)
            await settle(pilot)
    return run


def sample_path(name: str) -> str:
    return str(datasets_dir() / name)


async def compare_runs(pilot) -> None:
    app = pilot.app
    await pilot.press("6")
    await settle(pilot)
    app.screen.select_run(SFT_RUN)
    await pilot.press("m")
    app.screen.select_run(DPO_RUN)
    await settle(pilot)
    await pilot.press("d")
    await settle(pilot)


SCENARIOS: dict[str, tuple[Scenario, Needs]] = {
    "mode 1 datasets": (keys(mode="1"), Needs("#dataset-table", keys=("open", "import"))),
    "mode 2 plugins": (keys(mode="2"), Needs("#plugin-table", keys=("install",))),
    "mode 3 curate": (keys(mode="3"), Needs("#op-list", "#step-list", keys=("add_step", "preview", "run"))),
    "mode 3 curate with a step": (keys("enter", mode="3"), Needs("#op-list", "#step-list", "#op-form .line-field")),
    "mode 4 generate": (keys(mode="4"), Needs("#gen-provider", "#gen-generator", "#gen-tabs",
                                              keys=("estimate", "start"))),
    "mode 5 train": (keys(mode="5"), Needs("#train-recipe", "#train-dataset", "#train-start-button",
                                           keys=("preview", "check", "start"))),
    "mode 6 runs": (keys(mode="6"), Needs("#run-table", "#plot-loss", keys=("mark",))),
    "mode 7 evaluate": (keys(mode="7"), Needs("#eval-recipe", "#eval-base", "#eval-task", "#eval-start-button",
                                              "#eval-tabs", keys=("check", "start"))),
    "mode 7 arena": (keys("escape", "a", mode="7"), Needs("#arena-prompt", "#arena-left-title", "#arena-right-title")),
    "evaluation flipped items": (call(lambda app: app.push_screen(EvalFlipsScreen(FLIP_ROW, FLIP_DETAILS))),
                                 Needs("#flips-list", "#flips-detail", keys=("goto",))),
    "record browser": (call(lambda app: app.open_dataset("dolly")),
                       Needs("#record-list", "#record-view", keys=("search", "review"))),
    "browser statistics": (call(lambda app: app.open_dataset("dolly"), "s"), Needs("#stats-panel")),
    "browser history": (call(lambda app: app.open_dataset("dolly_clean"), "h"), Needs("#history-panel")),
    "browser search": (call(lambda app: app.open_dataset("dolly"), "slash", *"the", "enter"),
                       Needs("#record-list", "#record-view")),
    "goto dialog": (call(lambda app: app.open_dataset("dolly"), "g"), Needs("#goto-input")),
    "review a preference pair": (call(lambda app: app.review_dataset("hh_rlhf")),
                                 Needs("#review-list", "#review-record", keys=("flag", "commit"))),
    "review edit dialog": (call(lambda app: app.review_dataset("dolly"), "e"), Needs("#record-json", "#save")),
    "review note dialog": (call(lambda app: app.review_dataset("dolly"), "F"), Needs("#note-input", "#ok")),
    "curation results": (call(lambda app: app.curation_results("dolly_clean")),
                         Needs("#reason-table", "#entry-table", keys=("keep",))),
    "import dialog": (call(lambda app: app.import_dialog(sample_path("dolly.jsonl"))),
                      Needs("#path", "#import", "#close")),
    "export dialog": (call(lambda app: app.export_dialog("dolly")), Needs("#format", "#out", "#export")),
    "convert dialog": (call(lambda app: app.convert_dialog(sample_path("alpaca.json"))),
                       Needs("#src", "#to", "#out", "#convert")),
    "error dialog": (call(lambda app: app.push_screen(ErrorDialog("Import failed", "ValueError: no such file",
                                                                   "Traceback …\n" * 40))), Needs("#ok")),
    "install plugin dialog": (keys("i", mode="2"), Needs("#spec", "#install", "#close")),
    "help": (keys("f1", mode="3"), Needs("#help-dialog .dialog-title", "#help-scroll")),
    "command palette": (keys("ctrl+p"), Needs("CommandInput")),
    "recipe file dialog": (keys("o", mode="3"), Needs("#recipe-path", "#ok")),
    "runs compare view": (compare_runs, Needs("#compare-config", "#compare-metrics")),
}


ALL_SIZES = CHECKED_SIZES + CRASH_ONLY_SIZES


def check(app, where: str, size: tuple[int, int], needs: Needs, worker_errors: list[str]) -> None:
    text = screen_text(app)  # paints every visible widget: a render error shows up here
    if os.environ.get("STUDIO_SIZES_DUMP"):
        Path(os.environ["STUDIO_SIZES_DUMP"], f"{where}.txt").write_text(text)
    assert app.is_running and app.return_code in (None, 0), f"{where}: the app ended"
    assert not app.render_failures, f"{where}: {app.render_failures}\n{text}"
    assert not worker_errors, f"{where}: {worker_errors}\n{text}"
    if size in CHECKED_SIZES:
        missing = needs.missing(app)
        assert not missing, f"{where}: cut off or hidden: {missing}\n{text}"


def opened_at(size: tuple[int, int]) -> list[str]:
    """The scenarios opened at ``size``: each size takes every fourth, so every size sees
    screens laid out as they open, and each screen is then resized through the other sizes."""
    index = ALL_SIZES.index(size)
    return [name for i, name in enumerate(SCENARIOS) if i % len(ALL_SIZES) == index]


@pytest.mark.parametrize("size", ALL_SIZES, ids=lambda s: f"opened-at-{s[0]}x{s[1]}")
async def test_every_screen_at_every_size(workspace, host, size):
    app = StudioApp(workspace, host=host)
    worker_errors: list[str] = []
    app.report_worker_error = lambda worker: worker_errors.append(f"{worker.name}: {worker.error!r}")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for name in opened_at(size):
            scenario, needs = SCENARIOS[name]
            await home(pilot)
            if app.size != size:
                await pilot.resize_terminal(*size)
            await scenario(pilot)
            check(app, f"{name} opened at {size[0]}x{size[1]}", size, needs, worker_errors)
            for other in ALL_SIZES:
                if other != size:
                    await pilot.resize_terminal(*other)
                    await settle(pilot)
                    check(app, f"{name} resized to {other[0]}x{other[1]}", other, needs, worker_errors)
    # run_test re-raises an exception that ended the app; getting here means none did.
    assert app.return_code in (None, 0)
