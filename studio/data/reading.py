"""Detecting a file's format and reading it into canonical records, keeping every bad row
as a :class:`Reject` that names the file, the line (or index) and the field."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from studio.data import containers
from studio.data.containers import BrokenRow, RawRow
from studio.data.format_kit import DatasetFormat, Match, RecordError
from studio.records import Record

SAMPLE_SIZE = 200
MIN_SCORE = 0.5


class DetectionError(ValueError):
    """The file cannot be matched to a format (or not to the one the user asked for)."""


class RejectedRows(ValueError):
    """A strict read rejected rows, so nothing was stored or written. Carries every reject."""

    def __init__(self, path: Path, rejects: list[Reject], detection: Detection):
        self.path, self.rejects, self.detection = Path(path), rejects, detection
        super().__init__(f"{len(rejects)} row(s) of {path} rejected")


@dataclass
class Reject:
    file: str
    line: int | None
    index: int
    field: str | None
    message: str
    raw: Any = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}[row {self.index}]"

    def __str__(self) -> str:
        field_part = f" field {self.field!r}:" if self.field else ""
        return f"{self.where}:{field_part} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Detection:
    format: str
    reason: str
    score: float
    container: str
    column_map: dict[str, str] = field(default_factory=dict)
    candidates: list[tuple[str, float, str]] = field(default_factory=list)
    overridden: bool = False
    # A header-less CSV's column names (from its format's ``headerless_csv``); None = first line is the header.
    columns: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "reason": self.reason,
            "score": round(self.score, 3),
            "container": self.container,
            "column_map": self.column_map,
            "overridden": self.overridden,
            **({"columns": self.columns} if self.columns else {}),
            "candidates": [{"format": n, "score": round(s, 3), "reason": r} for n, s, r in self.candidates],
        }


def parse_column_map(pairs: list[str] | None) -> dict[str, str]:
    """``["prompt=question", ...]`` -> ``{"prompt": "question"}`` (target field = source column)."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise DetectionError(f"column mapping {pair!r} must look like TARGET=SOURCE, e.g. prompt=question")
        mapping[target.strip()] = source.strip()
    return mapping


def apply_column_map(data: Any, column_map: dict[str, str]) -> Any:
    if not column_map or not isinstance(data, dict):
        return data
    out = dict(data)
    for target, source in column_map.items():
        if source in out:
            out[target] = out.pop(source)
    return out


def sample_rows(path: Path, container: str, column_map: dict[str, str], size: int = SAMPLE_SIZE,
                columns: list[str] | None = None) -> list[Any]:
    rows = []
    for item in containers.read_rows(path, container, columns):
        if isinstance(item, RawRow):
            rows.append(apply_column_map(item.data, column_map))
            if len(rows) >= size:
                break
    return rows


def score_formats(rows: list[Any], formats: dict[str, DatasetFormat]) -> list[tuple[str, Match]]:
    scored = []
    for name, fmt in formats.items():
        try:
            m = fmt.match(rows)
        except Exception as exc:  # noqa: BLE001 - a plugin's matcher must not break detection
            m = Match(0.0, f"matcher failed: {type(exc).__name__}: {exc}")
        if m is not None:
            scored.append((name, m))
    scored.sort(key=lambda item: (item[1].score, formats[item[0]].specificity), reverse=True)
    return scored


