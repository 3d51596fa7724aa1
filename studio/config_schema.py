"""One pydantic config model per plugin item drives every surface: this module turns a model
into argparse options, validates ``key=value`` pairs against it (CLI overrides, recipes) and
describes its fields for TUI forms."""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass
class FieldSpec:
    name: str
    type_name: str
    default: Any
    required: bool
    help: str
    choices: list[Any] | None


def describe(model: type[BaseModel]) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        choices = list(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else None
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        specs.append(FieldSpec(name, type_name, None if info.is_required() else info.get_default(call_default_factory=True),
                               info.is_required(), info.description or "", choices))
    return specs


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "") -> None:
    """Add one ``--field-name`` option per field; values are validated later by the model."""
    for spec in describe(model):
        flag = "--" + (prefix + spec.name).replace("_", "-")
        help_text = spec.help + ("" if spec.required else f" (default: {spec.default!r})")
        if spec.type_name == "bool":
            parser.add_argument(flag, dest=prefix + spec.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=prefix + spec.name, default=None, choices=spec.choices,
                                required=False, help=help_text, metavar=spec.type_name.upper())


def from_namespace(model: type[BaseModel], args: argparse.Namespace, prefix: str = "") -> BaseModel:
    values = {}
    for name in model.model_fields:
        value = getattr(args, prefix + name, None)
        if value is None:
            continue
        if isinstance(value, str) and value[:1] in "[{":
            # Lists and mappings arrive as text on the command line: `--languages '["en","fr"]'`.
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        values[name] = value
    return validate(model, values)


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``; values are parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} must look like KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def validate(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid {model.__name__}: {problems}") from None
