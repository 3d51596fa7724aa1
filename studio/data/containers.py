"""Reading and writing the containers rows live in: JSON array, single JSON object, columnar
JSON, JSONL, CSV and Parquet, each optionally gzip-compressed.

Reading yields rows with their position (1-based line, or 0-based index for Parquet) so every
error can name where it happened. Broken rows are yielded as :class:`BrokenRow` instead of
raising: the caller keeps the good rows and reports the bad ones. Source files are opened
read-only and never written.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

CONTAINERS = ("jsonl", "json", "csv", "parquet")


@dataclass
class RawRow:
    data: Any
    line: int | None  # 1-based line in the (decompressed) text, when the container has lines
    index: int  # 0-based position of the row in the file


@dataclass
class BrokenRow:
    line: int | None
    index: int
    message: str
    raw: str | None = None


def _strip_gz(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_bytes(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def sniff_container(path: Path) -> str:
    """Pick the container from the extension, falling back to the first bytes."""
    name = _strip_gz(path)
    for ext, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"),
                      (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(ext):
            return kind
    with open_bytes(path) as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        # A .json file may hold one object, or one object per line (JSONL named .json).
        first_line = text.split(b"\n", 1)[0].strip()
        try:
            json.loads(first_line)
            return "jsonl" if b"\n" in text.strip() else "json"
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "json"
    return "json" if name.endswith(".json") else "jsonl"


def read_rows(path: Path, container: str | None = None,
              columns: list[str] | tuple[str, ...] | None = None) -> Iterator[RawRow | BrokenRow]:
    """Rows of a data file. ``columns`` names a header-less CSV's columns (MMLU's files have no
    header line); without it a CSV's first line is its header."""
    path = Path(path)
    container = container or sniff_container(path)
    if container == "jsonl":
        yield from _read_jsonl(path)
    elif container == "json":
        yield from _read_json(path)
    elif container == "csv":
        yield from _read_csv(path, columns)
    elif container == "parquet":
        yield from _read_parquet(path)
    else:
        raise ValueError(f"unknown container {container!r}; choose one of {', '.join(CONTAINERS)}")


def _read_jsonl(path: Path) -> Iterator[RawRow | BrokenRow]:
    with open_bytes(path) as fh:
        yield from jsonl_rows(fh)


def jsonl_rows(lines: Iterable[bytes], first_line: int = 1, first_index: int = 0) -> Iterator[RawRow | BrokenRow]:
    """Rows of JSONL ``lines`` (bytes, as iterating a binary file gives them) whose first line is
    line ``first_line`` of the file and holds row ``first_index``: a part of a file reads like the
    whole one (the columnar import hands back the parts Arrow cannot read)."""
    index = first_index
    for line_no, raw in enumerate(lines, start=first_line):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BrokenRow(line_no, index, f"invalid UTF-8 at byte {exc.start}", raw.decode("utf-8", "replace"))
            index += 1
            continue
        try:
            yield RawRow(json.loads(text), line_no, index)
        except json.JSONDecodeError as exc:
            yield BrokenRow(line_no, index, f"broken JSON: {exc.msg} (column {exc.colno})", text.rstrip("\r\n"))
        index += 1


BAD_BYTE = re.compile("[\udc80-\udcff]")


def _whole_text(path: Path) -> str:
    """The file as text (BOM dropped). Invalid UTF-8 bytes become lone surrogates
    (surrogateescape), so only the rows that contain them are rejected, not the whole file."""
    with open_bytes(path) as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _has_bad_bytes(text: str) -> bool:
    return BAD_BYTE.search(text) is not None


def _line_of(text: str, pos: int, cache: list[int]) -> int:
    # cache = [last_pos, last_line] so counting newlines stays linear over the whole file
    last_pos, last_line = cache
    line = last_line + text.count("\n", last_pos, pos)
    cache[0], cache[1] = pos, line
    return line


