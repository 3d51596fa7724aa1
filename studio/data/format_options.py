"""Format options (``--option KEY=VALUE``): each option goes to the formats whose ``config_model``
declares it, validated by that model, so a misspelt option is an error and never a silent default."""
from __future__ import annotations

import json
from typing import Any

from studio.config_schema import validate
from studio.data.format_kit import DatasetFormat


class FormatOptionError(ValueError):
    """An option no format takes, or a value its format refuses."""


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["pairs=best_each"]`` -> ``{"pairs": "best_each"}``; values are JSON when they parse."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise FormatOptionError(f"format option {pair!r} must look like KEY=VALUE, e.g. pairs=best_each")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def configure_formats(formats: dict[str, DatasetFormat], pairs: list[str] | dict[str, Any] | None,
                      only: str | None = None) -> tuple[dict[str, DatasetFormat], set[str]]:
    """The formats with the options applied, and the names of the formats that took them.
    ``pairs`` are ``KEY=VALUE`` strings (the CLI) or a mapping (a recipe section); ``only`` (a
    ``--format`` choice) limits the options to that format."""
    options = dict(pairs) if isinstance(pairs, dict) else parse_options(pairs)
    if not options:
        return formats, set()
    candidates = {only: formats[only]} if only in formats else formats
    takes: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        owners = [name for name, fmt in candidates.items() if key in type(fmt).config_model.model_fields]
        if not owners:
            known = sorted(f"{name}.{field}" for name, fmt in candidates.items()
                           for field in type(fmt).config_model.model_fields)
            raise FormatOptionError(f"no format{f' {only!r}' if only else ''} takes the option {key!r}; "
                                    f"format options: {', '.join(known) or 'none'}")
        for name in owners:
            takes.setdefault(name, {})[key] = value
    configured = dict(formats)
    for name, values in takes.items():
        fmt = formats[name]
        try:
            settings = validate(type(fmt).config_model, values, what=f"format {name} options")
        except ValueError as exc:
            raise FormatOptionError(str(exc)) from None
        configured[name] = type(fmt)(settings)
    return configured, set(takes)
