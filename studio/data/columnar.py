"""The columnar import: JSONL read by Arrow's JSON reader a few megabytes at a time, mapped and
checked as whole columns, and stored without a Python object per row.

A format opts in with :meth:`~studio.data.format_kit.DatasetFormat.read_columns`, built from the
helpers here. Anything the columnar path is not sure to map exactly as the row path would goes
back to the row path, a whole part of the file at a time: a part Arrow cannot parse (broken JSON,
a column whose type changes, invalid UTF-8), a null anywhere (Arrow cannot tell a null from an
absent key, and formats treat them differently), or a part the format declines (a check failed,
a shape it does not map). The row path then reads that part line by line and reports every bad
row by file, line and field, so rejects and stored records are the same either way, and so is the
version id (tests compare both paths).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from studio.data.containers import is_gzip, jsonl_rows
from studio.data.format_kit import DatasetFormat
from studio.data.reading import Detection, Reject, RejectedRows, records_from_rows
from studio.records import arrow_schema

# Bytes of JSONL parsed at once: big enough for Arrow to use every core, small enough that the
# memory held stays a few times this.
CHUNK_BYTES = 16 << 20
BOM = b"\xef\xbb\xbf"
# Parts read and mapped ahead of the one being stored.
LOOK_AHEAD = 2
# What str.strip() removes: a prompt made only of these is "empty" to the row path.
PY_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
BLANK_RE = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]*$"
# json.dumps(ensure_ascii=False) escapes these with a short form; other control characters as \\u00XX.
SHORT_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"),
                 ("\b", "\\b"), ("\f", "\\f"))
OTHER_CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\n\r\t\b\f"]
OTHER_CONTROLS_RE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in OTHER_CONTROLS) + "]"


def supports(fmt: Any, detection: Detection) -> bool:
    """Whether a file can take the columnar path: JSONL read by a format that maps columns."""
    return (detection.container == "jsonl" and detection.columns is None
            and type(fmt).read_columns is not DatasetFormat.read_columns)


# --- reading the file in parts ------------------------------------------------------------------


class _HashingFile(io.RawIOBase):
    """A read-only file that hashes the bytes read through it, so the source's sha256 costs no
    second pass over the file."""

    def __init__(self, path: Path):
        self._fh = open(path, "rb")
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._fh.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        self._fh.close()
        super().close()


@dataclass
class Part:
    data: bytes  # whole lines
    first_line: int  # 1-based line number of its first line in the (decompressed) file


def jsonl_parts(raw: io.RawIOBase, gz: bool, chunk_bytes: int) -> Iterator[Part]:
    """The file's text in parts that end at a line end, each with the number of its first line."""
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
    line = 1
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
        data = rest + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield Part(data[:cut], line)
        line += data.count(b"\n", 0, cut)
    if rest:
        yield Part(rest, line)


def parse_part(data: bytes) -> pa.Table | None:
    """The part as an Arrow table, or None when Arrow cannot read it the way ``json.loads`` would."""
    try:
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=1 << 22))
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


# --- building canonical columns -----------------------------------------------------------------


def string_column(table: pa.Table, name: str) -> pa.Array | None:
    """Column ``name`` as one string array, or None when absent or not strings."""
    if name not in table.column_names:
        return None
    column = table.column(name)
    if not pa.types.is_string(column.type):
        return None
    return column.combine_chunks()


def constant(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array([0] * n, pa.int32())) if n else pa.array([], pa.string())


