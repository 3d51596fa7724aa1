"""Structured outputs for the studio's own server: ``response_format`` with a JSON schema, decoded
under a constraint so that the answer always parses and follows the schema, whatever the model.

The request spells it as OpenAI's API does::

    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "verdict", "strict": true, "schema": {...}}}

The schemas a judge or an extractor needs are supported: an object at the root; objects with
``properties`` (written in their order, every one of them, as strict mode requires); ``enum`` and
``const`` of JSON scalars; ``boolean``; ``null``; ``integer`` (and whole ``number``) with
``minimum`` and ``maximum`` at most ``MAX_RANGE`` apart; ``string`` with an optional
``maxLength``. Anything else is refused with the part of the schema that can't be kept, never
silently ignored.

A schema compiles to a plan of pieces: fixed text (the braces, keys and quotes, written as they
are), a choice among texts (a value from an enum or a range, the model picking token by token
among what the options allow) and free strings (any token whose text needs no escaping, until
the model picks a closing quote or its end of turn, or the tokens left are needed to close the
object). Nothing here imports torch at module import time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_RANGE = 1000
_IGNORED_KEYS = {"description", "title", "default", "examples", "$schema", "$comment"}


class SchemaError(ValueError):
    """A response_format this server can't honour (the message names the part)."""


@dataclass
class Fixed:
    text: str


@dataclass
class OneOf:
    options: list[str]  # each followed by the fixed text after it, so no option is a prefix of another


@dataclass
class FreeString:
    max_chars: int | None


Piece = Fixed | OneOf | FreeString


def plan_for(response_format: Any) -> list[Piece] | None:
    """The decoding plan a request's ``response_format`` asks for; None for plain text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise SchemaError("response_format must be an object such as {\"type\": \"json_schema\", ...}")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        raise SchemaError("response_format json_object is not supported by this server; send type json_schema "
                          "with the schema the answer must follow")
    if kind != "json_schema":
        raise SchemaError(f"unknown response_format type {kind!r} (text or json_schema)")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise SchemaError("response_format.json_schema.schema must be a JSON schema object")
    if schema.get("type") != "object":
        raise SchemaError("the schema's root must be an object (type: object)")
    return compile_schema(schema)


def compile_schema(schema: dict[str, Any]) -> list[Piece]:
    raw: list[Piece] = []
    _value(schema, "schema", raw)
    return _joined(raw)


def _check_keys(node: dict[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(node) - allowed - _IGNORED_KEYS)
    if unknown:
        raise SchemaError(f"{path}: {', '.join(unknown)} can't be enforced by this server")


def _value(node: Any, path: str, out: list[Piece]) -> None:
    if not isinstance(node, dict):
        raise SchemaError(f"{path}: a schema must be an object")
    if "const" in node or "enum" in node:
        values = [node["const"]] if "const" in node else node["enum"]
        _check_keys(node, {"const", "enum", "type"}, path)
        if not isinstance(values, list) or not values or \
                not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise SchemaError(f"{path}: enum must be a non-empty list of strings, numbers, booleans or null")
        out.append(OneOf(list(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in values))))
        return
    kind = node.get("type")
    if kind == "object":
        _check_keys(node, {"type", "properties", "required", "additionalProperties"}, path)
        properties = node.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaError(f"{path}.properties must be an object")
        out.append(Fixed("{"))
        for i, (name, child) in enumerate(properties.items()):
            out.append(Fixed((", " if i else "") + json.dumps(name, ensure_ascii=False) + ": "))
            _value(child, f"{path}.{name}", out)
        out.append(Fixed("}"))
    elif kind == "boolean":
        _check_keys(node, {"type"}, path)
        out.append(OneOf(["true", "false"]))
    elif kind == "null":
        _check_keys(node, {"type"}, path)
        out.append(Fixed("null"))
    elif kind in ("integer", "number"):
        _check_keys(node, {"type", "minimum", "maximum"}, path)
        low, high = node.get("minimum"), node.get("maximum")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                   for v in (low, high)):
            raise SchemaError(f"{path}: an {kind} needs a whole minimum and maximum here (or an enum)")
        if not 0 <= high - low < MAX_RANGE:
            raise SchemaError(f"{path}: minimum..maximum must span 1 to {MAX_RANGE} values")
        out.append(OneOf([str(v) for v in range(int(low), int(high) + 1)]))
    elif kind == "string":
        _check_keys(node, {"type", "maxLength"}, path)
        limit = node.get("maxLength")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise SchemaError(f"{path}.maxLength must be a whole number")
        out += [Fixed('"'), FreeString(limit), Fixed('"')]
    else:
        raise SchemaError(f"{path}: type {kind!r} is not supported (object, string, integer, number with a "
                          f"range, boolean, null, enum, const)")


def _joined(pieces: list[Piece]) -> list[Piece]:
    """Adjacent fixed texts as one; each choice's options carry the fixed text that follows them."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, Fixed) and merged and isinstance(merged[-1], Fixed):
            merged[-1] = Fixed(merged[-1].text + piece.text)
        else:
            merged.append(piece)
    plan: list[Piece] = []
    for piece in merged:
        if isinstance(piece, Fixed) and plan and isinstance(plan[-1], OneOf):
            plan[-1] = OneOf([option + piece.text for option in plan[-1].options])
        else:
            plan.append(piece)
    return plan


class TokenTable:
    """What each token of a tokenizer writes, for deciding which tokens a free string may use."""

    def __init__(self, tokenizer, size: int):
        import torch

        special = set(tokenizer.all_special_ids)
        # A token's own text, read as the difference it makes after an ordinary token: decoding
        # it alone loses the leading space of SentencePiece vocabularies.
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
        base = tokenizer.decode(anchor)
        self.texts: list[str] = []
        safe = torch.zeros(size, dtype=torch.bool)
        lengths = torch.full((size,), 10**9, dtype=torch.long)
        self.quotes: list[int] = []
        for token in range(min(size, len(tokenizer))):
            text = "" if token in special else tokenizer.decode(anchor + [token])[len(base):]
            self.texts.append(text)
            if text == '"':
                self.quotes.append(token)
            if text and not any(c in '"\\\ufffd' or ord(c) < 0x20 for c in text):
                safe[token] = True
                lengths[token] = len(text)
        self.safe, self.lengths = safe, lengths


def min_tokens(plan: list[Piece], encode) -> list[int]:
    """For each piece, the fewest tokens the pieces after it need (free strings may be empty)."""
    need = [0] * len(plan)
    total = 0
    for i in range(len(plan) - 1, -1, -1):
        need[i] = total
        piece = plan[i]
        if isinstance(piece, Fixed):
            total += len(encode(piece.text))
        elif isinstance(piece, OneOf):
            total += max(len(encode(option)) for option in piece.options)
    return need
