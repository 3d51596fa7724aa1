"""Dataset workflows shared by the CLI and the TUI: import, export, convert."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from studio.data import convert as conv
from studio.data.format_kit import DatasetFormat
from studio.data.reading import Detection, Reject, RejectedRows, detect, read_records
from studio.records import Record
from studio.store import TableStream, VersionInfo, Workspace, file_sha256

Progress = Callable[[int], None]


@dataclass
class ImportResult:
    version: VersionInfo
    detection: Detection
    rejects: list[Reject]
    columnar_rows: int = 0  # rows mapped as whole columns; the others took the row path


def _streamed(path: Path, fmt: DatasetFormat, detection: Detection, rejects: list[Reject],
              progress: Progress | None, cancelled: Callable[[], bool], strict: bool = False) -> Iterator[Record]:
    for n, item in enumerate(read_records(path, fmt, detection), start=1):
        if cancelled():
            raise InterruptedError("import cancelled")
        if isinstance(item, Reject):
            rejects.append(item)
            if strict:
                # Only if the file changed since it was checked: abandon the version being written.
                raise RejectedRows(path, rejects, detection)
        else:
            yield item
        if progress and n % 5000 == 0:
            progress(n)


def default_name(path: Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".ndjson", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-.") or "dataset"
    return cleaned[:100]


def import_file(
    ws: Workspace,
    path: Path,
    formats: dict[str, DatasetFormat],
    name: str | None = None,
    override: str | None = None,
    column_map: dict[str, str] | None = None,
    rejects_out: Path | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    strict: bool = False,
    use_columns: bool = True,
) -> ImportResult:
    """Import a file as a new version of dataset ``name``. Bad rows become rejects stored with the
    version; with ``strict``, any reject means nothing is stored at all: :class:`RejectedRows`
    carries every reject (written to ``rejects_out`` too) and the workspace is left untouched.
    JSONL in a format that maps whole columns takes the columnar path (:mod:`studio.data.columnar`),
    which stores the same version and reports the same rejects; ``use_columns=False`` forces the
    row path."""
    from studio.data import columnar  # Arrow loads when a file is imported, not at start-up

    path = Path(path)
    detection = detect(path, formats, override=override, column_map=column_map)
    fmt = formats[detection.format]
    rejects: list[Reject] = []
    by_columns = use_columns and columnar.supports(fmt, detection)
    if strict:
        # Every row is checked before the store is touched, so a rejected import leaves no trace
        # (no version, no dataset folder). A clean strict import reads the file twice.
        if by_columns:
            for _ in columnar.ColumnarRead(path, fmt, detection, rejects, progress, cancelled):
                pass
        else:
            for _ in _streamed(path, fmt, detection, rejects, progress, cancelled):
                pass
        if rejects:
            if rejects_out is not None:
                conv.write_rejects(rejects, rejects_out)
            raise RejectedRows(path, rejects, detection)
    stat = path.stat()
    source = {
        "path": str(path.resolve()),
        # The columnar read hashes the file as it reads it; filled in when it is done.
        "sha256": None if by_columns else file_sha256(path),
        "bytes": stat.st_size,
        "format": detection.format,
        "container": detection.container,
        "reason": detection.reason,
        "column_map": detection.column_map,
    }
    target = name or default_name(path)
    try:
        parent = ws.head(target).id
    except Exception:  # noqa: BLE001 - a new dataset has no head yet
        parent = None
    if by_columns:
        read = columnar.ColumnarRead(path, fmt, detection, rejects, progress, cancelled, strict=strict)

        def tables():
            yield from read
            source["sha256"] = read.sha256  # before the store writes version.json, after the last table

        records = TableStream(tables())
    else:
        records = _streamed(path, fmt, detection, rejects, progress, cancelled, strict=strict)
    # The rejects list fills while the records stream; the store reads it after the last record.
    info = ws.write_version(
        target, records, operation={"name": "import", "format": detection.format, "at": time.time()},
        parent=parent, source=source, rejects=rejects)
    if rejects_out is not None:
        conv.write_rejects(rejects, rejects_out)
    return ImportResult(info, detection, rejects, read.columnar_rows if by_columns else 0)


def export_version(ws: Workspace, ref: str, fmt: DatasetFormat, out: Path,
                   formats: dict[str, DatasetFormat] | None = None) -> conv.WriteReport:
    """Write version ``ref`` to ``out`` in ``fmt``. Raises :class:`~studio.data.convert.NothingWritten`
    (and writes no file) when ``fmt`` holds none of its records; pass ``formats`` so the error can
    name the formats that do."""
    view = ws.open(ref)
    return conv.write_file(view.records(), fmt, out, formats)


def convert_file(path: Path, formats: dict[str, DatasetFormat], to: str, out: Path,
                 override: str | None = None, column_map: dict[str, str] | None = None,
                 rejects_out: Path | None = None, strict: bool = False) -> tuple[conv.ReadResult, conv.WriteReport]:
    """Convert a file to format ``to``. Writes no output file when nothing can be written
    (:class:`~studio.data.convert.NothingWritten`) or, with ``strict``, when any row is rejected
    (:class:`RejectedRows`). ``rejects_out`` gets the rejects in every case."""
    target = conv.get_format(formats, to)
    if Path(out).resolve() == Path(path).resolve():
        raise conv.DetectionError(f"refusing to overwrite the source file {path}; choose another -o")
    result = conv.read_file(path, formats, override=override, column_map=column_map)
    if rejects_out is not None:
        conv.write_rejects(result.rejects, rejects_out)
    if strict and result.rejects:
        raise RejectedRows(path, result.rejects, result.detection)
    try:
        report = conv.write_file(result.records, target, out, formats)
    except conv.NothingWritten as exc:
        if not result.rejects:
            raise
        # Say how much of the input was rejected too: it may be why there was nothing to write.
        raise conv.NothingWritten(out, to, exc.report, exc.holders, rejected=len(result.rejects)) from None
    return result, report