def detect(
    path: Path,
    formats: dict[str, DatasetFormat],
    override: str | None = None,
    column_map: dict[str, str] | None = None,
    container: str | None = None,
) -> Detection:
    path = Path(path)
    if not path.is_file():
        raise DetectionError(f"{path}: no such file")
    column_map = column_map or {}
    container = container or containers.sniff_container(path)
    rows = sample_rows(path, container, column_map)
    if not rows:
        raise DetectionError(f"{path}: no readable rows (empty file, or every row is broken)")
    scored = score_formats(rows, formats)
    headerless = {name: (match, columns) for name, match, columns in
                  _headerless_matches(path, container, formats, column_map)}
    if headerless:
        # A header-less format is judged on rows read with its own columns, not with the first row as a header.
        scored = [(n, m) for n, m in scored if n not in headerless] + [(n, m) for n, (m, _) in headerless.items()]
        scored.sort(key=lambda item: (item[1].score, formats[item[0]].specificity), reverse=True)
    candidates = [(n, m.score, m.reason) for n, m in scored]
    if override:
        if override not in formats:
            raise DetectionError(f"unknown format {override!r}; known formats: {', '.join(sorted(formats))}")
        match = dict(scored).get(override)
        if match is None or match.score == 0:
            best = f"; it looks like {scored[0][0]} ({scored[0][1].reason})" if scored and scored[0][1].score >= MIN_SCORE else ""
            keys = sorted(rows[0].keys()) if isinstance(rows[0], dict) else type(rows[0]).__name__
            raise DetectionError(
                f"{path} does not look like {override}: its rows have {keys}{best}. "
                f"Drop --format, or map columns with --map TARGET=SOURCE")
        return Detection(override, f"chosen by the user ({match.reason})", match.score, container,
                         column_map, candidates, overridden=True,
                         columns=headerless[override][1] if override in headerless else None)
    if not scored or scored[0][1].score < MIN_SCORE:
        keys = sorted(rows[0].keys()) if isinstance(rows[0], dict) else type(rows[0]).__name__
        closest = f" Closest: {scored[0][0]} ({scored[0][1].reason})." if scored else ""
        raise DetectionError(
            f"{path}: no format explains these rows (first row has {keys}).{closest} "
            f"Name one with --format and map columns with --map TARGET=SOURCE")
    name, match = scored[0]
    return Detection(name, match.reason, match.score, container, column_map, candidates,
                     columns=headerless[name][1] if name in headerless else None)


def _headerless_matches(path: Path, container: str, formats: dict[str, DatasetFormat],
                        column_map: dict[str, str]) -> list[tuple[str, Match, list[str]]]:
    """Formats whose CSV files have no header line, scored on the file read with their columns."""
    if container != "csv":
        return []
    found = []
    for name, fmt in formats.items():
        columns = getattr(fmt, "headerless_csv", None)
        if not columns:
            continue
        rows = sample_rows(path, container, column_map, columns=list(columns))
        if rows:
            scored = score_formats(rows, {name: fmt})
            if scored:
                match = scored[0][1]
                note = f"; read with no header line, as columns {', '.join(columns)}"
                found.append((name, Match(match.score, match.reason + note), list(columns)))
    return found


def read_records(path: Path, fmt: DatasetFormat, detection: Detection) -> Iterator[Record | Reject]:
    """Yield a Record per good row and a Reject per bad one, in file order."""
    yield from records_from_rows(containers.read_rows(Path(path), detection.container, detection.columns),
                                 str(path), fmt, detection)


def records_from_rows(rows: Iterable[RawRow | BrokenRow], display: str, fmt: DatasetFormat,
                      detection: Detection) -> Iterator[Record | Reject]:
    """The row path: a Record per good raw row, a Reject per bad one, naming ``display`` as the file."""
    for item in rows:
        if isinstance(item, BrokenRow):
            yield Reject(display, item.line, item.index, None, item.message, item.raw)
            continue
        data = apply_column_map(item.data, detection.column_map)
        if not isinstance(data, dict):
            yield Reject(display, item.line, item.index, None,
                         f"expected a JSON object per row, got {type(data).__name__}", _short(data))
            continue
        try:
            read = fmt.read(data)
        except RecordError as exc:
            yield Reject(display, item.line, item.index, exc.field, exc.message, data)
            continue
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A format bug or an odd row must not end the import; report it like any bad row.
            yield Reject(display, item.line, item.index, None, f"{type(exc).__name__}: {exc}", data)
            continue
        # A format may make several records of one row (a list): one pair per scored response.
        yield from (read if isinstance(read, list) else [read])


def _short(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) < 500 else text[:500] + "..."