def any_true(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def blank(strings: pa.Array) -> pa.Array:
    """True where the string is empty after str.strip()."""
    return pc.match_substring_regex(strings, BLANK_RE)


def both(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.and_(a, b)


def nonempty(strings: pa.Array) -> pa.Array:
    return pc.greater(pc.binary_length(strings), 0)


def join_if(first: pa.Array, second: pa.Array, sep: str) -> pa.Array:
    """``f"{first}{sep}{second}" if second else first``, row by row."""
    joined = pc.binary_join_element_wise(first, second, sep)
    return pc.if_else(nonempty(second), joined, first)


def json_text(values: pa.Array) -> pa.Array | None:
    """Each value as ``json.dumps(value, ensure_ascii=False)`` writes it; None for a type that has
    no exact columnar spelling (floats, nested values: the row path handles those)."""
    if pa.types.is_string(values.type):
        for raw, escaped in SHORT_ESCAPES:
            values = pc.replace_substring(values, raw, escaped)
        if any_true(pc.match_substring_regex(values, OTHER_CONTROLS_RE)):
            for ch in OTHER_CONTROLS:
                values = pc.replace_substring(values, ch, f"\\u{ord(ch):04x}")
        return pc.binary_join_element_wise('"', values, '"', "")
    if pa.types.is_integer(values.type):
        return pc.cast(values, pa.string())
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "true", "false")
    return None


def json_text_where(values: pa.Array, mask: pa.Array) -> pa.Array:
    """:func:`json_text` of ``values`` where ``mask`` holds, null (no key) elsewhere."""
    return pc.if_else(mask, json_text(values), pa.scalar(None, pa.string()))


def json_object(n: int, entries: dict[str, pa.Array | str | None]) -> pa.Array:
    """Per row, ``json.dumps(obj, ensure_ascii=False, sort_keys=True)`` of an object whose key k
    holds ``entries[k]`` (JSON text: an array, one text for every row, or None for no row; a null
    in an array leaves the key out of that row). A row with no key at all gets null, as an empty
    meta is stored."""
    parts = []
    for key in sorted(entries):
        value = entries[key]
        if value is None:
            continue
        if isinstance(value, str):
            value = constant(value, n)
        # Each entry brings its own ", " so absent ones (null -> "") leave no separator behind;
        # the first entry's is cut below. (null_handling="skip" loses rows with no entry at all.)
        parts.append(pc.binary_join_element_wise(", " + json.dumps(key, ensure_ascii=False) + ": ", value, ""))
    if not parts:
        return pa.array([None] * n, pa.string())
    present = pc.is_valid(parts[0])
    for part in parts[1:]:
        present = pc.or_(present, pc.is_valid(part))
    body = pc.binary_join_element_wise(*[pc.fill_null(part, "") for part in parts], "")
    body = pc.utf8_slice_codeunits(body, 2)
    return null_where_not(pc.binary_join_element_wise("{", body, "}", ""), present)


def null_where_not(values: pa.Array, mask: pa.Array) -> pa.Array:
    """``values`` with null where ``mask`` is false, the null slots holding no bytes (as a
    builder leaves them; if_else keeps the bytes, and they would change the stored batches)."""
    keep = mask.to_numpy(zero_copy_only=False)
    index = np.cumsum(keep, dtype=np.int64) - 1
    return pc.filter(values, mask).take(pa.array(index, mask=~keep))


def meta_column(table: pa.Table, known: set[str], fmt: str, hint: dict[str, pa.Array | str | None]) -> pa.Array | None:
    """The meta column of :func:`~studio.data.format_kit.make_meta`: the columns outside ``known``
    plus the layout hint (JSON texts; null where the hint is empty). None when a column has no
    exact columnar spelling."""
    n = table.num_rows
    entries: dict[str, Any] = {}
    for name in table.column_names:
        if name in known or name == "_layout":
            continue
        text = json_text(table.column(name).combine_chunks())
        if text is None:
            return None
        entries[name] = text
    hint = {k: v for k, v in hint.items() if v is not None}
    if hint:
        layout = json_object(n, {"format": json.dumps(fmt, ensure_ascii=False), **hint})
        arrays = [v for v in hint.values() if not isinstance(v, str)]
        if len(arrays) < len(hint):
            entries["_layout"] = layout  # a constant entry: every row has a hint
        else:
            # Only "format": no hint in that row, as make_meta drops an empty one.
            present = pc.is_valid(arrays[0])
            for value in arrays[1:]:
                present = pc.or_(present, pc.is_valid(value))
            entries["_layout"] = pc.if_else(present, layout, pa.scalar(None, pa.string()))
    return json_object(n, entries)


def turns(n: int, slots: list[tuple[str, pa.Array, pa.Array | None]]) -> pa.Array:
    """A list<turn> column from per-row slots in order: ``(role, contents, present)``, where
    ``present`` (a boolean array, or None for every row) says which rows have that turn."""
    k = len(slots)
    contents = pa.concat_arrays([content for _, content, _ in slots])
    roles = pa.array([role for role, _, _ in slots], pa.string())
    # Row-major positions into the slot-major concatenation, minus the turns a row does not have.
    index = (np.arange(k, dtype=np.int64)[None, :] * n + np.arange(n, dtype=np.int64)[:, None])
    role_of = np.broadcast_to(np.arange(k, dtype=np.int32)[None, :], (n, k))
    mask = np.ones((n, k), dtype=bool)
    for j, (_, _, present) in enumerate(slots):
        if present is not None:
            mask[:, j] = present.to_numpy(zero_copy_only=False)
    counts = mask.sum(axis=1, dtype=np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    picked = index[mask]
    turn_type = arrow_schema().field("messages").type.value_type
    struct = pa.StructArray.from_arrays(
        [roles.take(pa.array(role_of[mask])), contents.take(pa.array(picked)), pa.nulls(len(picked), pa.float64())],
        fields=list(turn_type))
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def canonical_table(n: int, kind: str, messages: pa.Array, chosen: pa.Array | None = None,
                    rejected: pa.Array | None = None, meta: pa.Array | None = None) -> pa.Table:
    """The stored columns (:func:`studio.records.arrow_schema`) of ``n`` records of one ``kind``.
    Columns that are null in every row are built as the row path builds them, so the stored
    batches serialise to the same bytes."""
    schema = arrow_schema()
    nones = [None] * n

    def empty(name: str) -> pa.Array:
        return pa.array(nones, schema.field(name).type)

    return pa.Table.from_arrays([
        constant(kind, n), messages,
        chosen if chosen is not None else empty("chosen"),
        rejected if rejected is not None else empty("rejected"),
        empty("label"), empty("tools"),
        meta if meta is not None else empty("meta"),
    ], schema=schema)


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
        # A worker reads, parses and maps the next parts while the store writes and hashes this
        # one: Arrow and hashlib release the GIL, so the two overlap on two cores.
        parts = self._tables()
        pending: deque = deque()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="columnar-import") as pool:
                try:
                    pending.extend(pool.submit(next, parts, None) for _ in range(LOOK_AHEAD))
                    while pending:
                        item = pending.popleft().result()
                        if item is None:
                            break
                        pending.append(pool.submit(next, parts, None))
                        if self.cancelled():
                            raise InterruptedError("import cancelled")
                        table, index = item
                        if self.progress:
                            self.progress(index)
                        yield table
                finally:
                    for future in pending:
                        future.cancel()
        finally:
            parts.close()

    def _tables(self) -> Iterator[tuple[pa.Table, int]]:
        """Each part's canonical table, in file order, with the count of rows read so far."""
        raw = _HashingFile(self.path)
        try:
            index = 0  # rows (good or bad) before this part: the row path numbers rejects with it
            for part in jsonl_parts(raw, is_gzip(self.path), self.chunk_bytes):
                table = self._columns(part)
                if table is not None:
                    self.columnar_rows += table.num_rows
                    index += table.num_rows
                else:
                    before = len(self.rejects)
                    table = self._rows(part, index)
                    if self.strict and len(self.rejects) > before:
                        raise RejectedRows(self.path, self.rejects, self.detection)
                    index += table.num_rows + len(self.rejects) - before
                yield table, index
            raw.drain()
            self.sha256 = raw.digest.hexdigest()
        finally:
            raw.close()

    def _columns(self, part: Part) -> pa.Table | None:
        table = parse_part(part.data)
        if table is None or table.num_rows == 0:
            return None
        table = apply_column_map(table, self.detection.column_map)
        out = self.fmt.read_columns(table)
        if out is not None and out.num_rows != table.num_rows:
            raise ValueError(f"{self.fmt.name}.read_columns returned {out.num_rows} rows for {table.num_rows}")
        return out

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
