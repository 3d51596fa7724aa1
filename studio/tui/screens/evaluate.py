"""Evaluate (mode 7): pick models and tasks, run the evaluation with live progress, read the
results base against tuned (deltas and significance), drill down to the items that flipped, and
put one prompt to two models side by side in the arena.

The set-up is a :class:`~studio.tui.screens.recipe_form.RecipeFormScreen` over the core
:class:`~studio.recipes.evaluate.EvalRecipe`: a recipe to start from, the base model and the
model it is compared with (the embedded model, the workspace's runs, or what a recipe names),
more models typed in (folders, run ids, hub ids), the tasks with each task's options form
generated from its evaluator's config model, and the recipe's run-wide settings. The task
picker edits one task at a time; picking a task adds it to the evaluation and ``x`` takes the
shown one out again, so several tasks run in one evaluation, each with its own options.

The screen calls the headless :func:`~studio.evaluation.runner.run_evaluation` in a thread
worker, exactly as ``studio eval`` does; its events arrive as
:class:`~studio.tui.service_events.ServiceEvent` bursts. Cancelling sets a flag the runner
checks between chunks: what was scored is cached, and running again scores only the rest.
Reports are read back with :mod:`studio.evaluation.reports`.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Select, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from studio.evaluation.reports import EvalReport, find_report, flip_details, list_reports
from studio.evaluation.runner import check_evaluation, run_evaluation
from studio.events import event_name
from studio.recipes import load_recipe
from studio.recipes.evaluate import EvalRecipe
from studio.serving.launch import build_event_text
from studio.training.runs import list_runs
from studio.tui.screens.evaluate_flips import EvalFlipsScreen
from studio.tui.screens.recipe_form import Choice, RecipeFormScreen, Section
from studio.tui.service_events import ServiceEvent, service_emitter
from studio.tui.widgets.arena import ArenaPane
from studio.tui.widgets.op_form import fields_model, initial_raw, validate_form
from studio.tui.widgets.selects import select_value

EMBEDDED_MODELS = (("embedded (tiny)", "embedded"), ("embedded:small", "embedded:small"))
RUN_FIELDS = ("name", "limit", "batch_size", "seed", "allow_code_execution", "judge", "budget", "reward_model",
              "trust_remote_code", "device")
REDRAW_EVERY = 0.2


class ModelSettings(BaseModel):
    """The models the pickers cannot offer: typed in, evaluated after the picked ones."""

    model_config = ConfigDict(extra="forbid")

    more_models: list[str] = Field(default_factory=list, description="more models compared with the base: "
                                   "folders, run ids or hub ids, separated by commas")
    labels: list[str] | None = EvalRecipe.model_fields["labels"]


# --- reading a report ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.{digits}f}"


def model_labels(metrics: dict[str, Any]) -> list[str]:
    labels = [m.get("label") or m.get("ref") for m in metrics.get("models") or [] if isinstance(m, dict)]
    if not labels:  # a report still running has no metrics.json: the first task's models
        for results in (metrics.get("tasks") or {}).values():
            return list(results)
    return labels


def result_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The Results table: with several models one row per comparison (task, metric, compared
    model: values, delta, p-value, significance, flips), the primary metric of a task first;
    with one model one row per task and metric (value, stderr, n)."""
    labels = model_labels(metrics)
    comparisons = metrics.get("comparisons") or []
    if len(labels) > 1 and comparisons:
        return [{"task": c["task"], "metric": c["metric"], "base": c["base"], "other": c["tuned"],
                 "base_value": c.get("base_value"), "other_value": c.get("tuned_value"), "delta": c.get("delta"),
                 "p_value": c.get("p_value"), "significant": bool(c.get("significant")),
                 "lower_is_better": bool(c.get("lower_is_better")), "test": c.get("test"), "comparison": c}
                for c in comparisons]
    rows = []
    base = labels[0] if labels else ""
    for task, results in (metrics.get("tasks") or {}).items():
        for metric, value in (results.get(base) or {}).items():
            rows.append({"task": task, "metric": metric, "base": base, "other": None,
                         "base_value": value.get("value"), "base_stderr": value.get("stderr"), "n": value.get("n")})
    return rows


def delta_text(delta: Any, lower_is_better: bool = False) -> Text:
    number = _number(delta)
    if number is None:
        return Text("—", style="dim")
    better = number < 0 if lower_is_better else number > 0
    return Text(f"{number:+.4f}", style="green" if better and number else "red" if number else "")


