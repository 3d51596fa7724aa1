"""Review mode: walk a dataset version record by record and flag (f), edit (e), delete (d), and
for preference pairs accept (a), reject (x) or swap (s); u undoes, c (or ctrl+s) commits a new
version.

Every key press is journaled by :class:`studio.curation.review.ReviewSession` before the screen
shows it, so a killed terminal loses nothing and reopening the review resumes it. Records are
paged from Arrow one window at a time and the session keeps only the touched indices, so a
million-row version reviews like a ten-row one. Opening (journal replay) and committing run in
thread workers.
"""
from __future__ import annotations

import bisect
import json

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static, TextArea
from textual.worker import Worker, WorkerState, get_current_worker

from studio.curation.review import ReviewError, ReviewSession, record_from_json, record_to_json
from studio.events import event_name
from studio.rendering import kind_tag, render_review_state, review_counts_text, short_id
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.dialogs import Dialog
from studio.tui.screens.record_navigation import RecordNavigation
from studio.tui.service_events import ServiceEvent, service_emitter
from studio.tui.widgets.records import RecordView
from studio.tui.widgets.review import ReviewList

PAIR_ACTIONS = ("accept", "reject", "swap")
EDIT_ACTIONS = ("flag", "flag_note", "edit", "delete", "undo", "commit") + PAIR_ACTIONS


