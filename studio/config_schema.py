"""One pydantic config model per registered item drives every surface: this module validates
values against it (recipes, ``key=value`` overrides), words its errors, and describes its fields
for listings (``--json`` output) and TUI forms."""
from __future__ import annotations

import difflib
import json
import typing
from dataclasses import asdict, dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError


@dataclass
class FieldSpec:
    name: str
    type_name: str
    default: Any
    required: bool
    help: str
    choices: list[Any] | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = data.pop("type_name")
        return json.loads(json.dumps(data, default=str))


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _choices(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def describe(model: type[BaseModel]) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        specs.append(FieldSpec(name, _type_name(annotation),
                               None if info.is_required() else info.get_default(call_default_factory=True),
                               info.is_required(), info.description or "", _choices(annotation)))
    return specs


def _suggestion(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (options: {', '.join(known)})" if known else ""


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested model that holds the field at ``loc`` (for a did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def error_text(exc: ValidationError, model: type[BaseModel], name_loc: Callable[[tuple], str] = dotted) -> str:
    """``loc: message`` for every problem; an unknown key also names the option it resembles.
    ``name_loc`` words a location (recipes name a step by its number and op)."""
    problems = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        text = f"{name_loc(loc)}: {e['msg']}"
        if e["type"] == "extra_forbidden" and loc:
            holder = _model_at(model, loc)
            if holder is not None:
                text += _suggestion(str(loc[-1]), list(holder.model_fields))
        problems.append(text)
    return "; ".join(problems)


def unknown_keys(model: type[BaseModel], values: dict[str, Any]) -> list[str]:
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return [key for key in values if key not in known]


def validate(model: type[BaseModel], values: dict[str, Any], what: str | None = None) -> BaseModel:
    """Validate an item's config; errors start with ``what`` (default: ``invalid <Model>``).
    Unknown keys are refused even when a plugin's model would accept them: a misspelt option must
    never run silently with its default."""
    what = what or f"invalid {model.__name__}"
    if not isinstance(values, dict):
        raise ValueError(f"{what}: expected a mapping of options, got {type(values).__name__}")
    unknown = unknown_keys(model, values)
    if unknown:
        known = list(model.model_fields)
        problems = "; ".join(f"{key}: Extra inputs are not permitted{_suggestion(key, known)}" for key in unknown)
        raise ValueError(f"{what}: {problems}")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ValueError(f"{what}: {error_text(exc, model)}") from None
