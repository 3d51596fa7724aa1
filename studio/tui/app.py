"""The studio's terminal app.

Seven modes (Datasets, Plugins, Curate, Generate, Train, Runs, Evaluate) plus any screens plugins
register through ``register_screens``; review mode is pushed on the Datasets stack from the record
browser. Train (5) sets up and starts a training run, which always runs in its own process; Runs (6)
watches, cancels, resumes and compares those runs; Evaluate (7) scores models on benchmarks, base
against tuned, and puts one prompt to two models side by side.
A mode key (1-7) always shows that mode's own screen, closing what was pushed on it.
Everything blocking runs in thread workers; a failed worker anywhere ends up in
:meth:`StudioApp.report_worker_error`, which shows it instead of crashing, and a widget that
cannot be laid out or drawn is replaced by an error line (:mod:`studio.tui.render_guard`).
"""
from __future__ import annotations

import traceback
import weakref
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from studio import plugins
from studio.store import StoreError, Workspace
from studio.tui.commands import StudioCommands
from studio.tui.render_guard import RenderFailed, render_culprit
from studio.tui.screens.browser import BrowserScreen
from studio.tui.screens.curate import CurateScreen
from studio.tui.screens.curate_results import CurateResultsScreen
from studio.tui.screens.datasets import DatasetsScreen
from studio.tui.screens.dialogs import ConvertDialog, ErrorDialog, ExportDialog, ImportDialog
from studio.tui.screens.evaluate import EvaluateScreen
from studio.tui.screens.generate import GenerateScreen
from studio.tui.screens.help import HelpScreen
from studio.tui.screens.plugins import InstallPluginDialog, PluginsScreen
from studio.tui.screens.review import ReviewScreen
from studio.tui.screens.runs import RunsScreen
from studio.tui.screens.train import TrainScreen

PaletteCommand = tuple[str, str, Callable[[], object]]


def _keys(bindings: Iterable) -> set[str]:
    keys: set[str] = set()
    for binding in bindings:
        key = binding.key if isinstance(binding, Binding) else binding[0]
        keys.update(k.strip() for k in key.split(","))
    return keys


