"""The Curate mode driven with Pilot: forms generated from op config models (invalid values
rejected inline), preview counts, a run that writes a version, removals by reason, a duplicate
next to its original, changed rows before/after, overrides that bring a row back, recipes saved
and loaded, cancellation. The ops are small ones defined here, registered like any plugin."""
from __future__ import annotations

import re
import threading
import time
import types
from typing import Literal

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, OptionList, Select, Static, Switch  # noqa: E402

from studio.curation.op_base import Change, CurationOp, OpResult, Removal  # noqa: E402
from studio.curation.pipeline import load_side_table  # noqa: E402
from studio.curation.text import row_text  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402
from studio.records import Record, Turn  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.curate import CurateScreen  # noqa: E402
from studio.tui.screens.curate_results import CurateResultsScreen  # noqa: E402
from test_tui import make_host, plain  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (140, 44)


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- ops for the tests ----------------------------------------------------------------------


class TooShortConfig(BaseModel):
    min_chars: int = Field(12, ge=0, description="rows whose text is shorter are removed")
    part: Literal["all", "prompt", "response"] = Field("all", description="which text to measure")


class TooShort(CurationOp):
    name = "too_short"
    title = "Too short"
    summary = "Remove rows with little text."
    category = "filter"
    config_model = TooShortConfig

    def run(self, data, config, ctx):
        keep, removals = [], {}
        for i, row in enumerate(data.rows()):
            chars = len(row_text(row, config.part))
            keep.append(chars >= config.min_chars)
            if chars < config.min_chars:
                removals[i] = Removal("too short", {"chars": chars})
        ctx.progress(len(data), len(data))
        return OpResult(keep, removals)


class ExactDupConfig(BaseModel):
    ignore_case: bool = Field(True, description="compare case-insensitively")


class ExactDup(CurationOp):
    name = "exact_dup"
    title = "Exact duplicates"
    summary = "Keep the first of identical rows."
    category = "dedup"
    config_model = ExactDupConfig

    def run(self, data, config, ctx):
        seen: dict[str, int] = {}
        keep, removals, clusters = [], {}, {}
        for i, row in enumerate(data.rows()):
            text = row_text(row)
            key = text.lower() if config.ignore_case else text
            if key in seen:
                keep.append(False)
                removals[i] = Removal("exact duplicate", {"key": key[:20]}, duplicate_of=seen[key], similarity=1.0)
                clusters.setdefault(seen[key], [seen[key]]).append(i)
            else:
                seen[key] = i
                keep.append(True)
        return OpResult(keep, removals, clusters=list(clusters.values()))


class RedactConfig(BaseModel):
    words: list[str] = Field(default_factory=lambda: ["secret"], description="words to hide")
    replacement: str = Field("[REDACTED]", description="what replaces them")


class Redact(CurationOp):
    name = "redact"
    title = "Redact words"
    summary = "Replace words in every turn."
    category = "transform"
    config_model = RedactConfig

    def run(self, data, config, ctx):
        changes = {}
        for i, row in enumerate(data.rows()):
            new = {**row, "messages": [dict(t) for t in row["messages"]]}
            hits = 0
            for turn in new["messages"]:
                for word in config.words:
                    if word in (turn["content"] or ""):
                        hits += 1
                        turn["content"] = turn["content"].replace(word, config.replacement)
            if hits:
                changes[i] = Change(new, "redacted", {"hits": hits})
        return OpResult([True] * len(data), changes=changes)


class SlowConfig(BaseModel):
    seconds: float = 20.0


class Slow(CurationOp):
    """Waits, checking for cancellation like a real op does between chunks."""

    name = "slow"
    title = "Slow"
    summary = "Takes its time."
    category = "filter"
    config_model = SlowConfig
    started = threading.Event()

    def run(self, data, config, ctx):
        Slow.started.set()
        deadline = time.monotonic() + config.seconds
        while time.monotonic() < deadline:
            if ctx.cancelled():
                raise InterruptedError("cancelled")
            ctx.progress(0, len(data), "waiting")
            time.sleep(0.02)
        return OpResult.keep_all(len(data))


def ops_plugin() -> types.SimpleNamespace:
    @hookimpl
    def register_curation_ops(register):
        for op in (TooShort(), ExactDup(), Redact(), Slow()):
            register(op)

    return types.SimpleNamespace(register_curation_ops=register_curation_ops)


