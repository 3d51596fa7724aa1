"""Curate (mode 3): build a pipeline from the registered curation ops, preview it on a sample,
run it with live progress; the results screen (curate_results.py) then shows and overrides what
it removed or changed.

The pipeline is a list of draft steps, each an op and the raw values of a form generated from
the op's config model; every change is validated and errors are shown under their field.
Preview and run call the headless :func:`studio.curation.pipeline.run_pipeline` in a thread
worker; its events come back as messages (progress coalesced to a few per second) and Esc
cancels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState, get_current_worker

from studio.events import event_name
from studio.rendering import render_step_examples, short_id
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.curate_results import CurateResultsScreen
from studio.tui.screens.dialogs import RecipeFileDialog
from studio.tui.service_events import ServiceEvent, service_emitter
from studio.tui.widgets.op_form import GENERAL, OpForm, initial_raw, validate_form

PREVIEW_ROWS = 500
CATEGORIES = ("filter", "dedup", "transform", "split", "mix")


@dataclass
class DraftStep:
    """One step being built: the op's name, the form's raw values and their validation."""

    op: str
    raw: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe keys the op's model does not know
    config: BaseModel | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def validate(self, ops: dict[str, Any]) -> None:
        op = ops.get(self.op)
        if op is None:
            self.config, self.errors = None, {GENERAL: f"unknown op {self.op!r}: no plugin provides it"}
            return
        self.config, self.errors = validate_form(op.config_model, self.raw, self.extra)

    def options(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json", exclude_defaults=True) if self.config is not None else {}


def recipe_yaml(recipe: dict[str, Any], path: Path) -> str:
    # Every recipe names the command that runs it (GUIDE: recipes read top to bottom).
    return f"# studio curate {path}\n" + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


class CurateScreen(ReportsWorkerErrors, Screen):
    TITLE = "Curate"
    AUTO_FOCUS = "#op-list"
    BINDINGS = [
        Binding("a", "add_step", "Add step"),
        Binding("delete,x", "remove_step", "Remove step"),
        Binding("left_square_bracket", "move_step(-1)", "Step up", key_display="["),
        Binding("right_square_bracket", "move_step(1)", "Step down", key_display="]"),
        Binding("p", "preview", "Preview"),
        Binding("r", "run", "Run"),
        Binding("v", "results", "Results"),
        Binding("o", "load_recipe", "Load recipe"),
        Binding("w", "save_recipe", "Save recipe"),
        Binding("e", "toggle_engine", "Engine"),
        Binding("escape", "escape", "Cancel / leave field"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[DraftStep] = []
        self.current: int | None = None
        self.ops: dict[str, Any] = {}
        self.busy: str | None = None  # "preview" | "run" while a worker runs
        self.last_output: str | None = None
        self.recipe_path: Path | None = None
        self._worker: Worker | None = None
        self._step_names: list[str] = []
        self.engine = "local"  # where Preview and Run run: this machine, or Ray Data (e switches)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="curate-bar")
        with Horizontal(id="curate-body"):
            with Vertical(id="curate-left"):
                # One-line fields: the operations list below keeps its room in a 24-row terminal.
                yield Label("Input dataset", classes="field-label")
                yield Select([], prompt="choose a dataset", id="input-dataset", compact=True, classes="line-field")
                yield Label("Version", classes="field-label")
                yield Select([], prompt="head", id="input-version", compact=True, classes="line-field")
                yield Label("Output dataset", classes="field-label")
                yield Input(placeholder="blank: new version of the input", id="output-name", compact=True,
                            classes="line-field")
                with Horizontal(classes="field-row"):
                    with Vertical():
                        yield Label("Seed", classes="field-label")
                        yield Input("0", id="seed", compact=True, classes="line-field")
                    with Vertical():
                        yield Label("Preview rows", classes="field-label")
                        yield Input(str(PREVIEW_ROWS), id="preview-rows", compact=True, classes="line-field")
                yield Label("Operations (Enter adds a step)", classes="field-label")
                yield OptionList(id="op-list")
            with Vertical(id="curate-middle"):
                yield Label("Pipeline steps", classes="pane-title")
                yield OptionList(id="step-list")
                table = DataTable(id="step-table", cursor_type="row", zebra_stripes=True)
                table.add_columns("#", "op", "in", "removed", "changed", "added", "out", "sec")
                yield table
                yield ProgressBar(total=None, show_eta=False, id="run-progress")
                yield Static("", id="run-status")
                # Focusable only once it shows examples: Tab goes from the steps to the form.
                with VerticalScroll(id="examples-scroll", can_focus=False):
                    yield Static("", id="examples")
            with VerticalScroll(id="curate-form", can_focus=False):
                yield Static("", id="form-title")
                yield Vertical(id="form-area")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#run-progress").display = False
        self.query_one("#step-table").display = False
        self.load_ops()
        self.refresh_datasets()
        self._refresh_steps()
        self._show_form()
        self._update_bar()

    def on_screen_resume(self) -> None:
        self.refresh_datasets()

    # --- inputs --------------------------------------------------------------------------------

    def load_ops(self) -> None:
        try:
            self.ops = dict(self.app.host.items("curation_op"))
        except Exception as exc:  # noqa: BLE001 - a broken host must not take the screen down
            self.ops = {}
            self.notify(f"{type(exc).__name__}: {exc}", title="Curation ops unavailable", severity="error")
        op_list = self.query_one("#op-list", OptionList)
        op_list.clear_options()
        categories = sorted({getattr(op, "category", "filter") for op in self.ops.values()},
                            key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES), c))
        for category in categories:
            op_list.add_option(Option(Text(category, style="bold underline"), disabled=True))
            for name, op in sorted(self.ops.items()):
                if getattr(op, "category", "filter") == category:
                    prompt = Text.assemble("  ", getattr(op, "title", name) or name, (f"  {name}", "dim"),
                                           no_wrap=True, overflow="ellipsis")
                    op_list.add_option(Option(prompt, id=name))
        if not self.ops:
            op_list.add_option(Option(Text("no curation ops are loaded (see the Plugins screen)", style="dim"),
                                      disabled=True))
        # The first operation, not its group's header: Enter adds it straight away.
        op_list.action_first()

    def refresh_datasets(self) -> None:
        select = self.query_one("#input-dataset", Select)
        names = self.app.workspace.dataset_names()
        current = select.value
        select.set_options([(name, name) for name in names])
        if current in names:
            select.value = current

    @on(Select.Changed, "#input-dataset")
    def _dataset_changed(self, event: Select.Changed) -> None:
        self._fill_versions(None if event.value is Select.NULL else str(event.value))
        self._update_bar()

    def _fill_versions(self, name: str | None, select_version: str | None = None) -> None:
        versions = self.query_one("#input-version", Select)
        if name is None:
            versions.set_options([])
            return
        ws = self.app.workspace
        head = ws.head(name).id
        options = []
        for info in reversed(ws.versions(name)):
            label = f"{short_id(info.id)}{' head' if info.id == head else ''} · {info.num_records:,} rows"
            options.append((label, info.id))
        current = versions.value
        ids = {value for _, value in options}
        versions.set_options(options)
        # Keep the user's pick across refreshes (a run adds versions); default to the head.
        versions.value = select_version if select_version in ids else current if current in ids else head

    def input_ref(self) -> str | None:
        name = self.query_one("#input-dataset", Select).value
        if name is Select.NULL:
            return None
        version = self.query_one("#input-version", Select).value
        if version is Select.NULL or version == self.app.workspace.head(str(name)).id:
            return str(name)
        return f"{name}@{version}"

    # --- steps ---------------------------------------------------------------------------------

    def add_step(self, op_name: str, options: dict[str, Any] | None = None) -> DraftStep:
        op = self.ops.get(op_name)
        if op is not None:
            raw, extra = initial_raw(op.config_model, options or {})
        else:
            raw, extra = {}, dict(options or {})
        step = DraftStep(op_name, raw, extra)
        step.validate(self.ops)
        self.steps.append(step)
        self.current = len(self.steps) - 1
        self._refresh_steps()
        self._show_form()
        return step

    def _step_prompt(self, index: int, step: DraftStep) -> Text:
        op = self.ops.get(step.op)
        text = Text(f"{index}. ", style="bold")  # 0-based, as the side table and steps.N.option
        text.append(getattr(op, "title", None) or step.op, style="bold")
        if op is not None:
            text.append(f"  {getattr(op, 'category', '')}", style="dim")
        if step.errors:
            text.append("  ✗ invalid", style="bold red")
        else:
            options = step.options()
            if options:
                shown = ", ".join(f"{k}={v}" for k, v in options.items())
                text.append(f"  {shown[:60]}", style="dim")
        return text

    def _refresh_steps(self) -> None:
        step_list = self.query_one("#step-list", OptionList)
        step_list.clear_options()
        for i, step in enumerate(self.steps):
            step_list.add_option(Option(self._step_prompt(i, step)))
        if not self.steps:
            step_list.add_option(Option(Text("No steps yet: pick an operation on the left and press Enter.",
                                             style="dim"), disabled=True))
            self.current = None
        elif self.current is not None:
            self.current = max(0, min(self.current, len(self.steps) - 1))
            step_list.highlighted = self.current
        self._update_bar()

    def _show_form(self) -> None:
        # Forms are swapped in order: each swap awaits the removal of the previous form.
        self.call_later(self._swap_form)

    async def _swap_form(self) -> None:
        area = self.query_one("#form-area", Vertical)
        await area.remove_children()
        title = self.query_one("#form-title", Static)
        if self.current is None or not self.steps:
            title.update(Text("Select a step to edit its settings.", style="dim"))
            return
        step = self.steps[self.current]
        op = self.ops.get(step.op)
        text = Text(f"Step {self.current}: ", style="bold")
        text.append(getattr(op, "title", None) or step.op, style="bold")
        if op is not None:
            text.append(f"  ({step.op})\n", style="dim")
            text.append(getattr(op, "summary", "") or "", style="italic")
        title.update(text)
        if op is not None:
            await area.mount(OpForm(op.config_model, step.raw, step.errors, id="op-form"))
        elif step.errors:
            await area.mount(Static(Text(f"✗ {step.errors[GENERAL]}", style="red")))

    @on(OptionList.OptionSelected, "#op-list")
    def _op_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.add_step(event.option.id)

    @on(OptionList.OptionHighlighted, "#step-list")
    def _step_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self.steps and event.option_index != self.current and 0 <= event.option_index < len(self.steps):
            self.current = event.option_index
            self._show_form()

    @on(OptionList.OptionSelected, "#step-list")
    def _step_selected(self, event: OptionList.OptionSelected) -> None:
        # Enter on a step: edit it (focus its first field).
        if self.steps:
            self.call_after_refresh(self._focus_form)

    def _focus_form(self) -> None:
        fields = [w for w in self.query("#op-form Input, #op-form Switch, #op-form Select")]
        if fields:
            fields[0].focus()

    def on_op_form_changed(self, event: OpForm.Changed) -> None:
        if self.current is None or not event.form.is_attached:
            return  # a change from a form that was just swapped out
        step = self.steps[self.current]
        step.raw = dict(event.raw)
        step.validate(self.ops)
        event.form.show_errors(step.errors)
        self.query_one("#step-list", OptionList).replace_option_prompt_at_index(
            self.current, self._step_prompt(self.current, step))
        self._update_bar()

    def action_add_step(self) -> None:
        option = self.query_one("#op-list", OptionList).highlighted_option
        if option is None or not option.id:
            self.query_one("#op-list").focus()
            self.notify("Highlight an operation in the list, then press a (or Enter).", severity="warning")
            return
        self.add_step(option.id)

    def action_remove_step(self) -> None:
        if self.current is None or not self.steps:
            return
        del self.steps[self.current]
        self.current = min(self.current, len(self.steps) - 1) if self.steps else None
        self._refresh_steps()
        self._show_form()

    def action_move_step(self, delta: int) -> None:
        if self.current is None or not self.steps:
            return
        target = self.current + delta
        if not 0 <= target < len(self.steps):
            return
        self.steps[self.current], self.steps[target] = self.steps[target], self.steps[self.current]
        self.current = target
        self._refresh_steps()
        self._show_form()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("remove_step", "move_step") and not self.steps:
            return None
        if action in ("preview", "run", "load_recipe", "toggle_engine") and self.busy:
            return None
        if action == "results" and not self.last_output:
            return None
        return True

    # --- the recipe ------------------------------------------------------------------------------

    def recipe_dict(self) -> dict[str, Any]:
        """The pipeline as a recipe; raises ValueError naming what is missing or invalid."""
        ref = self.input_ref()
        if ref is None:
            raise ValueError("choose an input dataset first")
        if not self.steps:
            raise ValueError("add at least one step")
        for i, step in enumerate(self.steps):
            if step.errors:
                field_name, message = next(iter(step.errors.items()))
                where = "" if field_name == GENERAL else f"{field_name}: "
                raise ValueError(f"step {i} ({step.op}) is invalid: {where}{message}")
        seed_text = self.query_one("#seed", Input).value.strip() or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise ValueError(f"seed must be a whole number, not {seed_text!r}") from None
        recipe: dict[str, Any] = {"dataset": ref}
        output = self.query_one("#output-name", Input).value.strip()
        if output:
            recipe["output"] = output
        recipe["seed"] = seed
        if self.engine != "local":
            recipe["engine"] = self.engine
        recipe["steps"] = [{"op": step.op, **step.options()} for step in self.steps]
        return recipe

    def _recipe_or_say_why(self):
        from studio.recipes import RecipeError, load_recipe

        try:
            return load_recipe(self.recipe_dict())
        except (ValueError, RecipeError) as exc:
            self._status(Text(f"✗ {exc}", style="red"))
            return None

    def action_save_recipe(self) -> None:
        try:
            recipe = self.recipe_dict()
        except ValueError as exc:
            self._status(Text(f"✗ cannot save: {exc}", style="red"))
            return
        default = self.recipe_path or (self.app.workspace.root / "recipes" /
                                       f"curate-{recipe['dataset'].split('@')[0]}.yaml")

        def chosen(path: Path | None) -> None:
            if path is None:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(recipe_yaml(recipe, path), encoding="utf-8")
            self.recipe_path = path
            self._status(Text(f"✓ recipe saved to {path}", style="green"))

        self.app.push_screen(RecipeFileDialog("Save the recipe as", str(default)), chosen)

    def action_load_recipe(self) -> None:
        default = str(self.recipe_path) if self.recipe_path else str(self.app.workspace.root / "recipes") + os.sep
        self.app.push_screen(RecipeFileDialog("Load a curation recipe", default, must_exist=True), self.load_recipe)

    def load_recipe(self, path: Path | None) -> None:
        from studio.data.refs import stored_ref
        from studio.recipes import RecipeError, load_recipe

        if path is None:
            return
        try:
            recipe = load_recipe(path, kind="curate")
        except (RecipeError, OSError) as exc:
            self._status(Text(f"✗ {exc}", style="red"))
            return
        self.recipe_path = path
        problems = []
        try:
            # A recipe naming a data file curates it as a stored version, imported with lineage.
            dataset, _ = stored_ref(self.app.workspace, recipe.dataset, self.app.host.formats())
        except ValueError as exc:
            dataset = recipe.dataset
            problems.append(str(exc))
        name, _, version = dataset.partition("@")
        try:
            version_id = self.app.workspace.version_info(name, version or None).id
            self.query_one("#input-dataset", Select).value = name
            self._fill_versions(name, version_id)
        except ValueError as exc:
            problems.append(str(exc))
        self.query_one("#output-name", Input).value = recipe.output or ""
        self.query_one("#seed", Input).value = str(recipe.seed)
        self.engine = recipe.engine
        self.steps, self.current = [], None
        for spec in recipe.steps:
            self.add_step(spec.op, spec.options())
        self.current = 0 if self.steps else None
        self._refresh_steps()
        self._show_form()
        invalid = sum(1 for s in self.steps if s.errors)
        message = Text(f"✓ loaded {path.name}: {len(self.steps)} step(s)", style="green")
        if invalid:
            message.append(f"; {invalid} need fixing", style="bold red")
        for problem in problems:
            message.append(f"\n✗ {problem}", style="red")
        self._status(message)

    # --- preview and run -------------------------------------------------------------------------

    def action_preview(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is None:
            return
        raw = self.query_one("#preview-rows", Input).value.strip().replace(",", "") or str(PREVIEW_ROWS)
        try:
            limit = max(1, int(raw))
        except ValueError:
            self._status(Text(f"✗ preview rows must be a number, not {raw!r}", style="red"))
            return
        self._start("preview", recipe, limit)

    def action_run(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is None:
            return
        self._start("run", recipe, None)

    def _start(self, mode: str, recipe, limit: int | None) -> None:
        self.busy = mode
        self._step_names = [s.op for s in recipe.steps]
        table = self.query_one("#step-table", DataTable)
        table.clear()
        table.display = True
        self.query_one("#examples", Static).update("")
        self.query_one("#examples-scroll").can_focus = False
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        what = f"previewing on the first {limit:,} rows" if limit else "running"
        self._status(Text(f"{what} … (Esc cancels)", style="yellow"))
        self.refresh_bindings()
        self._worker = self._run_pipeline(recipe, dict(self.ops), limit)

    @work(thread=True, exclusive=True, group="curate", exit_on_error=False)
    def _run_pipeline(self, recipe, ops: dict[str, Any], limit: int | None):
        from studio.curation.engines import run_curation

        worker = get_current_worker()
        with service_emitter(self, "curate", cancelled=lambda: worker.is_cancelled) as emit:
            return run_curation(self.app.workspace, recipe, ops, emit=emit, cancelled=lambda: worker.is_cancelled,
                                dry_run=limit is not None, limit=limit, base_dir=self.app.workspace.root)

    def action_toggle_engine(self) -> None:
        """Local cores or Ray Data for Preview and Run; Ray only where it is installed."""
        from studio.curation.ray_engine import EngineUnavailable, import_ray

        if self.busy:
            return
        if self.engine == "local":
            try:
                import_ray()
            except EngineUnavailable as exc:
                self._status(Text(f"✗ {exc}", style="red"))
                return
            self.engine = "ray"
        else:
            self.engine = "local"
        self._update_bar()
        where = "a local Ray instance (started for each run)" if self.engine == "ray" else "this machine's cores"
        self._status(Text(f"Preview and Run use the {self.engine} engine: {where}", style="green"))

    def on_service_event(self, message: ServiceEvent) -> None:
        if not self.busy or message.source != "curate":
            return
        for event in message.events:
            self._pipeline_event(event)

    def _pipeline_event(self, event: dict[str, Any]) -> None:
        kind = event_name(event)
        total_steps = len(self._step_names)
        bar = self.query_one("#run-progress", ProgressBar)
        if kind == "step_start":
            bar.update(total=None, progress=0)
            self._status(Text(f"{_step_label(event['step'], event['op'], total_steps)}: "
                              f"{event.get('rows', 0):,} rows … (Esc cancels)", style="yellow"))
        elif kind == "progress":
            total = event.get("total") or None
            bar.update(total=total, progress=event.get("done", 0))
            step = event.get("step", 0)
            name = self._step_names[step] if 0 <= step < total_steps else "?"
            what = f" {event['what']}" if event.get("what") else ""
            self._status(Text(f"{_step_label(step, name, total_steps)}{what}: {event.get('done', 0):,} / "
                              f"{event.get('total', 0):,} (Esc cancels)", style="yellow"))
        elif kind == "step_done":
            self._add_step_row(event)

    def _add_step_row(self, report: dict[str, Any]) -> None:
        table = self.query_one("#step-table", DataTable)
        key = str(report["index"])
        if key in [k.value for k in table.rows]:
            return
        table.add_row(str(report["index"]), report["op"], f"{report['rows_in']:,}",
                      Text(f"{report['removed']:,}", style="red" if report["removed"] else "dim"),
                      Text(f"{report['changed']:,}", style="yellow" if report["changed"] else "dim"),
                      f"{report['added']:,}", Text(f"{report['rows_out']:,}", style="bold"),
                      f"{report.get('seconds', 0):.2f}", key=key)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "curate" or event.worker is not self._worker:
            return
        mode = self.busy
        if event.state == WorkerState.SUCCESS:
            self._finished(mode, event.worker.result)
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.busy = None
            self.query_one("#run-progress").display = False
            error = event.worker.error
            if event.state == WorkerState.CANCELLED or isinstance(error, InterruptedError):
                self._status(Text(f"{mode} cancelled; nothing was written", style="yellow"))
            else:
                self._status(Text(f"✗ {mode} failed: {type(error).__name__}: {error}", style="red"))
            self.refresh_bindings()

    def _finished(self, mode: str | None, result) -> None:
        self.busy = None
        self.query_one("#run-progress").display = False
        for step in result.steps:
            self._add_step_row(step.to_dict())
        self.query_one("#examples", Static).update(render_step_examples(result.steps))
        self.query_one("#examples-scroll").can_focus = bool(result.steps)
        rows_in = result.steps[0].rows_in if result.steps else 0
        rows_out = result.steps[-1].rows_out if result.steps else 0
        if mode == "preview":
            self._status(Text(f"preview on {rows_in:,} rows: {rows_out:,} would remain "
                              f"(r runs it on the whole dataset)", style="green"))
        else:
            outputs = [result.version] if result.version is not None else list(result.outputs.values())
            refs = [f"{v.dataset}@{v.id}" for v in outputs]
            self.last_output = refs[0] if refs else None
            text = Text(f"✓ {rows_in:,} → {rows_out:,} rows; wrote ", style="green")
            text.append(", ".join(f"{v.dataset}@{short_id(v.id)}" for v in outputs) or "nothing", style="bold")
            text.append("  (v shows the results)", style="dim")
            self._status(text)
            if self.last_output:
                self.app.push_screen(CurateResultsScreen(self.last_output))
        self.refresh_bindings()

    def action_results(self) -> None:
        if self.last_output:
            self.app.push_screen(CurateResultsScreen(self.last_output))

    def action_escape(self) -> None:
        if self.busy and self._worker is not None:
            self._worker.cancel()
            return
        focused = self.focused
        if focused is not None and (isinstance(focused, (Input, Select)) or
                                    self.query_one("#curate-form") in focused.ancestors):
            self.query_one("#step-list").focus()

    # --- status ------------------------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#run-status", Static).update(text)

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        ref = self.input_ref() if self.is_mounted else None
        bar.append(" input ", style="dim")
        bar.append(ref or "—", style="bold")
        bar.append("  │  ", style="dim")
        invalid = sum(1 for s in self.steps if s.errors)
        bar.append(f"{len(self.steps)} step(s)")
        if invalid:
            bar.append(f", {invalid} invalid", style="bold red")
        bar.append("  │  ", style="dim")
        bar.append(f"{len(self.ops)} op(s) available", style="dim")
        bar.append("  │  ", style="dim")
        bar.append(f"{self.engine} engine (e)", style="dim" if self.engine == "local" else "bold")
        if self.recipe_path is not None:
            bar.append("  │  ", style="dim")
            bar.append(self.recipe_path.name)
        self.query_one("#curate-bar", Static).update(bar)


def _step_label(index: int, op: str, total: int) -> str:
    # Steps are numbered from 0, as in the side table and `steps.N.option` overrides.
    return f"step {index} {op} ({index + 1} of {total})"
