"""The columnar import: JSONL read by Arrow's JSON reader a few megabytes at a time, mapped and
checked as whole columns, and stored without a Python object per row.

A format opts in with :meth:`~studio.data.format_kit.DatasetFormat.read_columns`, built from the
helpers of :mod:`studio.data.column_kit`. Anything the columnar path is not sure to map exactly as
the row path would goes back to the row path, a whole part of the file at a time: a part Arrow
cannot parse (broken JSON, a column whose type changes, invalid UTF-8), a null anywhere (Arrow
cannot tell a null from an absent key, and formats treat them differently), or a part the format
declines (a check failed, a shape it does not map). The row path then reads that part line by
line and reports every bad row by file, line and field, so rejects and stored records are the
same either way, and so is the version id (tests compare both paths).
"""
from __future__ import annotations

import gzip
import hashlib
import io
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.json as pj

from studio.data.containers import is_gzip, jsonl_rows
from studio.data.format_kit import DatasetFormat
from studio.data.reading import Detection, Reject, RejectedRows, records_from_rows
from studio.records import arrow_schema

# Bytes of JSONL parsed at once: big enough for Arrow to use every core, small enough that the
# memory held stays a few times this.
CHUNK_BYTES = 8 << 20
BOM = b"\xef\xbb\xbf"
# Parts read ahead of the one being stored, and the threads that parse and map them.
LOOK_AHEAD = 3
WORKERS = 2


def supports(fmt: Any, detection: Detection) -> bool:
    """Whether a file can take the columnar path: JSONL read by a format that maps columns."""
    return (detection.container == "jsonl" and detection.columns is None
            and type(fmt).read_columns is not DatasetFormat.read_columns)


# --- reading the file in parts ------------------------------------------------------------------


class _HashingFile:
    """A read-only file that hashes the bytes read through it, on a thread of its own, so the
    source's sha256 costs no second pass over the file and no time of the reading thread."""

    def __init__(self, path: Path):
        self._fh = open(path, "rb")
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="columnar-import-hash")

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._hasher.submit(self._digest.update, data)  # one thread: the blocks hash in order
        return data

    def hexdigest(self) -> str:
        while self.read(1 << 20):  # whatever the reader left unread
            pass
        self._hasher.shutdown(wait=True)
        return self._digest.hexdigest()

    def close(self) -> None:
        self._hasher.shutdown(wait=True)
        self._fh.close()


@dataclass
class Part:
    """Whole lines of the file: ``text[:end]`` (the text is copied once, into Arrow)."""

    text: bytes
    end: int
    first_line: int = 0  # 1-based line number of its first line, set in file order

    @property
    def data(self) -> memoryview:
        return memoryview(self.text)[:self.end]

    def newlines(self) -> int:
        return self.text.count(b"\n", 0, self.end)

    def one_object_per_line(self, newlines: int, rows: int) -> bool:
        """Whether Arrow's ``rows`` came one from each line, as the row path reads them: every
        line starts with "{" and ends with "}", and there are as many lines as rows. Arrow also
        reads two objects on a line, or one over two lines, which the row path rejects. (A line
        that starts with "{" cannot continue an object, since the line before ends with "}", so
        equal counts mean one object per line. Blank or indented lines fail the check: their
        part takes the row path.)"""
        text, end = self.text, self.end
        if end == 0:
            return rows == 0
        open_end = text[end - 1] != ord("\n")  # the file's last line, without a line end
        lines = newlines + open_end
        if rows != lines or text[0] != ord("{"):
            return False
        tail = text[max(0, end - 3):end]
        if not (tail.endswith(b"}") if open_end else tail.endswith((b"}\n", b"}\r\n"))):
            return False
        # Between two lines: "}" then the line end then "{", as many times as there are line ends inside.
        joints = text.count(b"}\n{", 0, end)
        if joints < lines - 1 and text.find(b"\r", 0, end) >= 0:
            joints += text.count(b"}\r\n{", 0, end)
        return joints == lines - 1

def jsonl_parts(raw: _HashingFile, gz: bool, chunk_bytes: int) -> Iterator[Part]:
    """The file's text in parts that end at a line end."""
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
    rest = b""
    first = True
    while True:
        block = stream.read(chunk_bytes)
        if first:
            first = False
            if block.startswith(BOM):
                block = block[3:]
        if not block:
            break
        data = rest + block if rest else block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield Part(data, cut)
    if rest:
        yield Part(rest, len(rest))


