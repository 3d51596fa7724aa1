"""Reading any supported file into records and writing records out in any format."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from studio.data import containers
from studio.data.format_kit import DatasetFormat
from studio.data.reading import Detection, DetectionError, Reject, detect, read_records
from studio.records import Record


@dataclass
class ReadResult:
    detection: Detection
    records: list[Record]
    rejects: list[Reject]


@dataclass
class WriteReport:
    written: int = 0
    skipped: int = 0
    dropped: Counter = field(default_factory=Counter)  # what the target could not hold -> records

    def notes(self) -> list[str]:
        notes = [f"{what} dropped from {n} record(s)" for what, n in self.dropped.items()]
        return notes

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "skipped": self.skipped, "dropped": dict(self.dropped)}


def get_format(formats: dict[str, DatasetFormat], name: str) -> DatasetFormat:
    if name not in formats:
        raise DetectionError(f"unknown format {name!r}; known formats: {', '.join(sorted(formats))}")
    return formats[name]


def read_file(
    path: Path,
    formats: dict[str, DatasetFormat],
    override: str | None = None,
    column_map: dict[str, str] | None = None,
) -> ReadResult:
    detection = detect(Path(path), formats, override=override, column_map=column_map)
    fmt = formats[detection.format]
    records: list[Record] = []
    rejects: list[Reject] = []
    for item in read_records(Path(path), fmt, detection):
        (rejects if isinstance(item, Reject) else records).append(item)
    return ReadResult(detection, records, rejects)


def iter_written(records: Iterable[Record], fmt: DatasetFormat, report: WriteReport) -> Iterator[dict]:
    for record in records:
        out = fmt.write(record)
        for what in out.dropped:
            report.dropped[what] += 1
        if out.row is None:
            report.skipped += 1
            continue
        report.written += 1
        yield out.row


def write_file(records: Iterable[Record], fmt: DatasetFormat, out: Path) -> WriteReport:
    report = WriteReport()
    container = containers.container_for_output(Path(out), fmt.default_extension.lstrip("."))
    containers.write_rows(Path(out), iter_written(records, fmt, report), container)
    return report


def write_rejects(rejects: list[Reject], out: Path) -> None:
    containers.write_rows(Path(out), (r.to_dict() for r in rejects), "jsonl")


def summarise_rejects(rejects: list[Reject], limit: int = 20) -> list[str]:
    lines = [str(r) for r in rejects[:limit]]
    if len(rejects) > limit:
        lines.append(f"... and {len(rejects) - limit} more (write them all with --rejects FILE)")
    return lines


def reject_json(rejects: list[Reject]) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k != "raw"} for r in rejects]


