"""Plugins: what is loaded, what each provides, why a failed one failed; pip install in a worker."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Log, Static
from textual.worker import Worker, WorkerState

from studio import plugins
from studio.events import event_name
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.dialogs import Dialog
from studio.tui.service_events import ServiceEvent, service_emitter

STATUS_STYLES = {"ok": "green", "failed": "bold red", "disabled": "dim"}


def plugin_detail(info, show_traceback: bool = False) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("plugin", Text(info.name, style="bold"))
    grid.add_row("status", Text(info.status, style=STATUS_STYLES.get(info.status, "")))
    grid.add_row("module", Text(info.module))
    grid.add_row("distribution", Text(f"{info.distribution or '—'} {info.version or ''}".strip()))
    grid.add_row("built in", "yes" if info.builtin else "no")
    grid.add_row("provides", Text("\n".join(info.provides) if info.provides else "nothing"))
    if info.error:
        grid.add_row("error", Text(info.error, style="red"))
    if info.traceback:
        if show_traceback:
            grid.add_row("traceback", Text(info.traceback, style="red"))
        else:
            grid.add_row("traceback", Text("press t to show", style="dim italic"))
    return grid


class PluginsScreen(ReportsWorkerErrors, Screen):
    TITLE = "Plugins"
    BINDINGS = [
        Binding("i", "install", "Install"),
        Binding("r", "reload", "Reload"),
        Binding("t", "traceback", "Traceback"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.show_traceback = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="plugins-body"):
            table = DataTable(id="plugin-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("plugin", "version", "status", "provides")
            yield table
            with VerticalScroll(id="plugin-detail-scroll"):
                yield Static("", id="plugin-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_plugins()

    def refresh_plugins(self) -> None:
        table = self.query_one("#plugin-table", DataTable)
        keep = self.selected()
        table.clear()
        listing = self.app.host.listing()
        for info in listing:
            style = STATUS_STYLES.get(info.status, "")
            failed = info.status == "failed"
            provides = ", ".join(info.provides) if info.provides else ("—" if not failed else info.error or "")
            table.add_row(Text(info.name, style="bold red" if failed else "bold"),
                          Text(info.version or "—", style="red" if failed else ""),
                          Text(info.status, style=style),
                          Text(provides, style="red" if failed else ""), key=info.name)
        names = [info.name for info in listing]
        if keep in names:
            table.move_cursor(row=names.index(keep))
        table.focus()
        self._show_detail(self.selected())

    def selected(self) -> str | None:
        table = self.query_one("#plugin-table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _show_detail(self, name: str | None) -> None:
        info = self.app.host.plugins.get(name) if name else None
        self.query_one("#plugin-detail", Static).update(
            plugin_detail(info, self.show_traceback) if info else Text("no plugins", style="dim"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self._show_detail(event.row_key.value)

    def action_traceback(self) -> None:
        self.show_traceback = not self.show_traceback
        self._show_detail(self.selected())

    def action_reload(self) -> None:
        self.app.reload_plugins()
        self.refresh_plugins()
        self.notify(f"{len(self.app.host.listing())} plugins loaded")

    def action_install(self) -> None:
        def done(installed: bool | None) -> None:
            if installed:
                self.refresh_plugins()

        self.app.push_screen(InstallPluginDialog(), done)


class InstallPluginDialog(Dialog):
    """pip-installs a plugin into the studio's environment, streaming pip's output."""

    def __init__(self) -> None:
        super().__init__()
        self.installed = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="install-dialog"):
            yield Label("Install a plugin", classes="dialog-title")
            yield Label("pip requirement (a name, name==version, a path or a git URL)", classes="field-label")
            yield Input(placeholder="studio-plugin-example", id="spec")
            yield Static("", id="install-status")
            yield Log(id="pip-log", auto_scroll=True)
            with Horizontal(classes="buttons"):
                yield Button("Install", id="install", variant="primary")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#spec", Input).focus()

    @on(Input.Submitted, "#spec")
    @on(Button.Pressed, "#install")
    def run_install(self) -> None:
        spec = self.query_one("#spec", Input).value.strip()
        if not spec:
            self.query_one("#install-status", Static).update(Text("Type what to install.", style="red"))
            return
        self.query_one("#install", Button).disabled = True
        self.query_one("#spec", Input).disabled = True
        self.query_one("#install-status", Static).update(Text(f"Installing {spec} …", style="yellow"))
        self._install(spec)

    @work(thread=True, exclusive=True, group="install", exit_on_error=False)
    def _install(self, spec: str) -> int:
        with service_emitter(self, "install") as emit:
            return plugins.install(spec, echo=lambda line: emit({"event": "log", "line": line}))

    def on_service_event(self, message: ServiceEvent) -> None:
        log = self.query_one("#pip-log", Log)
        for event in message.events:
            if event_name(event) == "log":
                log.write_line(str(event.get("line", "")))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "install" or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self.query_one("#install", Button).disabled = False
        self.query_one("#spec", Input).disabled = False
        status = self.query_one("#install-status", Static)
        if event.state == WorkerState.SUCCESS and event.worker.result == 0:
            self.installed = True
            self.app.reload_plugins()
            status.update(Text("✓ Installed; plugins reloaded.", style="bold green"))
        elif event.state == WorkerState.SUCCESS:
            status.update(Text(f"✗ pip exited with code {event.worker.result}; see its output above.", style="red"))
        else:
            status.update(Text(f"✗ install failed: {event.worker.error}", style="red"))
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(self.installed)

    def action_close(self) -> None:
        self.dismiss(self.installed)