def parse_part(data: bytes | memoryview) -> pa.Table | None:
    """The part as an Arrow table, or None when Arrow cannot read it the way ``json.loads`` would."""
    try:
        table = pj.read_json(pa.BufferReader(pa.py_buffer(data)), read_options=pj.ReadOptions(block_size=1 << 22))
        # The JSON reader does not check UTF-8; invalid bytes must reach the row path's reject.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    if any(column.null_count for column in table.columns):
        return None
    return table


def apply_column_map(table: pa.Table, column_map: dict[str, str]) -> pa.Table:
    """``--map TARGET=SOURCE`` on a whole table, as :func:`studio.data.reading.apply_column_map` does
    on a row (every row has every column here: tables with nulls never get this far)."""
    for target, source in column_map.items():
        if source in table.column_names:
            column = table.column(source)
            names = [n for n in table.column_names if n not in (source, target)]
            table = table.select(names).append_column(target, column)
    return table


# --- the import stream --------------------------------------------------------------------------


class ColumnarRead:
    """Canonical tables of a JSONL file, in file order, for :class:`studio.store.TableStream`.
    Rejects are appended to ``rejects`` as the parts they are in are read; ``sha256`` is the
    source file's once the stream has ended."""

    def __init__(self, path: Path, fmt: Any, detection: Detection, rejects: list[Reject],
                 progress: Callable[[int], None] | None = None, cancelled: Callable[[], bool] = lambda: False,
                 strict: bool = False, chunk_bytes: int | None = None):
        self.path, self.fmt, self.detection, self.rejects = Path(path), fmt, detection, rejects
        self.progress, self.cancelled, self.strict = progress, cancelled, strict
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.sha256: str | None = None
        self.columnar_rows = 0  # how many rows took the columnar path (the rest took the row path)

    def __iter__(self) -> Iterator[pa.Table]:
        # Parts are read here, in order; workers parse and map the next few at once (Arrow
        # releases the GIL) while the store writes this one. A part they leave to the row path is
        # read here, in its turn, once the count of rows before it is known.
        raw = _HashingFile(self.path)
        pending: deque = deque()
        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="columnar-import") as pool:
                try:
                    parts = jsonl_parts(raw, is_gzip(self.path), self.chunk_bytes)
                    index = 0  # rows (good or bad) before this part: the row path numbers rejects with it
                    line = 1
                    more = True
                    while True:
                        while more and len(pending) < LOOK_AHEAD:
                            part = next(parts, None)
                            if part is None:
                                more = False
                            else:
                                pending.append((part, pool.submit(self._columns, part)))
                        if not pending:
                            break
                        part, future = pending.popleft()
                        table, newlines = future.result()
                        part.first_line, line = line, line + newlines
                        if self.cancelled():
                            raise InterruptedError("import cancelled")
                        if table is not None:
                            self.columnar_rows += table.num_rows
                            index += table.num_rows
                        else:
                            before = len(self.rejects)
                            table = self._rows(part, index)
                            if self.strict and len(self.rejects) > before:
                                raise RejectedRows(self.path, self.rejects, self.detection)
                            index += table.num_rows + len(self.rejects) - before
                        if self.progress:
                            self.progress(index)
                        yield table
                finally:
                    for _, future in pending:
                        future.cancel()
            self.sha256 = raw.hexdigest()
        finally:
            raw.close()

    def _columns(self, part: Part) -> tuple[pa.Table | None, int]:
        """On a worker: the part's canonical table (None: leave it to the row path), and how
        many line ends it has."""
        newlines = part.newlines()
        table = parse_part(part.data)
        if table is None or table.num_rows == 0 or not part.one_object_per_line(newlines, table.num_rows):
            return None, newlines
        table = apply_column_map(table, self.detection.column_map)
        out = self.fmt.read_columns(table)
        if out is not None and out.num_rows != table.num_rows:
            raise ValueError(f"{self.fmt.name}.read_columns returned {out.num_rows} rows for {table.num_rows}")
        return out, newlines

    def _rows(self, part: Part, index: int) -> pa.Table:
        """The row path over one part: its good rows as a table; its bad ones join the rejects."""
        rows = []
        raw_rows = jsonl_rows(io.BytesIO(part.data), part.first_line, index)
        for item in records_from_rows(raw_rows, str(self.path), self.fmt, self.detection):
            if isinstance(item, Reject):
                self.rejects.append(item)
            else:
                rows.append(item.to_row())
        return pa.Table.from_pylist(rows, schema=arrow_schema())
