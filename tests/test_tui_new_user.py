"""What a new user hit in the terminal app, each pinned by a test: the first focus and Tab order
of Curate, list fields that take a plain path, fields that look like fields before they have
focus, the mode keys from every screen, a search from the statistics panel, steps numbered
from 0 and rows numbered by their source row, as the CLI and the side table number them."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")

from textual import events  # noqa: E402
from textual.color import Color  # noqa: E402
from textual.widgets import DataTable, Input, OptionList, Static  # noqa: E402

from studio.curation.pipeline import run_pipeline  # noqa: E402
from studio.recipes import load_recipe  # noqa: E402
from studio.plugins import get_host  # noqa: E402
from studio.rendering import render_side_entry_header  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.browser import BrowserScreen  # noqa: E402
from studio.tui.screens.curate import CurateScreen  # noqa: E402
from studio.tui.screens.curate_results import CurateResultsScreen  # noqa: E402
from studio.tui.screens.review import ReviewScreen  # noqa: E402
from studio.tui.widgets.op_form import OpForm, validate_form  # noqa: E402
from test_tui import make_host, numbered_records, plain, settle  # noqa: E402
from test_tui_curate import build_pipeline, curate_host, notes_records, table_rows  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (140, 44)
MODES = {"1": "datasets", "2": "plugins", "3": "curate", "4": "generate", "5": "train", "6": "runs", "7": "evaluate"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def workspace(tmp_path):
    from studio.store import Workspace

    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("notes", notes_records(), operation={"name": "import", "format": "sharegpt"})
    ws.write_version("numbers", numbered_records(60), operation={"name": "import", "format": "alpaca"})
    return ws


def text_of(screen, selector: str) -> str:
    return " ".join(plain(screen.query_one(selector, Static).content, width=200).split())


async def open_curate(pilot):
    """Mode 3 once the app has settled: the Curate screen."""
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)
    return pilot.app.screen


# --- Curate: first focus and Tab order ------------------------------------------------------------


async def test_curate_starts_on_an_operation_and_tab_goes_from_the_steps_to_the_form(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        op_list = screen.query_one("#op-list", OptionList)
        assert app.focused is op_list
        first = op_list.get_option_at_index(op_list.highlighted)
        assert not first.disabled and first.id  # an operation, not its group's header
        await pilot.press("enter")  # so Enter adds it straight away
        await settle(pilot)
        assert [step.op for step in screen.steps] == [first.id]
        screen.query_one("#step-list").focus()
        await pilot.press("tab")
        # No invisible stop (the empty examples pane, the form's scroll container) on the way.
        assert screen.query_one("#op-form", OpForm) in app.focused.ancestors


# --- list fields ------------------------------------------------------------------------------------


def test_a_list_field_takes_a_plain_path_or_values_separated_by_commas():
    config_model = get_host().items("curation_op")["decontaminate"].config_model
    assert validate_form(config_model, {"benchmarks": "/data/gsm8k.jsonl"})[0].benchmarks == ["/data/gsm8k.jsonl"]
    both = validate_form(config_model, {"benchmarks": "gsm8k.jsonl, mmlu.csv"})[0]
    assert both.benchmarks == ["gsm8k.jsonl", "mmlu.csv"]
    assert validate_form(config_model, {"benchmarks": '["a.jsonl", "b.jsonl"]'})[0].benchmarks == ["a.jsonl", "b.jsonl"]
    assert "empty value" in validate_form(config_model, {"benchmarks": "a.jsonl,,b.jsonl"})[1]["benchmarks"]


async def test_the_decontamination_form_accepts_a_plain_path(workspace, tmp_path):
    benchmark = tmp_path / "gsm8k.jsonl"
    benchmark.write_text('{"question": "What is 2+2?", "answer": "4"}\n', encoding="utf-8")
    app = StudioApp(workspace, host=get_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        op_list = screen.query_one("#op-list", OptionList)
        op_list.highlighted = next(i for i in range(op_list.option_count)
                                   if op_list.get_option_at_index(i).id == "decontaminate")
        await pilot.press("enter")
        await settle(pilot)
        screen.query_one("#op-form #field-benchmarks", Input).value = str(benchmark)
        await settle(pilot)
        assert text_of(screen, "#op-form #error-benchmarks") == ""
        assert screen.steps[0].config.benchmarks == [str(benchmark)]


# --- fields look like fields ---------------------------------------------------------------------


def distance(a: Color, b: Color) -> float:
    return ((a.r - b.r) ** 2 + (a.g - b.g) ** 2 + (a.b - b.b) ** 2) ** 0.5


@pytest.mark.parametrize("key,setup", [("4", "#gen-setup"), ("5", "#train-setup")])
async def test_form_inputs_look_like_fields_before_they_have_focus(workspace, key, setup):
    app = StudioApp(workspace, host=get_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
        inputs = [i for i in app.screen.query_one(setup).query(Input) if i.display and i is not app.focused]
        assert inputs
        for field in inputs:
            around, own = field.background_colors
            assert field.styles.border_left[0] not in ("", "none", "hidden"), field.id  # an edge marks it
            assert distance(around, own) > 30, (field.id, around, own)  # and its box stands out


# --- mode keys ----------------------------------------------------------------------------------


async def test_every_mode_key_works_from_every_mode(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for start in MODES:
            for key, mode in MODES.items():
                await pilot.press(start)
                await settle(pilot)
                await pilot.press(key)
                await settle(pilot)
                assert app.current_mode == mode and isinstance(app.screen, app.MODES[mode]), (start, key)


async def test_every_mode_key_works_from_the_browser_review_and_curation_results(workspace):
    run_pipeline(workspace, load_recipe({"dataset": "notes", "output": "notes-clean", "steps": [{"op": "exact_dup"}]}),
                 curate_host().items("curation_op"))
    openers = {
        "browser": (lambda app: app.open_dataset("numbers"), BrowserScreen),
        "review": (lambda app: app.review_dataset("numbers"), ReviewScreen),
        "results": (lambda app: app.curation_results("notes-clean"), CurateResultsScreen),
    }
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for name, (open_screen, screen_type) in openers.items():
            for key, mode in MODES.items():
                open_screen(app)
                await settle(pilot)
                assert isinstance(app.screen, screen_type)
                await pilot.press(key)
                await settle(pilot)
                assert app.current_mode == mode and isinstance(app.screen, app.MODES[mode]), (name, key)
                assert len(app.screen_stack) == 1, (name, key)


# --- search from the statistics -------------------------------------------------------------------


async def test_a_search_from_the_statistics_panel_shows_the_record_found(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_dataset("numbers")
        await settle(pilot)
        screen = app.screen
        await pilot.press("s")
        await settle(pilot)
        assert screen.panel == "stats"
        await pilot.press("slash", *"needle", "enter")
        await settle(pilot)
        assert screen.panel == "record" and screen.index == 17
        assert "the hidden needle is here" in plain(screen.query_one("#record-view", Static).content)


async def test_keys_typed_in_one_burst_with_slash_do_not_fire_the_browsers_keys(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_dataset("numbers")
        await settle(pilot)
        screen = app.screen
        # A paste or a fast typist: every key arrives before the screen has handled "/".
        for key, char in [("slash", "/"), *((c, c) for c in "needle")]:
            app.post_message(events.Key(key, char))
        await settle(pilot)
        # Not "n" (next record) nor "e" (the export dialog): the search box has the focus.
        assert app.screen is screen and screen.index == 0
        assert app.focused is screen.query_one("#search-input", Input)


# --- steps from 0, rows by their source row --------------------------------------------------------


async def test_steps_are_numbered_from_0_everywhere_as_in_the_side_table(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        assert isinstance(screen, CurateScreen)
        screen.query_one("#input-dataset").value = "notes"
        await build_pipeline(pilot, screen)
        await settle(pilot)
        prompts = [plain(screen.query_one("#step-list", OptionList).get_option_at_index(i).prompt).strip()
                   for i in range(3)]
        assert [p.split(".")[0] for p in prompts] == ["0", "1", "2"]
        assert text_of(screen, "#form-title").startswith("Step 2:")  # the last step added is shown
        screen.query_one("#step-list").focus()
        await pilot.press("p")
        await settle(pilot)
        assert [row[0] for row in table_rows(screen.query_one("#step-table", DataTable))] == ["0", "1", "2"]
        examples = text_of(screen, "#examples")
        assert "0. exact_dup" in examples and "1. too_short" in examples
        await pilot.press("r")
        await settle(pilot)
        await settle(pilot)
        results = app.screen
        assert isinstance(results, CurateResultsScreen)
        reasons = table_rows(results.query_one("#reason-table", DataTable))
        assert [row[0] for row in reasons] == ["0", "1", "2"]
        side = results.data.side.to_list()
        assert sorted({row["step"] for row in side}) == [0, 1, 2]  # what the side table says
        assert "(step 0)" in text_of(results, "#entry-detail")
    assert "(step 0)" in render_side_entry_header({"op": "exact_dup", "step": 0}).plain


async def test_removed_and_changed_rows_are_numbered_by_their_source_row(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        screen.query_one("#input-dataset").value = "notes"
        await build_pipeline(pilot, screen)
        screen.query_one("#step-list").focus()
        await pilot.press("r")
        await settle(pilot)
        await settle(pilot)
        results = app.screen
        # Row 4 was redacted and stayed; it is row 2 of the output, but the user sees source row #4.
        results.query_one("#reason-table").focus()
        await pilot.press("down", "down")
        await settle(pilot)
        detail = text_of(results, "#entry-detail")
        assert "before · source row #4" in detail and "after · source row #4" in detail
        assert "output row" not in detail
        # Marking the kept original of duplicate #6 (source row #2, output row 1) to drop.
        await pilot.press("up", "up")
        await settle(pilot)
        results.query_one("#entry-table").focus()
        await pilot.press("down", "d")
        await settle(pilot)
        detail = text_of(results, "#entry-detail")
        assert "source row #2 marked to drop" in detail and "output row" not in detail
