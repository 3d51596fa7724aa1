"""The record browser: one dataset version, paged from its memory-mapped Arrow file.

Only the window of records that fits the list is ever read (``VersionView.page``), so moving to
record 1,000,000 costs the same as moving to record 2. Search, statistics and opening run in
thread workers; search can be cancelled and its hits are walked with n / N.
"""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Header, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from studio.store import VersionView
from studio.rendering import kind_tag, render_stats, short_id
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.record_navigation import RecordNavigation
from studio.tui.widgets.records import RecordList, RecordView
from studio.tui.widgets.versions import VersionHistory

HIT_LIMIT = 100_000
PANELS = ("record", "stats", "history")


class BrowserScreen(ReportsWorkerErrors, RecordNavigation, Screen):
    # Keys belong to the screen (n, p, PageDown …); the version table takes focus only on h.
    AUTO_FOCUS = ""
    list_widget = RecordList
    # Most used first: a narrow terminal's footer cuts the last ones (F1 lists them all).
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("R", "review", "Review"),
        Binding("e", "export", "Export"),
        Binding("s", "panel('stats')", "Stats"),
        Binding("h", "panel('history')", "History"),
        Binding("g", "goto", "Go to"),
        Binding("n", "next", "Next"),
        Binding("p", "prev", "Prev"),
        Binding("N", "prev_hit", "Prev hit"),
        *RecordNavigation.MOVE_BINDINGS,
        Binding("i", "import", "Import", show=False),
        Binding("c", "convert", "Convert", show=False),
        Binding("ctrl+d", "scroll_record(1)", "Scroll record down", show=False),
        Binding("ctrl+u", "scroll_record(-1)", "Scroll record up", show=False),
    ]

    def __init__(self, ref: str, index: int = 0) -> None:
        super().__init__()
        self.ref = ref
        self.view: VersionView | None = None
        self.index = index
        self.window_start = 0
        self.window: list = []
        self.panel = "record"
        self.query_text: str | None = None
        self.hits: list[int] | None = None
        self.hit_pos = 0
        self.searching: str | None = None
        self.status_message: Text | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="browser-bar")
        with Horizontal(id="browser-body"):
            yield RecordList(id="record-list")
            with ContentSwitcher(initial="record-panel", id="panels"):
                with VerticalScroll(id="record-panel", can_focus=False):
                    yield RecordView(id="record-view")
                with VerticalScroll(id="stats-panel", can_focus=False):
                    yield Static("", id="stats-view")
                yield VersionHistory(self.app.workspace, id="history-panel")
        yield Input(placeholder="search text in any turn (Enter to search, Esc to close)", id="search-input")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#search-input").display = False
        self.open_ref(self.ref, self.index)

    # --- opening ---------------------------------------------------------------------------

    def open_ref(self, ref: str, index: int = 0) -> None:
        self.ref, self.index = ref, index
        self.view, self.window, self.hits, self.query_text = None, [], None, None
        self.title = ref
        self._set_panel("record")
        self.status_message = Text(f"Opening {ref} …", style="dim")
        self._update_bar()
        self._open(ref)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open(self, ref: str) -> tuple[str, VersionView]:
        return ref, self.app.workspace.open(ref)

    def _opened(self, ref: str, view: VersionView) -> None:
        if ref != self.ref:
            return
        self.view = view
        self.title = f"{view.info.dataset}@{short_id(view.info.id)}"
        self.status_message = None
        self.index = max(0, min(self.index, view.num_rows - 1))
        self.window_start, self.window = -1, []
        self.show_current()

    # --- paging ----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.view.num_rows if self.view is not None else 0

    def show_current(self) -> None:
        """Page the window holding the current record from Arrow and show it."""
        records = self.query_one(RecordList)
        record_view = self.query_one(RecordView)
        if self.view is None:
            return
        total = self.total
        size = records.window_size()
        start = (self.index // size) * size if total else 0
        if start != self.window_start or len(self.window) != min(size, total - start):
            self.window = self.view.page(start, size)
            self.window_start = start
        record = self.window[self.index - start] if self.window else None
        records.show(start, self.window, self.index, total)
        record_view.show(record, highlight=self.query_text if self.hits else None)
        self.query_one("#record-panel", VerticalScroll).scroll_home(animate=False)
        self._update_bar()

    def on_record_list_resized(self, event: RecordList.Resized) -> None:
        if self.view is not None:
            self.window_start = -1
            self.show_current()

    def on_record_list_clicked(self, event: RecordList.Clicked) -> None:
        self.go(event.index)

    def go(self, index: int) -> None:
        if self.view is None or not self.total:
            return
        index = max(0, min(index, self.total - 1))
        if index != self.index or not self.window:
            self.index = index
            self.show_current()

    def has_records(self) -> bool:
        return self.view is not None and bool(self.total)

    def action_next(self) -> None:
        # While search hits are shown, n walks the hits instead of the records.
        if self.hits:
            self._step_hit(1)
        else:
            super().action_next()

    def action_prev_hit(self) -> None:
        if self.hits:
            self._step_hit(-1)

    def action_scroll_record(self, direction: int) -> None:
        panel = self.query_one("#record-panel", VerticalScroll)
        panel.scroll_relative(y=direction * max(1, panel.size.height // 2), animate=False)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "prev_hit":
            return bool(self.hits)
        return True

    # --- search ----------------------------------------------------------------------------

    def action_search(self) -> None:
        box = self.query_one("#search-input", Input)
        box.display = True
        if self.query_text:
            box.value = self.query_text
        # At once, not after a refresh: keys typed right after "/" must not reach the screen's keys.
        self.set_focus(box)

    def _close_search_box(self) -> None:
        box = self.query_one("#search-input", Input)
        box.display = False
        self.set_focus(None)

    @on(Input.Submitted, "#search-input")
    def _submit_search(self, event: Input.Submitted) -> None:
        self._close_search_box()
        self.search(event.value)

    def search(self, query: str) -> None:
        query = query.strip()
        if self.view is None:
            return
        if not query:
            self._clear_search()
            return
        self.searching = query
        self.status_message = Text(f"searching {query!r} … (Esc cancels)", style="yellow")
        self._update_bar()
        self._search(self.view, query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, view: VersionView, query: str) -> tuple[VersionView, str, list[int]]:
        worker = get_current_worker()
        return view, query, view.search(query, 0, HIT_LIMIT, cancelled=lambda: worker.is_cancelled)

    def _found(self, view: VersionView, query: str, hits: list[int]) -> None:
        self.searching = None
        self.status_message = None
        if view is not self.view:
            return
        if self.panel != "record":
            # The answer to a search is records: leave the statistics or history for them.
            self._set_panel("record")
            self.set_focus(None)
        if not hits:
            self.hits, self.query_text = None, None
            self.status_message = Text(f"no record contains {query!r}", style="red")
            self.show_current()
            self.refresh_bindings()
            return
        self.hits, self.query_text = hits, query
        after = [i for i, hit in enumerate(hits) if hit >= self.index]
        self.hit_pos = after[0] if after else 0
        self.refresh_bindings()
        self.index = hits[self.hit_pos]
        self.show_current()

    def _step_hit(self, direction: int) -> None:
        assert self.hits
        self.hit_pos = (self.hit_pos + direction) % len(self.hits)
        self.go(self.hits[self.hit_pos])
        self._update_bar()

    def _clear_search(self) -> None:
        self.hits, self.query_text, self.searching = None, None, None
        self.status_message = None
        self.refresh_bindings()
        self.show_current()

    # --- panels ----------------------------------------------------------------------------

    def _set_panel(self, panel: str) -> None:
        self.panel = panel
        self.query_one("#panels", ContentSwitcher).current = f"{panel}-panel"
        self._update_bar()

    def action_panel(self, panel: str) -> None:
        if self.view is None:
            return
        if self.panel == panel:
            self._set_panel("record")
            self.set_focus(None)
            return
        self._set_panel(panel)
        if panel == "stats":
            self._show_stats()
        elif panel == "history":
            history = self.query_one(VersionHistory)
            history.show(self.view.info.dataset, current=self.view.info.id)
            history.query_one("#version-table").focus()

    def _show_stats(self) -> None:
        assert self.view is not None
        key = (self.view.info.dataset, self.view.info.id)
        cached = self.app.stats_cache.get(key)
        if cached is not None:
            self.query_one("#stats-view", Static).update(render_stats(cached))
            return
        self.query_one("#stats-view", Static).update(Text("computing statistics …", style="dim"))
        self._stats(self.view)

    @work(thread=True, exclusive=True, group="stats", exit_on_error=False)
    def _stats(self, view: VersionView) -> tuple[VersionView, dict]:
        return view, view.stats()

    def _stats_ready(self, view: VersionView, stats: dict) -> None:
        self.app.stats_cache[(view.info.dataset, view.info.id)] = stats
        if view is self.view:
            self.query_one("#stats-view", Static).update(render_stats(stats))

    def on_version_history_open_version(self, event: VersionHistory.OpenVersion) -> None:
        self.open_ref(event.ref)
        self.set_focus(None)

    # --- leaving, exporting ----------------------------------------------------------------

    def action_back(self) -> None:
        box = self.query_one("#search-input", Input)
        if box.display:
            self._close_search_box()
        elif self.searching:
            self.workers.cancel_group(self, "search")
            self.searching = None
            self.status_message = Text("search cancelled", style="yellow")
            self._update_bar()
        elif self.panel != "record":
            self._set_panel("record")
            self.set_focus(None)
        elif self.hits:
            self._clear_search()
        else:
            self.app.pop_screen()

    def action_export(self) -> None:
        if self.view is not None:
            self.app.export_dialog(f"{self.view.info.dataset}@{self.view.info.id}")

    def action_review(self) -> None:
        if self.view is not None:
            self.app.review_dataset(f"{self.view.info.dataset}@{self.view.info.id}", self.index)

    def action_import(self) -> None:
        self.app.import_dialog()

    def action_convert(self) -> None:
        self.app.convert_dialog()

    # --- workers and the status bar -------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if event.state == WorkerState.SUCCESS:
            if group == "open":
                self._opened(*event.worker.result)
            elif group == "search":
                self._found(*event.worker.result)
            elif group == "stats":
                self._stats_ready(*event.worker.result)
        elif event.state == WorkerState.ERROR:
            if group == "open":
                self.status_message = Text(f"cannot open {self.ref}: {event.worker.error}", style="red")
            elif group == "search":
                self.searching = None
                self.status_message = Text(f"search failed: {event.worker.error}", style="red")
            elif group == "stats":
                self.query_one("#stats-view", Static).update(Text(f"statistics failed: {event.worker.error}", style="red"))
            self._update_bar()

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        if self.view is not None:
            info = self.view.info
            bar.append(f" {info.dataset}", style="bold")
            bar.append(f"@{short_id(info.id)}", style="dim")
            total = self.total
            if total:
                bar.append("  │  ")
                bar.append(f"record {self.index + 1:,} of {total:,}", style="bold")
                if self.window and self.window_start <= self.index < self.window_start + len(self.window):
                    tag, style = kind_tag(self.window[self.index - self.window_start])
                    bar.append("  ")
                    bar.append(self.window[self.index - self.window_start].kind, style=style)
            else:
                bar.append("  │  no records", style="dim")
            if self.hits:
                bar.append("  │  ")
                bar.append(f"{self.query_text!r}: hit {self.hit_pos + 1:,} of {len(self.hits):,}", style="yellow")
                if len(self.hits) >= HIT_LIMIT:
                    bar.append(" (first hits only)", style="dim")
        if self.status_message is not None:
            bar.append("  │  ")
            bar.append_text(self.status_message)
        bar.append("  │  ")
        for i, panel in enumerate(PANELS):
            if i:
                bar.append(" ")
            bar.append(f" {panel} ", style="reverse bold" if panel == self.panel else "dim")
        self.query_one("#browser-bar", Static).update(bar)
