"""The terminal app driven with Textual's Pilot: dataset list, record browser (turns, preference
pairs, KTO labels, paging, search, stats, history), import/export/convert dialogs, the plugins
screen (failed plugins, install), plugin screens, the worker error handler and a 1M-record
workspace. Snapshot tests are in test_tui_snapshots.py."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from rich.console import Console

pytest.importorskip("textual")

import studio_format_alpaca  # noqa: E402
from textual.screen import Screen  # noqa: E402
from textual.widgets import DataTable, Log, Static  # noqa: E402

from studio import plugins  # noqa: E402
from studio.extensions import ScreenEntry  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402
from studio.plugins import PluginHost  # noqa: E402
from studio.records import Record, Turn  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.browser import BrowserScreen  # noqa: E402
from studio.tui.screens.datasets import DatasetsScreen  # noqa: E402
from studio.tui.screens.dialogs import ErrorDialog, ExportDialog, ImportDialog  # noqa: E402
from studio.tui.screens.help import HelpScreen  # noqa: E402
from studio.tui.screens.plugins import InstallPluginDialog, PluginsScreen  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (120, 36)


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- data ----------------------------------------------------------------------------------

TOOLS = json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city"}}])


def chat_records() -> list[Record]:
    return [
        Record([Turn("system", "You are a helpful assistant."), Turn("user", "What is the weather in Paris?"),
                Turn("tool_call", json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})),
                Turn("tool", '{"temp_c": 18, "sky": "cloudy"}'),
                Turn("assistant", "It is 18 degrees and cloudy in Paris.")], tools=TOOLS, meta={"category": "tools"}),
        Record([Turn("user", "Name three primary colours."), Turn("assistant", "Red, yellow and blue [RYB].")],
               meta={"category": "open_qa"}),
        Record([Turn("user", "Translate 'bonjour'."), Turn("assistant", "Hello.", weight=0.0),
                Turn("user", "And 'merci'?"), Turn("assistant", "Thank you.")], meta={"category": "closed_qa"}),
    ]


def preference_records() -> list[Record]:
    return [
        Record([Turn("user", "Write a haiku about the sea.")],
               chosen=[Turn("assistant", "Grey waves fold and break")],
               rejected=[Turn("assistant", "The sea is big and wet.")]),
        Record([Turn("system", "Answer briefly."), Turn("user", "Is the earth flat?")],
               chosen=[Turn("assistant", "No, it is an oblate spheroid.")], rejected=[Turn("assistant", "Yes.")]),
    ]


def unpaired_records() -> list[Record]:
    return [Record([Turn("user", "2+2?"), Turn("assistant", "4")], label=True),
            Record([Turn("user", "Capital of Spain?"), Turn("assistant", "Lisbon")], label=False)]


def numbered_records(n: int) -> list[Record]:
    out = []
    for i in range(n):
        answer = "the hidden needle is here" if i in (17, 41) else f"answer {i}"
        out.append(Record([Turn("user", f"question {i}"), Turn("assistant", answer)]))
    return out


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    first = ws.write_version("chat", chat_records(), operation={"name": "import", "format": "sharegpt"},
                             source={"path": "/data/chat.json", "format": "sharegpt", "container": "json",
                                     "reason": "turns with from/value"})
    ws.write_version("chat", chat_records()[:2], operation={"name": "filter", "min_turns": 2}, parent=first.id)
    ws.write_version("prefs", preference_records(), operation={"name": "import", "format": "trl_preference"})
    ws.write_version("feedback", unpaired_records(), operation={"name": "import", "format": "kto"})
    ws.write_version("numbers", numbered_records(60), operation={"name": "import", "format": "alpaca"})
    return ws


def broken_plugin() -> types.SimpleNamespace:
    @hookimpl
    def register_formats(register):
        raise RuntimeError("the format table is on fire")

    return types.SimpleNamespace(register_formats=register_formats)


class PluginScreen(Screen):
    def compose(self):
        yield Static("hello from a plugin screen", id="plugin-hello")


def screens_plugin() -> types.SimpleNamespace:
    def explode():
        raise ValueError("factory exploded")

    @hookimpl
    def register_screens(register):
        register(ScreenEntry(name="hello", title="Hello screen", key="x", factory=PluginScreen))
        register(ScreenEntry(name="boom", title="Boom screen", key="y", factory=explode))

    return types.SimpleNamespace(register_screens=register_screens)


def make_host(*extra: tuple[object, str]) -> PluginHost:
    host = PluginHost(entry_points=[])
    host.add_plugin(studio_format_alpaca, "alpaca")
    for plugin, name in extra:
        host.add_plugin(plugin, name)
    return host


@pytest.fixture
def app(workspace) -> StudioApp:
    return StudioApp(workspace, host=make_host())


# --- helpers -------------------------------------------------------------------------------


def plain(renderable, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def static_text(screen, selector: str) -> str:
    return plain(screen.query_one(selector, Static).content)


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_browser(pilot, ref: str) -> BrowserScreen:
    pilot.app.open_dataset(ref)
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, BrowserScreen)
    return screen


def bar(screen: BrowserScreen) -> str:
    return static_text(screen, "#browser-bar")


def record_text(screen: BrowserScreen) -> str:
    return static_text(screen, "#record-view")


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def type_text(pilot, text: str) -> None:
    await pilot.press(*text)


# --- datasets screen -------------------------------------------------------------------------


async def test_dataset_list_shows_every_dataset_with_counts(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DatasetsScreen)
        rows = table_rows(screen.query_one("#dataset-table", DataTable))
        assert [r[0] for r in rows] == ["chat", "feedback", "numbers", "prefs"]
        chat = rows[0]
        assert chat[1] == "2" and chat[3] == "2"  # head has 2 records; 2 versions
        assert rows[2][1] == "60"
        # The version history of the highlighted dataset (chat) shows its lineage.
        versions = table_rows(screen.query_one("#dataset-history #version-table", DataTable))
        assert len(versions) == 2
        assert versions[0][4] == "filter" and versions[1][4] == "import (sharegpt)"
        assert versions[0][5] == versions[1][1]  # the head's parent is the first version


async def test_a_damaged_dataset_does_not_hide_the_others(app, workspace):
    broken = workspace.data_dir / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text('{"versions": ["nope"], "head": "nope"}', encoding="utf-8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        rows = table_rows(app.screen.query_one("#dataset-table", DataTable))
        assert [r[0] for r in rows] == ["broken", "chat", "feedback", "numbers", "prefs"]
        assert rows[0][2].startswith("unreadable:")
        assert rows[1][1] == "2"


async def test_empty_workspace_says_how_to_import(tmp_path):
    app = StudioApp(Workspace.init(tmp_path / "empty"), host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        hint = app.screen.query_one("#empty-hint")
        assert hint.display
        assert "import" in plain(hint.content)


# --- record browser --------------------------------------------------------------------------


async def test_open_conversation_shows_roles_and_contents(app, workspace):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # chat is highlighted first
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BrowserScreen)
        text = record_text(screen)
        for role in ("system", "user", "tool_call", "tool", "assistant"):
            assert f" {role} " in text
        assert "You are a helpful assistant." in text
        assert '"city": "Paris"' in text  # tool call JSON is pretty-printed
        assert "get_weather: Weather for a city" in text  # offered tools
        assert "category: tools" in text
        assert "record 1 of 2" in bar(screen)
        assert f"chat@{workspace.head('chat').id[:8]}" in bar(screen)
        await pilot.press("n")
        text = record_text(screen)
        assert "Red, yellow and blue [RYB]." in text  # brackets are text, not markup
        assert "record 2 of 2" in bar(screen)


async def test_preference_pair_shows_prompt_chosen_and_rejected_side_by_side(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "prefs")
        text = record_text(screen)
        assert "prompt" in text and "Write a haiku about the sea." in text
        header = next(line for line in text.splitlines() if "chosen" in line)
        assert "rejected" in header  # one line: the two sides are columns
        both = next(line for line in text.splitlines() if "Grey waves" in line)
        assert "The sea is big and wet." in both
        assert "preference" in bar(screen)


async def test_kto_label_is_shown(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "feedback")
        assert "label: desirable (true)" in record_text(screen)
        await pilot.press("n")
        assert "label: undesirable (false)" in record_text(screen)


async def test_paging_moves_record_i_of_n(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "numbers")
        assert "record 1 of 60" in bar(screen)
        await pilot.press("n", "n")
        assert "record 3 of 60" in bar(screen)
        assert "question 2" in record_text(screen)
        await pilot.press("p")
        assert "record 2 of 60" in bar(screen)
        page = screen.query_one("#record-list").window_size()
        assert 5 < page < 60
        await pilot.press("pagedown")
        assert f"record {2 + page} of 60" in bar(screen)
        await pilot.press("end")
        assert "record 60 of 60" in bar(screen)
        assert "question 59" in record_text(screen)
        await pilot.press("n")  # stays on the last record
        assert "record 60 of 60" in bar(screen)
        await pilot.press("pageup")
        assert f"record {60 - page} of 60" in bar(screen)
        await pilot.press("home")
        assert "record 1 of 60" in bar(screen)
        await pilot.press("g")
        await type_text(pilot, "42")
        await pilot.press("enter")
        await pilot.pause()
        assert "record 42 of 60" in bar(screen)
        assert "question 41" in record_text(screen)
        # The list only ever holds one window of records.
        assert len(screen.window) <= page


async def test_search_jumps_to_hits_and_n_N_walk_them(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "numbers")
        await pilot.press("slash")
        await type_text(pilot, "NEEDLE")  # case-insensitive
        await pilot.press("enter")
        await settle(pilot)
        assert screen.hits == [17, 41]
        assert "record 18 of 60" in bar(screen)
        assert "hit 1 of 2" in bar(screen)
        assert "the hidden needle is here" in record_text(screen)
        await pilot.press("n")
        assert "record 42 of 60" in bar(screen) and "hit 2 of 2" in bar(screen)
        await pilot.press("n")  # wraps around
        assert "record 18 of 60" in bar(screen)
        await pilot.press("N")
        assert "record 42 of 60" in bar(screen)
        await pilot.press("escape")  # clears the search: n is "next record" again
        assert screen.hits is None
        await pilot.press("n")
        assert "record 43 of 60" in bar(screen)
        # A query with no hit says so and stays put.
        await pilot.press("slash")
        await type_text(pilot, "zebra")
        await pilot.press("enter")
        await settle(pilot)
        assert "no record contains 'zebra'" in bar(screen)
        assert "record 43 of 60" in bar(screen)


async def test_stats_panel_shows_counts(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "chat@" + app.workspace.versions("chat")[0].id[:6])
        await pilot.press("s")
        await settle(pilot)
        text = static_text(screen, "#stats-view")
        assert "conversation" in text and "100.0%" in text
        assert "with a system prompt" in text and "with tools" in text
        for role in ("system", "user", "assistant", "tool_call", "tool"):
            assert role in text
        assert "meta: category" in text and "open_qa" in text
        assert "records" in text and " 3 " in text
        await pilot.press("s")  # toggles back to the record
        assert screen.panel == "record"


async def test_history_panel_lists_versions_and_opens_an_older_one(app, workspace):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "chat")
        await pilot.press("h")
        await pilot.pause()
        table = screen.query_one("#history-panel #version-table", DataTable)
        assert table.row_count == 2
        detail = static_text(screen, "#history-panel #version-detail")
        assert "filter" in detail and "(head)" in detail
        await pilot.press("down")
        await pilot.pause()
        detail = static_text(screen, "#history-panel #version-detail")
        assert "/data/chat.json" in detail and "sharegpt" in detail and "first version" in detail
        await pilot.press("enter")
        await settle(pilot)
        assert "record 1 of 3" in bar(screen)
        assert f"chat@{workspace.versions('chat')[0].id[:8]}" in bar(screen)
        await pilot.press("escape")  # back to the dataset list
        assert isinstance(app.screen, DatasetsScreen)


# --- dialogs ------------------------------------------------------------------------------


def write_alpaca(path: Path) -> Path:
    path.write_text(
        "[\n"
        '  {"instruction": "Say hi", "input": "", "output": "Hi!"},\n'
        '  {"instruction": "Add", "input": "2+2", "output": "4"},\n'
        '  {"instruction": 42, "input": "", "output": "bad row"}\n'
        "]\n", encoding="utf-8")
    return path


async def test_import_dialog_detects_imports_and_lists_rejects(app, workspace, tmp_path):
    source = write_alpaca(tmp_path / "tiny_alpaca.json")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("i")
        dialog = app.screen
        assert isinstance(dialog, ImportDialog)
        dialog.query_one("#path").value = str(source)  # typing works too; this is faster
        await pilot.press("enter")
        await settle(pilot)
        detection = static_text(dialog, "#detection")
        assert "format: alpaca" in detection and "instruction" in detection
        assert "creates dataset tiny_alpaca" in detection
        assert not dialog.query_one("#import").disabled
        await pilot.press("enter")  # Import has the focus after detection
        await settle(pilot)
        result = static_text(dialog, "#result")
        assert "Imported 2 records into tiny_alpaca@" in result
        assert "1 row(s) rejected" in result
        rejects = table_rows(dialog.query_one("#rejects", DataTable))
        assert rejects == [["tiny_alpaca.json:4", "instruction", "expected str, got int"]]
        assert workspace.head("tiny_alpaca").num_records == 2
        assert workspace.head("tiny_alpaca").rejects == 1
        await pilot.press("enter")  # "Open dataset"
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
        assert "record 1 of 2" in bar(app.screen) and "Say hi" in record_text(app.screen)
        await pilot.press("escape")
        await pilot.pause()
        names = [r[0] for r in table_rows(app.screen.query_one("#dataset-table", DataTable))]
        assert "tiny_alpaca" in names


async def test_import_dialog_shows_detection_errors_inline(app, tmp_path):
    weird = tmp_path / "weird.jsonl"
    weird.write_text('{"foo": 1}\n', encoding="utf-8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("i")
        app.screen.query_one("#path").value = str(weird)
        await pilot.press("enter")
        await settle(pilot)
        dialog = app.screen
        assert "no format explains these rows" in " ".join(static_text(dialog, "#detection").split())
        assert dialog.query_one("#import").disabled
        dialog.query_one("#format").value = "alpaca"  # the override re-runs detection
        await settle(pilot)
        assert "does not look like alpaca" in " ".join(static_text(dialog, "#detection").split())
        assert dialog.query_one("#import").disabled


async def test_format_override_is_used_for_the_import(app, workspace, tmp_path):
    source = write_alpaca(tmp_path / "forced.json")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.import_dialog()
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#format").value = "alpaca"
        dialog.query_one("#path").value = str(source)
        dialog.query_one("#name").value = "forced"
        dialog.query_one("#detect").press()
        await settle(pilot)
        assert "chosen by the user" in static_text(dialog, "#detection")
        dialog.query_one("#import").press()
        await settle(pilot)
        assert workspace.head("forced").source["format"] == "alpaca"
        assert workspace.head("forced").num_records == 2


async def test_export_writes_the_file_and_reports_skips(app, tmp_path):
    out = tmp_path / "exported" / "chat.json"
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "chat@" + app.workspace.versions("chat")[0].id)
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog)
        assert dialog.query_one("#out").value.endswith("chat-alpaca.json")
        dialog.query_one("#out").value = str(out)
        dialog.query_one("#out").focus()
        await pilot.press("enter")
        await settle(pilot)
        rows = json.loads(out.read_text(encoding="utf-8"))
        # Alpaca holds neither tool calls nor per-turn weights: the tool record is skipped.
        assert [r["instruction"] for r in rows] == ["Name three primary colours.", "And 'merci'?"]
        assert rows[1]["history"] == [["Translate 'bonjour'.", "Hello."]]
        assert rows[1]["output"] == "Thank you." and rows[1]["category"] == "closed_qa"
        result = static_text(dialog, "#result")
        assert "Wrote 2 records" in result and "1 record(s) skipped" in result
        assert "per-turn weights dropped from 1 record(s)" in result
        assert dialog.report.written == 2 and dialog.report.skipped == 1
        await pilot.press("escape")
        assert app.screen is screen


async def test_export_asks_before_replacing_a_file(app, tmp_path):
    out = tmp_path / "exists.json"
    out.write_text("keep me", encoding="utf-8")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.export_dialog("numbers")
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#out").value = str(out)
        dialog.query_one("#out").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert out.read_text(encoding="utf-8") == "keep me"
        # The note wraps with the (temp) path length; compare with whitespace collapsed.
        assert "press Export again" in " ".join(static_text(dialog, "#export-note").split())
        await pilot.press("enter")
        await settle(pilot)
        assert len(json.loads(out.read_text(encoding="utf-8"))) == 60


async def test_convert_dialog_converts_a_file(app, tmp_path):
    source = write_alpaca(tmp_path / "conv.json")
    out = tmp_path / "conv.out.jsonl"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        dialog = app.screen
        dialog.query_one("#src").value = str(source)
        await pilot.pause()
        assert dialog.query_one("#out").value.endswith("conv.alpaca.json")
        dialog.query_one("#out").value = str(out)
        dialog.query_one("#convert").press()
        await settle(pilot)
        lines = out.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["output"] for line in lines] == ["Hi!", "4"]
        result = static_text(dialog, "#result")
        assert "read as alpaca" in result and "Wrote 2 of 2 records" in result
        assert table_rows(dialog.query_one("#rejects", DataTable))[0][0] == "conv.json:4"


async def test_failed_worker_shows_an_error_dialog_and_the_app_keeps_running(app, tmp_path, monkeypatch):
    import studio.tui.screens.dialogs as dialogs

    def broken_import(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(dialogs, "import_file", broken_import)
    source = write_alpaca(tmp_path / "a.json")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.import_dialog(str(source))
        await settle(pilot)
        app.screen.query_one("#import").press()
        await settle(pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "RuntimeError: disk on fire" in static_text(app.screen, "#error-message")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ImportDialog)
        assert "Import failed" in static_text(app.screen, "#result")
        assert not app.screen.query_one("#path").disabled


# --- help and palette -----------------------------------------------------------------------


async def test_help_lists_the_keys_of_the_screen_below(app):
    async with app.run_test(size=SIZE) as pilot:
        await open_browser(pilot, "numbers")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = static_text(app.screen, "#help-keys")
        for expected in ("Search", "Go to", "Stats", "Next", "pgdn", "Command palette", "Quit"):
            assert expected in text
        assert text.count("Command palette") == 1
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)


async def test_palette_opens_a_dataset(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [title for title, _, _ in app.palette_commands(app.screen)]
        assert {"Open dataset chat", "Open dataset prefs", "Import a file…", "Plugins screen",
                "Export chat…"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await type_text(pilot, "open dataset prefs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
        assert app.screen.ref == "prefs"


# --- plugins ------------------------------------------------------------------------------


async def test_plugins_screen_lists_plugins_and_shows_a_failure(workspace):
    app = StudioApp(workspace, host=make_host((broken_plugin(), "broken")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PluginsScreen)
        rows = table_rows(screen.query_one("#plugin-table", DataTable))
        assert [r[0] for r in rows] == ["alpaca", "broken"]
        assert rows[0][2] == "ok" and rows[0][3] == "format:alpaca"
        assert rows[1][2] == "failed"
        assert "alpaca" in static_text(screen, "#plugin-detail")
        await pilot.press("down")
        detail = static_text(screen, "#plugin-detail")
        assert "RuntimeError: the format table is on fire" in detail
        await pilot.press("t")
        assert "Traceback (most recent call last)" in static_text(screen, "#plugin-detail")
        await pilot.press("1")
        assert isinstance(app.screen, DatasetsScreen)


async def test_install_streams_pip_output_and_reloads(workspace, monkeypatch):
    calls = []

    def fake_install(spec, echo=print, upgrade=False):
        calls.append(spec)
        echo("Collecting studio-hello")
        echo("Successfully installed studio-hello-1.0")
        return 0

    reloaded = make_host((screens_plugin(), "hello"))
    monkeypatch.setattr(plugins, "install", fake_install)
    monkeypatch.setattr(plugins, "get_host", lambda: reloaded)
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "i")
        dialog = app.screen
        assert isinstance(dialog, InstallPluginDialog)
        await type_text(pilot, "studio-hello")
        await pilot.press("enter")
        await settle(pilot)
        assert calls == ["studio-hello"]
        assert list(dialog.query_one("#pip-log", Log).lines)[-1] == "Successfully installed studio-hello-1.0"
        assert "Installed; plugins reloaded" in static_text(dialog, "#install-status")
        assert app.host is reloaded
        await pilot.press("escape")
        await pilot.pause()
        rows = table_rows(app.screen.query_one("#plugin-table", DataTable))
        assert [r[0] for r in rows] == ["alpaca", "hello"]
        await pilot.press("x")  # the new plugin's screen key works at once
        await pilot.pause()
        assert isinstance(app.screen, PluginScreen)


async def test_plugin_screens_get_keys_and_palette_entries_and_failures_are_notified(workspace):
    app = StudioApp(workspace, host=make_host((screens_plugin(), "hello")))
    notes = []
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        original = app.notify
        app.notify = lambda message, **kw: (notes.append((message, kw)), original(message, **kw))[1]
        titles = [title for title, _, _ in app.palette_commands(app.screen)]
        assert "Open screen Hello screen" in titles and "Open screen Boom screen" in titles
        footer_keys = {k for k, b in app.screen.active_bindings.items() if b.binding.description == "Hello screen"}
        assert footer_keys == {"x"}
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, DatasetsScreen)  # still running, nothing pushed
        assert any("factory exploded" in message and kw.get("severity") == "error" for message, kw in notes)
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, PluginScreen)
        assert "hello from a plugin screen" in str(app.screen.query_one("#plugin-hello", Static).content)


async def test_plugin_screen_key_conflicting_with_a_builtin_is_left_to_the_palette(workspace):
    @hookimpl
    def register_screens(register):
        register(ScreenEntry(name="greedy", title="Greedy", key="q", factory=PluginScreen))

    app = StudioApp(workspace, host=make_host((types.SimpleNamespace(register_screens=register_screens), "g")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.screen.active_bindings["q"].binding.action == "quit"
        assert "Open screen Greedy" in [t for t, _, _ in app.palette_commands(app.screen)]


# --- a million records ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def million_workspace(tmp_path_factory) -> Workspace:
    ws = Workspace.init(tmp_path_factory.mktemp("million"))

    def records():
        for i in range(1_000_000):
            yield Record([Turn("user", f"question {i}"), Turn("assistant", f"answer {i}")])

    ws.write_version("big", records(), operation={"name": "synthetic"})
    return ws


@pytest.mark.slow
async def test_million_records_jump_to_the_end(million_workspace):
    app = StudioApp(million_workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(pilot, "big")
        assert "record 1 of 1,000,000" in bar(screen)
        await pilot.press("end")
        assert "record 1,000,000 of 1,000,000" in bar(screen)
        assert "question 999999" in record_text(screen)
        await pilot.press("pageup")
        assert f"record {1_000_000 - screen.query_one('#record-list').window_size():,} of 1,000,000" in bar(screen)
        await pilot.press("g")
        await type_text(pilot, "500000")
        await pilot.press("enter")
        await pilot.pause()
        assert "record 500,000 of 1,000,000" in bar(screen)
        assert "question 499999" in record_text(screen)
        assert len(screen.window) <= screen.query_one("#record-list").window_size()
        await pilot.press("slash")
        await type_text(pilot, "answer 999998")
        await pilot.press("enter")
        await settle(pilot)
        assert "record 999,999 of 1,000,000" in bar(screen)