class StudioApp(App):
    CSS_PATH = Path(__file__).with_name("studio.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "Alignment Studio"
    COMMANDS = App.COMMANDS | {StudioCommands}
    MODES = {"datasets": DatasetsScreen, "plugins": PluginsScreen, "curate": CurateScreen,
             "generate": GenerateScreen, "train": TrainScreen, "runs": RunsScreen, "evaluate": EvaluateScreen}
    DEFAULT_MODE = "datasets"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("1", "mode('datasets')", "Datasets"),
        Binding("2", "mode('plugins')", "Plugins"),
        Binding("3", "mode('curate')", "Curate"),
        Binding("4", "mode('generate')", "Generate"),
        Binding("5", "mode('train')", "Train"),
        Binding("6", "mode('runs')", "Runs"),
        Binding("7", "mode('evaluate')", "Evaluate"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, workspace: Workspace, host: plugins.PluginHost | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self._host = host
        # (dataset, version id) -> VersionView.stats(): versions are immutable, so this never goes stale.
        self.stats_cache: dict[tuple[str, str], dict] = {}
        self._plugin_keys: list[str] = []
        self._failed_widgets: weakref.WeakSet[Widget] = weakref.WeakSet()
        self.render_failures: list[str] = []  # what contain_render_error replaced, for the user and tests

    @property
    def host(self) -> plugins.PluginHost:
        if self._host is None:
            self._host = plugins.get_host()
        return self._host

    def on_mount(self) -> None:
        self.sub_title = str(self.workspace.root)
        self.install_plugin_screens()
        self._prewarm()

    @work(thread=True, group="prewarm", exit_on_error=False)
    def _prewarm(self) -> None:
        # Opening the first dataset imports the Arrow stack (about a second); pay it while the
        # user is still reading the dataset list.
        import datasets  # noqa: F401
        import pyarrow.compute  # noqa: F401

    # --- errors ------------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        # Textual's one exit for unexpected errors: a widget that cannot be laid out or drawn is
        # replaced by an error line instead (studio.tui.render_guard); anything else still exits.
        widget = render_culprit(error)
        if widget is None or not self.contain_render_error(widget, error):
            super()._handle_exception(error)

    def contain_render_error(self, widget: Widget, error: Exception) -> bool:
        """Hide ``widget``, show a :class:`RenderFailed` line in its place and tell the user;
        False when that is not possible (it failed again, or it is not in a screen any more)."""
        parent = widget.parent
        if widget in self._failed_widgets or not isinstance(parent, Widget) or not widget.is_attached:
            return False
        self._failed_widgets.add(widget)
        widget.display = False
        parent.mount(RenderFailed(widget, error), after=widget)
        self.render_failures.append(f"{type(widget).__name__}#{widget.id}: {type(error).__name__}: {error}")
        self.log.error("".join(traceback.format_exception(error)))
        self.notify(f"{type(error).__name__}: {error}", title=f"{type(widget).__name__} could not be drawn",
                    severity="error", timeout=10)
        return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # The app's own workers (screens forward theirs through ReportsWorkerErrors).
        if event.state == WorkerState.ERROR and event.worker.group != "prewarm":
            self.report_worker_error(event.worker)

    def report_worker_error(self, worker: Worker) -> None:
        """The one place a failed worker is turned into something the user sees."""
        error = worker.error
        what = worker.group if worker.group != "default" else (worker.name or "task")
        if error is None:
            return
        if isinstance(error, InterruptedError):
            self.notify(f"{what} cancelled", severity="warning")
            return
        details = "".join(traceback.format_exception(error))
        self.push_screen(ErrorDialog(f"{what.capitalize()} failed", f"{type(error).__name__}: {error}", details))

    # --- plugins -----------------------------------------------------------------------------

    def reload_plugins(self) -> None:
        plugins.reset_host()
        self._host = plugins.get_host()
        self.install_plugin_screens()

    def _reserved_keys(self) -> set[str]:
        keys = _keys(self.BINDINGS) | {self.COMMAND_PALETTE_BINDING, "ctrl+q", "ctrl+c", "tab", "shift+tab", "enter"}
        for screen in (DatasetsScreen, BrowserScreen, PluginsScreen):
            keys |= _keys(screen.BINDINGS)
        return keys

    def install_plugin_screens(self) -> None:
        """Bind each plugin screen's key (it is in the palette either way)."""
        for key in self._plugin_keys:
            self._bindings.key_to_bindings.pop(key, None)
        self._plugin_keys = []
        try:
            entries = self.host.items("screen")
        except Exception as exc:  # noqa: BLE001 - a broken host must not stop the app
            self.notify(f"{type(exc).__name__}: {exc}", title="Plugin screens unavailable", severity="error")
            return
        reserved = self._reserved_keys()
        for name, entry in sorted(entries.items()):
            key = getattr(entry, "key", None)
            if not key or key in reserved or key in self._plugin_keys:
                self.notify(f"Screen {entry.title!r} wants key {key!r}, which is taken; open it from the palette.",
                            title="Plugin screen key", severity="warning")
                continue
            self.bind(key, f"plugin_screen({name!r})", description=entry.title)
            self._plugin_keys.append(key)
        self.refresh_bindings()

    def action_plugin_screen(self, name: str) -> None:
        entry = self.host.items("screen").get(name)
        if entry is None:
            self.notify(f"No plugin screen {name!r} is loaded.", severity="error")
            return
        owner = self.host.owner("screen", name) or "?"
        try:
            screen = entry.factory()
            if not isinstance(screen, Screen):
                raise TypeError(f"the factory returned {type(screen).__name__}, not a textual Screen")
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the app down
            self.notify(f"{type(exc).__name__}: {exc}", title=f"Screen {entry.title!r} (plugin {owner}) failed",
                        severity="error", timeout=10)
            return
        self.push_screen(screen)

    # --- navigation and dialogs ------------------------------------------------------------

    async def action_mode(self, mode: str) -> None:
        """A mode key: that mode's own screen, from anywhere (also from the record browser, review
        or curation results, which are pushed on a mode: they are closed)."""
        if self.current_mode != mode:
            await self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            screen = self.screen
            if not getattr(screen, "may_leave", lambda: True)():
                return  # the screen said why (a commit still writing, say)
            await self.pop_screen()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "mode" and isinstance(self.screen, ModalScreen):
            return False  # a dialog is answered or closed first; its fields take digits
        return True

    def open_dataset(self, ref: str) -> None:
        """Browse ``name`` or ``name@version`` on the Datasets stack."""
        if self.current_mode != "datasets":
            self.switch_mode("datasets")
        if isinstance(self.screen, BrowserScreen):
            self.screen.open_ref(ref)
            return
        self.push_screen(BrowserScreen(ref))

    def review_dataset(self, ref: str, index: int = 0) -> None:
        """Review ``name`` or ``name@version`` record by record, on the Datasets stack."""
        if self.current_mode != "datasets":
            self.switch_mode("datasets")
        self.push_screen(ReviewScreen(ref, index))

    def curation_results(self, ref: str) -> None:
        """What curating produced ``ref``: removals by reason, duplicates, changes, overrides."""
        self.push_screen(CurateResultsScreen(ref))

    def import_dialog(self, path: str = "") -> None:
        def done(result: tuple[str, bool] | None) -> None:
            if result and result[1]:
                self.open_dataset(result[0])

        self.push_screen(ImportDialog(self.workspace, self.host.formats(), path), done)

    def export_dialog(self, ref: str) -> None:
        try:
            dialog = ExportDialog(self.workspace, self.host.formats(), ref)
        except StoreError as exc:
            self.notify(str(exc), title="Cannot export", severity="error")
            return
        self.push_screen(dialog)

    def convert_dialog(self, path: str = "") -> None:
        self.push_screen(ConvertDialog(self.host.formats(), path))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    def palette_commands(self, screen: Screen) -> list[PaletteCommand]:
        commands: list[PaletteCommand] = [
            ("Datasets screen", "List the datasets of this workspace", lambda: self.action_mode("datasets")),
            ("Plugins screen", "Loaded plugins, failures and install", lambda: self.action_mode("plugins")),
            ("Curate screen", "Build, preview and run a curation pipeline", lambda: self.action_mode("curate")),
            ("Generate screen", "Synthetic data through an OpenAI-compatible API: estimate, run, retry",
             lambda: self.action_mode("generate")),
            ("Train screen", "Set up a training run from a recipe: preview the loss mask, check, start",
             lambda: self.action_mode("train")),
            ("Runs screen", "Training runs live: plots, metrics, alerts, checks; cancel, resume, compare",
             lambda: self.action_mode("runs")),
            ("Evaluate screen", "Benchmarks base against tuned: deltas, significance, flipped items; the arena",
             lambda: self.action_mode("evaluate")),
            ("Import a file…", "Detect a file's format and import it as a dataset version", self.import_dialog),
            ("Convert a file…", "Rewrite a file in another format", self.convert_dialog),
            ("Install a plugin…", "pip-install a plugin into the studio's environment",
             lambda: self.push_screen(InstallPluginDialog())),
            ("Reload plugins", "Load the plugins again from the environment", self.reload_plugins),
            ("Help: keys", "Every key of the current screen", self.action_help),
        ]
        ref = None
        if isinstance(screen, BrowserScreen) and screen.view is not None:
            ref = f"{screen.view.info.dataset}@{screen.view.info.id}"
            commands += [
                ("Go to record…", "Jump to a record number", screen.action_goto),
                ("Search records…", "Find text in any turn", screen.action_search),
                ("Show statistics", "Kinds, turns, roles, labels and meta fields", lambda: screen.action_panel("stats")),
                ("Show version history", "Versions and lineage of this dataset",
                 lambda: screen.action_panel("history")),
            ]
        elif isinstance(screen, DatasetsScreen):
            ref = screen.selected()
        if ref:
            commands.append((f"Export {ref.split('@')[0]}…", "Write this dataset version in any format",
                             lambda r=ref: self.export_dialog(r)))
            index = screen.index if isinstance(screen, BrowserScreen) else 0
            commands.append((f"Review {ref.split('@')[0]}", "Flag, edit, delete; accept, reject or swap pairs",
                             lambda r=ref, i=index: self.review_dataset(r, i)))
            if _side_table_exists(self.workspace, ref):
                commands.append((f"Curation results of {ref.split('@')[0]}",
                                 "Removals by reason, duplicates next to their originals, overrides",
                                 lambda r=ref: self.curation_results(r)))
        for name in self.workspace.dataset_names():
            commands.append((f"Open dataset {name}", "Browse its records", lambda n=name: self.open_dataset(n)))
        try:
            screens = self.host.items("screen")
        except Exception:  # noqa: BLE001
            screens = {}
        for name, entry in sorted(screens.items()):
            commands.append((f"Open screen {entry.title}", f"from plugin {self.host.owner('screen', name)}",
                             lambda n=name: self.action_plugin_screen(n)))
        return commands


def _side_table_exists(workspace: Workspace, ref: str) -> bool:
    from studio.curation.pipeline import SIDE_TABLE

    name, _, version = ref.partition("@")
    try:
        return (workspace.version_dir(name, version or None) / SIDE_TABLE).is_file()
    except (StoreError, OSError):
        return False


def run_app(workspace: Workspace) -> None:
    StudioApp(workspace).run()