def curate_host():
    return make_host((ops_plugin(), "test-ops"))


def notes_records() -> list[Record]:
    texts = [
        ("How do I boil an egg?", "Put it in boiling water for nine minutes."),
        ("ok", "ok"),  # too short
        ("What is the capital of France?", "Paris is the capital of France."),
        ("How do I boil an egg?", "Put it in boiling water for nine minutes."),  # duplicate of 0
        ("Tell me the secret word.", "The secret word is swordfish."),  # redacted
        ("Name a prime number.", "Seven is a prime number."),
        ("what is the capital of france?", "paris is the capital of france."),  # duplicate of 2 (case)
        ("hi", "yo"),  # too short
        ("Why is the sky blue?", "Rayleigh scattering of sunlight."),
        ("How do I boil an egg?", "Put it in boiling water for nine minutes."),  # duplicate of 0
    ]
    return [Record([Turn("user", q), Turn("assistant", a)], meta={"n": i}) for i, (q, a) in enumerate(texts)]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("notes", notes_records(), operation={"name": "import", "format": "sharegpt"})
    return ws


# --- helpers -------------------------------------------------------------------------------


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text_of(screen, selector: str) -> str:
    return " ".join(plain(screen.query_one(selector, Static).content, width=200).split())


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_curate(pilot, dataset: str | None = "notes") -> CurateScreen:
    await settle(pilot)
    await pilot.press("3")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, CurateScreen)
    if dataset:
        screen.query_one("#input-dataset", Select).value = dataset
        await pilot.pause()
    return screen


async def add_op(pilot, screen: CurateScreen, name: str) -> None:
    op_list = screen.query_one("#op-list", OptionList)
    op_list.focus()
    op_list.highlighted = next(i for i in range(op_list.option_count) if op_list.get_option_at_index(i).id == name)
    await pilot.press("enter")
    await pilot.pause()


async def set_field(pilot, screen: CurateScreen, name: str, value) -> None:
    widget = screen.query_one(f"#op-form #field-{name}")
    widget.value = value
    await pilot.pause()


def field_error(screen: CurateScreen, name: str) -> str:
    return text_of(screen, f"#op-form #error-{name}")


async def build_pipeline(pilot, screen: CurateScreen) -> None:
    await add_op(pilot, screen, "exact_dup")
    await add_op(pilot, screen, "too_short")
    await add_op(pilot, screen, "redact")


# --- building ------------------------------------------------------------------------------