def _read_json(path: Path) -> Iterator[RawRow | BrokenRow]:
    text = _whole_text(path)
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    cache = [0, 1]
    if pos < len(text) and text[pos] == "[":
        # Decode element by element so each row keeps its line, and a broken element loses
        # only what follows it rather than the whole file.
        pos = _skip_ws(text, pos + 1)
        index = 0
        if pos < len(text) and text[pos] == "]":
            return
        while pos < len(text):
            line = _line_of(text, pos, cache)
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                yield BrokenRow(_line_of(text, exc.pos, cache), index,
                                f"broken JSON: {exc.msg}; rows after this point could not be read")
                return
            if _has_bad_bytes(text[pos:end]):
                yield BrokenRow(line, index, "invalid UTF-8 in this row", None)
            else:
                yield RawRow(value, line, index)
            index += 1
            pos = _skip_ws(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_ws(text, pos + 1)
            elif pos < len(text) and text[pos] == "]":
                return
            else:
                yield BrokenRow(_line_of(text, pos, cache), index, "broken JSON: expected ',' or ']' between rows")
                return
        yield BrokenRow(_line_of(text, pos, cache), index, "broken JSON: the array is not closed")
        return
    if _has_bad_bytes(text):
        yield BrokenRow(text[: BAD_BYTE.search(text).start()].count("\n") + 1, 0, "invalid UTF-8 in this row")
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        yield BrokenRow(exc.lineno, 0, f"broken JSON: {exc.msg} (column {exc.colno})")
        return
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) == 1 and not _looks_like_record(value):
            # Columnar JSON ({"col": [...], ...}), as pandas' to_json(orient="columns"/"list") writes.
            (n,) = lengths
            keys = list(value)
            for i in range(n):
                yield RawRow({k: value[k][i] for k in keys}, None, i)
            return
    yield RawRow(value, 1, 0)


def _looks_like_record(value: dict) -> bool:
    # {"conversations": [...]} or {"messages": [...]} is one record, not one column.
    return bool({"conversations", "messages", "turns", "instances", "history"} & value.keys())


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_csv(path: Path, columns: list[str] | tuple[str, ...] | None = None) -> Iterator[RawRow | BrokenRow]:
    text = _whole_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    if columns:
        header = list(columns)
    else:
        try:
            header = next(reader)
        except StopIteration:
            return
    index = 0
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BrokenRow(start, index, f"broken CSV: {exc}")
            return
        if not values:
            continue
        if len(values) != len(header):
            yield BrokenRow(start, index, f"expected {len(header)} columns, got {len(values)}")
        elif any(_has_bad_bytes(v) for v in values):
            yield BrokenRow(start, index, "invalid UTF-8 in this row")
        else:
            yield RawRow(dict(zip(header, values)), start, index)
        index += 1


def _read_parquet(path: Path) -> Iterator[RawRow | BrokenRow]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield RawRow(row, None, index)
            index += 1


# --- writing ------------------------------------------------------------------------------------


def container_for_output(path: Path, default: str) -> str:
    name = _strip_gz(path)
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return default


def write_rows(path: Path, rows: Iterator[dict[str, Any]] | list[dict[str, Any]], container: str,
               headerless: bool = False) -> int:
    """Write rows atomically: a temp file in the same folder is renamed over the target, so an
    interrupted write never leaves a half file behind. ``headerless`` writes a CSV without its
    header line (for formats whose files have none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gz = path.name.lower().endswith(".gz") and container != "parquet"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    count = 0
    try:
        if container == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = list(rows)
            count = len(rows)
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        else:
            raw = gzip.open(tmp, "wb") if gz else open(tmp, "wb")
            with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as out:
                if container == "jsonl":
                    for row in rows:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                        count += 1
                elif container == "json":
                    out.write("[")
                    for row in rows:
                        out.write(("\n  " if count == 0 else ",\n  ") + json.dumps(row, ensure_ascii=False))
                        count += 1
                    out.write("\n]\n" if count else "]\n")
                elif container == "csv":
                    count = _write_csv(out, rows, headerless)
                else:
                    raise ValueError(f"unknown container {container!r}")
        # mkstemp creates 0600 files; an exported dataset should get the user's usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _write_csv(out, rows, headerless: bool = False) -> int:
    rows = list(rows)
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    writer = csv.DictWriter(out, fieldnames=header)
    if not headerless:
        writer.writeheader()
    for row in rows:
        # Nested values (lists of turns) become JSON text; CSV has no other way to hold them.
        writer.writerow({k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v)
                         for k, v in row.items()})
    return len(rows)
