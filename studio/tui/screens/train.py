"""Train (mode 5): set up a training run from a recipe or from scratch, see how a record reaches
the model, check everything before starting, and start it.

The screen only builds a :class:`~studio.training.recipe.TrainRecipe` (the chosen recipe with
the form's values put in) and calls the headless services in thread workers: ``preflight``
(Check), ``preview`` (the back-end's template and loss mask) and ``prepare_run`` + ``start``
(Start). Training always runs in its own process; once it has started the screen switches to
the Runs screen with the new run selected. Back-ends come from the plugin host, so a third-party
back-end shows up in the list, with its own options form, as soon as its plugin is loaded.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, Select, Static
from textual.worker import Worker, WorkerState

from studio.training.recipe import AdapterSettings, TrainingSettings
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.runs import RunsScreen
from studio.tui.widgets.run_live import remember_process
from studio.tui.widgets.selects import select_value, set_select_options
from studio.tui.widgets.op_form import GENERAL, OpForm, initial_raw, validate_form

BLANK = "__blank__"  # the recipe choice "start from scratch"
PREVIEW_LOSS_STYLE = "bold bright_white on dark_green"
PREVIEW_CONTEXT_STYLE = "dim"
AdapterMethod = Literal["none", "lora", "dora", "qlora", "prompt_tuning", "freeze"]


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].default


class TrainSettings(BaseModel):
    """The key settings of a recipe, as one model so the generated form shows and checks them."""

    model: str = Field("embedded", description="base model: embedded, a local model folder, a run or a hub id")
    max_steps: int = Field(_default(TrainingSettings, "max_steps"), ge=1, description="optimizer steps")
    learning_rate: float = Field(_default(TrainingSettings, "learning_rate"), gt=0, description="peak learning rate")
    batch_size: int = Field(_default(TrainingSettings, "batch_size"), ge=1, description="examples per step")
    adapter: AdapterMethod = Field(_default(AdapterSettings, "method"),
                                   description="which weights train (none = full fine-tuning)")
    name: str | None = Field(None, description="run name (part of the run id)")


def settings_of(recipe: dict[str, Any]) -> dict[str, Any]:
    """The form's values from a recipe (as a dict, the shape of ``TrainRecipe.model_dump``)."""
    training = recipe.get("training") or {}
    values = {"model": recipe.get("model"), "name": recipe.get("name"),
              "max_steps": training.get("max_steps"), "learning_rate": training.get("learning_rate"),
              "batch_size": training.get("batch_size"), "adapter": (recipe.get("adapter") or {}).get("method")}
    return {k: v for k, v in values.items() if v is not None}


def build_recipe(base: dict[str, Any], backend: str, dataset: str, settings: TrainSettings,
                 config: dict[str, Any]) -> dict[str, Any]:
    """The recipe to run: ``base`` (a loaded recipe, or nothing) with the screen's choices in."""
    data = copy.deepcopy(base)
    data.update(backend=backend, dataset=dataset, model=settings.model, name=settings.name, config=config)
    data["training"] = {**(data.get("training") or {}), "max_steps": settings.max_steps,
                        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size}
    data["adapter"] = {**(data.get("adapter") or {}), "method": settings.adapter}
    return data


def preview_renderable(shown: dict[str, Any]) -> Group:
    """A back-end's preview: loss tokens highlighted, the rest (context) dim."""
    head = Text()
    index, records = shown.get("index"), shown.get("records")
    if index is not None:
        head.append(f"training record {index + 1}" + (f" of {records}" if records else ""), style="bold")
    tokens, loss_tokens = shown.get("tokens"), shown.get("loss_tokens")
    if tokens is not None:
        head.append(f"  ·  {tokens} tokens")
        if loss_tokens is not None:
            share = f" ({loss_tokens / tokens:.0%})" if tokens else ""
            head.append(f", {loss_tokens} carry loss{share}")
    if shown.get("template"):
        head.append(f"  ·  template {shown['template']}")
    head.append("\n")
    head.append(" trained on ", style=PREVIEW_LOSS_STYLE)
    head.append("  ")
    head.append("context (no loss)", style=PREVIEW_CONTEXT_STYLE)
    body = Text()
    segments = shown.get("segments")
    if segments:
        for segment in segments:
            body.append(str(segment.get("text", "")),
                        style=PREVIEW_LOSS_STYLE if segment.get("loss") else PREVIEW_CONTEXT_STYLE)
    else:
        body.append(str(shown.get("text", "")))
    notes = [Text(str(note), style="yellow") for note in shown.get("notes") or []]
    return Group(head, Text(""), body, *notes)


