"""A form generated from a plugin item's pydantic config model (``studio.config_schema.describe``).

bool → Switch, Literal → Select, str/int/float/Path → Input (pydantic converts the text), a list
of such values → an Input taking one value or several separated by commas (``a.jsonl, b.jsonl``;
JSON ``["a", "b"]`` works too), and anything else (dicts, nested models) → an Input read as JSON,
or YAML flow syntax (``[a, b]``, ``{k: v}``). Every change re-validates the whole model and each
error is shown under its own field. The conversion functions are plain, so the screen and the
tests use them without a running app.
"""
from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Collection, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Collapsible, Input, Label, Select, Static, Switch

from studio.config_schema import FieldSpec, describe

GENERAL = "_"  # errors that belong to no one field (unknown keys, model validators)
OMIT = object()


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def blank_is_none(model: type[BaseModel], spec: FieldSpec) -> bool:
    """An optional field whose default is a value (``missing_eos_penalty: float | None = 1.0``):
    a cleared input means none, not the default, or the form could never turn it off."""
    annotation = model.model_fields[spec.name].annotation
    allows_none = typing.get_origin(annotation) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(annotation)
    return allows_none and not spec.required and spec.default is not None


def _is_scalar(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Literal:
        return True
    return isinstance(annotation, type) and issubclass(annotation, (int, float, str, Path)) and annotation is not bool


def _is_scalar_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return all(_is_scalar(a) for a in args)
    return annotation in (list, tuple, set, frozenset)


def field_kind(model: type[BaseModel], spec: FieldSpec) -> str:
    """"bool", "choice", "scalar" (typed as text), "list" (values separated by commas),
    "scalar_or_list" (one value stays a value, several become a list) or "structured" (JSON/YAML)."""
    if spec.choices:
        return "choice"
    base = _strip_optional(model.model_fields[spec.name].annotation)
    if base is bool:
        return "bool"
    if _is_scalar(base):
        return "scalar"
    if _is_scalar_list(base):
        return "list"
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(base) if a is not type(None)]
        if any(_is_scalar_list(a) for a in options) and all(_is_scalar(a) or _is_scalar_list(a) for a in options):
            return "scalar_or_list"
    return "structured"


def raw_value(kind: str, value: Any) -> Any:
    """What a field's widget shows for a config value."""
    if kind == "bool":
        return bool(value)
    if kind == "choice":
        return value
    if value is None:
        return ""
    if kind == "scalar" or (kind == "scalar_or_list" and not isinstance(value, (list, tuple, set))):
        return str(value)
    if kind in ("list", "scalar_or_list") and value and all(_plain_item(v) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value if not isinstance(value, (tuple, set)) else list(value), ensure_ascii=False)


def _plain_item(value: Any) -> bool:
    """A list item that reads back the same from comma-separated text."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and \
        str(value) == str(value).strip() and not any(c in str(value) for c in ",[]{}\"") and str(value) != ""


def parse_raw(kind: str, raw: Any, is_str: bool = False) -> Any:
    """A widget's value as a config value; OMIT leaves the field at its default.
    Raises ValueError for text that is neither JSON nor YAML."""
    if kind in ("bool", "choice"):
        return OMIT if raw is Select.NULL else raw
    text = "" if raw is None else str(raw)
    if not text.strip():
        return OMIT
    if kind == "scalar":
        return text if is_str else text.strip()
    if kind in ("list", "scalar_or_list") and text.strip()[:1] not in "[{":
        # A plain value, or several separated by commas: a path needs no JSON quoting.
        items = [item.strip() for item in text.split(",")]
        if any(not item for item in items):
            raise ValueError("an empty value between commas (a list is a, b or JSON [\"a\", \"b\"])")
        return items[0] if kind == "scalar_or_list" and len(items) == 1 else items
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError("not valid JSON or YAML (a list is [a, b], a mapping {key: value})") from None


def form_values(model: type[BaseModel], raw: dict[str, Any], extra: dict[str, Any] | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """(values for the model, parse errors by field) from the widgets' raw values."""
    values: dict[str, Any] = dict(extra or {})
    errors: dict[str, str] = {}
    for spec in describe(model):
        if spec.name not in raw:
            continue
        kind = field_kind(model, spec)
        is_str = _strip_optional(model.model_fields[spec.name].annotation) is str
        try:
            value = parse_raw(kind, raw[spec.name], is_str)
        except ValueError as exc:
            errors[spec.name] = str(exc)
            continue
        if value is not OMIT:
            values[spec.name] = value
        elif kind not in ("bool", "choice") and blank_is_none(model, spec):
            values[spec.name] = None
    return values, errors


def validate_form(model: type[BaseModel], raw: dict[str, Any], extra: dict[str, Any] | None = None
                  ) -> tuple[BaseModel | None, dict[str, str]]:
    """Validate the form: the config, or None and one message per field (GENERAL for the rest)."""
    values, errors = form_values(model, raw, extra)
    if errors:
        return None, errors
    try:
        return model.model_validate(values), {}
    except ValidationError as exc:
        for error in exc.errors():
            loc = error.get("loc") or ()
            key = str(loc[0]) if loc and str(loc[0]) in model.model_fields else GENERAL
            where = ".".join(str(p) for p in loc[1:]) if key != GENERAL else ".".join(str(p) for p in loc)
            message = error["msg"] + (f" (at {where})" if where else "")
            errors[key] = f"{errors[key]}; {message}" if key in errors else message
        return None, errors


