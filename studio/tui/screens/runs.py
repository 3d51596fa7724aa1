"""Runs (mode 6): every training run of the workspace and the selected one live.

A timer tails each run's ``events.jsonl`` from the byte offset it reached last time
(:class:`~studio.tui.widgets.run_live.RunTail`), so watching a long run costs only what it
appended: the table (status, step, key metric) and, for the selected run, plots of loss, reward
and KL (a PPO run: reward, KL and value loss), the latest value of every metric, alerts,
checkpoints, learning checks and the end of ``train.log``. The runs are separate processes: this
screen only reads their folders, asks them to stop (``runs.cancel``, which the run honours at its
next step after a checkpoint) or starts them again from their last checkpoint (``runs.resume``).
``m`` marks a run and ``d`` compares the marked run with the selected one (:func:`studio.training.compare.compare_runs`).
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import Worker, WorkerState

from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.widgets.plot import LinePlot, Series
from studio.tui.widgets.run_live import (
    STATUS_STYLES, RunTail, alerts_text, checkpoints_text, checks_text, compare_text_value, format_time,
    format_value, log_text, reap, remember_process, status_text, step_text, summary_text, tail_lines,
)

REFRESH_EVERY = 0.5  # seconds between looks at the selected run
LIST_EVERY = 4  # refreshes of the selected run per refresh of the whole table
LOG_LINES = 12
VALUE_CHARS = 48  # a recipe value in the compare dialog (a long list or mapping is cut)
ACTIVE = ("running", "queued")
RESUMABLE = ("cancelled", "failed", "interrupted")
TABLE_COLUMNS = (("run", "run"), ("back-end", "backend"), ("status", "status"), ("step", "step"),
                 ("key metric", "metric"), ("started", "started"))


class CompareScreen(ModalScreen):
    """Two runs side by side: the recipe keys that differ, metrics with deltas, learning checks."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        a, b = self.result["a"], self.result["b"]
        with Vertical(classes="dialog", id="compare-dialog"):
            title = Text("Compare  ", style="bold")
            title.append("A ", style="bold cyan")
            title.append(a)
            title.append("  with  ", style="dim")
            title.append("B ", style="bold magenta")
            title.append(b)
            yield Label(title, classes="dialog-title")
            yield Label(f"Recipe differences ({len(self.result['config_diff'])})", classes="pane-title")
            config = DataTable(id="compare-config", cursor_type="row", zebra_stripes=True)
            config.add_column("key", key="key")
            config.add_column("A", key="a")
            config.add_column("B", key="b")
            for row in self.result["config_diff"]:
                config.add_row(row["key"], compare_text_value(row["a"], VALUE_CHARS),
                               compare_text_value(row["b"], VALUE_CHARS), key=row["key"])
            yield config
            yield Label("Metrics (final, else last logged)", classes="pane-title")
            metrics = DataTable(id="compare-metrics", cursor_type="row", zebra_stripes=True)
            metrics.add_column("metric", key="name")
            metrics.add_column("A", key="a")
            metrics.add_column("B", key="b")
            metrics.add_column("B − A", key="delta")
            for row in self.result["metrics"]:
                delta = row["delta"]
                metrics.add_row(row["name"], format_value(row["a"]), format_value(row["b"]),
                                Text("—" if delta is None else "0" if delta == 0 else f"{delta:+.4g}",
                                     style="dim" if not delta else ""),
                                key=row["name"])
            yield metrics
            yield Label("Learning checks", classes="pane-title")
            yield Static(self._checks(), id="compare-checks")
            yield Static(Text("Esc closes.", style="dim"))

    def _checks(self) -> Text:
        rows = self.result.get("checks") or []
        if not rows:
            return Text("neither run has learning checks", style="dim")
        text = Text()

        def mark(value: bool | None) -> tuple[str, str]:
            return ("—", "dim") if value is None else ("✓", "bold green") if value else ("✗", "bold red")

        for index, row in enumerate(rows):
            if index:
                text.append("\n")
            text.append(f"{row['metric']}: A ")
            text.append(*mark(row["a"]))
            text.append("  B ")
            text.append(*mark(row["b"]))
        return text

    def action_close(self) -> None:
        self.dismiss(None)


