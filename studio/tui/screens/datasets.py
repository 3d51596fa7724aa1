"""The default screen: the datasets of the workspace and the version history of the selected one."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from studio.rendering import kinds_text, short_id
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.widgets.versions import VersionHistory


class DatasetsScreen(ReportsWorkerErrors, Screen):
    TITLE = "Datasets"
    BINDINGS = [
        Binding("o", "open", "Open"),
        Binding("i", "import", "Import"),
        Binding("e", "export", "Export"),
        Binding("c", "convert", "Convert"),
        Binding("v", "versions", "Versions"),
        Binding("r", "refresh", "Refresh"),
        Binding("R", "review", "Review"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="datasets-body"):
            table = DataTable(id="dataset-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("dataset", "records", "kinds", "versions", "head", "from")
            yield table
            yield Static(Text.assemble(
                ("No datasets yet. ", "bold"),
                "Press ", ("i", "bold reverse"), " to import a file (JSON, JSONL, CSV, Parquet; gzip too), or ",
                ("ctrl+p", "bold reverse"), " for every command."), id="empty-hint")
            yield Label("Versions (Enter opens one)", id="versions-title")
            yield VersionHistory(self.app.workspace, id="dataset-history")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._fresh = True
        self.refresh_datasets()

    def on_screen_resume(self) -> None:
        # Back from the browser or a dialog: an import may have added datasets or versions.
        if self._fresh:  # the first resume follows the mount, which already read the list
            self._fresh = False
            return
        self.refresh_datasets()

    def selected(self) -> str | None:
        table = self.query_one("#dataset-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def refresh_datasets(self, select: str | None = None) -> None:
        ws = self.app.workspace
        table = self.query_one("#dataset-table", DataTable)
        keep = select or self.selected()
        table.clear()
        names = ws.dataset_names()
        for name in names:
            try:
                versions = ws.versions(name)
                head = ws.head(name)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # One damaged dataset folder must not hide the others.
                table.add_row(Text(name, style="bold red"), "?", Text(f"unreadable: {exc}", style="red"),
                              "?", "", "", key=name)
                continue
            source = head.source or {}
            origin = source.get("path")
            origin = origin.rsplit("/", 1)[-1] if origin else str((head.operation or {}).get("name", "—"))
            table.add_row(Text(name, style="bold"), f"{head.num_records:,}", kinds_text(head.kinds),
                          str(len(versions)), short_id(head.id), origin, key=name)
        self.query_one("#empty-hint").display = not names
        self.query_one("#versions-title").display = bool(names)
        self.query_one("#dataset-history").display = bool(names)
        if names:
            if keep in names:
                table.move_cursor(row=names.index(keep))
            self._show_history(self.selected())
            if not isinstance(self.focused, DataTable):
                table.focus()

    def _show_history(self, name: str | None) -> None:
        try:
            self.query_one(VersionHistory).show(name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.query_one(VersionHistory).show(None)
            self.notify(f"{name}: {exc}", title="Cannot read the versions", severity="error")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "dataset-table" and event.row_key is not None and event.row_key.value:
            self._show_history(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "dataset-table" and event.row_key is not None and event.row_key.value:
            self.app.open_dataset(event.row_key.value)

    def on_version_history_open_version(self, event: VersionHistory.OpenVersion) -> None:
        self.app.open_dataset(event.ref)

    def action_open(self) -> None:
        name = self.selected()
        if name:
            self.app.open_dataset(name)

    def action_import(self) -> None:
        self.app.import_dialog()

    def action_export(self) -> None:
        name = self.selected()
        if name is None:
            self.notify("Import a dataset first.", severity="warning")
            return
        self.app.export_dialog(name)

    def action_convert(self) -> None:
        self.app.convert_dialog()

    def action_versions(self) -> None:
        if self.selected():
            self.query_one("#version-table", DataTable).focus()

    def action_review(self) -> None:
        name = self.selected()
        if name:
            self.app.review_dataset(name)

    def action_refresh(self) -> None:
        self.refresh_datasets()
