"""Modal dialogs: import, export, convert, go to record, errors, a recipe file.

Each dialog runs its blocking call (detection, import, export, conversion) in a thread worker
and reads the answer from the worker's SUCCESS state; failures reach the app's error handler.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, DataTable, Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from studio.data.reading import Detection, DetectionError, detect
from studio.data.workflows import convert_file, default_name, export_version, import_file
from studio.events import event_name
from studio.rendering import reject_where, short_id
from studio.store import Workspace
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.service_events import ServiceEvent, service_emitter
from studio.tui.widgets.paths import PathInput

AUTO = "__auto__"
REJECT_ROWS = 500


def format_options(formats: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{name} · {getattr(fmt, 'title', name)}", name) for name, fmt in sorted(formats.items())]


def fill_rejects(table: DataTable, rejects: list) -> None:
    table.clear(columns=True)
    table.add_columns("where", "field", "message")
    for r in rejects[:REJECT_ROWS]:
        table.add_row(reject_where(r.file, r.line, r.index), r.field or "", Text(r.message))
    if len(rejects) > REJECT_ROWS:
        table.add_row("…", "", f"{len(rejects) - REJECT_ROWS:,} more (studio data import --rejects FILE writes all)")
    table.display = bool(rejects)


class Dialog(ReportsWorkerErrors, ModalScreen):
    BINDINGS = [Binding("escape", "close", "Close")]

    def action_close(self) -> None:
        self.dismiss(None)


class ErrorDialog(Dialog):
    def __init__(self, title: str, message: str, details: str | None = None) -> None:
        super().__init__()
        self.title_text, self.message, self.details = title, message, details

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(Text(self.message), id="error-message")
            if self.details:
                with Collapsible(title="details", collapsed=True):
                    with VerticalScroll(classes="details"):
                        yield Static(Text(self.details))
            with Horizontal(classes="buttons"):
                yield Button("OK", id="ok", variant="error")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.dismiss(None)


class GotoDialog(Dialog):
    """Ask for a record number (1-based; negative counts from the end). Dismisses with an index."""

    def __init__(self, total: int, current: int) -> None:
        super().__init__()
        self.total, self.current = total, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small-dialog"):
            yield Label(f"Go to record (1 – {self.total:,})", classes="dialog-title")
            yield Input(placeholder=f"{self.current + 1:,}", id="goto-input")
            yield Static("", id="goto-error", classes="error-text")

    def on_mount(self) -> None:
        self.query_one("#goto-input", Input).focus()

    @on(Input.Submitted, "#goto-input")
    def _submit(self, event: Input.Submitted) -> None:
        raw = event.value.strip().replace(",", "").replace("_", "")
        try:
            number = int(raw)
        except ValueError:
            self.query_one("#goto-error", Static).update(f"{event.value!r} is not a record number")
            return
        if number < 0:
            number = self.total + 1 + number
        if not 1 <= number <= self.total:
            self.query_one("#goto-error", Static).update(f"choose a number from 1 to {self.total:,}")
            return
        self.dismiss(number - 1)


class ImportDialog(Dialog):
    """File → detection (format + reason) → import with progress → count and rejects.

    Dismisses with ``(dataset name, open it?)`` after an import, or None.
    """

    def __init__(self, workspace: Workspace, formats: dict[str, Any], path: str = "") -> None:
        super().__init__()
        self.workspace, self.formats, self.initial_path = workspace, formats, path
        self.detection: Detection | None = None
        self.imported: str | None = None
        self._import_worker: Worker | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="import-dialog"):
            yield Label("Import a file into the workspace", classes="dialog-title")
            yield Label("File", classes="field-label")
            yield PathInput(self.initial_path, id="path")
            with Horizontal(classes="field-row"):
                with Vertical():
                    yield Label("Format", classes="field-label")
                    yield Select([("auto-detect", AUTO), *format_options(self.formats)], value=AUTO,
                                 allow_blank=False, id="format")
                with Vertical():
                    yield Label("Dataset name", classes="field-label")
                    yield Input(placeholder="from the file name", id="name")
            yield Static("Type a path, then Enter to detect its format.", id="detection")
            yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="progress")
            yield Static("", id="result")
            yield DataTable(id="rejects", cursor_type="row", zebra_stripes=True)
            with Horizontal(classes="buttons"):
                yield Button("Detect", id="detect")
                yield Button("Import", id="import", variant="primary", disabled=True)
                yield Button("Open dataset", id="open", variant="success")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#progress").display = False
        self.query_one("#rejects").display = False
        self.query_one("#open").display = False
        self.query_one("#path", PathInput).focus()
        if self.initial_path:
            self.run_detect()

    # --- detection -------------------------------------------------------------------------

    def _override(self) -> str | None:
        value = self.query_one("#format", Select).value
        return None if value in (AUTO, Select.NULL) else str(value)

    def _invalidate(self) -> None:
        self.detection = None
        self.query_one("#import", Button).disabled = True

    @on(Input.Changed, "#path")
    def _path_changed(self) -> None:
        self._invalidate()

    @on(Select.Changed, "#format")
    def _format_changed(self) -> None:
        self._invalidate()
        if self.query_one("#path", PathInput).path is not None:
            self.run_detect()

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#detect")
    def run_detect(self) -> None:
        path = self.query_one("#path", PathInput).path
        if path is None:
            self.query_one("#detection", Static).update(Text("Enter the path of a file to import.", style="red"))
            return
        self._invalidate()
        self.query_one("#detection", Static).update(Text(f"Detecting the format of {path} …", style="dim"))
        self._detect(path, self._override())

    @work(thread=True, exclusive=True, group="detect", exit_on_error=False)
    def _detect(self, path: Path, override: str | None) -> tuple[Path, Detection | DetectionError]:
        try:
            return path, detect(path, self.formats, override=override)
        except DetectionError as exc:
            return path, exc

    def _detected(self, path: Path, outcome: Detection | DetectionError) -> None:
        status = self.query_one("#detection", Static)
        if isinstance(outcome, DetectionError):
            status.update(Text(f"✗ {outcome}", style="red"))
            return
        self.detection = outcome
        name = self.query_one("#name", Input)
        name.placeholder = default_name(path)
        text = Text()
        text.append("✓ format: ", style="green")
        text.append(outcome.format, style="bold")
        text.append(f"  ({outcome.container})\n", style="dim")
        text.append(outcome.reason)
        target = name.value.strip() or default_name(path)
        exists = target in self.workspace.dataset_names()
        text.append(f"\n→ {'adds a new version to' if exists else 'creates'} dataset ", style="dim")
        text.append(target, style="bold")
        status.update(text)
        self.query_one("#import", Button).disabled = False
        self.query_one("#import", Button).focus()

    # --- import ----------------------------------------------------------------------------

    @on(Input.Submitted, "#name")
    @on(Button.Pressed, "#import")
    def run_import(self) -> None:
        path = self.query_one("#path", PathInput).path
        if path is None or self.detection is None:
            self.run_detect()
            return
        name = self.query_one("#name", Input).value.strip() or None
        self._set_busy(True)
        self.query_one("#result", Static).update(Text(f"Importing {path.name} …", style="dim"))
        self._import_worker = self._import(path, self._override(), name)

    def _set_busy(self, busy: bool) -> None:
        for selector in ("#path", "#format", "#name", "#detect", "#import"):
            self.query_one(selector).disabled = busy
        self.query_one("#progress").display = busy
        self.query_one("#close", Button).label = "Cancel" if busy else "Close"

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _import(self, path: Path, override: str | None, name: str | None):
        worker = get_current_worker()
        with service_emitter(self, "import", cancelled=lambda: worker.is_cancelled) as emit:
            return import_file(self.workspace, path, self.formats, name=name, override=override,
                               progress=lambda rows: emit({"event": "progress", "rows": rows}),
                               cancelled=lambda: worker.is_cancelled)

    def on_service_event(self, message: ServiceEvent) -> None:
        progress = [e for e in message.events if event_name(e) == "progress"]
        if progress and self._import_worker is not None and self._import_worker.is_running:
            rows = progress[-1].get("rows", 0)
            self.query_one("#result", Static).update(Text(f"Importing … {rows:,} rows read", style="dim"))

    def _imported(self, result) -> None:
        self._set_busy(False)
        info = result.version
        self.imported = info.dataset
        text = Text()
        text.append(f"✓ Imported {info.num_records:,} records", style="bold green")
        text.append(" into ")
        text.append(f"{info.dataset}@{short_id(info.id)}", style="bold")
        text.append(f"  ({', '.join(f'{k} {v:,}' for k, v in sorted(info.kinds.items())) or 'empty'})")
        if result.rejects:
            text.append(f"\n✗ {len(result.rejects):,} row(s) rejected:", style="bold red")
        else:
            text.append("\nNo rows rejected.", style="dim")
        self.query_one("#result", Static).update(text)
        fill_rejects(self.query_one("#rejects", DataTable), result.rejects)
        self.query_one("#import", Button).disabled = True
        self.query_one("#open", Button).display = True
        self.query_one("#open", Button).focus()

    # --- state and closing ------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if event.state == WorkerState.SUCCESS:
            if group == "detect":
                self._detected(*event.worker.result)
            elif group == "import":
                self._imported(event.worker.result)
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED) and group == "import":
            self._set_busy(False)
            message = "Import cancelled; nothing was written." if event.state == WorkerState.CANCELLED \
                else f"Import failed: {event.worker.error}"
            self.query_one("#result", Static).update(Text(message, style="red"))
        elif event.state == WorkerState.ERROR and group == "detect":
            self.query_one("#detection", Static).update(Text(f"✗ {event.worker.error}", style="red"))

    @on(Button.Pressed, "#open")
    def _open(self) -> None:
        self.dismiss((self.imported, True))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        worker = self._import_worker
        if worker is not None and worker.is_running:
            worker.cancel()
            return
        self.dismiss((self.imported, False) if self.imported else None)


class ExportDialog(Dialog):
    """Write a dataset version to a file in any format; reports written, skipped and dropped."""

    def __init__(self, workspace: Workspace, formats: dict[str, Any], ref: str) -> None:
        super().__init__()
        self.workspace, self.formats, self.ref = workspace, formats, ref
        name, _, version = ref.partition("@")
        self.info = workspace.version_info(name, version or None)  # raises StoreError for a bad ref
        self.ref = f"{name}@{self.info.id}"  # pinned: a new head while the dialog is open changes nothing
        self._auto_path = ""
        self._confirmed: Path | None = None
        self.report = None

    def compose(self) -> ComposeResult:
        name, info = self.info.dataset, self.info
        options = format_options(self.formats)
        with Vertical(classes="dialog", id="export-dialog"):
            yield Label(f"Export {name}@{short_id(info.id)} ({info.num_records:,} records)", classes="dialog-title")
            yield Label("Format", classes="field-label")
            yield Select(options, value=self._initial_format(), allow_blank=not options, id="format")
            yield Label("Output file", classes="field-label")
            yield PathInput(id="out")
            yield Static("", id="export-note")
            yield Static("", id="result")
            with Horizontal(classes="buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Close", id="close")

    def _initial_format(self):
        source = (self.info.source or {}).get("format") if self.info else None
        if source in self.formats:
            return source
        return sorted(self.formats)[0] if self.formats else Select.NULL

    def on_mount(self) -> None:
        self._suggest_path()
        self.query_one("#format", Select).focus()

    def _format_name(self) -> str | None:
        value = self.query_one("#format", Select).value
        return None if value == Select.NULL else str(value)

    def _suggest_path(self) -> None:
        fmt = self._format_name()
        if fmt is None:
            return
        out = self.query_one("#out", PathInput)
        if out.value and out.value != self._auto_path:
            return  # the user typed a path: keep it
        ext = getattr(self.formats[fmt], "default_extension", ".jsonl")
        self._auto_path = str(self.workspace.root / "exports" / f"{self.ref.partition('@')[0]}-{fmt}{ext}")
        out.value = self._auto_path

    @on(Select.Changed, "#format")
    def _format_changed(self) -> None:
        self._suggest_path()

    @on(Input.Changed, "#out")
    def _out_changed(self) -> None:
        self._confirmed = None
        self.query_one("#export-note", Static).update("")

    @on(Input.Submitted, "#out")
    @on(Button.Pressed, "#export")
    def run_export(self) -> None:
        fmt = self._format_name()
        out = self.query_one("#out", PathInput).path
        note = self.query_one("#export-note", Static)
        if fmt is None or out is None:
            note.update(Text("Choose a format and an output file.", style="red"))
            return
        out = out if out.is_absolute() else Path.cwd() / out
        if out.exists() and self._confirmed != out:
            self._confirmed = out
            note.update(Text(f"{out} exists: press Export again to replace it.", style="yellow"))
            return
        self.query_one("#export", Button).disabled = True
        self.query_one("#result", Static).update(Text(f"Exporting to {out} …", style="dim"))
        self._export(fmt, out)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, fmt: str, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, export_version(self.workspace, self.ref, self.formats[fmt], out)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "export":
            return
        if event.state == WorkerState.SUCCESS:
            out, report = event.worker.result
            self.report = report
            text = Text()
            text.append(f"✓ Wrote {report.written:,} records", style="bold green")
            text.append(f" to {out}")
            if report.skipped:
                text.append(f"\n{report.skipped:,} record(s) skipped (the format cannot hold them)", style="yellow")
            for line in report.notes():
                text.append(f"\n• {line}", style="yellow")
            self.query_one("#result", Static).update(text)
            self.query_one("#export", Button).disabled = False
            self.query_one("#close", Button).focus()
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.query_one("#export", Button).disabled = False
            self.query_one("#result", Static).update(Text(f"Export failed: {event.worker.error}", style="red"))

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(self.report)


class ConvertDialog(Dialog):
    """File → format → file, without touching the workspace."""

    def __init__(self, formats: dict[str, Any], path: str = "") -> None:
        super().__init__()
        self.formats, self.initial_path = formats, path
        self._auto_out = ""

    def compose(self) -> ComposeResult:
        options = format_options(self.formats)
        with Vertical(classes="dialog", id="convert-dialog"):
            yield Label("Convert a file to another format", classes="dialog-title")
            yield Label("Input file", classes="field-label")
            yield PathInput(self.initial_path, id="src")
            with Horizontal(classes="field-row"):
                with Vertical():
                    yield Label("Read as", classes="field-label")
                    yield Select([("auto-detect", AUTO), *options], value=AUTO, allow_blank=False, id="from")
                with Vertical():
                    yield Label("Write as", classes="field-label")
                    yield Select(options, value=options[0][1] if options else Select.NULL,
                                 allow_blank=not options, id="to")
            yield Label("Output file", classes="field-label")
            yield PathInput(id="out")
            yield Static("", id="result")
            yield DataTable(id="rejects", cursor_type="row", zebra_stripes=True)
            with Horizontal(classes="buttons"):
                yield Button("Convert", id="convert", variant="primary")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#rejects").display = False
        self.query_one("#src", PathInput).focus()
        self._suggest_out()

    def _target(self) -> str | None:
        value = self.query_one("#to", Select).value
        return None if value == Select.NULL else str(value)

    @on(Input.Changed, "#src")
    @on(Select.Changed, "#to")
    def _suggest_out(self) -> None:
        src = self.query_one("#src", PathInput).path
        target = self._target()
        out = self.query_one("#out", PathInput)
        if src is None or target is None or (out.value and out.value != self._auto_out):
            return
        ext = getattr(self.formats[target], "default_extension", ".jsonl")
        stem = src.name.split(".")[0] or "converted"
        self._auto_out = str(src.with_name(f"{stem}.{target}{ext}"))
        out.value = self._auto_out

    @on(Input.Submitted)
    @on(Button.Pressed, "#convert")
    def run_convert(self) -> None:
        src = self.query_one("#src", PathInput).path
        out = self.query_one("#out", PathInput).path
        target = self._target()
        result = self.query_one("#result", Static)
        if src is None or out is None or target is None:
            result.update(Text("Choose an input file, a target format and an output file.", style="red"))
            return
        source_format = self.query_one("#from", Select).value
        override = None if source_format in (AUTO, Select.NULL) else str(source_format)
        self.query_one("#convert", Button).disabled = True
        result.update(Text(f"Converting {src.name} → {target} …", style="dim"))
        self._convert(src, target, out, override)

    @work(thread=True, exclusive=True, group="convert", exit_on_error=False)
    def _convert(self, src: Path, target: str, out: Path, override: str | None):
        try:
            read, report = convert_file(src, self.formats, target, out, override=override)
        except DetectionError as exc:
            return exc
        return src, out, read, report

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "convert":
            return
        self.query_one("#convert", Button).disabled = event.state == WorkerState.RUNNING
        result = self.query_one("#result", Static)
        if event.state == WorkerState.SUCCESS:
            outcome = event.worker.result
            if isinstance(outcome, DetectionError):
                result.update(Text(f"✗ {outcome}", style="red"))
                return
            src, out, read, report = outcome
            text = Text()
            text.append("read as ", style="dim")
            text.append(read.detection.format, style="bold")
            text.append(f": {read.detection.reason}\n", style="dim")
            text.append(f"✓ Wrote {report.written:,} of {len(read.records):,} records", style="bold green")
            text.append(f" to {out}")
            if report.skipped:
                text.append(f"\n{report.skipped:,} record(s) skipped", style="yellow")
            for line in report.notes():
                text.append(f"\n• {line}", style="yellow")
            if read.rejects:
                text.append(f"\n✗ {len(read.rejects):,} row(s) of the input rejected:", style="bold red")
            result.update(text)
            fill_rejects(self.query_one("#rejects", DataTable), read.rejects)
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            result.update(Text(f"Conversion failed: {event.worker.error}", style="red"))

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class RecipeFileDialog(Dialog):
    """Ask for a recipe path; dismisses with a Path."""

    def __init__(self, title: str, path: str = "", must_exist: bool = False) -> None:
        super().__init__()
        self.title_text, self.initial, self.must_exist = title, path, must_exist

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="recipe-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield PathInput(self.initial, id="recipe-path", placeholder="path/to/recipe.yaml (→ completes)")
            yield Static("", id="recipe-error", classes="error-text")
            with Horizontal(classes="buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#recipe-path", PathInput).focus()

    @on(Input.Submitted, "#recipe-path")
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        path = self.query_one("#recipe-path", PathInput).path
        if path is None:
            self.query_one("#recipe-error", Static).update("Enter a path.")
            return
        if self.must_exist and not path.is_file():
            self.query_one("#recipe-error", Static).update(f"{path} is not a file.")
            return
        self.dismiss(path)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