class RunsScreen(ReportsWorkerErrors, Screen):
    TITLE = "Runs"
    AUTO_FOCUS = "#run-table"
    BINDINGS = [
        Binding("c", "cancel_run", "Cancel run"),
        Binding("r", "resume_run", "Resume"),
        Binding("m", "mark", "Mark for compare"),
        Binding("d", "compare", "Compare with marked"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.tails: dict[str, RunTail] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.selected: str | None = None
        self.marked: str | None = None
        self._pending: str | None = None
        self._cells: dict[str, tuple] = {}
        self._shown: dict[str, Any] = {}  # what the detail shows, to redraw only what changed
        self._ticks = 0
        self._ready = False  # the table exists (set in on_mount, before is_mounted turns true)
        self._worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-bar")
        table = DataTable(id="run-table", cursor_type="row", zebra_stripes=True)
        for label, key in TABLE_COLUMNS:
            table.add_column(label, key=key)
        yield table
        with Horizontal(id="run-detail"):
            with VerticalScroll(id="run-plots"):
                yield Static("", id="run-summary")
                yield LinePlot("loss", empty="no loss logged yet", id="plot-loss")
                yield LinePlot("reward", id="plot-reward")
                yield LinePlot("KL", id="plot-kl")
                yield LinePlot("value loss", id="plot-value")
                yield Label("Log (train.log)", classes="pane-title")
                yield Static("", id="run-log")
            with VerticalScroll(id="run-side"):
                yield Label("Metrics (latest)", classes="pane-title")
                metrics = DataTable(id="run-metrics", cursor_type="row", zebra_stripes=True)
                metrics.add_column("metric", key="name")
                metrics.add_column("latest", key="value")
                metrics.add_column("step", key="step")
                yield metrics
                yield Label("Learning checks", classes="pane-title")
                yield Static("", id="run-checks")
                yield Label("Alerts", classes="pane-title")
                yield Static("", id="run-alerts")
                yield Label("Checkpoints", classes="pane-title")
                yield Static("", id="run-checkpoints")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for selector in ("#plot-reward", "#plot-kl", "#plot-value"):
            self.query_one(selector).display = False
        self._ready = True
        pending, self._pending = self._pending, None
        self.refresh_runs()  # selects the newest run
        if pending:
            self.select_run(pending)
        elif self.selected is None:
            self._show_nothing()
        self._timer = self.set_interval(REFRESH_EVERY, self._tick)

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        if not hasattr(self, "_timer"):
            return
        self.refresh_runs()
        self._refresh_selected()
        self._timer.resume()

    # --- the table -----------------------------------------------------------------------------

    def _run(self, run_id: str):
        from studio.training.runs import TrainRun, runs_dir

        return TrainRun(runs_dir(self.app.workspace) / run_id)

    def refresh_runs(self) -> None:
        """Read every run's status and new events; update the table in place (oldest first)."""
        from studio.training.runs import list_runs

        reap()
        try:
            entries = list(reversed(list_runs(self.app.workspace)))
        except OSError as exc:
            self.notify(str(exc), title="Cannot list runs", severity="error")
            return
        table = self.query_one("#run-table", DataTable)
        ids = [entry["run_id"] for entry in entries]
        for key in [str(row.key.value) for row in table.ordered_rows]:
            if key not in ids:
                table.remove_row(key)
                self.tails.pop(key, None)
                self._cells.pop(key, None)
                self.statuses.pop(key, None)
                self.marked = None if self.marked == key else self.marked
        for entry in entries:
            run_id = entry["run_id"]
            self.statuses[run_id] = entry
            tail = self.tails.get(run_id)
            if tail is None:
                tail = self.tails[run_id] = RunTail(self._run(run_id))
            tail.poll()
            self._update_row(run_id)
        if self.selected is not None and self.selected not in self._cells:
            # The selected run's folder was deleted: show the newest instead.
            self.selected = None
            if not ids:
                self._show_nothing()
                self.refresh_bindings()
        if self._pending is not None and self._pending in self._cells:
            self.select_run(self._pending)  # asked for before it was listed
        elif self.selected is None and ids and self._pending is None:
            self.select_run(ids[-1])  # the first run appeared (started from the CLI, say)
        self._update_bar()

    def _row_cells(self, run_id: str) -> tuple:
        status = self.statuses.get(run_id, {})
        tail = self.tails.get(run_id)
        key = tail.key_metric() if tail is not None else None
        name = Text()
        if run_id == self.marked:
            name.append("◆ ", style="bold cyan")
        name.append(run_id)
        metric = Text("—", style="dim") if key is None else Text.assemble((f"{key[0]} ", "dim"), format_value(key[1]))
        return (name, str(status.get("backend") or "—"), status_text(status.get("status", "unknown")),
                step_text(status), metric, format_time(status.get("started") or status.get("created")))

    def _update_row(self, run_id: str) -> None:
        table = self.query_one("#run-table", DataTable)
        cells = self._row_cells(run_id)
        before = self._cells.get(run_id)
        if before is None:
            table.add_row(*cells, key=run_id)
        elif before != cells:
            for (_, column), old, new in zip(TABLE_COLUMNS, before, cells):
                if old != new:
                    table.update_cell(run_id, column, new, update_width=True)
        self._cells[run_id] = cells

    def select_run(self, run_id: str) -> None:
        """Show ``run_id`` (a run the Train screen just started, say) and put the cursor on it."""
        self._pending = run_id
        if not self._ready:
            return
        table = self.query_one("#run-table", DataTable)
        if run_id not in self._cells:
            self.refresh_runs()
        if run_id not in self._cells:
            return
        self._pending = None
        index = table.get_row_index(run_id)
        if table.cursor_row != index:
            table.move_cursor(row=index)
        self.show_run(run_id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "run-table" or event.row_key is None or event.row_key.value is None:
            return
        if event.cursor_row != event.data_table.cursor_row:
            return  # stale: the cursor moved on (select_run) before this was handled
        if str(event.row_key.value) != self.selected:
            self.show_run(str(event.row_key.value))

    # --- the selected run ----------------------------------------------------------------------

    def _show_nothing(self) -> None:
        self.query_one("#run-summary", Static).update(
            Text("No training runs yet: set one up on the Train screen (5), or `studio run RECIPE`.", style="dim"))
        for selector in ("#run-checks", "#run-alerts", "#run-checkpoints", "#run-log"):
            self.query_one(selector, Static).update("")
        self.query_one("#run-metrics", DataTable).clear()
        self.query_one("#plot-loss", LinePlot).show([])
        self.query_one("#plot-loss").display = True
        for selector in ("#plot-reward", "#plot-kl", "#plot-value"):
            self.query_one(selector).display = False

    def show_run(self, run_id: str) -> None:
        self.selected = run_id
        self._shown = {}
        tail = self.tails.get(run_id)
        if tail is None:
            tail = self.tails[run_id] = RunTail(self._run(run_id))
        self.query_one("#run-metrics", DataTable).clear()
        try:
            self._shown["expected"] = len(tail.run.recipe().expect)
        except (ValueError, OSError):
            self._shown["expected"] = None
        self._refresh_selected(force=True)
        self.refresh_bindings()
        self._update_bar()

    def _tick(self) -> None:
        self._ticks += 1
        if self._ticks % LIST_EVERY == 0:
            self.refresh_runs()
        self._refresh_selected()

    def _refresh_selected(self, force: bool = False) -> None:
        if self.selected is None:
            return
        run_id = self.selected
        tail = self.tails.get(run_id)
        if tail is None:
            return
        new_events = tail.poll()
        status = tail.run.status()
        self.statuses[run_id] = {**self.statuses.get(run_id, {}), **status}
        state = status.get("status", "unknown")
        changed = status != self._shown.get("status")
        if changed and self._shown.get("state") != state:
            self.refresh_bindings()
        if force or new_events or changed:
            self._update_row(run_id)
            self.query_one("#run-summary", Static).update(summary_text(run_id, status, tail))
            self._show_plots(tail)
            self._show_metrics(tail)
            self.query_one("#run-alerts", Static).update(alerts_text(tail))
        if force or changed or (new_events and tail.checkpoint_steps != self._shown.get("ckpt")):
            self.query_one("#run-checkpoints", Static).update(checkpoints_text(tail.run.checkpoints(), tail))
            self._shown["ckpt"] = list(tail.checkpoint_steps)
        if force or changed:
            self.query_one("#run-checks", Static).update(
                checks_text(tail.run.metrics(), self._shown.get("expected"), state))
        if force or changed or new_events or state in ACTIVE:
            self.query_one("#run-log", Static).update(log_text(tail_lines(tail.run.path / "train.log", LOG_LINES)))
        self._shown["status"], self._shown["state"] = status, state

    def _show_plots(self, tail: RunTail) -> None:
        def series(name: str) -> list[Series]:
            out = [Series(name, tail.points(name), "bold cyan")]
            if tail.series.get(f"eval_{name}"):
                out.append(Series(f"eval_{name}", tail.points(f"eval_{name}"), "bold magenta"))
            return out

        has_loss = bool(tail.series.get("loss") or tail.series.get("eval_loss"))
        value_loss = tail.value_loss_metric()
        loss_plot = self.query_one("#plot-loss", LinePlot)
        # A PPO run logs no plain loss: its plots are reward, KL and value loss.
        loss_plot.display = has_loss or value_loss is None
        loss_plot.show(series("loss") if has_loss else [])
        for selector, name in (("#plot-reward", tail.reward_metric()), ("#plot-kl", tail.kl_metric()),
                               ("#plot-value", value_loss)):
            plot = self.query_one(selector, LinePlot)
            plot.display = name is not None
            if name is not None:
                plot.show(series(name))

    def _show_metrics(self, tail: RunTail) -> None:
        table = self.query_one("#run-metrics", DataTable)
        shown = {str(row.key.value) for row in table.ordered_rows}
        for name, (step, value) in tail.latest.items():
            cells = (name, format_value(value), str(step))
            if name in shown:
                table.update_cell(name, "value", cells[1])
                table.update_cell(name, "step", cells[2])
            else:
                table.add_row(*cells, key=name)

    # --- actions -------------------------------------------------------------------------------

    def _selected_state(self) -> str | None:
        if self.selected is None:
            return None
        return (self._shown.get("status") or self.statuses.get(self.selected) or {}).get("status")

    def action_cancel_run(self) -> None:
        from studio.training import runs

        if self.selected is None:
            return
        run = self.tails[self.selected].run
        status = run.status()
        state = status.get("status")
        if state not in ACTIVE:
            self.notify(f"run {run.run_id} is {state}: nothing to cancel", severity="warning")
            return
        if state == "queued" and not status.get("pid"):
            # Prepared but never started: no process will ever read the cancel request.
            run.update_status(status="cancelled", reason="cancelled before it started")
            self.notify(f"run {run.run_id} cancelled")
        else:
            runs.cancel(run, wait=False)
            self.notify(f"cancelling {run.run_id}: it saves a checkpoint and stops at its next step "
                        "(r resumes it later)")
        self._refresh_selected(force=True)

    def action_resume_run(self) -> None:
        if self.selected is None:
            return
        state = self._selected_state()
        if state not in RESUMABLE:
            self.notify(f"run {self.selected} is {state}: only a cancelled, failed or interrupted run resumes",
                        severity="warning")
            return
        self._worker = self._resume(self.tails[self.selected].run)

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _resume(self, run):
        from studio.training import runs

        try:
            process = runs.resume(run)
        except ValueError as exc:
            return {"problem": str(exc), "run_id": run.run_id}
        remember_process(run.run_id, process)
        return {"run_id": run.run_id}

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state != WorkerState.SUCCESS:
            return
        result = event.worker.result or {}
        if result.get("problem"):
            self.notify(result["problem"], title="Cannot resume", severity="error")
        else:
            self.notify(f"resumed {result['run_id']} from its last checkpoint")
        if result.get("run_id") == self.selected:
            self._refresh_selected(force=True)

    def action_mark(self) -> None:
        if self.selected is None:
            return
        previous, self.marked = self.marked, None if self.marked == self.selected else self.selected
        for run_id in {previous, self.selected} - {None}:
            if run_id in self._cells:
                self._update_row(run_id)
        if self.marked:
            self.notify(f"marked {self.marked}: select another run and press d to compare")
        self.refresh_bindings()
        self._update_bar()

    def action_compare(self) -> None:
        from studio.training.compare import compare_runs

        if self.marked is None or self.selected is None or self.marked == self.selected:
            self.notify("mark a run with m, select another and press d", severity="warning")
            return
        try:
            result = compare_runs(self._run(self.marked), self._run(self.selected))
        except (ValueError, OSError) as exc:
            self.notify(str(exc), title="Cannot compare", severity="error")
            return
        self.app.push_screen(CompareScreen(result))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        state = self._selected_state()
        if action == "cancel_run":
            return state in ACTIVE or None
        if action == "resume_run":
            return state in RESUMABLE or None
        if action == "mark":
            return self.selected is not None or None
        if action == "compare":
            return (self.marked is not None and self.selected not in (None, self.marked)) or None
        return True

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status.get("status", "unknown")] = counts.get(status.get("status", "unknown"), 0) + 1
        bar.append(f" {len(self._cells)} runs", style="bold")
        for state in ("running", "queued", "completed", "cancelled", "failed", "interrupted"):
            if counts.get(state):
                bar.append("  ")
                bar.append(f"{counts[state]} {state}", style=STATUS_STYLES.get(state, ""))
        if self.selected:
            bar.append("  │  selected ", style="dim")
            bar.append(self.selected)
        if self.marked:
            bar.append("  │  marked ", style="dim")
            bar.append(self.marked, style="bold cyan")
            bar.append(" (d compares)", style="dim")
        self.query_one("#runs-bar", Static).update(bar)