class EditRecordDialog(Dialog):
    """The record as canonical JSON in a text area; ctrl+s validates and saves, Esc cancels.
    Dismisses with the validated Record."""

    BINDINGS = [Binding("escape", "close", "Cancel"), Binding("ctrl+s", "save", "Save", priority=True)]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="edit-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield TextArea(self.text, id="record-json", tab_behavior="indent", show_line_numbers=True)
            yield Static("", id="edit-error", classes="error-text")
            yield Static(Text("ctrl+s saves · Esc cancels · keys: messages, chosen, rejected, label, tools, meta",
                              style="dim"))
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#record-json", TextArea).focus()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        text = self.query_one("#record-json", TextArea).text
        error = self.query_one("#edit-error", Static)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            error.update(Text(f"✗ not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"))
            return
        try:
            record = record_from_json(data)
        except ReviewError as exc:
            error.update(Text(f"✗ {exc}"))
            return
        self.dismiss(record)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class NoteDialog(Dialog):
    """One line of text (a flag's note, a commit note). Dismisses with the text, or None."""

    def __init__(self, title: str, detail: Text | str = "", placeholder: str = "", action: str = "OK") -> None:
        super().__init__()
        self.title_text, self.detail, self.placeholder, self.action = title, detail, placeholder, action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="note-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, id="note-detail")
            yield Input(placeholder=self.placeholder, id="note-input")
            with Horizontal(classes="buttons"):
                yield Button(self.action, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#note-input", Input).focus()

    @on(Input.Submitted, "#note-input")
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.dismiss(self.query_one("#note-input", Input).value.strip())

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class ReviewScreen(ReportsWorkerErrors, RecordNavigation, Screen):
    AUTO_FOCUS = ""
    list_widget = ReviewList
    # Most used first: a narrow terminal's footer cuts the last ones (F1 lists them all).
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f", "flag", "Flag"),
        Binding("a", "accept", "Accept"),
        Binding("x", "reject", "Reject"),
        Binding("s", "swap", "Swap"),
        Binding("e", "edit", "Edit"),
        Binding("d", "delete", "Delete"),
        Binding("c", "commit", "Commit"),
        Binding("u", "undo", "Undo"),
        Binding("n", "next", "Next"),
        Binding("p", "prev", "Prev"),
        *RecordNavigation.MOVE_BINDINGS,
        Binding("g", "goto", "Go to", show=False),
        Binding("right_square_bracket", "next_reviewed(1)", "Next reviewed", key_display="]", show=False),
        Binding("left_square_bracket", "next_reviewed(-1)", "Previous reviewed", key_display="[", show=False),
        Binding("F", "flag_note", "Flag with note", show=False),
        Binding("ctrl+s", "commit", "Commit", show=False),
    ]

    def __init__(self, ref: str, index: int = 0) -> None:
        super().__init__()
        self.ref = ref
        self.index = index
        self.session: ReviewSession | None = None
        self.window_start = -1
        self.window: list = []
        self.busy: str | None = None  # "opening" | "committing"
        self.status_message: Text | None = None
        self.committed: str | None = None  # the last version this screen committed

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="review-bar")
        with Horizontal(id="review-body"):
            yield ReviewList(id="review-list")
            with Vertical(id="review-main"):
                yield Static("", id="review-state")
                with VerticalScroll(id="review-panel", can_focus=False):
                    yield RecordView(id="review-record")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.open_ref(self.ref, self.index)

    # --- opening ------------------------------------------------------------------------------

    def open_ref(self, ref: str, index: int = 0) -> None:
        self.ref, self.index = ref, index
        self.session, self.window, self.window_start = None, [], -1
        self.title = f"Review {ref}"
        self.busy = "opening"
        self.status_message = Text(f"opening the review of {ref} …", style="dim")
        self._update_bar()
        self._open(ref)

    @work(thread=True, exclusive=True, group="review-open", exit_on_error=False)
    def _open(self, ref: str) -> tuple[str, ReviewSession]:
        return ref, ReviewSession(self.app.workspace, ref)

    def _opened(self, ref: str, session: ReviewSession) -> None:
        if ref != self.ref:
            return
        self.session = session
        self.busy = None
        self.title = f"Review {session.dataset}@{short_id(session.version)}"
        self.status_message = None
        if session.pending:
            self.status_message = Text(f"resumed: {session.pending:,} record(s) with pending edits", style="cyan")
        self.index = max(0, min(self.index, session.num_rows - 1))
        self.show_current()
        self.refresh_bindings()

    # --- paging -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.session.num_rows if self.session is not None else 0

    def current_record(self):
        if not self.window or not self.window_start <= self.index < self.window_start + len(self.window):
            return None
        return self.window[self.index - self.window_start]

    def show_current(self) -> None:
        session = self.session
        if session is None:
            return
        records = self.query_one(ReviewList)
        size = records.window_size()
        total = self.total
        start = (self.index // size) * size if total else 0
        if start != self.window_start or len(self.window) != min(size, total - start):
            self.window = session.view.page(start, size)
            self.window_start = start
        # The window as the commit would write it: edits and swaps applied (touched rows only).
        shown = [session.effective(start + i, r) if start + i in session.states else r
                 for i, r in enumerate(self.window)]
        marks = {start + i: (session.is_flagged(start + i), session.states.get(start + i))
                 for i in range(len(self.window))}
        records.show_marked(start, shown, self.index, total, marks)
        record = shown[self.index - start] if shown else None
        self.query_one(RecordView).show(record)
        state = session.states.get(self.index)
        committed = self.index in session.base_flags and (state is None or state.flagged is None)
        self.query_one("#review-state", Static).update(
            render_review_state(state, session.is_flagged(self.index), session.flag_note(self.index), committed)
            if record is not None else "")
        self._update_bar()
        self.refresh_bindings()

    def go(self, index: int) -> None:
        if self.session is None or not self.total:
            return
        index = max(0, min(index, self.total - 1))
        if index != self.index:
            self.index = index
            self.query_one("#review-panel", VerticalScroll).scroll_home(animate=False)
            self.show_current()

    def on_record_list_resized(self, event) -> None:
        if self.session is not None:
            self.window_start = -1
            self.show_current()

    def on_record_list_clicked(self, event) -> None:
        self.go(event.index)

    def has_records(self) -> bool:
        return self.session is not None and bool(self.total)

    def action_next_reviewed(self, direction: int) -> None:
        """Jump to the next (or previous) record with a pending edit or a flag."""
        if self.session is None:
            return
        marked = sorted(set(self.session.states) | set(self.session.flags()))
        if not marked:
            self.notify("No record is reviewed or flagged yet.", severity="warning")
            return
        if direction > 0:
            pos = bisect.bisect_right(marked, self.index)
            self.go(marked[pos % len(marked)])
        else:
            pos = bisect.bisect_left(marked, self.index) - 1
            self.go(marked[pos])

    # --- review actions ------------------------------------------------------------------------

    def _is_pair(self) -> bool:
        if self.session is None or self.current_record() is None:
            return False
        return self.session.effective(self.index, self.current_record()).kind == "preference"

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in PAIR_ACTIONS:
            return self._is_pair() and not self.busy
        if action in EDIT_ACTIONS:
            return None if self.busy or self.session is None else True
        return True

    def _act(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except ReviewError as exc:
            self.notify(str(exc), title="Review", severity="error")
            return
        self.status_message = None
        self.show_current()

    def action_flag(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        if session.is_flagged(self.index):
            self._act(session.unflag, self.index)
        else:
            self._act(session.flag, self.index)

    def action_flag_note(self) -> None:
        if self.session is None or self.busy:
            return
        index = self.index

        def noted(note: str | None) -> None:
            if note is not None and self.session is not None:
                self._act(self.session.flag, index, note)

        self.app.push_screen(NoteDialog(f"Flag record {index + 1:,}", placeholder="why (optional)"), noted)

    def action_delete(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        if session.state(self.index).deleted:
            self._act(session.undelete, self.index)
        else:
            self._act(session.delete, self.index)

    def action_accept(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        if session.state(self.index).verdict == "accepted":
            self._act(session.clear_verdict, self.index)
        else:
            self._act(session.accept, self.index)

    def action_reject(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        if session.state(self.index).verdict == "rejected":
            self._act(session.clear_verdict, self.index)
        else:
            self._act(session.reject, self.index)

    def action_swap(self) -> None:
        if self.session is not None and not self.busy:
            self._act(self.session.swap, self.index)

    def action_undo(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        touched = session.undo()
        if not touched:
            self.notify("Nothing to undo.", severity="warning")
            return
        self.go(touched[0])
        self.status_message = Text(f"undone: record {touched[0] + 1:,}", style="cyan")
        self.show_current()

    def action_edit(self) -> None:
        session = self.session
        record = self.current_record()
        if session is None or record is None or self.busy:
            return
        index = self.index
        text = json.dumps(record_to_json(session.effective(index, record)), indent=2, ensure_ascii=False)

        def edited(new) -> None:
            if new is not None and self.session is not None:
                self._act(self.session.edit, index, new)

        self.app.push_screen(EditRecordDialog(f"Edit record {index + 1:,} (canonical JSON)", text), edited)

    # --- commit ---------------------------------------------------------------------------------

    def action_commit(self) -> None:
        session = self.session
        if session is None or self.busy:
            return
        if not session.pending:
            self.notify("Nothing to commit: no record has a pending review edit.", severity="warning")
            return
        detail = Text("Writes a new version of ")
        detail.append(session.ref, style="bold")
        detail.append(" with: ")
        detail.append_text(review_counts_text(session.counts()))
        detail.append("\nDeleted and rejected rows stay restorable in its side table.", style="dim")
        head = self.app.workspace.head(session.dataset).id
        if head != session.version:
            detail.append(f"\n{session.dataset}@{short_id(session.version)} is not the head "
                          f"({short_id(head)}): the commit becomes the new head.", style="bold yellow")

        def noted(note: str | None) -> None:
            if note is not None and self.session is session:
                self.busy = "committing"
                self.status_message = Text("committing …", style="yellow")
                self._update_bar()
                self.refresh_bindings()
                self._commit(session, note)

        self.app.push_screen(NoteDialog("Commit the review", detail, "note for the version's lineage (optional)",
                                        action="Commit"), noted)

    @work(thread=True, exclusive=True, group="review-commit", exit_on_error=False)
    def _commit(self, session: ReviewSession, note: str):
        worker = get_current_worker()
        with service_emitter(self, "review-commit") as emit:
            return session.commit(note, emit=emit, cancelled=lambda: worker.is_cancelled)

    def on_service_event(self, message: ServiceEvent) -> None:
        progress = [e for e in message.events if event_name(e) == "progress"]
        if self.busy == "committing" and progress:
            done, total = progress[-1].get("done", 0), progress[-1].get("total", 0)
            self.status_message = Text(f"committing … {done:,} / {total:,} rows", style="yellow")
            self._update_bar()

    def _committed(self, result) -> None:
        info = result.version
        self.committed = f"{info.dataset}@{info.id}"
        if result.new_version:
            self.notify(f"{info.dataset}@{short_id(info.id)}: {info.num_records:,} records, {result.flags} flag(s)",
                        title="Review committed")
        else:
            self.notify(f"No rows changed; {result.flags} flag(s) saved with {info.dataset}@{short_id(info.id)}",
                        title="Review committed")
        self.open_ref(self.committed, min(self.index, max(0, info.num_records - 1)))

    # --- workers, leaving, the bar --------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if event.state == WorkerState.SUCCESS:
            if group == "review-open":
                self._opened(*event.worker.result)
            elif group == "review-commit":
                self._committed(event.worker.result)
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.busy = None
            what = "open" if group == "review-open" else "commit"
            self.status_message = Text(f"cannot {what}: {event.worker.error}", style="red")
            self._update_bar()
            self.refresh_bindings()

    def may_leave(self) -> bool:
        if self.busy == "committing":
            self.notify("Wait for the commit to finish.", severity="warning")
            return False
        return True

    def action_back(self) -> None:
        if not self.may_leave():
            return
        below = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        self.app.pop_screen()
        if self.committed and below is not None and hasattr(below, "open_ref") and below is not self:
            below.open_ref(self.committed, self.index)

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        session = self.session
        if session is not None:
            bar.append(" review ", style="bold reverse")
            bar.append(f" {session.dataset}", style="bold")
            bar.append(f"@{short_id(session.version)}", style="dim")
            if self.total:
                bar.append("  │  ")
                bar.append(f"record {self.index + 1:,} of {self.total:,}", style="bold")
                record = self.current_record()
                if record is not None:
                    _, style = kind_tag(record)
                    bar.append(f"  {record.kind}", style=style)
            else:
                bar.append("  │  no records", style="dim")
            bar.append("  │  ")
            bar.append(f"{session.pending:,} pending", style="bold yellow" if session.pending else "dim")
            if session.pending:
                bar.append(": ")
                bar.append_text(review_counts_text(session.counts()))
        if self.status_message is not None:
            bar.append("  │  ")
            bar.append_text(self.status_message)
        self.query_one("#review-bar", Static).update(bar)