def fields_model(model: type[BaseModel], names: Iterable[str]) -> type[BaseModel]:
    """A model of only ``names`` of ``model``: each field as the model declares it (type,
    default, constraints, description), for a form that shows part of a larger schema."""
    fields = model.model_fields
    return create_model(f"{model.__name__}Part", __config__=ConfigDict(extra="forbid"),
                        **{name: (fields[name].annotation, fields[name]) for name in names})


def initial_raw(model: type[BaseModel], options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw widget values, keys the model does not know) for a step's options from a recipe."""
    raw: dict[str, Any] = {}
    for spec in describe(model):
        kind = field_kind(model, spec)
        value = options.get(spec.name, spec.default)
        raw[spec.name] = raw_value(kind, value) if spec.name in options or not spec.required else \
            (False if kind == "bool" else Select.NULL if kind == "choice" else "")
    extra = {k: v for k, v in options.items() if k not in model.model_fields}
    return raw, extra


class OpForm(Vertical):
    """The fields of one config model; posts :class:`OpForm.Changed` with the raw values."""

    DEFAULT_CSS = """
    OpForm { height: auto; }
    OpForm .form-field { height: auto; margin-bottom: 1; }
    OpForm .form-help { color: $text-muted; }
    OpForm .form-error { color: $error; height: auto; }
    OpForm Switch { height: auto; }
    """

    class Changed(Message):
        def __init__(self, form: "OpForm", raw: dict[str, Any]) -> None:
            super().__init__()
            self.form = form
            self.raw = raw

    def __init__(self, model: type[BaseModel], raw: dict[str, Any], errors: dict[str, str] | None = None,
                 primary: Collection[str] | None = None, **kwargs) -> None:
        """``primary``: the fields shown first; the others fold under "N more" (all shown when None)."""
        super().__init__(**kwargs)
        self.model = model
        self.specs = describe(model)
        self.primary = set(primary) if primary is not None else {spec.name for spec in self.specs}
        self.raw = dict(raw)
        self.errors = dict(errors or {})
        self._ready = False

    def compose(self) -> ComposeResult:
        first = [spec for spec in self.specs if spec.name in self.primary]
        more = [spec for spec in self.specs if spec.name not in self.primary]
        yield from self._fields(first)
        if more:
            with Collapsible(title=f"{len(more)} more", collapsed=not any(s.name in self.errors for s in more),
                             id="more-fields"):
                yield from self._fields(more)
        yield Static(self._error_text(GENERAL), classes="form-error", id="error-_")

    def _fields(self, specs: list[FieldSpec]) -> ComposeResult:
        for spec in specs:
            kind = field_kind(self.model, spec)
            value = self.raw.get(spec.name)
            with Vertical(classes="form-field", id=f"box-{spec.name}"):
                label = Text(spec.name, style="bold")
                label.append(f"  {spec.type_name}", style="dim")
                if spec.required:
                    label.append("  required", style="yellow")
                yield Label(label)
                if spec.help:
                    yield Static(Text(spec.help), classes="form-help")
                if kind == "bool":
                    yield Switch(value=bool(value), id=f"field-{spec.name}")
                elif kind == "choice":
                    options = [(str(c), c) for c in spec.choices or []]
                    blank = spec.required or spec.default not in (spec.choices or [])
                    yield Select(options, value=value if value in (spec.choices or []) else Select.NULL,
                                 allow_blank=blank, id=f"field-{spec.name}", compact=True, classes="line-field")
                else:
                    placeholder = "" if spec.required else f"default: {raw_value(kind, spec.default) or 'none'}"
                    if kind != "structured" and blank_is_none(self.model, spec):
                        placeholder = f"blank: none ({placeholder})"
                    if kind == "structured":
                        placeholder += "  (JSON or YAML, e.g. [a, b])"
                    elif kind in ("list", "scalar_or_list"):
                        placeholder += "  (values separated by commas)"
                    yield Input("" if value is None else str(value), placeholder=placeholder, id=f"field-{spec.name}",
                                compact=True, classes="line-field")
                yield Static(self._error_text(spec.name), classes="form-error", id=f"error-{spec.name}")

    def _error_text(self, name: str) -> Text | str:
        message = self.errors.get(name, "")
        return Text(f"✗ {message}") if message else ""

    def on_mount(self) -> None:
        self._ready = True

    def _changed(self, widget_id: str | None, value: Any) -> None:
        if not self._ready or not widget_id or not widget_id.startswith("field-"):
            return
        name = widget_id[len("field-"):]
        if self.raw.get(name) == value:
            return
        self.raw[name] = value
        self.post_message(self.Changed(self, dict(self.raw)))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed(event.input.id, event.value)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self._changed(event.switch.id, event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._changed(event.select.id, event.value)

    def show_errors(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        for name in [spec.name for spec in self.specs] + [GENERAL]:
            self.query_one(f"#error-{name}", Static).update(self._error_text(name))
        if any(name not in self.primary for name in self.errors if name != GENERAL):
            self.query_one("#more-fields", Collapsible).collapsed = False  # an error is never hidden
