"""Helpers for :meth:`~studio.data.format_kit.DatasetFormat.read_columns`: mapping raw columns
(Arrow arrays, one per key of the rows) to the stored canonical columns exactly as a format's
row-by-row ``read`` would, byte for byte, so both ways give the same version id.

A format reaches this module through :func:`studio.data.format_kit.column_kit` (so Arrow loads
only when a file is imported). Every helper works on whole columns; a check that fails for any
row should make ``read_columns`` return None, and the row path then reports that row.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from studio.records import arrow_schema

# What str.strip() removes: a prompt made only of these is "empty" to the row path.
PY_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
BLANK_RE = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]*$"
# json.dumps(ensure_ascii=False) escapes these with a short form; other control characters as \\u00XX.
SHORT_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"),
                 ("\b", "\\b"), ("\f", "\\f"))
OTHER_CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\n\r\t\b\f"]
NEEDS_ESCAPE_RE = '[\\\\"\\x00-\\x1f]'
OTHER_CONTROLS_RE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in OTHER_CONTROLS) + "]"


def string_column(table: pa.Table, name: str) -> pa.Array | None:
    """Column ``name`` as one string array, or None when absent or not strings."""
    if name not in table.column_names:
        return None
    column = table.column(name)
    if not pa.types.is_string(column.type):
        return None
    return column.combine_chunks()


def bool_column(table: pa.Table, name: str) -> pa.Array | None:
    """Column ``name`` as one boolean array, or None when absent or not booleans."""
    if name not in table.column_names or not pa.types.is_boolean(table.column(name).type):
        return None
    return table.column(name).combine_chunks()


def constant(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


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
    """``f"{first}{sep}{second}" if second else first``, row by row, in one pass over the text."""
    seps = pc.if_else(nonempty(second), sep, "")  # short strings: cheap to choose row by row
    return pc.binary_join_element_wise(first, seps, second, "")


def json_text(values: pa.Array) -> pa.Array | None:
    """Each value as ``json.dumps(value, ensure_ascii=False)`` writes it; None for a type that has
    no exact columnar spelling (floats, nested values: the row path handles those)."""
    if pa.types.is_string(values.type):
        if not any_true(pc.match_substring_regex(values, NEEDS_ESCAPE_RE)):
            return pc.binary_join_element_wise('"', values, '"', "")
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


def if_else_text(mask: pa.Array, yes: str, no: str) -> pa.Array:
    """``yes`` where ``mask`` holds, ``no`` elsewhere (short texts, e.g. JSON spellings of hints)."""
    return pc.if_else(mask, yes, no)


def json_text_where(values: pa.Array, mask: pa.Array) -> pa.Array:
    """:func:`json_text` of ``values`` where ``mask`` holds, null (no key) elsewhere."""
    if values.offset == 0 and mask.offset == 0 and values.null_count == 0 and mask.null_count == 0:
        # The mask's bits become the validity bitmap of the same text: no copy before escaping.
        values = pa.Array.from_buffers(values.type, len(values), [mask.buffers()[1], *values.buffers()[1:]])
        return json_text(values)
    return pc.if_else(mask, json_text(values), pa.scalar(None, pa.string()))


def json_object(n: int, entries: dict[str, pa.Array | str | None]) -> pa.Array:
    """Per row, ``json.dumps(obj, ensure_ascii=False, sort_keys=True)`` of an object whose key k
    holds ``entries[k]`` (JSON text: an array, one text for every row, or None for no row; a null
    in an array leaves the key out of that row). A row with no key at all gets null, as an empty
    meta is stored."""
    entries = {k: v for k, v in sorted(entries.items()) if v is not None}
    if not entries:
        return pa.array([None] * n, pa.string())
    arrays = [v for v in entries.values() if not isinstance(v, str)]
    nullable = [v for v in arrays if v.null_count]
    if not nullable or (len(entries) == 1 and arrays):
        # Every key in every row (or a single key, absent where null): one pass joins it all, and
        # a null entry gives a null row.
        pieces: list[Any] = []
        text = "{"
        for i, (key, value) in enumerate(entries.items()):
            text += (", " if i else "") + json.dumps(key, ensure_ascii=False) + ": "
            if isinstance(value, str):
                text += value
            else:
                pieces += [text, value]
                text = ""
        pieces.append(text + "}")
        if len(pieces) == 1:
            return pa.array([pieces[0]] * n, pa.string())
        return pc.binary_join_element_wise(*pieces, "")
    parts = []
    for key, value in entries.items():
        if isinstance(value, str):
            value = constant(value, n)
        # Each entry brings its own ", " so absent ones (null -> "") leave no separator behind;
        # the first entry's is cut below. (null_handling="skip" loses rows with no entry at all.)
        parts.append(pc.binary_join_element_wise(", " + json.dumps(key, ensure_ascii=False) + ": ", value, ""))
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
    arrays = [v for v in hint.values() if not isinstance(v, str)]
    fmt_text = json.dumps(fmt, ensure_ascii=False)
    if len(arrays) == 1 and len(hint) == 1:
        # One hint that some rows lack: "format" alone is no hint, so the layout is null there.
        ((key, value),) = hint.items()
        pieces: list[Any] = []
        text = "{"
        for i, (k, v) in enumerate(sorted({"format": fmt_text, key: value}.items(), key=lambda kv: kv[0])):
            text += (", " if i else "") + json.dumps(k, ensure_ascii=False) + ": "
            if isinstance(v, str):
                text += v
            else:
                pieces += [text, v]
                text = ""
        entries["_layout"] = pc.binary_join_element_wise(*pieces, text + "}", "")
    elif hint:
        layout = json_object(n, {"format": fmt_text, **hint})
        if len(arrays) < len(hint):
            entries["_layout"] = layout  # a constant entry: every row has a hint
        else:
            # Only "format": no hint in that row, as make_meta drops an empty one.
            present = pc.is_valid(arrays[0])
            for value in arrays[1:]:
                present = pc.or_(present, pc.is_valid(value))
            entries["_layout"] = null_where_not(layout, present)
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
    if all(present is None for _, _, present in slots):
        offsets = np.arange(0, n * k + 1, k, dtype=np.int32)
        picked, picked_roles = index.ravel(), role_of.ravel()
    else:
        mask = np.ones((n, k), dtype=bool)
        for j, (_, _, present) in enumerate(slots):
            if present is not None:
                mask[:, j] = present.to_numpy(zero_copy_only=False)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(mask.sum(axis=1, dtype=np.int32), out=offsets[1:])
        picked, picked_roles = index[mask], role_of[mask]
    turn_type = arrow_schema().field("messages").type.value_type
    struct = pa.StructArray.from_arrays(
        [roles.take(pa.array(picked_roles)), contents.take(pa.array(picked)), pa.nulls(len(picked), pa.float64())],
        fields=list(turn_type))
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def mapped_turns(table: pa.Table, name: str, keys: tuple[str, str], roles: dict[str, str]) -> pa.Array | None:
    """Column ``name`` when it is a non-empty list of turn objects with exactly the string keys
    ``keys`` (speaker, text), every speaker spelt as a key of ``roles`` (which maps it to the
    canonical role), nothing null: a list<turn> column. None otherwise."""
    if name not in table.column_names:
        return None
    column = table.column(name)
    kind = column.type
    if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)
            and sorted(f.name for f in kind.value_type) == sorted(keys)
            and all(pa.types.is_string(f.type) for f in kind.value_type)):
        return None
    column = column.combine_chunks()
    if column.null_count or not len(column) or any_true(pc.equal(pc.list_value_length(column), 0)):
        return None
    items = pc.list_flatten(column)
    speaker, text = pc.struct_field(items, keys[0]), pc.struct_field(items, keys[1])
    if items.null_count or speaker.null_count or text.null_count:
        return None
    spelt = list(roles)
    which = pc.index_in(speaker, value_set=pa.array(spelt))
    if which.null_count:
        return None
    role = pa.array([roles[k] for k in spelt], pa.string()).take(which)
    offsets = pc.subtract(column.offsets, column.offsets[0]).cast(pa.int32())
    turn_type = arrow_schema().field("messages").type.value_type
    struct = pa.StructArray.from_arrays([role, pa.concat_arrays([text]), pa.nulls(len(role), pa.float64())],
                                        fields=list(turn_type))
    return pa.ListArray.from_arrays(offsets, struct)


def prepend_turn(turns_column: pa.Array, role: str, contents: pa.Array, present: pa.Array) -> pa.Array:
    """``turns_column`` with a turn of ``role`` and ``contents`` put first in the rows where
    ``present`` holds (a system column becoming the first turn)."""
    n = len(turns_column)
    has = present.to_numpy(zero_copy_only=False).astype(np.int64)
    old_offsets = turns_column.offsets.to_numpy().astype(np.int64)
    old_offsets -= old_offsets[0]
    lengths = np.diff(old_offsets)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + has, out=offsets[1:])
    flat = pc.list_flatten(turns_column)
    m = len(flat)
    row_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
    index = np.empty(offsets[-1], dtype=np.int64)
    index[offsets[:-1][has == 1]] = np.nonzero(has)[0]  # the new first turns, from ``contents``
    index[offsets[row_of] + has[row_of] + (np.arange(m, dtype=np.int64) - old_offsets[row_of])] = n + np.arange(m)
    roles = pa.concat_arrays([constant(role, n), pa.concat_arrays([pc.struct_field(flat, "role")])])
    texts = pa.concat_arrays([contents, pa.concat_arrays([pc.struct_field(flat, "content")])])
    picked = pa.array(index)
    turn_type = arrow_schema().field("messages").type.value_type
    struct = pa.StructArray.from_arrays([roles.take(picked), texts.take(picked), pa.nulls(len(index), pa.float64())],
                                        fields=list(turn_type))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), struct)


def role_content_turns(table: pa.Table, name: str, roles: tuple[str, ...] = ("system", "user", "assistant", "tool"),
                       ) -> pa.Array | None:
    """Column ``name`` when it is a list of ``{"role", "content"}`` messages (those two string
    keys only, every role one of ``roles`` spelt canonically, no list empty, nothing null) as a
    list<turn> column; None otherwise (the row path then reads, or rejects, those rows)."""
    if name not in table.column_names:
        return None
    column = table.column(name)
    kind = column.type
    if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)
            and sorted(f.name for f in kind.value_type) == ["content", "role"]
            and all(pa.types.is_string(f.type) for f in kind.value_type)):
        return None
    column = column.combine_chunks()
    if column.null_count or not len(column) or any_true(pc.equal(pc.list_value_length(column), 0)):
        return None
    messages = pc.list_flatten(column)
    role, content = pc.struct_field(messages, "role"), pc.struct_field(messages, "content")
    if messages.null_count or role.null_count or content.null_count:
        return None
    if not bool(pc.all(pc.is_in(role, value_set=pa.array(roles))).as_py()):
        return None
    offsets = pc.subtract(column.offsets, column.offsets[0]).cast(pa.int32())
    turn_type = arrow_schema().field("messages").type.value_type
    struct = pa.StructArray.from_arrays(
        [pa.concat_arrays([role]), pa.concat_arrays([content]), pa.nulls(len(role), pa.float64())],
        fields=list(turn_type))
    return pa.ListArray.from_arrays(offsets, struct)


def canonical_table(n: int, kind: str, messages: pa.Array, chosen: pa.Array | None = None,
                    rejected: pa.Array | None = None, meta: pa.Array | None = None,
                    label: pa.Array | None = None) -> pa.Table:
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
        label if label is not None else empty("label"), empty("tools"),
        meta if meta is not None else empty("meta"),
    ], schema=schema)