async def test_forms_are_generated_from_config_models_and_reject_invalid_values(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        # The op list is grouped by category.
        op_list = screen.query_one("#op-list", OptionList)
        prompts = [plain(op_list.get_option_at_index(i).prompt).strip() for i in range(op_list.option_count)]
        assert prompts[0] == "filter" and prompts.index("dedup") < prompts.index("transform")
        assert any(p.startswith("Exact duplicates") for p in prompts)
        await add_op(pilot, screen, "too_short")
        form = screen.query_one("#op-form")
        assert isinstance(form.query_one("#field-min_chars"), Input)
        assert isinstance(form.query_one("#field-part"), Select)
        assert "rows whose text is shorter are removed" in " ".join(plain(s.content) for s in form.query(Static))
        await set_field(pilot, screen, "min_chars", "twelve")
        assert "valid integer" in field_error(screen, "min_chars")
        assert "invalid" in plain(screen.query_one("#step-list", OptionList).get_option_at_index(0).prompt)
        screen.query_one("#step-list").focus()
        await pilot.press("p")  # preview refuses, saying which step and field
        await pilot.pause()
        assert "step 0 (too_short) is invalid: min_chars:" in text_of(screen, "#run-status")
        await set_field(pilot, screen, "min_chars", "-3")
        assert "greater than or equal to 0" in field_error(screen, "min_chars")
        await set_field(pilot, screen, "min_chars", "20")
        assert field_error(screen, "min_chars") == ""
        assert screen.steps[0].config.min_chars == 20
        await set_field(pilot, screen, "part", "response")
        assert screen.steps[0].options() == {"min_chars": 20, "part": "response"}
        # Booleans are switches; lists are JSON or YAML text.
        await add_op(pilot, screen, "exact_dup")
        assert isinstance(screen.query_one("#op-form #field-ignore_case"), Switch)
        await add_op(pilot, screen, "redact")
        await set_field(pilot, screen, "words", "[unclosed")
        assert "not valid JSON or YAML" in field_error(screen, "words")
        await set_field(pilot, screen, "words", "{a: 1}")
        assert "valid list" in field_error(screen, "words")
        await set_field(pilot, screen, "words", "[secret, password]")
        assert field_error(screen, "words") == ""
        assert screen.steps[2].config.words == ["secret", "password"]
        # Reorder and remove with the keyboard.
        screen.query_one("#step-list").focus()
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert [s.op for s in screen.steps] == ["redact", "too_short", "exact_dup"]
        await pilot.press("right_square_bracket")
        assert [s.op for s in screen.steps] == ["too_short", "redact", "exact_dup"]
        await pilot.press("delete")
        assert [s.op for s in screen.steps] == ["too_short", "exact_dup"]
        assert screen.recipe_dict() == {"dataset": "notes", "seed": 0, "steps": [
            {"op": "too_short", "min_chars": 20, "part": "response"}, {"op": "exact_dup"}]}


async def test_preview_shows_counts_per_step_and_example_removals(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        await build_pipeline(pilot, screen)
        screen.query_one("#preview-rows", Input).value = "8"
        screen.query_one("#step-list").focus()
        await pilot.press("p")
        await settle(pilot)
        rows = table_rows(screen.query_one("#step-table", DataTable))
        # step, op, in, removed, changed, added, out
        assert [r[:7] for r in rows] == [
            ["0", "exact_dup", "8", "2", "0", "0", "6"],
            ["1", "too_short", "6", "2", "0", "0", "4"],
            ["2", "redact", "4", "0", "1", "0", "4"],
        ]
        assert "preview on 8 rows: 4 would remain" in text_of(screen, "#run-status")
        examples = text_of(screen, "#examples")
        assert "exact duplicate: How do I boil an egg? = #0" in examples
        assert "too short: ok" in examples and "redacted: Tell me the secret word." in examples
        assert len(workspace.versions("notes")) == 1  # a preview writes nothing


async def test_run_writes_a_version_and_results_list_removals_by_reason(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        await build_pipeline(pilot, screen)
        screen.query_one("#output-name", Input).value = "notes-clean"
        screen.query_one("#step-list").focus()
        await pilot.press("r")
        await settle(pilot)
        await settle(pilot)
        out = workspace.head("notes-clean")
        assert out.num_records == 5 and out.parent == workspace.head("notes").id
        assert [r.meta["n"] for r in workspace.open("notes-clean").page(0, 10)] == [0, 2, 4, 5, 8]
        results = app.screen
        assert isinstance(results, CurateResultsScreen)
        reasons = table_rows(results.query_one("#reason-table", DataTable))
        assert [(r[0], r[1].split("  ")[0], r[2]) for r in reasons] == [
            ("0", "exact duplicate", "3"), ("1", "too short", "2"), ("2", "redacted", "1")]
        assert "10 → 5 rows" in text_of(results, "#results-bar")
        # The duplicates: each removed row next to the kept original, with the similarity.
        entries = table_rows(results.query_one("#entry-table", DataTable))
        assert [e[1] for e in entries] == ["#3", "#6", "#9"]
        detail = text_of(results, "#entry-detail")
        assert "removed · source row #3" in detail and "kept original · source row #0" in detail
        assert "similarity 1.000" in detail and "cluster: 1 kept + 2 removed" in detail
        assert detail.count("Put it in boiling water for nine minutes.") == 2
        results.query_one("#entry-table").focus()
        await pilot.press("down")
        detail = text_of(results, "#entry-detail")
        assert "source row #6" in detail and "kept original · source row #2" in detail
        assert "paris is the capital of france." in detail and "Paris is the capital of France." in detail
        # Changed rows: before and after.
        results.query_one("#reason-table").focus()
        await pilot.press("down", "down")
        await pilot.pause()
        detail = text_of(results, "#entry-detail")
        assert "before · source row #4" in detail and "after · source row #4" in detail
        assert "The secret word is swordfish." in detail and "The [REDACTED] word is swordfish." in detail


async def test_restore_override_brings_a_row_back(workspace):
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        await build_pipeline(pilot, screen)
        screen.query_one("#step-list").focus()
        await pilot.press("r")
        await settle(pilot)
        await settle(pilot)
        results = app.screen
        assert isinstance(results, CurateResultsScreen)
        curated = workspace.head("notes")
        assert curated.num_records == 5
        results.query_one("#entry-table").focus()
        await pilot.press("down")  # #6, the lower-case copy of #2
        await pilot.press("k")  # keep it (restore)
        await pilot.press("d")  # and drop its kept original instead
        assert "restore 1 · drop 1" in text_of(results, "#results-bar")
        assert "↺ marked to restore" in text_of(results, "#entry-detail")
        assert "source row #2 marked to drop" in text_of(results, "#entry-detail")
        await pilot.press("a")
        await settle(pilot)
        await settle(pilot)
        head = workspace.head("notes")
        assert head.parent == curated.id and head.operation["name"] == "override"
        assert [r.meta["n"] for r in workspace.open("notes").page(0, 10)] == [0, 4, 5, 6, 8]
        # The results view now shows the new version: the restored row left the side table and
        # the dropped one joined it.
        assert results.data.info.id == head.id
        side = load_side_table(workspace, "notes").to_list()
        assert 6 not in [s["source_index"] for s in side if s["reason"] == "exact duplicate"]
        assert any(s["source_index"] == 2 and s["op"] == "review" for s in side)


async def test_recipes_save_and_load(workspace, tmp_path):
    path = tmp_path / "recipes" / "clean.yaml"
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        await add_op(pilot, screen, "too_short")
        await set_field(pilot, screen, "min_chars", "30")
        await add_op(pilot, screen, "redact")
        await set_field(pilot, screen, "words", "[secret]")
        await set_field(pilot, screen, "replacement", "***")
        screen.query_one("#seed", Input).value = "7"
        screen.query_one("#step-list").focus()
        await pilot.press("w")
        await pilot.pause()
        dialog = app.screen
        assert str(dialog.query_one("#recipe-path", Input).value).endswith("recipes/curate-notes.yaml")
        dialog.query_one("#recipe-path", Input).value = str(path)
        await pilot.press("enter")
        await pilot.pause()
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# studio curate {path}\n")
        assert "min_chars: 30" in text and "replacement: '***'" in text and "seed: 7" in text
        # A fresh screen loads it back, and a broken value shows up as an invalid step.
        path.write_text(text.replace("min_chars: 30", "min_chars: lots"), encoding="utf-8")
        screen.steps = []
        screen.load_recipe(path)
        await pilot.pause()
        assert [s.op for s in screen.steps] == ["too_short", "redact"]
        assert screen.query_one("#seed", Input).value == "7"
        assert screen.steps[1].config.replacement == "***"
        assert "valid integer" in screen.steps[0].errors["min_chars"]
        assert "1 need fixing" in text_of(screen, "#run-status")


async def test_a_run_can_be_cancelled_and_writes_nothing(workspace):
    Slow.started.clear()
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_curate(pilot)
        await add_op(pilot, screen, "slow")
        screen.query_one("#step-list").focus()
        await pilot.press("r")
        for _ in range(200):
            await pilot.pause(0.02)
            if Slow.started.is_set() and "waiting" in text_of(screen, "#run-status"):
                break
        assert re.search(r"step 0 slow \(1 of 1\) waiting: 0 / 10", text_of(screen, "#run-status"))
        await pilot.press("escape")
        await settle(pilot)
        assert "run cancelled; nothing was written" in text_of(screen, "#run-status")
        assert len(workspace.versions("notes")) == 1
        assert screen.busy is None


async def test_palette_and_help_reach_the_curate_screens(workspace):
    from studio.curation.pipeline import run_pipeline
    from studio.recipes import load_recipe
    from studio.tui.screens.help import HelpScreen

    run_pipeline(workspace, load_recipe({"dataset": "notes", "steps": [{"op": "exact_dup"}]}),
                 curate_host().items("curation_op"))
    app = StudioApp(workspace, host=curate_host())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.open_dataset("notes")
        await settle(pilot)
        commands = {title: callback for title, _, callback in app.palette_commands(app.screen)}
        assert {"Curate screen", "Review notes", "Curation results of notes"} <= set(commands)
        commands["Curation results of notes"]()
        await settle(pilot)
        assert isinstance(app.screen, CurateResultsScreen)
        assert [r[2] for r in table_rows(app.screen.query_one("#reason-table", DataTable))] == ["3"]
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = text_of(app.screen, "#help-keys")
        assert "Keep (restore)" in keys and "Apply overrides" in keys and "Curate" in keys
