"""What the screens that set up a run from a recipe share (Generate, Train; Evaluate slots in the
same way): the recipe picker, the dataset picker, the plugin item picker (a generator, a
back-end) with the item's own options form, the settings forms, the problems panel, the action
buttons and the status.

A subclass declares its recipe model and says where each part of the form goes in it:

* ``CHOICES``: the pickers, top to bottom. The base fills the ``recipe`` one (the catalogue's
  recipes of ``RECIPE_KIND``), the ``dataset`` one (the workspace's datasets) and the ``item``
  one (the host's items of ``ITEM_KIND``); the subclass fills any other (``choice_options``).
* ``SECTIONS``: forms generated from the core schema (:func:`studio.config_schema.describe`,
  through :class:`~studio.tui.widgets.op_form.OpForm`): a core model, or part of one
  (:func:`~studio.tui.widgets.op_form.fields_model`), and where its values sit in the recipe.
* ``ACTIONS``: the buttons (the last is the primary one), each running ``action_<name>``.

:meth:`RecipeFormScreen.draft` puts the chosen recipe, the pickers and the forms together
(:func:`put_form_values`) and validates the result with ``RECIPE_MODEL``; every error is shown
under the field or picker it belongs to. Workers started with :meth:`begin` report back through
:meth:`finished`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from pydantic import BaseModel, ValidationError
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, Select, Static
from textual.worker import Worker, WorkerState

from studio.rendering import short_id
from studio.data.refs import looks_like_file
from studio.recipes.catalog import list_recipes
from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.widgets.op_form import GENERAL, OpForm, initial_raw, validate_form
from studio.tui.widgets.selects import select_value, set_select_options

BLANK = "__blank__"  # the recipe choice "start from scratch"


@dataclass(frozen=True)
class Choice:
    """A picker: ``role`` is "recipe", "dataset", "item" or "" (the subclass fills it);
    ``field`` is the recipe key its value goes to."""

    key: str
    label: str
    role: str = ""
    field: str | None = None
    prompt: str = "choose"
    short: str = ""  # its name in messages and the bar (default: the label in lower case)
    blank: bool = True  # False: always one of the options (the subclass's default first)

    @property
    def name(self) -> str:
        return self.short or self.label.lower()


@dataclass(frozen=True)
class Section:
    """A settings form: the fields of ``model`` (a core model, or part of one), whose values sit
    at ``path`` in the recipe. ``primary`` fields come first; the rest fold under "N more"."""

    key: str
    title: str
    model: type[BaseModel]
    path: tuple[str, ...] = ()
    primary: tuple[str, ...] | None = None

    @property
    def fields(self) -> list[str]:
        return list(self.model.model_fields)


@dataclass
class Problems:
    """What stops the recipe from being run, by where it is shown."""

    choices: dict[str, str] = field(default_factory=dict)  # choice key -> message
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # section key -> field -> message
    options: dict[str, str] = field(default_factory=dict)  # the item's options form
    recipe: str = ""
    names: dict[str, str] = field(default_factory=dict)  # choice key -> its name in messages

    def messages(self) -> list[str]:
        out = [f"{self.names.get(key, key)}: {message}" for key, message in self.choices.items() if message]
        for errors in self.settings.values():
            out += [m if name == GENERAL else f"{name}: {m}" for name, m in errors.items()]
        out += [f"options: {m}" if name == GENERAL else f"option {name}: {m}" for name, m in self.options.items()]
        if self.recipe:
            out.append(self.recipe)
        return out


def put_form_values(base: dict[str, Any], choices: dict[str, Any],
                    sections: Iterable[tuple[tuple[str, ...], Iterable[str], dict[str, Any]]],
                    config: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe to run: ``base`` (a loaded recipe, or nothing) with the screen's choices
    (recipe key -> value), each section's values (path, the fields the form shows, the values
    given; a field left blank goes back to its default) and the item's options in. ``base``
    itself is not changed; what the form does not show (other sections, expectations) stays."""
    data = copy.deepcopy(base)
    data.update(choices)
    for path, names, values in sections:
        node = data
        for part in path:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        for name in names:
            if name in values:
                node[name] = values[name]
            else:
                node.pop(name, None)
    if config is not None:
        data["config"] = config
    return data


