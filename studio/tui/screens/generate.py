"""Generate (mode 4): configure a generation run, estimate its cost, run it with live counters,
watch the rows arrive, retry the failed ones, and open what was stored.

The screen only builds a :class:`~studio.generation.runner.GenerationRecipe` and calls the
headless :func:`~studio.generation.runner.run_generation` in a thread worker, exactly as
``studio generate`` does. The worker's ``emit`` only appends events to a queue; a timer drains
it a few times a second and redraws once per drain, so a replay that yields thousands of rows
a second (all answered from the journal) costs a few redraws, not thousands. Cancelling sets a
flag the engine checks before every request: the run stops cleanly and stores what it made.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator
from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    DataTable, Footer, Header, Label, ProgressBar, Select, Static, TabbedContent, TabPane,
)
from textual.worker import Worker, WorkerState, get_current_worker

from studio.generation.provider import EMBEDDED
from studio.records import Record
from studio.rendering import kind_tag, record_preview, render_record, short_id
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.widgets.selects import select_value, set_select_options
from studio.tui.widgets.generate_live import LivePanel
from studio.tui.widgets.op_form import GENERAL, OpForm, initial_raw, validate_form

DRAIN_EVERY = 0.2  # seconds between redraws while a run goes
MAX_TABLE_ROWS = 5_000  # rows listed live; the stored dataset (o) pages all of them from Arrow
PROMPT_CHARS = 40
ANSWER_CHARS = 70


class RunSettings(BaseModel):
    """The recipe's own scalar fields, as one model so the generated form shows and checks them."""

    output: str = Field(description="dataset the rows are stored as (a new version of it)")
    seed_limit: int | None = Field(None, ge=1, description="use only the first N seed records")
    temperature: float | None = Field(None, ge=0, le=2, description="default temperature of every request "
                                      "(a generator's own option wins)")
    max_tokens: int | None = Field(None, ge=1, description="default completion tokens per request (a generator's "
                                   "own option wins)")
    seed: int = Field(0, description="random seed: the same seed and journal give the same run")
    budget: float | None = Field(None, gt=0, description="hard cost cap; the run stops cleanly when reached")

    @field_validator("output")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        from studio.store import NAME_RE

        if not NAME_RE.match(value):
            raise ValueError("a dataset name is letters, digits, '.', '_' or '-' (max 100), starting with a "
                             "letter or digit")
        return value


@dataclass
class Problems:
    """What stops the recipe from being run, by where it is shown."""

    provider: str = ""
    generator: str = ""
    seeds: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def messages(self) -> list[str]:
        out = [f"{where}: {m}" for where, m in (("provider", self.provider), ("generator", self.generator),
                                                 ("seed dataset", self.seeds)) if m]
        out += [m if name == GENERAL else f"{name}: {m}" for name, m in self.settings.items()]
        out += [f"options: {m}" if name == GENERAL else f"option {name}: {m}" for name, m in self.config.items()]
        return out


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


