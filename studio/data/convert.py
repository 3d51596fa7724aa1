"""Reading any supported file into records and writing records out in any format."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, islice
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
    dropped: Counter = field(default_factory=Counter)  # what written rows could not hold -> records
    skip_reasons: Counter = field(default_factory=Counter)  # why the target skipped records -> records

    def notes(self) -> list[str]:
        notes = [f"{what} dropped from {n} record(s)" for what, n in self.dropped.items()]
        notes += [f"{n} record(s) skipped: {why}" for why, n in self.skip_reasons.items()]
        return notes

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "skipped": self.skipped, "dropped": dict(self.dropped),
                "skip_reasons": dict(self.skip_reasons)}


class NothingWritten(ValueError):
    """No record could be written, so no file was written (a file already at the path is left as it
    was). Says why: no records at all, or every one skipped by the target format (with the format's
    own reasons and the formats that do hold them)."""

    def __init__(self, out: Path, target: str, report: WriteReport, holders: list[str] | None = None,
                 rejected: int = 0):
        self.out, self.target, self.report, self.rejected = Path(out), target, report, rejected
        self.holders = holders  # None: the other formats were not asked
        if report.skipped:
            reasons = report.skip_reasons.most_common()
            why = reasons[0][0] if len(reasons) == 1 else "; ".join(f"{r}, {n} record(s)" for r, n in reasons)
            detail = f"{target} skipped all {report.skipped} record(s) (why: {why})"
            if holders:
                detail += f"; formats that hold them: {', '.join(holders)}"
            elif holders is not None:
                detail += "; no other installed format holds them"
        else:
            detail = "there are no records to write"
        if rejected:
            detail += f"; {rejected} row(s) of the input rejected"
        super().__init__(f"nothing written to {self.out}: {detail}")


# How many of the skipped records are tried against the other formats to name the ones that hold them.
HOLDER_SAMPLE = 100


def formats_that_hold(records: list[Record], formats: dict[str, DatasetFormat], exclude: str) -> list[str]:
    """The formats (other than ``exclude``) that write every one of ``records`` losing nothing;
    when none does, those that write them all anyway, each saying what it drops."""
    lossless, lossy = [], []
    for name, fmt in sorted(formats.items()):
        if name == exclude or not records:
            continue
        try:
            outs = [fmt.write(r) for r in records]
        except Exception:  # noqa: BLE001 - a plugin writer that fails just does not hold them
            continue
        if any(o.row is None for o in outs):
            continue
        dropped = list(dict.fromkeys(what for o in outs for what in o.dropped))
        if dropped:
            lossy.append(f"{name} (drops {', '.join(dropped)})")
        else:
            lossless.append(name)
    return lossless or lossy


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
        if out.row is None:
            # A skipped record's notes say why it was skipped, not what a written row lost.
            report.skipped += 1
            for why in out.dropped or ["no reason given"]:
                report.skip_reasons[why] += 1
            continue
        for what in out.dropped:
            report.dropped[what] += 1
        report.written += 1
        yield out.row


def write_file(records: Iterable[Record], fmt: DatasetFormat, out: Path,
               formats: dict[str, DatasetFormat] | None = None) -> WriteReport:
    """Write records in ``fmt``. Raises :class:`NothingWritten`, writing no file, when not one
    record can be written; ``formats`` lets its message name the formats that hold them."""
    report = WriteReport()
    records = iter(records)
    # The first records are kept aside: when nothing is written, they are all skipped ones, the
    # sample that tells which formats would hold them.
    head = list(islice(records, HOLDER_SAMPLE))
    rows = iter_written(chain(head, records), fmt, report)
    first = next(rows, None)
    if first is None:
        holders = None if formats is None else formats_that_hold(head, formats, fmt.name)
        raise NothingWritten(out, fmt.name, report, holders)
    container = containers.container_for_output(Path(out), fmt.default_extension.lstrip("."))
    containers.write_rows(Path(out), chain([first], rows), container,
                          headerless=bool(getattr(fmt, "headerless_csv", None)) and container == "csv")
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


