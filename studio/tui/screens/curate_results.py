"""The results of a curation (pushed from Curate, mode 3, or the palette): what curating
produced a version, by reason, each removed row next to what it duplicates or what it became,
and overrides: restore side entries, drop output rows.

The side table is paged from Arrow, so the screen never holds more than one page of rows,
whatever the size of the run. Row numbers are source rows (the pipeline input's), the numbers
the side table and ``studio curate`` use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import Worker, WorkerState

from studio.curation.pipeline import amend_curated, load_origin, load_side_table
from studio.curation.inspection import cluster_size, group_indices, output_position, reason_groups, source_version
from studio.records import Record
from studio.rendering import (
    kinds_text, record_preview, render_side_by_side, render_side_entry_header, render_titled_record, short_id,
)
from studio.tui.screens.base import ReportsWorkerErrors

PAGE_ROWS = 100


@dataclass
class ResultsData:
    ref: str
    info: Any
    view: Any
    side: Any  # datasets.Dataset (memory-mapped)
    origin: Any  # numpy array: output row -> source index
    source_ref: str
    source: Any  # VersionView of the version source indices point into
    groups: list


class CurateResultsScreen(ReportsWorkerErrors, Screen):
    """Removals and changes of a curated version by reason, each row next to what it duplicates
    or what it became, and overrides: restore side entries, drop output rows."""

    TITLE = "Curation results"
    AUTO_FOCUS = "#reason-table"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("k", "keep", "Keep (restore)"),
        Binding("d", "drop", "Drop kept row"),
        Binding("a", "apply", "Apply overrides"),
        Binding("n", "page(1)", "Next page"),
        Binding("p", "page(-1)", "Prev page"),
        Binding("o", "open_output", "Browse output"),
    ]

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.data: ResultsData | None = None
        self.group = None
        self.indices = None  # numpy array of side-table rows in the current group
        self.page = 0
        self.entries: list[dict[str, Any]] = []  # the current page only
        self.restore: set[int] = set()
        self.drop: set[int] = set()
        self.status: Text | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="results-bar")
        with Horizontal(id="results-body"):
            with Vertical(id="reasons-pane"):
                yield Label("Removed and changed, by reason", classes="pane-title")
                table = DataTable(id="reason-table", cursor_type="row", zebra_stripes=True)
                table.add_columns("step", "reason", "rows")
                yield table
            with Vertical(id="entries-pane"):
                yield Label("", id="entries-title", classes="pane-title")
                table = DataTable(id="entry-table", cursor_type="row", zebra_stripes=True)
                table.add_column("", key="mark", width=2)
                table.add_column("row", key="source")
                table.add_column("sim", key="sim")
                table.add_column("record", key="preview")
                yield table
                with VerticalScroll(id="entry-detail-scroll"):
                    yield Static("", id="entry-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.status = Text(f"opening {self.ref} …", style="dim")
        self._update_bar()
        self._load(self.ref)

    @work(thread=True, exclusive=True, group="results", exit_on_error=False)
    def _load(self, ref: str) -> ResultsData:
        ws = self.app.workspace
        view = ws.open(ref)
        ref = f"{view.info.dataset}@{view.info.id}"
        side = load_side_table(ws, ref)
        source_ref = source_version(ws, ref)
        return ResultsData(ref=ref, info=view.info, view=view, side=side, origin=load_origin(ws, ref),
                           source_ref=source_ref, source=ws.open(source_ref), groups=reason_groups(side))

    @work(thread=True, exclusive=True, group="overrides", exit_on_error=False)
    def _apply(self, ref: str, restore: list[int], drop: list[int]):
        note = f"restored {len(restore)}, dropped {len(drop)} in the curation results view"
        return amend_curated(self.app.workspace, ref, restore=restore, drop=drop, note=note)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if event.state == WorkerState.SUCCESS:
            if group == "results":
                self._loaded(event.worker.result)
            elif group == "overrides":
                info = event.worker.result
                self.notify(f"{info.dataset}@{short_id(info.id)}: {info.num_records:,} records",
                            title="Overrides applied")
                self.ref = f"{info.dataset}@{info.id}"
                self.restore, self.drop = set(), set()
                self.status = Text(f"✓ overrides applied: {self.ref}", style="green")
                self._load(self.ref)
        elif event.state == WorkerState.ERROR:
            self.status = Text(f"✗ {group} failed: {event.worker.error}", style="red")
            self._update_bar()

    def _loaded(self, data: ResultsData) -> None:
        self.data = data
        self.ref = data.ref
        if self.status is not None and self.status.plain.startswith("opening"):
            self.status = None
        table = self.query_one("#reason-table", DataTable)
        table.clear()
        for group in data.groups:
            step = str(group.step) if group.step >= 0 else "hand"
            reason = Text(group.reason, style="red" if group.action == "removed" else "yellow")
            reason.append(f"  {group.op}", style="dim")
            table.add_row(step, reason, f"{group.count:,}", key=group.key)
        self._update_bar()
        if data.groups:
            table.move_cursor(row=0)
            self.show_group(data.groups[0])
        else:
            self.query_one("#entries-title", Label).update("Nothing was removed or changed.")
            self.query_one("#entry-table", DataTable).clear()
            self.query_one("#entry-detail", Static).update("")

    # --- a reason's rows, one page at a time ------------------------------------------------------

    def show_group(self, group) -> None:
        assert self.data is not None
        self.group = group
        self.indices = group_indices(self.data.side, group)
        self.page = 0
        self._show_page()

    def _show_page(self) -> None:
        import pyarrow as pa

        assert self.data is not None and self.indices is not None
        lo = self.page * PAGE_ROWS
        chunk = self.indices[lo: lo + PAGE_ROWS]
        self.entries = self.data.side.data.table.take(pa.array(chunk)).to_pylist() if len(chunk) else []
        for entry, side_index in zip(self.entries, chunk.tolist()):
            entry["_side_index"] = side_index
        table = self.query_one("#entry-table", DataTable)
        table.clear()
        for entry in self.entries:
            sim = f"{entry['similarity']:.2f}" if entry.get("similarity") is not None else ""
            table.add_row(self._mark(entry), f"#{entry['source_index']}", sim,
                          Text(record_preview(Record.from_row(entry))[:200]), key=str(entry["_side_index"]))
        total = len(self.indices)
        pages = max(1, -(-total // PAGE_ROWS))
        title = Text(f"{self.group.reason}", style="bold")
        title.append(f"  ({self.group.action} by {self.group.op})  {lo + 1:,}–{lo + len(self.entries):,} "
                     f"of {total:,}", style="dim")
        if pages > 1:
            title.append(f"  page {self.page + 1}/{pages} (n/p)", style="dim")
        self.query_one("#entries-title", Label).update(title)
        if self.entries:
            table.move_cursor(row=0)
            self.show_entry(self.entries[0])
        self.refresh_bindings()

    def action_page(self, delta: int) -> None:
        if self.indices is None:
            return
        pages = max(1, -(-len(self.indices) // PAGE_ROWS))
        page = max(0, min(self.page + delta, pages - 1))
        if page != self.page:
            self.page = page
            self._show_page()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.data is None or event.row_key is None or event.row_key.value is None:
            return
        if event.data_table.id == "reason-table":
            group = next((g for g in self.data.groups if g.key == event.row_key.value), None)
            if group is not None and group is not self.group:
                self.show_group(group)
        elif event.data_table.id == "entry-table":
            entry = self._entry(int(event.row_key.value))
            if entry is not None:
                self.show_entry(entry)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "reason-table":
            self.query_one("#entry-table").focus()

    def _entry(self, side_index: int) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["_side_index"] == side_index), None)

    def current_entry(self) -> dict[str, Any] | None:
        table = self.query_one("#entry-table", DataTable)
        if not self.entries or not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._entry(int(key)) if key is not None else None

    def _related_output_row(self, entry: dict[str, Any]) -> int | None:
        """The output row an override on this entry would drop: a duplicate's kept original, or
        what a changed row became."""
        assert self.data is not None
        if entry.get("duplicate_of") is not None:
            return output_position(self.data.origin, entry["duplicate_of"])
        if entry.get("action") == "changed":
            return output_position(self.data.origin, entry["source_index"])
        return None

    def show_entry(self, entry: dict[str, Any]) -> None:
        assert self.data is not None
        record = Record.from_row(entry)
        src = entry["source_index"]
        dup = entry.get("duplicate_of")
        detail = self.query_one("#entry-detail", Static)
        header = render_side_entry_header(entry, cluster_size(self.data.side, dup) if dup is not None else None)
        marks = self._mark_text(entry)
        if marks.plain:
            header.append("\n")
            header.append_text(marks)
        if dup is not None:
            kept = self.data.source.record(dup) if 0 <= dup < self.data.source.num_rows else None
            position = self._related_output_row(entry)
            right_title = Text(f"✓ kept original · source row #{dup}", style="bold green")
            right_title.append(" · in the output" if position is not None else " · not in the output", style="dim")
            body = render_side_by_side(Text(f"✗ removed · source row #{src}", style="bold red"), record,
                                       right_title, kept)
        elif entry.get("action") == "changed":
            position = self._related_output_row(entry)
            after = self.data.view.record(position) if position is not None else None
            body = render_side_by_side(Text(f"before · source row #{src}", style="bold"), record,
                                       Text(f"after · source row #{src}", style="bold yellow"), after,
                                       right_empty="(removed by a later step)")
        else:
            body = render_titled_record(Text(f"✗ removed · source row #{src}", style="bold red"), record)
        detail.update(Group(header, Text(""), body))
        self.query_one("#entry-detail-scroll", VerticalScroll).scroll_home(animate=False)

    # --- overrides -------------------------------------------------------------------------------

    def _mark(self, entry: dict[str, Any]) -> Text:
        text = Text()
        if entry["_side_index"] in self.restore:
            text.append("↺", style="bold green")
        position = self._related_output_row(entry) if self.drop else None
        if position is not None and position in self.drop:
            text.append("⊘", style="bold red")
        return text

    def _mark_text(self, entry: dict[str, Any]) -> Text:
        text = Text()
        if entry["_side_index"] in self.restore:
            text.append("↺ marked to restore", style="bold green")
        position = self._related_output_row(entry) if self.drop else None
        if position is not None and position in self.drop:
            if text.plain:
                text.append("  ·  ")
            text.append(f"⊘ source row #{int(self.data.origin[position])} marked to drop", style="bold red")
        return text

    def _refresh_marks(self) -> None:
        table = self.query_one("#entry-table", DataTable)
        for entry in self.entries:
            table.update_cell(str(entry["_side_index"]), "mark", self._mark(entry))
        entry = self.current_entry()
        if entry is not None:
            self.show_entry(entry)
        self._update_bar()

    def action_keep(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        self.restore ^= {entry["_side_index"]}
        self._refresh_marks()

    def action_drop(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        position = self._related_output_row(entry)
        if position is None:
            self.notify("This row has no kept counterpart in the output to drop.", severity="warning")
            return
        self.drop ^= {position}
        self._refresh_marks()

    def action_apply(self) -> None:
        if self.data is None:
            return
        if not self.restore and not self.drop:
            self.notify("Mark rows first: k keeps (restores) a removed row, d drops its kept counterpart.",
                        severity="warning")
            return
        self.status = Text("applying overrides …", style="yellow")
        self._update_bar()
        self._apply(self.data.ref, sorted(self.restore), sorted(self.drop))

    def action_open_output(self) -> None:
        if self.data is not None:
            self.app.open_dataset(self.data.ref)

    def action_back(self) -> None:
        self.app.pop_screen()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "page":
            return self.indices is not None and len(self.indices) > PAGE_ROWS
        if action == "apply":
            return bool(self.restore or self.drop) or None
        return True

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        if self.data is not None:
            info = self.data.info
            bar.append(f" {info.dataset}", style="bold")
            bar.append(f"@{short_id(info.id)}", style="dim")
            bar.append(f"  from {self.data.source_ref.split('@')[0]}@{short_id(self.data.source_ref.partition('@')[2])}",
                       style="dim")
            bar.append("  │  ")
            bar.append(f"{self.data.source.num_rows:,} → {info.num_records:,} rows", style="bold")
            bar.append(f"  ({kinds_text(info.kinds)})", style="dim")
            bar.append("  │  ")
            bar.append(f"{len(self.data.side):,} in the side table")
            if self.restore or self.drop:
                bar.append("  │  ")
                bar.append(f"restore {len(self.restore):,} · drop {len(self.drop):,} (a applies)", style="bold yellow")
        if self.status is not None:
            bar.append("  │  ")
            bar.append_text(self.status)
        self.query_one("#results-bar", Static).update(bar)
