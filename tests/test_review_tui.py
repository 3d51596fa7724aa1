"""Review mode driven with Pilot: flag, edit (modal JSON editor with inline errors), delete,
accept, reject, swap and undo, the pending counts, commit into a new version, resume from the
journal, and a million-row version paged from Arrow."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, TextArea  # noqa: E402

from studio.curation.pipeline import load_side_table  # noqa: E402
from studio.curation.review import ReviewSession, read_flags  # noqa: E402
from studio.records import Record, Turn  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.browser import BrowserScreen  # noqa: E402
from studio.tui.screens.review import EditRecordDialog, NoteDialog, ReviewScreen  # noqa: E402
from test_review import million_table  # noqa: E402
from test_tui import make_host, plain  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (120, 36)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def review_records() -> list[Record]:
    out = []
    for i in range(6):
        out.append(Record([Turn("user", f"Question {i}?")], chosen=[Turn("assistant", f"Helpful answer {i}.")],
                          rejected=[Turn("assistant", f"Unhelpful answer {i}.")], meta={"id": i}))
    return out


def chat_records() -> list[Record]:
    return [Record([Turn("user", f"Say {w}."), Turn("assistant", f"{w.capitalize()}!")], meta={"id": i})
            for i, w in enumerate(["hello", "goodbye", "thanks", "please"])]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("pairs", review_records(), operation={"name": "import", "format": "trl_preference"})
    ws.write_version("chat", chat_records(), operation={"name": "import", "format": "sharegpt"})
    return ws


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text_of(screen, selector: str) -> str:
    return " ".join(plain(screen.query_one(selector).content, width=200).split())


async def open_review(pilot, ref: str, index: int = 0) -> ReviewScreen:
    await settle(pilot)
    pilot.app.review_dataset(ref, index)
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ReviewScreen)
    return screen


async def test_review_pairs_then_commit_gives_the_expected_records(workspace):
    app = StudioApp(workspace, host=make_host())
    parent = workspace.head("pairs").id
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, "pairs")
        assert "record 1 of 6" in text_of(screen, "#review-bar") and "0 pending" in text_of(screen, "#review-bar")
        assert "not reviewed" in text_of(screen, "#review-state")
        await pilot.press("f")  # 1: flag
        assert "⚑ flagged" in text_of(screen, "#review-state")
        await pilot.press("n", "s")  # 2: swap
        assert "swapped" in text_of(screen, "#review-state")
        record = text_of(screen, "#review-record")
        assert record.index("Unhelpful answer 1.") < record.index("Helpful answer 1.")  # chosen shows first
        await pilot.press("n", "x")  # 3: reject
        assert "✗ rejected" in text_of(screen, "#review-state")
        await pilot.press("n", "a")  # 4: accept
        assert "✓ accepted" in text_of(screen, "#review-state")
        await pilot.press("n", "d")  # 5: delete
        assert "✗ deleted" in text_of(screen, "#review-state")
        await pilot.press("n", "d", "u")  # 6: delete, then undo it
        assert "not reviewed" in text_of(screen, "#review-state")
        assert "undone: record 6" in text_of(screen, "#review-bar")
        bar = text_of(screen, "#review-bar")
        assert "5 pending: flagged 1 · swapped 1 · deleted 1 · accepted 1 · rejected 1" in bar
        # The list marks each record's state.
        lines = plain(screen.query_one("#review-list").content).splitlines()
        assert lines[0].split()[1] == "⚑" and "⇄" in lines[1] and "✗" in lines[2] and "✓" in lines[3]
        # Edit the last record in the JSON editor: a bad value is refused inline.
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, EditRecordDialog)
        area = dialog.query_one("#record-json", TextArea)
        data = json.loads(area.text)
        assert data["chosen"] == [{"role": "assistant", "content": "Helpful answer 5."}]
        area.text = json.dumps({**data, "label": "yes"})
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "label: expected true, false or null" in text_of(dialog, "#edit-error")
        area.text = "{not json"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "not valid JSON" in text_of(dialog, "#edit-error")
        data["chosen"][0]["content"] = "A much better answer."
        area.text = json.dumps(data)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert "✎ edited" in text_of(screen, "#review-state")
        assert "A much better answer." in text_of(screen, "#review-record")
        # Commit with a note.
        await pilot.press("c")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, NoteDialog)
        assert "flagged 1 · edited 1 · swapped 1 · deleted 1 · accepted 1 · rejected 1" in text_of(dialog, "#note-detail")
        dialog.query_one("#note-input", Input).value = "first pass"
        await pilot.press("enter")
        await settle(pilot)
        await settle(pilot)
        head = workspace.head("pairs")
        assert head.parent == parent and head.operation["name"] == "review" and head.operation["note"] == "first pass"
        rows = workspace.open("pairs").page(0, 10)
        assert [r.meta["id"] for r in rows] == [0, 1, 3, 5]
        assert [r.chosen[0].content for r in rows] == ["Helpful answer 0.", "Unhelpful answer 1.",
                                                      "Helpful answer 3.", "A much better answer."]
        assert [s["reason"] for s in load_side_table(workspace, "pairs").to_list()] == [
            "swapped in review", "rejected in review", "deleted in review", "edited in review"]
        assert read_flags(workspace, "pairs")["flags"][0]["index"] == 0
        # The screen now reviews the new version; the committed flag carries over.
        assert screen.session.version == head.id and screen.session.pending == 0
        await pilot.press("home")
        assert "⚑ flagged (committed)" in text_of(screen, "#review-state")


async def test_conversations_hide_pair_keys_and_flag_notes(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, "chat")
        active = {b.binding.action for b in screen.active_bindings.values()}
        assert "flag" in active and "accept" not in active and "swap" not in active
        await pilot.press("F")
        await pilot.pause()
        app.screen.query_one("#note-input", Input).value = "too polite"
        await pilot.press("enter")
        await pilot.pause()
        assert "⚑ flagged: too polite" in text_of(screen, "#review-state")
        await pilot.press("f")  # toggles the flag off
        assert "not reviewed" in text_of(screen, "#review-state")
        await pilot.press("s")  # not bound on a conversation: nothing happens
        assert screen.session.pending == 0


async def test_the_review_resumes_from_the_journal(workspace):
    session = ReviewSession(workspace, "pairs")  # e.g. a TUI that was killed, or the CLI
    session.flag(2, "check")
    session.delete(4)
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, "pairs", index=2)
        assert "resumed: 2 record(s) with pending edits" in text_of(screen, "#review-bar")
        assert "⚑ flagged: check" in text_of(screen, "#review-state")
        await pilot.press("right_square_bracket")  # the next reviewed record
        assert screen.index == 4 and "✗ deleted" in text_of(screen, "#review-state")
        await pilot.press("d")  # undelete: the journal records that too
    assert ReviewSession(workspace, "pairs").counts()["deleted"] == 0


async def test_review_opens_from_the_browser_and_back_shows_the_new_version(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_dataset("chat")
        await settle(pilot)
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        await pilot.press("n", "R")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ReviewScreen) and screen.index == 1
        await pilot.press("d", "ctrl+s")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is browser
        assert browser.view.info.id == workspace.head("chat").id
        assert "record 2 of 3" in text_of(browser, "#browser-bar")


@pytest.mark.slow
async def test_review_a_million_rows(tmp_path):
    ws = Workspace.init(tmp_path / "big")
    ws.write_version("big", million_table(1_000_000), operation={"name": "synthetic"})
    app = StudioApp(ws, host=make_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(pilot, "big")
        await pilot.press("end", "d")
        assert "record 1,000,000 of 1,000,000" in text_of(screen, "#review-bar")
        assert "question 999999" in text_of(screen, "#review-record")
        await pilot.press("g")
        await pilot.pause()
        app.screen.query_one("#goto-input", Input).value = "500000"
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("f")
        assert "record 500,000 of 1,000,000" in text_of(screen, "#review-bar")
        assert len(screen.window) <= screen.query_one("#review-list").window_size()
        assert len(screen.session.states) == 2  # sparse
