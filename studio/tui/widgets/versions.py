"""Version history of one dataset: every version with its lineage, and the rejects of an import."""
from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from studio.store import Workspace
from studio.rendering import format_time, render_version_detail, short_id

REJECTS_SHOWN = 20


def read_rejects(ws: Workspace, name: str, version: str, limit: int = REJECTS_SHOWN) -> list[dict]:
    path = ws.rejects_path(name, version)
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(out) >= limit:
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class VersionHistory(Vertical):
    """A table of versions (newest first) and the lineage of the highlighted one."""

    class OpenVersion(Message):
        def __init__(self, ref: str) -> None:
            super().__init__()
            self.ref = ref

    def __init__(self, workspace: Workspace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace
        self.dataset: str | None = None
        self.current: str | None = None
        self._infos = {}
        self._head: str | None = None

    def compose(self) -> ComposeResult:
        table = DataTable(id="version-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(" ", "version", "created", "records", "operation", "parent", "rejects")
        yield table
        with VerticalScroll(id="version-detail-scroll"):
            yield Static("", id="version-detail")

    def show(self, dataset: str | None, current: str | None = None) -> None:
        """List the versions of ``dataset``; ``current`` marks the one being browsed."""
        self.dataset, self.current = dataset, current
        table = self.query_one("#version-table", DataTable)
        table.clear()
        self._infos = {}
        if dataset is None:
            self.query_one("#version-detail", Static).update("")
            return
        versions = self.workspace.versions(dataset)
        self._head = self.workspace.head(dataset).id
        for info in reversed(versions):
            self._infos[info.id] = info
            marks = ("●" if info.id == self._head else " ") + ("▶" if info.id == current else " ")
            operation = str((info.operation or {}).get("name", "—"))
            if info.source and info.source.get("format"):
                operation += f" ({info.source['format']})"
            table.add_row(marks, short_id(info.id), format_time(info.created), f"{info.num_records:,}",
                          operation, short_id(info.parent) or "—",
                          Text(f"{info.rejects:,}", style="red" if info.rejects else "dim"), key=info.id)
        if versions:
            target = current if current in self._infos else self._head
            table.move_cursor(row=table.get_row_index(target))
            self._show_detail(target)

    def _show_detail(self, version_id: str) -> None:
        info = self._infos.get(version_id)
        if info is None or self.dataset is None:
            return
        rejects = read_rejects(self.workspace, self.dataset, version_id) if info.rejects else []
        self.query_one("#version-detail", Static).update(
            render_version_detail(info, rejects, head=version_id == self._head))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value:
            self._show_detail(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.dataset and event.row_key is not None and event.row_key.value:
            self.post_message(self.OpenVersion(f"{self.dataset}@{event.row_key.value}"))