class RecipeFormScreen(ReportsWorkerErrors, Screen):
    PREFIX: ClassVar[str]  # widget ids: #<prefix>-setup, #<prefix>-<choice>, #<prefix>-settings ...
    RECIPE_KIND: ClassVar[str]  # the catalogue's kind of recipe (studio.recipes.kinds.kind_of)
    RECIPE_MODEL: ClassVar[type[BaseModel]]
    ITEM_KIND: ClassVar[str]  # the plugin host's kind of the item picker ("backend", "generator")
    ITEM_FIELD: ClassVar[str] = "config"  # where the item's options go in the recipe
    OPTIONS_TITLE: ClassVar[str] = "Options"
    CHOICES: ClassVar[tuple[Choice, ...]]
    SECTIONS: ClassVar[tuple[Section, ...]]
    ACTIONS: ClassVar[tuple[tuple[str, str], ...]]  # (action, button label); the last is primary
    IDLE_STATUS: ClassVar[str] = ""

    BINDINGS = [Binding("escape", "escape", "Leave field", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.recipes: list[dict[str, Any]] = []
        self.items: dict[str, Any] = {}
        self.base: dict[str, Any] = {}  # the chosen recipe, as RECIPE_MODEL.model_dump(mode="json")
        self.recipe_error = ""
        self.section_raw = {s.key: initial_raw(s.model, {})[0] for s in self.SECTIONS}
        self.options_raw: dict[str, dict[str, Any]] = {}  # per item, so switching keeps edits
        self.options_extra: dict[str, dict[str, Any]] = {}  # recipe option keys an item's model lacks
        self.checked = False  # errors show once the user has typed in a form or asked for something
        self.busy: str | None = None
        self.service_problems: Text | None = None  # what the last service run found, until a change
        self._worker: Worker | None = None

    # --- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        p = self.PREFIX
        yield Header()
        yield Static("", id=f"{p}-bar", classes="form-bar")
        with Horizontal(id=f"{p}-body", classes="form-body"):
            # The column scrolls with the wheel; Tab goes straight to its fields.
            with VerticalScroll(id=f"{p}-setup", classes="form-setup", can_focus=False):
                for choice in self.CHOICES:
                    yield Label(choice.label, classes="field-label")
                    if choice.role == "recipe":
                        select = Select([("blank recipe", BLANK)], value=BLANK, allow_blank=False,
                                        id=f"{p}-{choice.key}", compact=True, classes="line-field")
                    elif not choice.blank:
                        select = Select(self.choice_options(choice.key), value=self.choice_default(choice.key),
                                        allow_blank=False, id=f"{p}-{choice.key}", compact=True, classes="line-field")
                    else:
                        select = Select([], prompt=choice.prompt, id=f"{p}-{choice.key}", compact=True,
                                        classes="line-field")
                    yield select
                    yield Static("", id=f"{p}-{choice.key}-info", classes="form-hint")
                    yield Static("", id=f"{p}-{choice.key}-error", classes="form-error")
                with Vertical(id=f"{p}-settings", classes="form-settings"):
                    yield from self._section_forms()
                yield Label(self.OPTIONS_TITLE, classes="pane-title")
                yield Vertical(id=f"{p}-config-area", classes="form-options")
            with Vertical(id=f"{p}-main", classes="form-main"):
                with Horizontal(id=f"{p}-buttons", classes="form-buttons"):
                    for index, (action, label) in enumerate(self.ACTIONS):
                        yield Button(label, id=f"{p}-{action}-button", name=action,
                                     variant="primary" if index == len(self.ACTIONS) - 1 else "default")
                yield Static("", id=f"{p}-status", classes="form-status")
                yield Static("", id=f"{p}-problems", classes="form-problems")
                yield from self.compose_main()
        yield Footer(compact=True)

    def compose_main(self) -> ComposeResult:
        """What the screen shows under its buttons, status and problems."""
        return iter(())

    def _section_forms(self) -> Iterable:
        errors = self.problems().settings if self.checked and self.is_mounted else {}
        for section in self.SECTIONS:
            yield Label(section.title, classes="pane-title")
            yield OpForm(section.model, self.section_raw[section.key], errors.get(section.key),
                         primary=section.primary, id=f"{self.PREFIX}-settings-{section.key}")

    def on_mount(self) -> None:
        self.refresh_choices()
        self._show_options_form()
        self.describe()
        self._update_bar()
        if self.IDLE_STATUS:
            self.status(Text(self.IDLE_STATUS, style="dim"))

    def on_screen_resume(self) -> None:
        # Back from another mode: a curation may have added datasets, a plugin install an item.
        if not self.busy and self.refresh_choices():
            self._show_options_form()
            self.describe()

    # --- choices -------------------------------------------------------------------------------

    def choice(self, role: str) -> Choice | None:
        return next((c for c in self.CHOICES if c.role == role), None)

    def value(self, key: str) -> str | None:
        return select_value(self.query_one(f"#{self.PREFIX}-{key}", Select))

    def set_options(self, key: str, options: list[tuple[str, str]], default: str | None = None,
                    force: bool = False) -> None:
        set_select_options(self.query_one(f"#{self.PREFIX}-{key}", Select), options, default, force)

    def item(self):
        """The chosen plugin item (generator, back-end), or None."""
        choice = self.choice("item")
        return self.items.get(self.value(choice.key) or "") if choice is not None else None

    def refresh_choices(self) -> bool:
        """Fill every picker again; True when the chosen item changed."""
        ws = self.app.workspace
        try:
            self.recipes = [r for r in list_recipes(ws) if r.get("kind") == self.RECIPE_KIND]
        except Exception as exc:  # noqa: BLE001 - a broken recipes folder must not take the screen down
            self.recipes = []
            self.notify(f"{type(exc).__name__}: {exc}", title="Recipes unavailable", severity="error")
        try:
            self.items = dict(self.app.host.items(self.ITEM_KIND))
        except Exception as exc:  # noqa: BLE001 - a broken host must not take the screen down
            self.items = {}
            self.notify(f"{type(exc).__name__}: {exc}", title=f"{self.ITEM_KIND}s unavailable", severity="error")
        item = self.choice("item")
        before = self.value(item.key) if item is not None else None
        for choice in self.CHOICES:
            if choice.role == "recipe":
                self.set_options(choice.key, [("blank recipe", BLANK)] + [
                    (self.recipe_label(r), r["path"]) for r in self.recipes], default=BLANK)
            elif choice.role == "dataset":
                self._fill_datasets(choice)
            elif choice.role == "item":
                self.set_options(choice.key, self.item_options(), default=self.base.get(choice.field or "")
                                 or self.default_item())
            else:
                self.set_options(choice.key, self.choice_options(choice.key), default=self.choice_default(choice.key))
        return item is not None and self.value(item.key) != before

    def recipe_label(self, entry: dict[str, Any]) -> str:
        detail = [d for d in (self.recipe_detail(entry), None if entry.get("shipped") else "workspace") if d]
        return entry["name"] + (f"  ({', '.join(detail)})" if detail else "")

    def recipe_detail(self, entry: dict[str, Any]) -> str | None:
        return None

    def item_options(self) -> list[tuple[str, str]]:
        return [(f"{getattr(item, 'title', name) or name}  ({name})", name)
                for name, item in sorted(self.items.items())]

    def default_item(self) -> str | None:
        return next(iter(self.items)) if len(self.items) == 1 else None

    def choice_options(self, key: str) -> list[tuple[str, str]]:
        raise NotImplementedError(f"{type(self).__name__} fills the {key!r} picker")

    def choice_default(self, key: str) -> str | None:
        return None

    def _fill_datasets(self, choice: Choice) -> None:
        options = [(name, name) for name in self.app.workspace.dataset_names()]
        wanted = self.base.get(choice.field or "")
        if wanted and wanted not in [value for _, value in options]:
            what = "file" if looks_like_file(wanted) else "dataset"
            options.append((f"{Path(wanted).name if what == 'file' else wanted}  (the recipe's {what})", wanted))
        self.set_options(choice.key, options, default=wanted)

    def on_select_changed(self, event: Select.Changed) -> None:
        choice = next((c for c in self.CHOICES if event.select.id == f"{self.PREFIX}-{c.key}"), None)
        if choice is None:
            return  # a select of a form: OpForm reports it as OpForm.Changed
        if choice.role == "recipe":
            self.load_base(select_value(event.select))
            return
        if choice.role == "item":
            self._show_options_form()
        self.describe()
        self._changed()

    def load_base(self, path: str | None) -> None:
        """Start from the recipe at ``path`` (None or BLANK: from scratch): every picker and form
        takes the recipe's values."""
        self.recipe_error = ""
        self.base = {}
        if path and path != BLANK:
            try:
                self.base = self.read_recipe(Path(path))
            except ValueError as exc:
                self.recipe_error = str(exc)
        for section in self.SECTIONS:
            node = self.base
            for part in section.path:
                node = node.get(part) or {}
            self.section_raw[section.key] = initial_raw(section.model, {k: v for k, v in node.items()
                                                                       if k in section.model.model_fields})[0]
        for choice in self.CHOICES:
            wanted = self.base.get(choice.field) if choice.field else None
            if choice.role == "dataset":
                self._fill_datasets(choice)
            elif choice.role == "item" and wanted:
                self.options_raw.pop(wanted, None)  # the recipe's options win over earlier edits
                self.options_extra.pop(wanted, None)
                self.set_options(choice.key, self.item_options(), default=wanted, force=True)
            elif choice.role == "" and wanted is not None:
                self.apply_recipe_choice(choice, wanted)
        self.call_later(self._swap_section_forms)
        self._show_options_form()
        self.describe()
        self._changed()

    def read_recipe(self, path: Path) -> dict[str, Any]:
        """The recipe file as ``RECIPE_MODEL.model_dump(mode="json")``; ValueError says why not."""
        raise NotImplementedError

    def apply_recipe_choice(self, choice: Choice, value: Any) -> None:
        """Set a subclass picker from a loaded recipe's value."""
        values = [v for _, v in self.query_one(f"#{self.PREFIX}-{choice.key}", Select)._options]
        if value in values:
            self.set_options(choice.key, self.choice_options(choice.key), default=value, force=True)

    # --- hints under the pickers ---------------------------------------------------------------

    def describe(self) -> None:
        for choice in self.CHOICES:
            self.query_one(f"#{self.PREFIX}-{choice.key}-info", Static).update(self.describe_choice(choice))
        recipe = self.choice("recipe")
        if recipe is not None:
            self.query_one(f"#{self.PREFIX}-{recipe.key}-error", Static).update(
                Text(f"✗ {self.recipe_error}") if self.recipe_error else "")

    def describe_choice(self, choice: Choice) -> Text:
        info = Text()
        value = self.value(choice.key)
        if choice.role == "recipe":
            entry = next((r for r in self.recipes if r["path"] == value), None)
            if entry is not None:
                info.append(entry.get("description") or "", style="italic")
                if entry.get("command"):
                    info.append(f"\n{entry['command']}", style="dim")
            elif not self.recipes:
                info.append(f"no {self.RECIPE_KIND} recipes found (recipes/ in the project or the workspace)",
                            style="dim")
            else:
                info.append("every setting at its default", style="dim")
        elif choice.role == "dataset" and value is not None:
            if looks_like_file(value):
                exists = Path(value).is_file()
                info.append(f"file {value}" if exists else f"{value}: no such file", style="dim" if exists else "red")
            else:
                try:
                    head = self.app.workspace.head(value)
                    info.append(f"{head.num_records:,} records · head {short_id(head.id)}", style="dim")
                except Exception as exc:  # noqa: BLE001 - a damaged or missing dataset is reported
                    info.append(str(exc), style="red")
        elif choice.role == "dataset" and not self.app.workspace.dataset_names():
            info.append("no stored datasets: import one on the Datasets screen", style="yellow")
        elif choice.role == "item":
            item = self.item()
            if item is not None:
                info.append(getattr(item, "summary", "") or "", style="italic")
                detail = self.describe_item(item)
                if detail:
                    info.append("\n")
                    info.append_text(detail)
                owner = self.app.host.owner(self.ITEM_KIND, item.name) if hasattr(self.app.host, "owner") else None
                if owner:
                    info.append(f" · plugin {owner}", style="dim")
            elif not self.items:
                info.append(f"no {self.ITEM_KIND}s are loaded (see the Plugins screen)", style="yellow")
        return info

    def describe_item(self, item) -> Text:
        return Text()

    # --- forms ---------------------------------------------------------------------------------

    async def _swap_section_forms(self) -> None:
        area = self.query_one(f"#{self.PREFIX}-settings", Vertical)
        await area.remove_children()
        await area.mount_all(list(self._section_forms()))

    def _show_options_form(self) -> None:
        # Swapped in order: each swap awaits the removal of the previous form.
        self.call_later(self._swap_options_form)

    def options_raw_of(self, item) -> dict[str, Any]:
        if item.name not in self.options_raw:
            field_name = self.choice("item").field
            options = (self.base.get(self.ITEM_FIELD) or {}) if self.base.get(field_name) == item.name else {}
            self.options_raw[item.name], self.options_extra[item.name] = initial_raw(item.config_model, options)
        return self.options_raw[item.name]

    async def _swap_options_form(self) -> None:
        area = self.query_one(f"#{self.PREFIX}-config-area", Vertical)
        await area.remove_children()
        item = self.item()
        if item is None:
            await area.mount(Static(Text(f"Choose a {self.choice('item').name} to see its options.", style="dim")))
            return
        raw = self.options_raw_of(item)
        if not item.config_model.model_fields:
            await area.mount(Static(Text(f"This {self.choice('item').name} has no options.", style="dim")))
            return
        errors = self.problems().options if self.checked else {}
        await area.mount(OpForm(item.config_model, raw, errors, id=f"{self.PREFIX}-config"))

    def on_op_form_changed(self, event: OpForm.Changed) -> None:
        if not event.form.is_attached:
            return  # a change from a form that was just swapped out
        form_id = event.form.id or ""
        item = self.item()
        section = next((s for s in self.SECTIONS if form_id == f"{self.PREFIX}-settings-{s.key}"), None)
        if section is not None:
            self.section_raw[section.key] = dict(event.raw)
        elif form_id == f"{self.PREFIX}-config" and item is not None and event.form.model is item.config_model:
            self.options_raw[item.name] = dict(event.raw)
        self.checked = True
        self._changed()

    def _changed(self) -> None:
        """Any setting changed: what a service found no longer applies; check everything again."""
        if not self.busy:
            self.service_problems = None
        self.settings_changed()
        self.show_problems()

    def settings_changed(self) -> None:
        """A subclass's reaction to any change (an estimate that no longer applies, say)."""

    # --- the recipe ----------------------------------------------------------------------------

    def draft(self):
        """(the recipe, problems): the recipe is None while anything is missing or invalid."""
        problems = Problems(names={c.key: c.name for c in self.CHOICES})
        if self.recipe_error:
            problems.recipe = f"recipe: {self.recipe_error}"
        for choice in self.CHOICES:
            if choice.role != "recipe":
                message = self.choice_problem(choice)
                if message:
                    problems.choices[choice.key] = message
        sections = []
        for section in self.SECTIONS:
            values, errors = validate_form(section.model, self.section_raw[section.key])
            if errors:
                problems.settings[section.key] = errors
            else:
                given = values.model_dump(mode="json", include=set(values.model_fields_set))
                sections.append((section.path, section.fields, given))
        item = self.item()
        config = None
        if item is not None:
            config, problems.options = validate_form(item.config_model, self.options_raw_of(item),
                                                     self.options_extra.get(item.name))
        if problems.messages() or config is None:
            return None, problems
        choices = {c.field: self.choice_value(c) for c in self.CHOICES if c.field}
        data = self.adjust_recipe(put_form_values(self.base, choices, sections, config.model_dump(mode="json")))
        try:
            return self.RECIPE_MODEL.model_validate(data), problems
        except ValidationError as exc:
            self._locate(exc, problems)
            return None, problems

    def choice_value(self, choice: Choice) -> Any:
        return self.value(choice.key)

    def choice_problem(self, choice: Choice) -> str:
        """What is wrong with a picker's value ("" when nothing)."""
        value = self.value(choice.key)
        if choice.role == "item" and value is None:
            return f"no {self.ITEM_KIND}s are loaded" if not self.items else f"choose a {choice.name}"
        if choice.role == "dataset" and value is None:
            return "choose a dataset"
        return ""

    def adjust_recipe(self, data: dict[str, Any]) -> dict[str, Any]:
        """The last word on the recipe before it is validated (a subclass maps a picker's value)."""
        return data

    def _locate(self, exc: ValidationError, problems: Problems) -> None:
        """Put each of the recipe model's errors under the field or picker it belongs to."""
        unplaced = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error.get("loc") or ())
            message = error["msg"]
            section = next((s for s in self.SECTIONS if len(loc) > len(s.path) and loc[:len(s.path)] == s.path
                            and loc[len(s.path)] in s.model.model_fields), None)
            choice = next((c for c in self.CHOICES if c.field and loc[:1] == (c.field,)), None)
            if section is not None:
                problems.settings.setdefault(section.key, {})[loc[len(section.path)]] = message
            elif choice is not None:
                problems.choices[choice.key] = message
            elif loc[:1] == (self.ITEM_FIELD,):
                problems.options[".".join(loc[1:]) or GENERAL] = message
            else:
                unplaced.append(f"{'.'.join(loc) or 'recipe'}: {message}")
        if unplaced:
            problems.recipe = "; ".join(unplaced)

    def problems(self) -> Problems:
        return self.draft()[1]

    def show_problems(self) -> Problems:
        problems = self.problems()
        if self.checked:
            for choice in self.CHOICES:
                if choice.role != "recipe":
                    message = problems.choices.get(choice.key, "")
                    self.query_one(f"#{self.PREFIX}-{choice.key}-error", Static).update(
                        Text(f"✗ {message}") if message else "")
            for section in self.SECTIONS:
                forms = self.query(f"#{self.PREFIX}-settings-{section.key}")
                if forms:
                    forms.first(OpForm).show_errors(problems.settings.get(section.key, {}))
            forms = self.query(f"#{self.PREFIX}-config")
            if forms:
                forms.first(OpForm).show_errors(problems.options)
        self._show_problem_panel(problems)
        self._update_bar(problems)
        return problems

    def _show_problem_panel(self, problems: Problems) -> None:
        panel = self.query_one(f"#{self.PREFIX}-problems", Static)
        if self.service_problems is not None:
            panel.update(self.service_problems)
        elif self.checked and problems.messages():
            panel.update(Text("\n".join(f"✗ {m}" for m in problems.messages()), style="red"))
        else:
            panel.update("")

    def show_service_problems(self, text: Text | None) -> None:
        """What a service (a check, a preview) found; it stays until a setting changes."""
        self.service_problems = text
        self.query_one(f"#{self.PREFIX}-problems", Static).update(text or "")

    def recipe_or_say_why(self):
        """The recipe, or None after showing why not (every error under its field)."""
        self.checked = True
        recipe, problems = self.draft()
        self.show_problems()
        if recipe is None:
            messages = problems.messages()
            more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
            self.status(Text(f"✗ {messages[0]}{more}", style="red"))
        return recipe

    # --- running -------------------------------------------------------------------------------

    def begin(self, what: str, message: str) -> bool:
        """Mark the screen busy with ``what``; False (and a warning) when it already is."""
        if self.busy:
            self.notify(f"busy: {self.busy} is still going", severity="warning")
            return False
        self.busy = what
        self.status(Text(message, style="yellow"))
        self.refresh_bindings()
        self._update_bar()
        return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        what, self.busy = self.busy, None
        self.refresh_bindings()
        self.finished(what, event.state, event.worker)
        self._update_bar()

    def finished(self, what: str | None, state: WorkerState, worker: Worker) -> None:
        """A worker started after :meth:`begin` ended; the default reports failure and cancel."""
        if state == WorkerState.ERROR:
            self.status(Text(f"✗ {what} failed: {type(worker.error).__name__}: {worker.error}", style="red"))
        elif state == WorkerState.CANCELLED:
            self.status(Text(f"{what} cancelled", style="yellow"))

    @on(Button.Pressed, ".form-buttons Button")
    async def _button_pressed(self, event: Button.Pressed) -> None:
        await self.run_action(event.button.name or "")

    def action_escape(self) -> None:
        setup = self.query_one(f"#{self.PREFIX}-setup")
        if self.focused is not None and setup in self.focused.ancestors:
            self.query_one(f"#{self.PREFIX}-{self.ACTIONS[-1][0]}-button").focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in {name for name, _ in self.ACTIONS} and self.busy:
            return None
        return True

    # --- status --------------------------------------------------------------------------------

    def status(self, text: Text) -> None:
        self.query_one(f"#{self.PREFIX}-status", Static).update(text)

    def busy_text(self) -> str:
        return f"{self.busy} …"

    def bar_extra(self) -> Text | None:
        """More for the bar (the last run, say)."""
        return None

    def _update_bar(self, problems: Problems | None = None) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        for index, choice in enumerate(self.CHOICES):
            value = self.value(choice.key)
            if choice.role == "recipe":
                shown = "blank" if not value or value == BLANK else Path(value).stem
            elif self.query_one(f"#{self.PREFIX}-{choice.key}", Select).disabled:
                continue
            else:
                shown = Path(value).name if value and looks_like_file(value) else value or "—"
            bar.append((" " if not index else "  │  ") + f"{choice.name} ", style="dim")
            bar.append(shown, style="bold")
        extra = self.bar_extra()
        if extra is not None:
            bar.append("  │  ", style="dim")
            bar.append_text(extra)
        bar.append("  │  ", style="dim")
        if self.busy:
            bar.append(self.busy_text(), style="bold yellow")
        else:
            count = len((problems or self.problems()).messages())
            bar.append("ready" if not count else f"{count} to fix", style="green" if not count else "bold red")
        self.query_one(f"#{self.PREFIX}-bar", Static).update(bar)
