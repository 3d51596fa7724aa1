"""Train (mode 5): set up a training run from a recipe or from scratch, see how a record reaches
the model, check everything before starting, and start it.

The set-up is a :class:`~studio.tui.screens.recipe_form.RecipeFormScreen` over the core
:class:`~studio.recipes.train.TrainRecipe`: its forms are the recipe's own fields and its
``training`` and ``adapter`` sections, the back-end's options form comes from the back-end's
config model. The screen calls the headless services in thread workers: ``preflight`` (Check),
``preview`` (the back-end's template and loss mask) and ``prepare_run`` + ``start`` (Start).
Training always runs in its own process; once it has started the screen switches to the Runs
screen with the new run selected. Back-ends come from the plugin host, so a third-party back-end
shows up in the list, with its own options form, as soon as its plugin is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Label, Static
from textual.worker import Worker, WorkerState

from studio.recipes import load_recipe
from studio.recipes.train import AdapterSettings, TrainingSettings, TrainRecipe
from studio.tui.screens.recipe_form import Choice, RecipeFormScreen, Section
from studio.tui.screens.runs import RunsScreen
from studio.tui.widgets.op_form import fields_model
from studio.tui.widgets.run_live import remember_process

PREVIEW_LOSS_STYLE = "bold bright_white on dark_green"
PREVIEW_CONTEXT_STYLE = "dim"
RUN_FIELDS = ("model", "name", "eval_dataset", "eval_fraction", "limit", "seed", "trust_remote_code")


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


class TrainScreen(RecipeFormScreen):
    TITLE = "Train"
    AUTO_FOCUS = "#train-recipe"
    PREFIX = "train"
    RECIPE_KIND = "train"
    RECIPE_MODEL = TrainRecipe
    ITEM_KIND = "backend"
    OPTIONS_TITLE = "Back-end options"
    CHOICES = (
        Choice("recipe", "Recipe", role="recipe"),
        Choice("dataset", "Dataset", role="dataset", field="dataset", prompt="choose a dataset"),
        Choice("backend", "Back-end", role="item", field="backend", prompt="choose a back-end"),
    )
    SECTIONS = (
        Section("run", "Run", fields_model(TrainRecipe, RUN_FIELDS), primary=("model", "name")),
        Section("training", "Training", TrainingSettings, path=("training",),
                primary=("max_steps", "learning_rate", "batch_size")),
        Section("adapter", "Adapter", AdapterSettings, path=("adapter",), primary=("method",)),
    )
    ACTIONS = (("preview", "Preview (p)"), ("check", "Check (c)"), ("start", "Start (r)"))
    IDLE_STATUS = "Pick a recipe (or start blank), a dataset and a back-end; p previews, c checks, r starts."
    BINDINGS = [
        Binding("p", "preview", "Preview"),
        Binding("c", "check", "Check"),
        Binding("r", "start", "Start"),
        Binding("left_square_bracket", "preview_record(-1)", "Preview the previous record", key_display="[",
                show=False),
        Binding("right_square_bracket", "preview_record(1)", "Preview the next record", key_display="]",
                show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.preview_index = 0
        self.started_run: str | None = None

    def compose_main(self) -> ComposeResult:
        yield Label("Template and loss mask", classes="pane-title")
        with VerticalScroll(id="train-preview-scroll"):
            yield Static(Text("p shows how a training record reaches the model: the tokens that carry loss "
                              "highlighted, the context dim.", style="dim"), id="train-preview")

    # --- pickers -------------------------------------------------------------------------------

    def backend(self):
        return self.item()

    def default_item(self) -> str | None:
        return "sft" if "sft" in self.items else super().default_item()

    def item_options(self) -> list[tuple[str, str]]:
        return [(f"{name}  ({getattr(b, 'title', '') or name})", name) for name, b in sorted(self.items.items())]

    def recipe_detail(self, entry: dict[str, Any]) -> str | None:
        return entry.get("backend") or "?"

    def read_recipe(self, path: Path) -> dict[str, Any]:
        return load_recipe(path, kind="train").model_dump(mode="json")

    def load_base(self, path: str | None) -> None:
        self.preview_index = 0
        super().load_base(path)

    def describe_item(self, backend) -> Text:
        return Text(f"trains on {backend.data_kind} records · adapters: {', '.join(backend.adapter_methods)}",
                    style="dim")

    # --- check, preview, start -----------------------------------------------------------------

    def action_check(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is not None and self.begin("check", "checking the back-end, adapter and data …"):
            self.show_service_problems(None)
            self._worker = self._check(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _check(self, ws, recipe, host):
        from studio.training.preflight import preflight  # the data stack: paid when asked for

        try:
            checked = preflight(ws, recipe, host)
        except ValueError as exc:
            return {"problems": str(exc)}
        return {"train": len(checked.train), "eval": len(checked.eval), "ref": checked.source.get("ref"),
                "warnings": list(checked.warnings), "kind": checked.backend.data_kind}

    def action_preview(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is not None and self.begin("preview", f"rendering training record {self.preview_index + 1} …"):
            self._worker = self._preview(self.app.workspace, recipe, self.app.host, self.preview_index)

    def action_preview_record(self, delta: int) -> None:
        self.preview_index = max(0, self.preview_index + delta)
        self.action_preview()

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _preview(self, ws, recipe, host, index: int):
        from studio.training.preview import preview  # the model stack: paid when asked for

        try:
            return preview(ws, recipe, index, host)
        except ValueError as exc:
            return {"problems": str(exc)}

    def action_start(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is not None and self.begin("start", "checking and starting the run …"):
            self.show_service_problems(None)
            self._worker = self._start(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _start(self, ws, recipe, host):
        from studio.training import runs  # the data stack: paid when asked for

        try:
            run = runs.prepare_run(ws, recipe, host)
        except ValueError as exc:
            return {"problems": str(exc)}
        process = runs.start(run)
        remember_process(run.run_id, process)
        return {"run_id": run.run_id}

    def finished(self, what: str | None, state: WorkerState, worker: Worker) -> None:
        if state != WorkerState.SUCCESS:
            super().finished(what, state, worker)
            return
        result = worker.result or {}
        if "problems" in result:
            self._show_service_problem(what, result["problems"])
        elif what == "check":
            self._checked(result)
        elif what == "preview":
            self._previewed(result)
        elif what == "start":
            self.started_run = result["run_id"]
            self.status(Text(f"✓ started run {result['run_id']}", style="green"))
            self.call_later(self._open_run, result["run_id"])

    def _show_service_problem(self, what: str | None, message: str) -> None:
        if what == "preview" and "has no preview" in message:
            backend = self.backend()
            name = backend.name if backend is not None else "this back-end"
            self.query_one("#train-preview", Static).update(Text(
                f"Back-end {name} has no template/loss-mask preview: it does not say which tokens carry "
                "loss. Check (c) still checks its data.", style="yellow"))
            self.status(Text(f"no preview for {name}", style="yellow"))
            return
        if what == "preview" and "out of range" in message:
            self.preview_index = 0
        self.show_service_problems(Text(message, style="red"))
        self.status(Text(f"✗ the {what or 'check'} found problems (below)", style="bold red"))

    def _checked(self, result: dict[str, Any]) -> None:
        self.status(Text(f"✓ ready to start: {result['train']} training / {result['eval']} held-out "
                         f"{result['kind']} records from {result['ref']}", style="green"))
        warnings = Text()
        for warning in result.get("warnings") or []:
            warnings.append(f"! {warning}\n", style="yellow")
        self.show_service_problems(warnings)

    def _previewed(self, shown: dict[str, Any]) -> None:
        self.preview_index = int(shown.get("index", self.preview_index))
        self.query_one("#train-preview", Static).update(preview_renderable(shown))
        self.status(Text(f"preview of training record {self.preview_index + 1}"
                         + (f" of {shown['records']}" if shown.get("records") else "")
                         + "  ([ and ] walk the records)", style="green"))

    async def _open_run(self, run_id: str) -> None:
        await self.app.switch_mode("runs")
        screen = self.app.screen
        if isinstance(screen, RunsScreen):
            screen.select_run(run_id)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "preview_record" and self.busy:
            return None
        return super().check_action(action, parameters)

    def bar_extra(self) -> Text | None:
        return Text.assemble(("last run ", "dim"), self.started_run) if self.started_run else None