class GenerateScreen(ReportsWorkerErrors, Screen):
    TITLE = "Generate"
    AUTO_FOCUS = "#gen-provider"
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
        self.providers: dict[str, Any] = {}
        self.generators: dict[str, Any] = {}
        self.settings_raw, _ = initial_raw(RunSettings, {})
        self.config_raw: dict[str, dict[str, Any]] = {}  # per generator, so switching keeps edits
        self.checked = False  # errors show once the user has typed in a form or asked to run
        self.busy: str | None = None  # "estimate" | "run"
        self.run_id: str | None = None
        self.summary = None  # RunSummary of the last run
        self.last_recipe = None  # what "retry failed" runs again, with the same run id
        # Canonical rows of the current run as listed (at most MAX_TABLE_ROWS: a long run's rows
        # live in its run folder and the stored dataset, not in this process), and how many came.
        self.rows: list[dict[str, Any]] = []
        self.row_count = 0
        self.failed: list[dict[str, Any]] = []  # row_failed events (small: the seed is left out)
        self._failed_sources: list[dict[str, Any]] = []  # failed.jsonl, read when a failure is shown
        self._inbox: deque[dict[str, Any]] = deque()  # the worker appends, the drain timer pops
        self._stop = threading.Event()
        self._worker: Worker | None = None
        self._shown_row: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="gen-bar")
        with Horizontal(id="gen-body"):
            with VerticalScroll(id="gen-setup"):
                yield Label("Provider", classes="field-label")
                # Filled with the saved providers on mount; the embedded model is always there.
                yield Select([(EMBEDDED, EMBEDDED)], value=EMBEDDED, allow_blank=False, id="gen-provider")
                yield Static("", id="gen-provider-info", classes="gen-hint")
                yield Static("", id="gen-provider-error", classes="gen-error")
                yield Label("Generator", classes="field-label")
                yield Select([], prompt="choose a generator", id="gen-generator")
                yield Static("", id="gen-generator-info", classes="gen-hint")
                yield Static("", id="gen-generator-error", classes="gen-error")
                yield Label("Seed dataset", classes="field-label")
                yield Select([], prompt="no seed dataset", id="gen-seeds")
                yield Static("", id="gen-seeds-info", classes="gen-hint")
                yield Static("", id="gen-seeds-error", classes="gen-error")
                yield Label("Run", classes="pane-title")
                yield OpForm(RunSettings, self.settings_raw, id="gen-settings")
                yield Label("Generator options", classes="pane-title")
                yield Vertical(id="gen-config-area")
            with Vertical(id="gen-main"):
                yield LivePanel(id="gen-live")
                yield ProgressBar(total=None, show_eta=False, id="gen-progress")
                yield Static("", id="gen-status")
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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#gen-progress").display = False
        # Paused until a run starts: between runs nothing arrives, so nothing needs drawing.
        self._ticker = self.set_interval(DRAIN_EVERY, self._drain, pause=True)
        self.refresh_choices()
        self._show_config_form()
        self._update_bar()
        self._status(Text("Pick a generator and its seeds, then e estimates and r starts.", style="dim"))

    def on_screen_resume(self) -> None:
        # Back from another mode: a curation may have added datasets, the CLI a provider, a
        # plugin install a generator.
        if not self.busy and self.refresh_choices():
            self._show_config_form()  # plugins were reloaded and the chosen generator went away

    # --- choices -------------------------------------------------------------------------------

    def refresh_choices(self) -> bool:
        """Fill the three choices again; True when the chosen generator changed."""
        from studio.generation.provider import load_providers

        ws = self.app.workspace
        try:
            self.providers = load_providers(ws.root)
        except Exception as exc:  # noqa: BLE001 - a broken providers.yaml must not take the screen down
            self.providers = {EMBEDDED: self.providers.get(EMBEDDED) or _embedded()}
            self.notify(f"{type(exc).__name__}: {exc}", title="providers.yaml unreadable", severity="error")
        try:
            self.generators = dict(self.app.host.items("generator"))
        except Exception as exc:  # noqa: BLE001 - a broken host must not take the screen down
            self.generators = {}
            self.notify(f"{type(exc).__name__}: {exc}", title="Generators unavailable", severity="error")
        generator_before = self._value("#gen-generator")
        self._set_options("#gen-provider", [
            (f"{name}  (embedded local model)" if p.embedded else f"{name}  ({p.model})", name)
            for name, p in self.providers.items()], default=EMBEDDED)
        self._set_options("#gen-generator", [
            (f"{getattr(g, 'title', name) or name}  ({name})", name) for name, g in sorted(self.generators.items())],
            default=next(iter(self.generators)) if len(self.generators) == 1 else None)
        self._set_options("#gen-seeds", [(name, name) for name in ws.dataset_names()])
        self._describe()
        return self._value("#gen-generator") != generator_before

    def _set_options(self, selector: str, options: list[tuple[str, str]], default: str | None = None,
                     force: bool = False) -> None:
        set_select_options(self.query_one(selector, Select), options, default, force)

    def _value(self, selector: str) -> str | None:
        return select_value(self.query_one(selector, Select))

    def generator(self):
        return self.generators.get(self._value("#gen-generator") or "")

    @on(Select.Changed, "#gen-provider")
    @on(Select.Changed, "#gen-seeds")
    def _choice_changed(self) -> None:
        self._describe()
        self._changed()

    @on(Select.Changed, "#gen-generator")
    def _generator_changed(self) -> None:
        self._describe()
        self._show_config_form()
        self._changed()

    def _describe(self) -> None:
        """The hints under the three choices: where requests go, what the generator does, seeds."""
        provider = self.providers.get(self._value("#gen-provider") or "")
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
        self.query_one("#gen-provider-info", Static).update(info)

        gen = self.generator()
        info = Text()
        if gen is not None:
            info.append(getattr(gen, "summary", "") or "", style="italic")
            info.append(f"\nseeds {gen.seeds} · makes {gen.produces}", style="dim")
            if gen.uses_completions:
                info.append(" · needs raw /v1/completions", style="dim")
        elif not self.generators:
            info.append("no generators are loaded (see the Plugins screen)", style="yellow")
        self.query_one("#gen-generator-info", Static).update(info)

        seeds = self.query_one("#gen-seeds", Select)
        takes_none = gen is not None and gen.seeds == "none"
        seeds.disabled = takes_none
        info = Text()
        if takes_none:
            info.append("this generator starts from nothing", style="dim")
        else:
            name = self._value("#gen-seeds")
            if name is not None:
                try:
                    head = self.app.workspace.head(name)
                    info.append(f"{head.num_records:,} records · head {short_id(head.id)}", style="dim")
                except Exception as exc:  # noqa: BLE001 - a damaged dataset is reported, not fatal
                    info.append(f"unreadable: {exc}", style="red")
            if gen is not None:
                info.append(("\n" if info.plain else "") + ("required" if gen.seeds == "required" else "optional"),
                            style="dim")
        self.query_one("#gen-seeds-info", Static).update(info)

    # --- forms ---------------------------------------------------------------------------------

    def _show_config_form(self) -> None:
        # Swapped in order: each swap awaits the removal of the previous form.
        self.call_later(self._swap_config_form)

    async def _swap_config_form(self) -> None:
        area = self.query_one("#gen-config-area", Vertical)
        await area.remove_children()
        gen = self.generator()
        if gen is None:
            await area.mount(Static(Text("Choose a generator to see its options.", style="dim")))
            return
        raw = self.config_raw.setdefault(gen.name, initial_raw(gen.config_model, {})[0])
        errors = self.problems().config if self.checked else {}
        if not gen.config_model.model_fields:
            await area.mount(Static(Text("This generator has no options.", style="dim")))
            return
        await area.mount(OpForm(gen.config_model, raw, errors, id="gen-config"))

    def on_op_form_changed(self, event: OpForm.Changed) -> None:
        if not event.form.is_attached:
            return  # a change from a form that was just swapped out
        if event.form.id == "gen-settings":
            self.settings_raw = dict(event.raw)
        elif event.form.id == "gen-config" and event.form.model is getattr(self.generator(), "config_model", None):
            self.config_raw[self.generator().name] = dict(event.raw)
        self.checked = True
        self._changed()

    def _changed(self) -> None:
        """Any setting changed: the shown estimate no longer applies; re-check everything."""
        if self.busy is None and self.summary is None:  # a finished run's counters stay up
            self.query_one("#gen-live", LivePanel).reset()
        self.show_problems()

    # --- the recipe ----------------------------------------------------------------------------

    def draft(self):
        """(the recipe, problems): the recipe is None while anything is missing or invalid."""
        from studio.generation.runner import GenerationRecipe

        problems = Problems()
        provider_name = self._value("#gen-provider")
        provider = self.providers.get(provider_name or "")
        if provider is None:
            problems.provider = "choose where requests go"
        else:
            try:
                provider.api_key()  # a named key variable that is not set fails here, not mid-run
            except ValueError as exc:
                problems.provider = str(exc)
        gen = self.generator()
        if gen is None:
            problems.generator = ("no generators are loaded" if not self.generators else "choose a generator")
        seed_dataset = self._value("#gen-seeds") if gen is None or gen.seeds != "none" else None
        if gen is not None and gen.seeds == "required" and not seed_dataset:
            problems.seeds = f"{gen.name} starts from seed records: choose a dataset"
        settings, problems.settings = validate_form(RunSettings, self.settings_raw)
        config = None
        if gen is not None:
            raw = self.config_raw.setdefault(gen.name, initial_raw(gen.config_model, {})[0])
            config, problems.config = validate_form(gen.config_model, raw)
        if problems.messages() or settings is None or config is None:
            return None, problems
        params = {k: v for k, v in (("temperature", settings.temperature), ("max_tokens", settings.max_tokens))
                  if v is not None}
        recipe = GenerationRecipe(
            generator=gen.name, output=settings.output, seed_dataset=seed_dataset,
            seed_limit=settings.seed_limit if seed_dataset else None,
            provider=None if provider_name == EMBEDDED else provider_name, params=params,
            config=config.model_dump(mode="json"), seed=settings.seed, budget=settings.budget)
        return recipe, problems

    def problems(self) -> Problems:
        return self.draft()[1]

    def show_problems(self) -> Problems:
        problems = self.problems()
        if self.checked:
            for where in ("provider", "generator", "seeds"):
                message = getattr(problems, where)
                self.query_one(f"#gen-{where}-error", Static).update(Text(f"✗ {message}") if message else "")
            self.query_one("#gen-settings", OpForm).show_errors(problems.settings)
            forms = self.query("#gen-config")
            if forms:
                forms.first(OpForm).show_errors(problems.config)
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

    # --- estimate ------------------------------------------------------------------------------

    def action_estimate(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is None:
            return
        self.busy = "estimate"
        self.query_one("#gen-live", LivePanel).reset(recipe.budget)
        self._status(Text("estimating … (nothing is sent)", style="yellow"))
        self.refresh_bindings()
        self._worker = self._estimate(self.app.workspace, recipe, self.app.host)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _estimate(self, ws, recipe, host):
        from studio.generation.runner import run_generation

        return run_generation(ws, recipe, estimate_only=True, host=host)

    # --- run -----------------------------------------------------------------------------------

    def action_start(self) -> None:
        recipe = self._recipe_or_say_why()
        if recipe is not None:
            self._start_run(recipe)

    def action_retry_failed(self) -> None:
        if self.busy or self.summary is None or self.last_recipe is None:
            return
        # The same run id: the journal answers everything already made, and only the requests
        # that failed are sent again.
        self._start_run(self.last_recipe, run_id=self.summary.run_id, retry_failed=True)

    def _start_run(self, recipe, run_id: str | None = None, retry_failed: bool = False) -> None:
        self.busy = "run"
        self.last_recipe = recipe
        self.summary = None
        self.run_id = run_id
        self._inbox.clear()
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
        what = "retrying the failed requests" if retry_failed else "starting"
        self._status(Text(f"{what} … (Esc cancels)", style="yellow"))
        self.refresh_bindings()
        self._ticker.resume()
        self._worker = self._generate(self.app.workspace, recipe, self.app.host, run_id, retry_failed)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, ws, recipe, host, run_id: str | None, retry_failed: bool):
        from studio.generation.runner import run_generation

        worker = get_current_worker()
        # The app cancels its workers when it quits: that stops the run cleanly too.
        return run_generation(ws, recipe, emit=self._inbox.append,
                              cancelled=lambda: self._stop.is_set() or worker.is_cancelled,
                              run_id=run_id, retry_failed=retry_failed, host=host)

    def _drain(self) -> None:
        """Take every queued event and redraw once: the latest meter, new rows, new failures."""
        meter = None
        new_rows: list[dict[str, Any]] = []
        new_failed: list[dict[str, Any]] = []
        live = self.query_one("#gen-live", LivePanel)
        while self._inbox:
            event = self._inbox.popleft()
            kind = event.get("event")
            if kind == "progress":
                meter = event
            elif kind == "row":
                new_rows.append(event["row"])
            elif kind == "row_failed":
                new_failed.append(event)
            elif kind == "estimate":
                live.show(estimate=event)
            elif kind == "serving":
                self._status(Text(f"serving the embedded model ({event.get('model')}) on 127.0.0.1 … "
                                  f"(Esc cancels)", style="yellow"))
            elif kind == "start":
                self.run_id = event.get("run_id")
                self._status(Text(f"running {self.run_id} … (Esc cancels)", style="yellow"))
            elif kind == "stopping":
                self._status(Text(f"stopping: {event.get('reason')} (finishing the requests in flight) …",
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

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        busy, self.busy = self.busy, None
        self._ticker.pause()
        self._drain()
        self.query_one("#gen-progress").display = False
        if event.state == WorkerState.SUCCESS and busy == "estimate":
            summary = event.worker.result
            self.query_one("#gen-live", LivePanel).show(estimate=summary.estimate)
            self._status(Text("estimate only: nothing was sent (r starts the run)", style="green"))
        elif event.state == WorkerState.SUCCESS:
            self._finished(event.worker.result)
        elif event.state == WorkerState.CANCELLED:
            self._status(Text(f"{busy} cancelled", style="yellow"))
        else:
            error = event.worker.error
            self._status(Text(f"✗ {busy} failed: {type(error).__name__}: {error}", style="red"))
        self.refresh_bindings()
        self._update_bar()

    def _finished(self, summary) -> None:
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
        self._status(text)
        if summary.version:
            # A new version of a dataset the seed list offers too.
            self._set_options("#gen-seeds", [(n, n) for n in self.app.workspace.dataset_names()])

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
        from studio.generation.runner import RunFolder, runs_dir

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
            self._status(Text("cancelling … (finishing the requests in flight)", style="bold yellow"))
            return
        if self.busy == "estimate" and self._worker is not None:
            self._worker.cancel()
            return
        if self.query_one("#gen-setup") in (self.focused.ancestors if self.focused else []):
            self.query_one("#gen-rows").focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("estimate", "start") and self.busy:
            return None
        if action == "retry_failed":
            return not self.busy and self.summary is not None and self.summary.failed_rows > 0 or None
        if action == "open_output":
            return not self.busy and self.summary is not None and bool(self.summary.version) or None
        return True

    # --- status ----------------------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#gen-status", Static).update(text)

    def _update_bar(self, problems: Problems | None = None) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        gen = self.generator()
        bar.append(" generator ", style="dim")
        bar.append(gen.name if gen is not None else "—", style="bold")
        bar.append("  │  provider ", style="dim")
        bar.append(self._value("#gen-provider") or "—", style="bold")
        if gen is None or gen.seeds != "none":
            bar.append("  │  seeds ", style="dim")
            bar.append(self._value("#gen-seeds") or "—", style="bold")
        if self.run_id:
            bar.append("  │  run ", style="dim")
            bar.append(self.run_id)
        bar.append("  │  ", style="dim")
        if self.busy == "run":
            bar.append("running", style="bold yellow")
        else:
            count = len((problems or self.problems()).messages())
            bar.append("ready" if not count else f"{count} to fix", style="green" if not count else "bold red")
        self.query_one("#gen-bar", Static).update(bar)


def _embedded():
    from studio.generation.provider import ProviderConfig

    return ProviderConfig()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
