"""Generate (mode 4): configure a generation run, estimate its cost, run it with live counters,
watch the rows arrive, retry the failed ones, and open what was stored.

The set-up is a :class:`~studio.tui.screens.recipe_form.RecipeFormScreen` over the core
:class:`~studio.generation.runner.GenerationRecipe`: a recipe to start from, where requests go,
the generator (and its options form), the seed dataset, and forms for the recipe's own fields
and its request defaults. The screen calls the headless
:func:`~studio.generation.runner.run_generation` in a thread worker, exactly as ``studio
generate`` does; its events arrive as :class:`~studio.tui.service_events.ServiceEvent` messages,
a burst at a time, so a replay that yields thousands of rows a second (all answered from the
journal) costs a few redraws, not thousands. Cancelling sets a flag the engine checks before
every request: the run stops cleanly and stores what it made.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from studio.events import event_name
from studio.serving.launch import build_event_text
from studio.generation.provider import EMBEDDED, ProviderConfig, load_providers
from studio.generation.runner import RunFolder, run_generation, runs_dir
from studio.recipes import load_recipe
from studio.recipes.generate import GenerationRecipe, RequestParams
from studio.records import Record
from studio.rendering import kind_tag, record_preview, render_record, short_id
from studio.tui.screens.recipe_form import Choice, RecipeFormScreen, Section
from studio.tui.service_events import ServiceEvent, service_emitter
from studio.tui.widgets.generate_live import LivePanel
from studio.tui.widgets.op_form import fields_model

REDRAW_EVERY = 0.2  # seconds: a run's events arrive in bursts this far apart at most
MAX_TABLE_ROWS = 5_000  # rows listed live; the stored dataset (o) pages all of them from Arrow
PROMPT_CHARS = 40
ANSWER_CHARS = 70


def answer_preview(record: Record) -> Text:
    """What the model made: the last assistant turn, or chosen and rejected of a pair."""
    def cut(text: str | None, limit: int) -> str:
        text = " ".join((text or "")[: limit * 2].split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    if record.kind == "preference":
        chosen = record.chosen[-1].content if record.chosen else ""
        rejected = record.rejected[-1].content if record.rejected else ""
        half = ANSWER_CHARS // 2 - 2
        return Text.assemble(("✓ ", "green"), cut(chosen, half), ("  ✗ ", "red"), cut(rejected, half))
    answers = [t.content for t in record.messages if t.role == "assistant"]
    return Text(cut(answers[-1], ANSWER_CHARS)) if answers else Text("(no answer)", style="dim italic")


class GenerateScreen(RecipeFormScreen):
    TITLE = "Generate"
    AUTO_FOCUS = "#gen-provider"
    PREFIX = "gen"
    RECIPE_KIND = "generate"
    RECIPE_MODEL = GenerationRecipe
    ITEM_KIND = "generator"
    OPTIONS_TITLE = "Generator options"
    CHOICES = (
        Choice("recipe", "Recipe", role="recipe"),
        Choice("provider", "Provider", field="provider", blank=False),
        Choice("generator", "Generator", role="item", field="generator", prompt="choose a generator"),
        Choice("seeds", "Seed dataset", role="dataset", field="seed_dataset", prompt="no seed dataset",
               short="seed dataset"),
    )
    SECTIONS = (
        Section("run", "Run", fields_model(GenerationRecipe, ("output", "seed_limit", "seed", "budget"))),
        Section("params", "Request defaults", RequestParams, path=("params",)),
    )
    ACTIONS = (("estimate", "Estimate (e)"), ("start", "Start (r)"))
    IDLE_STATUS = "Pick a generator and its seeds, then e estimates and r starts."
    BINDINGS = [
        Binding("e", "estimate", "Estimate"),
        Binding("r", "start", "Start"),
        Binding("f", "retry_failed", "Retry failed"),
        Binding("o", "open_output", "Open output"),
        Binding("t", "toggle_tab", "Rows/Failed"),
        Binding("escape", "escape", "Cancel / leave field"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.providers: dict[str, ProviderConfig] = {}
        self.run_id: str | None = None
        self.summary = None  # RunSummary of the last run
        self.last_recipe = None  # what "retry failed" runs again, with the same run id
        # Canonical rows of the current run as listed (at most MAX_TABLE_ROWS: a long run's rows
        # live in its run folder and the stored dataset, not in this process), and how many came.
        self.rows: list[dict[str, Any]] = []
        self.row_count = 0
        self.failed: list[dict[str, Any]] = []  # row_failed events (small: the seed is left out)
        self._failed_sources: list[dict[str, Any]] = []  # failed.jsonl, read when a failure is shown
        self._stop = threading.Event()
        self._shown_row: int | None = None

    def compose_main(self) -> ComposeResult:
        yield LivePanel(id="gen-live")
        yield ProgressBar(total=None, show_eta=False, id="gen-progress")
        with TabbedContent(id="gen-tabs"):
            with TabPane("Rows", id="tab-rows"):
                table = DataTable(id="gen-rows", cursor_type="row", zebra_stripes=True)
                table.add_column("#", key="n")
                table.add_column("kind", key="kind")
                table.add_column("prompt", key="prompt", width=PROMPT_CHARS)
                table.add_column("answer", key="answer")
                yield table
                with VerticalScroll(id="gen-row-detail-scroll", classes="gen-detail"):
                    yield Static("", id="gen-row-detail")
            with TabPane("Failed", id="tab-failed"):
                table = DataTable(id="gen-failed", cursor_type="row", zebra_stripes=True)
                table.add_column("seed #", key="source")
                table.add_column("stage", key="stage")
                table.add_column("error", key="error")
                yield table
                with VerticalScroll(id="gen-failed-detail-scroll", classes="gen-detail"):
                    yield Static("", id="gen-failed-detail")

    def on_mount(self) -> None:
        self.query_one("#gen-progress").display = False
        super().on_mount()

    # --- pickers -------------------------------------------------------------------------------

    def choice_options(self, key: str) -> list[tuple[str, str]]:
        # key == "provider": the saved providers; the embedded model is always there.
        try:
            self.providers = load_providers(self.app.workspace.root)
        except Exception as exc:  # noqa: BLE001 - a broken providers.yaml must not take the screen down
            self.providers = {EMBEDDED: self.providers.get(EMBEDDED) or ProviderConfig()}
            self.notify(f"{type(exc).__name__}: {exc}", title="providers.yaml unreadable", severity="error")
        return [(f"{name}  (embedded local model)" if p.embedded else f"{name}  ({p.model})", name)
                for name, p in self.providers.items()]

    def choice_default(self, key: str) -> str | None:
        return EMBEDDED

    def read_recipe(self, path: Path) -> dict[str, Any]:
        return load_recipe(path, kind="generate").model_dump(mode="json")

    def apply_recipe_choice(self, choice: Choice, value: Any) -> None:
        # An inline provider (a mapping) cannot be picked: the saved ones and the embedded model can.
        super().apply_recipe_choice(choice, value if isinstance(value, str) else EMBEDDED)

    def describe_choice(self, choice: Choice) -> Text:
        if choice.key == "provider":
            return self._describe_provider()
        info = super().describe_choice(choice)
        if choice.key == "seeds":
            gen = self.item()
            takes_none = gen is not None and gen.seeds == "none"
            self.query_one("#gen-seeds").disabled = takes_none
            if takes_none:
                return Text("this generator starts from nothing", style="dim")
            if gen is not None:
                info.append(("\n" if info.plain else "") + ("required" if gen.seeds == "required" else "optional"),
                            style="dim")
        return info

    def describe_item(self, gen) -> Text:
        text = Text(f"seeds {gen.seeds} · makes {gen.produces}", style="dim")
        if gen.uses_completions:
            text.append(" · needs raw /v1/completions", style="dim")
        return text

    def _describe_provider(self) -> Text:
        provider = self.providers.get(self.value("provider") or "")
        info = Text()
        if provider is None:
            pass
        elif provider.embedded:
            info.append(f"serves {provider.serve_model} on 127.0.0.1 when the run starts; costs nothing")
        else:
            info.append(f"{provider.base_url} · model {provider.model} · {provider.concurrency} at once")
            price = provider.price()
            if price is None:
                info.append(f"\nno price for {provider.model}: costs show as unpriced", style="yellow")
            else:
                info.append(f"\n${price.input:g} in / ${price.output:g} out per 1M tokens")
        return info

    # --- the recipe ----------------------------------------------------------------------------

    def choice_problem(self, choice: Choice) -> str:
        if choice.key == "provider":
            provider = self.providers.get(self.value("provider") or "")
            if provider is None:
                return "choose where requests go"
            try:
                provider.api_key()  # a named key variable that is not set fails here, not mid-run
            except ValueError as exc:
                return str(exc)
            return ""
        if choice.key == "seeds":
            gen = self.item()
            if gen is not None and gen.seeds == "required" and not self.value("seeds"):
                return f"{gen.name} starts from seed records: choose a dataset"
            return ""
        return super().choice_problem(choice)

    def adjust_recipe(self, data: dict[str, Any]) -> dict[str, Any]:
        gen = self.item()
        if data.get("provider") == EMBEDDED:
            data["provider"] = None
        if gen is not None and gen.seeds == "none":
            data["seed_dataset"] = None
        if not data.get("seed_dataset"):
            data["seed_limit"] = None
        return data

    def settings_changed(self) -> None:
        if self.busy is None and self.summary is None:  # a finished run's counters stay up
            self.query_one("#gen-live", LivePanel).reset()

    # --- estimate ------------------------------------------------------------------------------

    def action_estimate(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is None or not self.begin("estimate", "estimating … (nothing is sent)"):
            return
        self.query_one("#gen-live", LivePanel).reset(recipe.budget)
        self._worker = self._estimate(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _estimate(self, ws, recipe, host):
        return run_generation(ws, recipe, estimate_only=True, host=host)

    # --- run -----------------------------------------------------------------------------------

    def action_start(self) -> None:
        recipe = self.recipe_or_say_why()
        if recipe is not None:
            self._start_run(recipe)

    def action_retry_failed(self) -> None:
        if self.busy or self.summary is None or self.last_recipe is None:
            return
        # The same run id: the journal answers everything already made, and only the requests
        # that failed are sent again.
        self._start_run(self.last_recipe, run_id=self.summary.run_id, retry_failed=True)

    def _start_run(self, recipe, run_id: str | None = None, retry_failed: bool = False) -> None:
        what = "retrying the failed requests" if retry_failed else "starting"
        if not self.begin("run", f"{what} … (Esc cancels)"):
            return
        self.last_recipe = recipe
        self.summary = None
        self.run_id = run_id
        self._stop.clear()
        # A run (or a retry, which replays the generator) makes its rows from the start.
        self.rows, self.row_count, self.failed, self._failed_sources, self._shown_row = [], 0, [], [], None
        self.query_one("#gen-rows", DataTable).clear()
        self.query_one("#gen-failed", DataTable).clear()
        self.query_one("#gen-row-detail", Static).update("")
        self.query_one("#gen-failed-detail", Static).update("")
        self._tab_labels()
        self.query_one("#gen-live", LivePanel).reset(recipe.budget)
        bar = self.query_one("#gen-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._worker = self._generate(self.app.workspace, recipe, self.app.host, run_id, retry_failed)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, ws, recipe, host, run_id: str | None, retry_failed: bool):
        worker = get_current_worker()
        with service_emitter(self, "generate", every=REDRAW_EVERY) as emit:
            # The app cancels its workers when it quits: that stops the run cleanly too.
            return run_generation(ws, recipe, emit=emit, cancelled=lambda: self._stop.is_set() or worker.is_cancelled,
                                  run_id=run_id, retry_failed=retry_failed, host=host)

    def on_service_event(self, message: ServiceEvent) -> None:
        """A burst of the run's events, drawn once: the latest meter, new rows, new failures."""
        if message.source != "generate":
            return
        meter = None
        new_rows: list[dict[str, Any]] = []
        new_failed: list[dict[str, Any]] = []
        live = self.query_one("#gen-live", LivePanel)
        for event in message.events:
            kind = event_name(event)
            if kind == "progress":
                meter = event
            elif kind == "row":
                new_rows.append(event["row"])
            elif kind == "row_failed":
                new_failed.append(event)
            elif kind == "estimate":
                live.show(estimate=event)
            elif kind == "serving":
                self.status(Text(f"serving the embedded model ({event.get('model')}) on 127.0.0.1 … "
                                 f"(Esc cancels)", style="yellow"))
            elif kind == "model_build" and build_event_text(event):  # first use: a minute, once
                self.status(Text(build_event_text(event).strip() + " … (Esc cancels)", style="yellow"))
            elif kind == "start":
                self.run_id = event.get("run_id")
                self.status(Text(f"running {self.run_id} … (Esc cancels)", style="yellow"))
            elif kind == "stopping":
                self.status(Text(f"stopping: {event.get('reason')} (finishing the requests in flight) …",
                                 style="bold yellow"))
            elif kind == "end":
                meter = event.get("meter") or meter
        if meter is not None:
            live.show(meter=meter)
            self._progress(meter, live.estimate)
        if new_rows:
            self._add_rows(new_rows)
        if new_failed:
            self._add_failed(new_failed)
        if new_rows or new_failed or meter is not None:
            self._update_bar()

    def _progress(self, meter: dict[str, Any], estimate: dict[str, Any] | None) -> None:
        bar = self.query_one("#gen-progress", ProgressBar)
        if meter.get("target"):  # the generator says how many rows it aims for
            bar.update(total=meter["target"], progress=meter.get("rows", 0))
        elif estimate and estimate.get("requests"):
            done = meter.get("answered", 0) + meter.get("cached", 0) + meter.get("failed", 0)
            bar.update(total=max(estimate["requests"], done), progress=done)

    def _add_rows(self, rows: list[dict[str, Any]]) -> None:
        table = self.query_one("#gen-rows", DataTable)
        start = len(self.rows)
        listed = rows[: max(0, MAX_TABLE_ROWS - start)]
        self.rows.extend(listed)
        self.row_count += len(rows)
        for index, row in enumerate(listed, start):
            record = Record.from_row(row)
            tag, style = kind_tag(record)
            table.add_row(f"{index + 1:,}", Text(tag, style=style), _cut(record_preview(record), PROMPT_CHARS),
                          answer_preview(record), key=str(index))
        if self._shown_row is None and self.rows:
            self.show_row(0)
        self._tab_labels()

    def _add_failed(self, events: list[dict[str, Any]]) -> None:
        table = self.query_one("#gen-failed", DataTable)
        start = len(self.failed)
        self.failed.extend(events)
        for index, event in enumerate(events, start):
            source = event.get("source_index")
            table.add_row("—" if source is None else f"#{source}", event.get("stage") or "",
                          Text(_cut(str(event.get("error") or ""), 90), style="red"), key=str(index))
        if start == 0:
            self.show_failed(0)
        self._tab_labels()

    def _tab_labels(self) -> None:
        tabs = self.query_one("#gen-tabs", TabbedContent)
        shown = f"{self.row_count:,}" + (f", first {len(self.rows):,} listed" if self.row_count > len(self.rows) else "")
        tabs.get_tab("tab-rows").label = f"Rows ({shown})"
        tabs.get_tab("tab-failed").label = Text.assemble("Failed (", (f"{len(self.failed):,}",
                                                                       "bold red" if self.failed else ""), ")")

    def finished(self, what: str | None, state: WorkerState, worker: Worker) -> None:
        self.query_one("#gen-progress").display = False
        if state == WorkerState.SUCCESS and what == "estimate":
            self.query_one("#gen-live", LivePanel).show(estimate=worker.result.estimate)
            self.status(Text("estimate only: nothing was sent (r starts the run)", style="green"))
        elif state == WorkerState.SUCCESS:
            self._finished_run(worker.result)
        else:
            super().finished(what, state, worker)

    def _finished_run(self, summary) -> None:
        self.summary = summary
        self.run_id = summary.run_id
        if summary.meter:
            self.query_one("#gen-live", LivePanel).show(meter=summary.meter)
        style = {"completed": "green", "stopped": "yellow"}.get(summary.status, "red")
        mark = {"completed": "✓", "stopped": "■"}.get(summary.status, "✗")
        text = Text(f"{mark} {summary.status}", style=f"bold {style}")
        if summary.reason:
            text.append(f" ({summary.reason})", style=style)
        text.append(f": {summary.rows:,} rows, {summary.failed_rows:,} failed")
        if summary.version:
            text.append("; stored as ")
            text.append(f"{summary.output}@{short_id(summary.version)}", style="bold")
        elif summary.status != "failed":
            text.append("; nothing stored (no rows)", style="dim")
        hints = (["o opens it"] if summary.version else []) + (["f retries the failed rows"] if summary.failed_rows
                                                                else [])
        if hints:
            text.append(f"  ({', '.join(hints)})", style="dim")
        self.status(text)
        if summary.version:
            self.refresh_choices()  # a new version of a dataset the seed list offers too

    # --- results -------------------------------------------------------------------------------

    def show_row(self, index: int) -> None:
        if not 0 <= index < len(self.rows):
            return
        self._shown_row = index
        record = Record.from_row(self.rows[index])
        title = Text(f"row {index + 1:,} of {self.row_count:,}", style="bold")
        self.query_one("#gen-row-detail", Static).update(Group(title, render_record(record)))

    def show_failed(self, index: int) -> None:
        if not 0 <= index < len(self.failed):
            return
        event = self.failed[index]
        text = Text(f"failed row {index + 1:,} of {len(self.failed):,}", style="bold")
        source = event.get("source_index")
        text.append(f"\nseed #{source}" if source is not None else "\nno seed", style="dim")
        if event.get("stage"):
            text.append(f" · stage {event['stage']}", style="dim")
        if event.get("status"):
            text.append(f" · HTTP {event['status']}", style="dim")
        text.append("\n\n")
        text.append(str(event.get("error") or ""), style="red")
        parts = [text]
        seed = self._failed_source(index)
        if seed is not None:
            parts += [Text("\nthe seed it came from", style="bold"), render_record(Record.from_row(seed))]
        self.query_one("#gen-failed-detail", Static).update(Group(*parts))

    def _failed_source(self, index: int) -> dict[str, Any] | None:
        # Events leave the seed out (it can be large); the run folder keeps it, line by line in
        # the same order as the events. Read again only when a newer failure is asked for.
        if self.run_id is None:
            return None
        if index >= len(self._failed_sources):
            self._failed_sources = RunFolder(runs_dir(self.app.workspace) / self.run_id).read("failed.jsonl")
        return self._failed_sources[index].get("source") if index < len(self._failed_sources) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        if event.data_table.id == "gen-rows":
            self.show_row(int(event.row_key.value))
        elif event.data_table.id == "gen-failed":
            self.show_failed(int(event.row_key.value))

    def action_toggle_tab(self) -> None:
        tabs = self.query_one("#gen-tabs", TabbedContent)
        tabs.active = "tab-failed" if tabs.active == "tab-rows" else "tab-rows"
        self.query_one("#gen-failed" if tabs.active == "tab-failed" else "#gen-rows").focus()

    def action_open_output(self) -> None:
        if self.summary is not None and self.summary.version:
            self.app.open_dataset(f"{self.summary.output}@{self.summary.version}")

    def action_escape(self) -> None:
        if self.busy == "run":
            self._stop.set()  # the engine checks it before each request and stores what was made
            self.status(Text("cancelling … (finishing the requests in flight)", style="bold yellow"))
            return
        if self.busy == "estimate" and self._worker is not None:
            self._worker.cancel()
            return
        super().action_escape()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "retry_failed":
            return not self.busy and self.summary is not None and self.summary.failed_rows > 0 or None
        if action == "open_output":
            return not self.busy and self.summary is not None and bool(self.summary.version) or None
        return super().check_action(action, parameters)

    # --- the bar -------------------------------------------------------------------------------

    def busy_text(self) -> str:
        return "running" if self.busy == "run" else super().busy_text()

    def bar_extra(self) -> Text | None:
        return Text.assemble(("run ", "dim"), self.run_id) if self.run_id else None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