class EvaluateScreen(RecipeFormScreen):
    TITLE = "Evaluate"
    AUTO_FOCUS = "#eval-recipe"
    PREFIX = "eval"
    RECIPE_KIND = "evaluate"
    RECIPE_MODEL = EvalRecipe
    ITEM_KIND = "evaluator"
    OPTIONS_TITLE = "Task options"
    CHOICES = (
        Choice("recipe", "Recipe", role="recipe"),
        Choice("base", "Base model", field="base_model", blank=False),
        Choice("other", "Compared with", field="compared_model", prompt="no second model", short="compared with"),
        Choice("task", "Task", role="item", field="task", prompt="choose a task"),
    )
    SECTIONS = (
        Section("models", "More models", ModelSettings, primary=("more_models",)),
        Section("run", "Run", fields_model(EvalRecipe, RUN_FIELDS), primary=("limit", "batch_size", "name")),
    )
    ACTIONS = (("check", "Check (c)"), ("start", "Run (r)"))
    IDLE_STATUS = "Pick models and tasks (each picked task joins the evaluation); c checks, r runs."
    BINDINGS = [
        Binding("c", "check", "Check"),
        Binding("r", "start", "Run"),
        Binding("x", "drop_task", "Drop task"),
        Binding("f", "flips", "Flipped items"),
        Binding("a", "arena", "Arena"),
        Binding("escape", "escape", "Cancel / leave field"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.task_order: list[str] = []  # the evaluation's tasks, in order; the picker shows one
        self.runs: list[dict[str, Any]] = []
        self.report: EvalReport | None = None  # the report on the Results tab
        self.rows: list[dict[str, Any]] = []
        self.progress: dict[tuple[str, str], dict[str, Any]] = {}  # (model, task) -> done, total, state
        self.last_id: str | None = None
        self._stop = threading.Event()

    def compose_main(self) -> ComposeResult:
        yield Static("", id="eval-live")
        with TabbedContent(id="eval-tabs"):
            with TabPane("Results", id="tab-results"):
                yield Select([], prompt="no evaluations yet", id="eval-report", compact=True)
                table = DataTable(id="eval-results", cursor_type="row", zebra_stripes=True)
                yield table
                yield Static("", id="eval-result-note")
            with TabPane("Arena", id="tab-arena"):
                yield ArenaPane(self.app.workspace, id="eval-arena")

    def on_mount(self) -> None:
        self.query_one("#eval-live").display = False
        super().on_mount()
        self._task_joined()
        self.refresh_reports()
        self._arena_models()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if not self.busy:
            self.refresh_reports()

    # --- pickers -------------------------------------------------------------------------------

    def choice_options(self, key: str) -> list[tuple[str, str]]:
        # key is "base" or "other": the embedded model, the workspace's runs, the recipe's models.
        try:
            self.runs = list_runs(self.app.workspace)
        except Exception as exc:  # noqa: BLE001 - a damaged runs folder must not take the screen down
            self.runs = []
            self.notify(f"{type(exc).__name__}: {exc}", title="Runs unavailable", severity="error")
        options = list(EMBEDDED_MODELS)
        for run in self.runs:
            detail = ", ".join(str(run[k]) for k in ("backend", "status") if run.get(k))
            options.append((run["run_id"] + f"  (run{': ' + detail if detail else ''})", run["run_id"]))
        wanted = self.base.get("base_model" if key == "base" else "compared_model")
        if wanted and wanted not in [value for _, value in options]:
            options.append((f"{wanted}  (the recipe's model)", wanted))
        return options

    def choice_default(self, key: str) -> str | None:
        return "embedded" if key == "base" else None

    def apply_recipe_choice(self, choice: Choice, value: Any) -> None:
        self.set_options(choice.key, self.choice_options(choice.key), default=value, force=True)

    def read_recipe(self, path: Path) -> dict[str, Any]:
        data = load_recipe(path, kind="evaluate").model_dump(mode="json")
        models = data.get("models") or ["embedded"]
        tasks = data.get("tasks") or []
        # The pickers' own keys; adjust_recipe puts them back into models and tasks.
        data.update(base_model=models[0], compared_model=models[1] if len(models) > 1 else None,
                    more_models=models[2:], task=tasks[0]["task"] if tasks else None)
        return data

    def load_base(self, path: str | None) -> None:
        self.task_order = []
        self.options_raw.clear()  # the recipe's task options win over earlier edits
        self.options_extra.clear()
        super().load_base(path)
        names = [t["task"] for t in self.base.get("tasks") or []]
        self.task_order = list(dict.fromkeys(names))
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice and not self.recipe_error:
            # The form holds one entry per task; running it would silently drop the others.
            self.recipe_error = (f"it lists {', '.join(twice)} more than once; the form edits one entry per task: "
                                 f"run it with `studio eval {Path(path or '').name}`")
        if not self.base.get("compared_model"):
            self.set_options("other", self.choice_options("other"), default=None)
            self.query_one("#eval-other", Select).clear()
        self._task_joined()
        self.describe()
        self._arena_models()
        self._changed()

    def options_raw_of(self, item) -> dict[str, Any]:
        if item.name not in self.options_raw:
            entry = next((t for t in self.base.get("tasks") or [] if t.get("task") == item.name), {})
            options = {k: v for k, v in entry.items() if k != "task"}
            self.options_raw[item.name], self.options_extra[item.name] = initial_raw(item.config_model, options)
        return self.options_raw[item.name]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "eval-report":
            self._show_report_choice()
            return
        super().on_select_changed(event)
        if event.select.id == "eval-task":
            self._task_joined()
        if event.select.id in ("eval-base", "eval-other"):
            self._arena_models()

    def _task_joined(self) -> None:
        name = self.value("task")
        if name and name not in self.task_order:
            self.task_order.append(name)
            self.describe()
            self._update_bar()

    def action_drop_task(self) -> None:
        """Take the shown task out of the evaluation; the picker moves to another one."""
        name = self.value("task")
        if self.busy or not name or name not in self.task_order:
            return
        self.task_order.remove(name)
        select = self.query_one("#eval-task", Select)
        with select.prevent(Select.Changed):
            if self.task_order:
                select.value = self.task_order[0]
            else:
                select.clear()
        self._show_options_form()
        self.describe()
        self._changed()
        self.status(Text(f"{name} is no longer part of this evaluation", style="dim"))

    def describe_item(self, evaluator) -> Text:
        text = Text(f"uses {', '.join(evaluator.uses)} · {evaluator.default_fewshot}-shot by default "
                    f"· leads with {evaluator.primary_metric}", style="dim")
        text.append("\nin this evaluation: ", style="dim")
        text.append(", ".join(self.task_order) or "none", style="bold")
        if len(self.task_order) > 1:
            text.append("  (x drops the shown one)", style="dim")
        return text

    def choice_problem(self, choice: Choice) -> str:
        if choice.key == "base" and not self.value("base"):
            return "choose the base model"
        if choice.key == "other":
            return ""
        if choice.role == "item" and not self.task_order:
            return "no evaluators are loaded" if not self.items else "choose a task"
        if choice.role == "item":
            return ""  # the shown task may have been dropped: the others still run
        return super().choice_problem(choice)

    # --- the recipe ----------------------------------------------------------------------------

    def task_configs(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(the tasks entries, problems of the tasks the form does not show)."""
        entries, problems = [], []
        shown = self.value("task")
        for name in self.task_order:
            item = self.items.get(name)
            if item is None:
                problems.append(f"task {name}: no such evaluator is loaded")
                continue
            config, errors = validate_form(item.config_model, self.options_raw_of(item), self.options_extra.get(name))
            if config is None:
                if name != shown:  # the shown task's errors are under its own fields
                    problems += [f"task {name}: {field}: {message}" for field, message in errors.items()]
                continue
            entries.append({"task": name, **config.model_dump(mode="json")})
        return entries, problems

    def draft(self):
        recipe, problems = super().draft()
        _, task_problems = self.task_configs()
        if task_problems:
            problems.recipe = "; ".join([p for p in (problems.recipe, *task_problems) if p])
            return None, problems
        return recipe, problems

    def adjust_recipe(self, data: dict[str, Any]) -> dict[str, Any]:
        models = [data.pop("base_model", None) or "embedded"]
        other = data.pop("compared_model", None)
        models += [m for m in [other, *(data.pop("more_models", None) or [])] if m and m not in models]
        data["models"] = models
        data.pop("task", None)
        data.pop("config", None)
        data["tasks"], _ = self.task_configs()
        return data

    def bar_extra(self) -> Text | None:
        extra = Text()
        if len(self.task_order) > 1:
            extra.append(f"{len(self.task_order)} tasks", style="bold")
        if self.last_id:
            extra.append(("  " if extra.plain else "") + "last ", style="dim")
            extra.append(self.last_id)
        return extra if extra.plain else None

    # --- running -------------------------------------------------------------------------------

    def action_check(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is not None and self.begin("check", "checking the tasks, their files and the models …"):
            self.show_service_problems(None)
            self._worker = self._check(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def _check(self, ws, recipe, host):
        try:
            return check_evaluation(ws, recipe, host=host)
        except ValueError as exc:  # a bad option, file or model: said in the problems panel
            return {"problems": str(exc)}

    def _checked(self, result: dict[str, Any]) -> None:
        tasks = ", ".join(f"{t['task']} ({t['items']} items)" for t in result.get("tasks") or [])
        self.status(Text(f"✓ ready: {tasks}", style="green"))
        text = Text()
        for model in result.get("models") or []:
            text.append(f"{model['label']}", style="bold")
            text.append(f"  {model['location']}\n", style="dim")
        self.show_service_problems(text)

    def action_start(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is None or not self.begin("run", "starting the evaluation … (Esc cancels)"):
            return
        self._stop.clear()
        self.progress = {}
        live = self.query_one("#eval-live", Static)
        live.update("")
        live.display = True
        self._worker = self._evaluate(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def _evaluate(self, ws, recipe, host):
        worker = get_current_worker()
        with service_emitter(self, "evaluate", every=REDRAW_EVERY) as emit:
            try:
                return run_evaluation(ws, recipe, emit=emit, host=host,
                                      cancelled=lambda: self._stop.is_set() or worker.is_cancelled)
            except ValueError as exc:  # a bad option, file or model: said in the problems panel
                return {"problems": str(exc)}

    def on_service_event(self, message: ServiceEvent) -> None:
        if message.source != "evaluate":
            return
        for event in message.events:
            kind = event_name(event)
            model, task = str(event.get("model") or event.get("label") or ""), str(event.get("task") or "")
            if kind == "progress" and task:
                entry = self.progress.setdefault((model, task), {"state": "scoring"})
                entry.update(done=event.get("done", 0), total=event.get("total", 0), state="scoring")
            elif kind == "task_started" and task:
                self.progress.setdefault((model, task), {})["state"] = "scoring"
            elif kind == "task_done" and task:
                entry = self.progress.setdefault((model, task), {})
                entry["state"] = "done"
                if event.get("cached") is not None:
                    entry["cached"] = event.get("cached")
            elif kind == "model_loaded":
                self.status(Text(f"loaded {model} … (Esc cancels)", style="yellow"))
            elif kind == "model_build" and build_event_text(event):
                self.status(Text(build_event_text(event).strip() + " … (Esc cancels)", style="yellow"))
        self._draw_progress()

    def _draw_progress(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, ((model, task), entry) in enumerate(self.progress.items()):
            done, total, state = entry.get("done", 0), entry.get("total", 0), entry.get("state", "")
            mark, style = ("✓", "green") if state == "done" else ("●", "yellow")
            text.append(("\n" if index else "") + f"{mark} ", style=style)
            text.append(f"{task} ", style="bold")
            text.append(f"{model}  ", style="dim")
            text.append(f"{done}/{total}" if total else state)
        self.query_one("#eval-live", Static).update(text)

    def finished(self, what: str | None, state: WorkerState, worker: Worker) -> None:
        self.query_one("#eval-live").display = bool(self.progress) and state != WorkerState.SUCCESS
        if state != WorkerState.SUCCESS:
            super().finished(what, state, worker)
            return
        result = worker.result or {}
        if "problems" in result:
            self.show_service_problems(Text(result["problems"], style="red"))
            self.status(Text(f"✗ the {what or 'check'} found problems (below)", style="bold red"))
            if what == "run":
                self.refresh_reports()  # a run that failed part-way left its report folder
            return
        if what == "check":
            self._checked(result)
            return
        summary = result
        self.last_id = summary.get("id")
        status = summary.get("status", "finished")
        if status == "stopped":
            self.status(Text(f"stopped: what was scored is cached; r runs the rest ({self.last_id})",
                             style="yellow"))
        else:
            self.status(Text(f"✓ {status}: {self.last_id}", style="green"))
        self.refresh_reports(select=self.last_id)
        self.query_one("#eval-tabs", TabbedContent).active = "tab-results"

    def action_escape(self) -> None:
        if self.busy == "run":
            self._stop.set()  # the runner checks it between chunks; what was scored is cached
            self.status(Text("stopping … (what was scored stays cached)", style="bold yellow"))
            return
        arena = self.query_one("#eval-arena", ArenaPane)
        if arena.busy:
            arena.stop()
            return
        super().action_escape()

    def busy_text(self) -> str:
        return "evaluating" if self.busy == "run" else super().busy_text()

    # --- results -------------------------------------------------------------------------------

    def refresh_reports(self, select: str | None = None) -> None:
        try:
            reports = list_reports(self.app.workspace)
        except Exception as exc:  # noqa: BLE001 - a damaged evaluations folder must not take the screen down
            self.notify(f"{type(exc).__name__}: {exc}", title="Evaluations unavailable", severity="error")
            reports = []
        options = []
        for entry in reports:
            status = entry.get("status")
            label = entry["id"] + (f"  ({status})" if status and status != "completed" else "")
            options.append((Text(label, no_wrap=True, overflow="ellipsis"), entry["id"]))
        select_widget = self.query_one("#eval-report", Select)
        current = select_value(select_widget)
        wanted = select or current or (options[0][1] if options else None)
        with select_widget.prevent(Select.Changed):
            select_widget.set_options(options)
            if wanted in [value for _, value in options]:
                select_widget.value = wanted
        self._show_report_choice()

    def _show_report_choice(self) -> None:
        report_id = select_value(self.query_one("#eval-report", Select))
        if report_id is None:
            self.show_report(None)
            return
        try:
            self.show_report(find_report(self.app.workspace, report_id))
        except Exception as exc:  # noqa: BLE001 - one unreadable report is said, not fatal
            self.show_report(None, Text(f"✗ {report_id}: {type(exc).__name__}: {exc}", style="red"))

    def show_report(self, report: EvalReport | None, note: Text | None = None) -> None:
        """The report's results in the table: models side by side, deltas and significance."""
        self.report = report
        metrics = report.metrics() if report is not None else {}
        table = self.query_one("#eval-results", DataTable)
        table.clear(columns=True)
        self.rows = result_rows(metrics)
        compared = any(row["other"] is not None for row in self.rows)
        # The delta and its test first: on a narrow terminal they are what stays on screen.
        columns = (("task", "metric", "Δ", "p", "", "base", "compared") if compared
                   else ("task", "metric", "value", "± stderr", "n"))
        for index, label in enumerate(columns):
            table.add_column(label, key=str(index))
        for index, row in enumerate(self.rows):
            if compared:
                significant = row["significant"]
                table.add_row(row["task"], row["metric"], delta_text(row["delta"], row["lower_is_better"]),
                              Text(fmt(row["p_value"], 3), style="bold" if significant else "dim"),
                              Text("*", style="bold green") if significant else Text(""),
                              fmt(row["base_value"]), fmt(row["other_value"]), key=str(index))
            else:
                table.add_row(row["task"], row["metric"], fmt(row["base_value"]), fmt(row["base_stderr"]),
                              "—" if row["n"] is None else str(row["n"]), key=str(index))
        self.query_one("#eval-result-note", Static).update(note or self._report_note(report, metrics, compared))
        self.refresh_bindings()

    def _report_note(self, report: EvalReport | None, metrics: dict[str, Any], compared: bool) -> Text:
        if report is None:
            return Text("r runs the evaluation set up on the left; its results show here.", style="dim")
        if not metrics:
            status = report.status().get("status") or "running"
            return Text(f"{report.run_id}: {status}, no results yet", style="dim")
        labels = model_labels(metrics)
        text = Text()
        if labels:
            text.append("base ", style="dim")
            text.append(labels[0], style="bold")
            for label in labels[1:]:
                text.append("  vs ", style="dim")
                text.append(label, style="bold")
        if metrics.get("status") == "stopped":
            text.append("  (stopped: partial)", style="yellow")
        if compared:
            text.append("\n* significant at p < 0.05 (paired test) · Enter or f: the items that flipped", style="dim")
        return text

    def selected_row(self) -> dict[str, Any] | None:
        table = self.query_one("#eval-results", DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "eval-results":
            self.action_flips()

    def action_flips(self) -> None:
        row = self.selected_row()
        if row is None or row["other"] is None or self.report is None:
            self.notify("The flipped items are those of a comparison: pick a row of a report with two models.",
                        severity="warning")
            return
        try:
            flips = flip_details(self.report, self.report, row["comparison"])
        except Exception as exc:  # noqa: BLE001 - a damaged samples file is said, not fatal
            self.notify(f"{type(exc).__name__}: {exc}", title="Flipped items unavailable", severity="error")
            return
        self.app.push_screen(EvalFlipsScreen(row, flips))

    def action_arena(self) -> None:
        tabs = self.query_one("#eval-tabs", TabbedContent)
        tabs.active = "tab-results" if tabs.active == "tab-arena" else "tab-arena"
        if tabs.active == "tab-arena":
            self.query_one("#arena-prompt").focus()
        else:
            self.query_one("#eval-results").focus()

    def _arena_models(self) -> None:
        self.query_one("#eval-arena", ArenaPane).set_models(self.value("base"), self.value("other"))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "flips":
            row = self.selected_row()
            return row is not None and row["other"] is not None or None
        if action == "drop_task":
            return not self.busy and bool(self.task_order) or None
        return super().check_action(action, parameters)

