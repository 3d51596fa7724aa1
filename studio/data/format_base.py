"""The contract a dataset format plugin implements.

A format only maps one raw row (a dict read from JSON/JSONL/CSV/Parquet) to a canonical
:class:`~studio.records.Record` and back. Containers, compression, line numbers, rejects and
detection scoring are the host's job, so a format stays a few dozen lines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from studio.records import Record, Turn


class RecordError(ValueError):
    """A row that cannot become a record. ``field`` names the offending key (dotted path)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NoOptions(BaseModel):
    """Formats without options still carry a config model, so every surface treats them alike."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Match:
    """How well a format explains a sample of rows: ``score`` in 0..1 and a human reason."""

    score: float
    reason: str


@dataclass
class Written:
    """A row produced by a format writer, plus what the target format could not hold."""

    row: dict[str, Any] | None
    dropped: list[str] = field(default_factory=list)


class DatasetFormat:
    """Base class of dataset formats. Subclasses set the class attributes and three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    config_model: ClassVar[type[BaseModel]] = NoOptions
    # Higher wins when two formats explain the sample equally well (a more specific shape).
    specificity: ClassVar[int] = 0
    # The container a writer produces when the output path does not say (".jsonl" or ".json").
    default_extension: ClassVar[str] = ".jsonl"

    def __init__(self, options: BaseModel | None = None):
        self.options = options if options is not None else self.config_model()

    def match(self, rows: list[dict[str, Any]]) -> Match | None:
        """Score a sample of raw rows; None when the shape is clearly not this format."""
        raise NotImplementedError

    def read(self, row: dict[str, Any]) -> Record:
        """Map one raw row to a record, raising :class:`RecordError` naming the field."""
        raise NotImplementedError

    def write(self, record: Record) -> Written:
        """Map a record to a raw row; list anything the format cannot hold in ``dropped``.
        ``row`` is None when the record cannot be expressed at all (it is then skipped)."""
        raise NotImplementedError


# --- small shared checks used by many formats -------------------------------------------------


def require(row: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in row or row[key] is None:
        raise RecordError(key, "missing")
    value = row[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(key, f"expected {expected}, got {type(value).__name__}")
    return value


def optional_str(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(key, f"expected str, got {type(value).__name__}")
    return value


def share_with_keys(rows: list[dict[str, Any]], required: set[str]) -> float:
    """Fraction of rows that are dicts holding every required key."""
    if not rows:
        return 0.0
    hits = sum(1 for r in rows if isinstance(r, dict) and required <= r.keys())
    return hits / len(rows)


def extra_fields(row: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in known}


def non_empty(turns: list[Turn], field: str) -> list[Turn]:
    if not turns:
        raise RecordError(field, "empty conversation")
    return turns