@dataclass
class Problems:
    """What stops the recipe from being run, by where it is shown."""

    recipe: str = ""
    dataset: str = ""
    backend: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def messages(self) -> list[str]:
        out = [f"{where}: {m}" for where, m in (("dataset", self.dataset), ("back-end", self.backend)) if m]
        out += [m if name == GENERAL else f"{name}: {m}" for name, m in self.settings.items()]
        out += [f"options: {m}" if name == GENERAL else f"option {name}: {m}" for name, m in self.config.items()]
        if self.recipe:
            out.append(self.recipe)
        return out


class TrainScreen(ReportsWorkerErrors, Screen):
    TITLE = "Train"
    AUTO_FOCUS = "#train-recipe"
    BINDINGS = [
        Binding("p", "preview", "Preview"),
        Binding("c", "check", "Check"),
        Binding("r", "start", "Start"),
        Binding("left_square_bracket", "preview_record(-1)", "Preview the previous record", key_display="[",
                show=False),
        Binding("right_square_bracket", "preview_record(1)", "Preview the next record", key_display="]",
                show=False),
        Binding("escape", "escape", "Leave field", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.recipes: list[dict[str, Any]] = []
        self.backends: dict[str, Any] = {}
        self.base: dict[str, Any] = {}  # the chosen recipe, as TrainRecipe.model_dump(mode="json")
        self.recipe_error = ""
        self.settings_raw, _ = initial_raw(TrainSettings, {})
        self.config_raw: dict[str, dict[str, Any]] = {}  # per back-end, so switching keeps edits
        self.config_extra: dict[str, dict[str, Any]] = {}  # recipe config keys a back-end's model lacks
        self.checked = False  # errors show once the user has typed in a form or asked for something
        self.busy: str | None = None  # "check" | "preview" | "start"
        self.preview_index = 0
        self.started_run: str | None = None
        self._worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="train-bar")
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-setup"):
                yield Label("Recipe", classes="field-label")
                yield Select([("blank recipe", BLANK)], value=BLANK, allow_blank=False, id="train-recipe")
                yield Static("", id="train-recipe-info", classes="train-hint")
                yield Static("", id="train-recipe-error", classes="train-error")
                yield Label("Dataset", classes="field-label")
                yield Select([], prompt="choose a dataset", id="train-dataset")
                yield Static("", id="train-dataset-info", classes="train-hint")
                yield Static("", id="train-dataset-error", classes="train-error")
                yield Label("Back-end", classes="field-label")
                yield Select([], prompt="choose a back-end", id="train-backend")
                yield Static("", id="train-backend-info", classes="train-hint")
                yield Static("", id="train-backend-error", classes="train-error")
                yield Label("Training", classes="pane-title")
                yield Vertical(id="train-settings-area")
                yield Label("Back-end options", classes="pane-title")
                yield Vertical(id="train-config-area")
            with Vertical(id="train-main"):
                with Horizontal(id="train-buttons"):
                    yield Button("Preview (p)", id="train-preview-button")
                    yield Button("Check (c)", id="train-check-button")
                    yield Button("Start (r)", id="train-start-button", variant="primary")
                yield Static("", id="train-status")
                yield Static("", id="train-problems", classes="train-error")
                yield Label("Template and loss mask", classes="pane-title")
                with VerticalScroll(id="train-preview-scroll"):
                    yield Static("", id="train-preview")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_choices()
        self.call_later(self._swap_settings_form)
        self._show_config_form()
        self._describe()
        self._update_bar()
        self._status(Text("Pick a recipe (or start blank), a dataset and a back-end; p previews, c checks, "
                          "r starts.", style="dim"))
        self.query_one("#train-preview", Static).update(
            Text("p shows how a training record reaches the model: the tokens that carry loss "
                 "highlighted, the context dim.", style="dim"))

    def on_screen_resume(self) -> None:
        # Back from another mode: a curation may have added datasets, a plugin install a back-end.
        if not self.busy and self.refresh_choices():
            self._show_config_form()

    # --- choices -------------------------------------------------------------------------------

    def refresh_choices(self) -> bool:
        """Fill the recipe, dataset and back-end choices again; True when the back-end changed."""
        from studio.training.catalog import list_recipes

        ws = self.app.workspace
        try:
            self.recipes = [r for r in list_recipes(ws) if r.get("kind") == "train"]
        except Exception as exc:  # noqa: BLE001 - a broken recipes folder must not take the screen down
            self.recipes = []
            self.notify(f"{type(exc).__name__}: {exc}", title="Recipes unavailable", severity="error")
        try:
            self.backends = dict(self.app.host.items("backend"))
        except Exception as exc:  # noqa: BLE001 - a broken host must not take the screen down
            self.backends = {}
            self.notify(f"{type(exc).__name__}: {exc}", title="Back-ends unavailable", severity="error")
        backend_before = self._value("#train-backend")
        self._set_options("#train-recipe", [("blank recipe", BLANK)] + [
            (f"{r['name']}  ({r.get('backend') or '?'}{'' if r.get('shipped') else ', workspace'})", r["path"])
            for r in self.recipes], default=BLANK)
        self._fill_datasets()
        only = "sft" if "sft" in self.backends else next(iter(self.backends)) if len(self.backends) == 1 else None
        self._set_options("#train-backend", self._backend_options(), default=self.base.get("backend") or only)
        return self._value("#train-backend") != backend_before

    def _fill_datasets(self) -> None:
        from studio.training.recipe import looks_like_file

        options = [(name, name) for name in self.app.workspace.dataset_names()]
        wanted = self.base.get("dataset")
        if wanted and wanted not in [value for _, value in options]:
            label = f"{Path(wanted).name}  (the recipe's file)" if looks_like_file(wanted) else \
                f"{wanted}  (the recipe's dataset)"
            options.append((label, wanted))
        self._set_options("#train-dataset", options, default=wanted)

    def _set_options(self, selector: str, options: list[tuple[str, str]], default: str | None = None,
                     force: bool = False) -> None:
        set_select_options(self.query_one(selector, Select), options, default, force)

    def _value(self, selector: str) -> str | None:
        return select_value(self.query_one(selector, Select))

    def backend(self):
        return self.backends.get(self._value("#train-backend") or "")

    @on(Select.Changed, "#train-recipe")
    def _recipe_changed(self) -> None:
        self.load_base(self._value("#train-recipe"))

    def load_base(self, path: str | None) -> None:
        """Start from the recipe at ``path`` (None or BLANK: from scratch)."""
        from studio.training.recipe import load_recipe

        self.recipe_error = ""
        self.base = {}
        if path and path != BLANK:
            try:
                self.base = load_recipe(Path(path)).model_dump(mode="json")
            except ValueError as exc:
                self.recipe_error = str(exc)
        self.settings_raw, _ = initial_raw(TrainSettings, settings_of(self.base))
        backend = self.base.get("backend")
        if backend:
            self.config_raw.pop(backend, None)  # the recipe's options win over earlier edits
            self.config_extra.pop(backend, None)
        self._fill_datasets()
        if backend:
            self._set_options("#train-backend", self._backend_options(), default=backend, force=True)
        self.preview_index = 0
        self.call_later(self._swap_settings_form)
        self._show_config_form()
        self._describe()
        self._changed()

    def _backend_options(self) -> list[tuple[str, str]]:
        return [(f"{name}  ({getattr(b, 'title', '') or name})", name) for name, b in sorted(self.backends.items())]

    @on(Select.Changed, "#train-dataset")
    def _dataset_changed(self) -> None:
        self._describe()
        self._changed()

    @on(Select.Changed, "#train-backend")
    def _backend_changed(self) -> None:
        self._describe()
        self._show_config_form()
        self._changed()

    def _describe(self) -> None:
        """The hints under the three choices."""
        info = Text()
        path = self._value("#train-recipe")
        entry = next((r for r in self.recipes if r["path"] == path), None)
        if entry is not None:
            info.append(entry.get("description") or "", style="italic")
            if entry.get("command"):
                info.append(f"\n{entry['command']}", style="dim")
        elif not self.recipes:
            info.append("no training recipes found (recipes/ in the project or the workspace)", style="dim")
        else:
            info.append("every setting at its default", style="dim")
        self.query_one("#train-recipe-info", Static).update(info)
        self.query_one("#train-recipe-error", Static).update(
            Text(f"✗ {self.recipe_error}") if self.recipe_error else "")

        info = Text()
        name = self._value("#train-dataset")
        if name is not None:
            from studio.training.recipe import looks_like_file

            if looks_like_file(name):
                info.append(f"file {name}" if Path(name).is_file() else f"{name}: no such file",
                            style="dim" if Path(name).is_file() else "red")
            else:
                try:
                    head = self.app.workspace.head(name)
                    info.append(f"{head.num_records:,} records · head {head.id[:8]}", style="dim")
                except Exception as exc:  # noqa: BLE001 - a damaged or missing dataset is reported
                    info.append(f"{exc}", style="red")
        elif not self.app.workspace.dataset_names():
            info.append("no stored datasets: import one on the Datasets screen", style="yellow")
        self.query_one("#train-dataset-info", Static).update(info)

        info = Text()
        backend = self.backend()
        if backend is not None:
            info.append(getattr(backend, "summary", "") or "", style="italic")
            info.append(f"\ntrains on {backend.data_kind} records · adapters: "
                        f"{', '.join(backend.adapter_methods)}", style="dim")
            owner = self.app.host.owner("backend", backend.name) if hasattr(self.app.host, "owner") else None
            if owner:
                info.append(f" · plugin {owner}", style="dim")
        elif not self.backends:
            info.append("no tuning back-ends are loaded (see the Plugins screen)", style="yellow")
        self.query_one("#train-backend-info", Static).update(info)

    # --- forms ---------------------------------------------------------------------------------

    async def _swap_settings_form(self) -> None:
        area = self.query_one("#train-settings-area", Vertical)
        await area.remove_children()
        errors = self.problems().settings if self.checked else {}
        await area.mount(OpForm(TrainSettings, self.settings_raw, errors, id="train-settings"))

    def _show_config_form(self) -> None:
        # Swapped in order: each swap awaits the removal of the previous form.
        self.call_later(self._swap_config_form)

    def _config_raw(self, backend) -> dict[str, Any]:
        if backend.name not in self.config_raw:
            options = (self.base.get("config") or {}) if self.base.get("backend") == backend.name else {}
            raw, extra = initial_raw(backend.config_model, options)
            self.config_raw[backend.name], self.config_extra[backend.name] = raw, extra
        return self.config_raw[backend.name]

    async def _swap_config_form(self) -> None:
        area = self.query_one("#train-config-area", Vertical)
        await area.remove_children()
        backend = self.backend()
        if backend is None:
            await area.mount(Static(Text("Choose a back-end to see its options.", style="dim")))
            return
        raw = self._config_raw(backend)
        if not backend.config_model.model_fields:
            await area.mount(Static(Text("This back-end has no options.", style="dim")))
            return
        errors = self.problems().config if self.checked else {}
        await area.mount(OpForm(backend.config_model, raw, errors, id="train-config"))

    def on_op_form_changed(self, event: OpForm.Changed) -> None:
        if not event.form.is_attached:
            return  # a change from a form that was just swapped out
        backend = self.backend()
        if event.form.id == "train-settings":
            self.settings_raw = dict(event.raw)
        elif event.form.id == "train-config" and backend is not None and event.form.model is backend.config_model:
            self.config_raw[backend.name] = dict(event.raw)
        self.checked = True
        self._changed()

    def _changed(self) -> None:
        """Any setting changed: an earlier check no longer applies."""
        if not self.busy:
            self.query_one("#train-problems", Static).update("")
        self.show_problems()

    # --- the recipe ----------------------------------------------------------------------------

    def draft(self):
        """(the recipe, problems): the recipe is None while anything is missing or invalid."""
        from studio.training.recipe import validate_recipe

        problems = Problems(recipe=f"recipe: {self.recipe_error}" if self.recipe_error else "")
        backend = self.backend()
        if backend is None:
            problems.backend = "no tuning back-ends are loaded" if not self.backends else "choose a back-end"
        dataset = self._value("#train-dataset")
        if not dataset:
            problems.dataset = "choose a dataset"
        settings, problems.settings = validate_form(TrainSettings, self.settings_raw)
        config = None
        if backend is not None:
            config, problems.config = validate_form(backend.config_model, self._config_raw(backend),
                                                    self.config_extra.get(backend.name))
        if problems.messages() or settings is None or config is None:
            return None, problems
        # Only what differs from the back-end's defaults, as a hand-written recipe would say it.
        options = config.model_dump(mode="json", exclude_defaults=True)
        data = build_recipe(self.base, backend.name, dataset, settings, options)
        try:
            return validate_recipe(data, "recipe"), problems
        except ValueError as exc:
            problems.recipe = str(exc)
            return None, problems

    def problems(self) -> Problems:
        return self.draft()[1]

    def show_problems(self) -> Problems:
        problems = self.problems()
        if self.checked:
            for where in ("dataset", "backend"):
                message = getattr(problems, where)
                self.query_one(f"#train-{where}-error", Static).update(Text(f"✗ {message}") if message else "")
            for selector, errors in (("#train-settings", problems.settings), ("#train-config", problems.config)):
                forms = self.query(selector)
                if forms:
                    forms.first(OpForm).show_errors(errors)
        self._update_bar(problems)
        return problems

    def _recipe_or_say_why(self):
        self.checked = True
        recipe, problems = self.draft()
        self.show_problems()
        if recipe is None:
            messages = problems.messages()
            more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
            self._status(Text(f"✗ {messages[0]}{more}", style="red"))
        return recipe

    # --- check, preview, start -----------------------------------------------------------------

    def _begin(self, what: str, message: str) -> bool:
        if self.busy:
            self.notify(f"busy: {self.busy} is still going", severity="warning")
            return False
        self.busy = what
        self._status(Text(message, style="yellow"))
        self.refresh_bindings()
        self._update_bar()
        return True

    def action_check(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is not None and self._begin("check", "checking the back-end, adapter and data …"):
            self.query_one("#train-problems", Static).update("")
            self._worker = self._check(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _check(self, ws, recipe, host):
        from studio.training.preflight import preflight

        try:
            checked = preflight(ws, recipe, host)
        except ValueError as exc:
            return {"problems": str(exc)}
        return {"train": len(checked.train), "eval": len(checked.eval), "ref": checked.source.get("ref"),
                "warnings": list(checked.warnings), "kind": checked.backend.data_kind}

    def action_preview(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is not None and self._begin("preview", f"rendering training record {self.preview_index + 1} …"):
            self._worker = self._preview(self.app.workspace, recipe, self.app.host, self.preview_index)

    def action_preview_record(self, delta: int) -> None:
        self.preview_index = max(0, self.preview_index + delta)
        self.action_preview()

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _preview(self, ws, recipe, host, index: int):
        from studio.training.preview import preview

        try:
            return preview(ws, recipe, index, host)
        except ValueError as exc:
            return {"problems": str(exc)}

    def action_start(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is not None and self._begin("start", "checking and starting the run …"):
            self.query_one("#train-problems", Static).update("")
            self._worker = self._start(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _start(self, ws, recipe, host):
        from studio.training import runs

        try:
            run = runs.prepare_run(ws, recipe, host)
        except ValueError as exc:
            return {"problems": str(exc)}
        process = runs.start(run)
        remember_process(run.run_id, process)
        return {"run_id": run.run_id}

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        busy, self.busy = self.busy, None
        self.refresh_bindings()
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self._status(Text(f"✗ {busy} failed: {type(error).__name__}: {error}", style="red"))
        elif event.state == WorkerState.CANCELLED:
            self._status(Text(f"{busy} cancelled", style="yellow"))
        else:
            result = event.worker.result or {}
            if "problems" in result:
                self._show_service_problem(busy, result["problems"])
            elif busy == "check":
                self._checked(result)
            elif busy == "preview":
                self._previewed(result)
            elif busy == "start":
                self.started_run = result["run_id"]
                self._status(Text(f"✓ started run {result['run_id']}", style="green"))
                self.call_later(self._open_run, result["run_id"])
        self._update_bar()

    def _show_service_problem(self, busy: str | None, message: str) -> None:
        if busy == "preview" and "has no preview" in message:
            backend = self.backend()
            name = backend.name if backend is not None else "this back-end"
            self.query_one("#train-preview", Static).update(Text(
                f"Back-end {name} has no template/loss-mask preview: it does not say which tokens carry "
                "loss. Check (c) still checks its data.", style="yellow"))
            self._status(Text(f"no preview for {name}", style="yellow"))
            return
        if busy == "preview" and "out of range" in message:
            self.preview_index = 0
        self.query_one("#train-problems", Static).update(Text(message, style="red"))
        what = {"check": "check", "preview": "preview", "start": "start"}.get(busy or "", "check")
        self._status(Text(f"✗ the {what} found problems (below)", style="bold red"))

    def _checked(self, result: dict[str, Any]) -> None:
        text = Text(f"✓ ready to start: {result['train']} training / {result['eval']} held-out "
                    f"{result['kind']} records from {result['ref']}", style="green")
        self._status(text)
        problems = Text()
        for warning in result.get("warnings") or []:
            problems.append(f"! {warning}\n", style="yellow")
        self.query_one("#train-problems", Static).update(problems)

    def _previewed(self, shown: dict[str, Any]) -> None:
        self.preview_index = int(shown.get("index", self.preview_index))
        self.query_one("#train-preview", Static).update(preview_renderable(shown))
        self._status(Text(f"preview of training record {self.preview_index + 1}"
                          + (f" of {shown['records']}" if shown.get("records") else "")
                          + "  ([ and ] walk the records)", style="green"))

    async def _open_run(self, run_id: str) -> None:
        await self.app.switch_mode("runs")
        screen = self.app.screen
        if isinstance(screen, RunsScreen):
            screen.select_run(run_id)

    def action_escape(self) -> None:
        if self.query_one("#train-setup") in (self.focused.ancestors if self.focused else []):
            self.query_one("#train-start-button").focus()

    @on(Button.Pressed, "#train-preview-button")
    def _preview_pressed(self) -> None:
        self.action_preview()

    @on(Button.Pressed, "#train-check-button")
    def _check_pressed(self) -> None:
        self.action_check()

    @on(Button.Pressed, "#train-start-button")
    def _start_pressed(self) -> None:
        self.action_start()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("preview", "check", "start", "preview_record") and self.busy:
            return None
        return True

    # --- status --------------------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#train-status", Static).update(text)

    def _update_bar(self, problems: Problems | None = None) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        path = self._value("#train-recipe")
        bar.append(" recipe ", style="dim")
        bar.append("blank" if not path or path == BLANK else Path(path).stem, style="bold")
        bar.append("  │  back-end ", style="dim")
        bar.append(self._value("#train-backend") or "—", style="bold")
        bar.append("  │  dataset ", style="dim")
        dataset = self._value("#train-dataset")
        bar.append(Path(dataset).name if dataset and "/" in dataset else dataset or "—", style="bold")
        if self.started_run:
            bar.append("  │  last run ", style="dim")
            bar.append(self.started_run)
        bar.append("  │  ", style="dim")
        if self.busy:
            bar.append(f"{self.busy} …", style="bold yellow")
        else:
            count = len((problems or self.problems()).messages())
            bar.append("ready" if not count else f"{count} to fix", style="green" if not count else "bold red")
        self.query_one("#train-bar", Static).update(bar)
