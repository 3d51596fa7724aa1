"""Everything a dataset-format plugin needs, in one module: the :class:`DatasetFormat` contract
and the helpers the built-in formats share. A third-party format imports from here (and
``hookimpl`` from :mod:`studio.hookspecs`) and nothing else.

A format maps one raw row (a dict read from JSON, JSONL, CSV or Parquet) to a canonical
:class:`Record` and back, and scores how well it explains a sample of rows. Containers,
compression, line numbers, rejects and picking the best-scoring format are the host's job, so a
format stays a few dozen lines. A bad row raises :class:`RecordError` naming the field (a
dotted path such as ``messages[2].role``); the host adds the file and line and keeps going.

A complete plugin module for rows like ``{"q": "What is 2+2?", "a": "4", "id": 7}``::

    from studio.data.format_kit import (
        DatasetFormat, Record, Turn, Written, add_meta, extra_fields, match_or_none, pct, share, unheld,
        want_str, without_system,
    )
    from studio.hookspecs import hookimpl


    class QAFormat(DatasetFormat):
        name = "qa"
        title = "Question / answer"
        summary = "one question (q) and its answer (a) per row"

        def match(self, rows):
            score = share(rows, lambda r: isinstance(r.get("q"), str) and isinstance(r.get("a"), str))
            return match_or_none(score, f"{pct(score)} of sampled rows have q and a strings")

        def read(self, row):
            question = want_str(row.get("q"), "q")
            answer = want_str(row.get("a"), "a")
            return Record([Turn("user", question), Turn("assistant", answer)],
                          meta=extra_fields(row, {"q", "a"}))

        def write(self, record):
            turns, dropped = without_system(record)
            if record.kind != "conversation" or [t.role for t in turns] != ["user", "assistant"]:
                return Written(None, ["records other than one question and its answer"])
            row = {"q": turns[0].content, "a": turns[1].content}
            return Written(add_meta(row, record), dropped + unheld(record))


    @hookimpl
    def register_formats(register):
        register(QAFormat())

Name the module in the ``studio.plugins`` entry-point group of its package (see
``examples/studio-chatml``) and ``studio data detect / import / convert / export`` use it.

The helpers, by what they are for:

* a row's fields, with errors that name them: :func:`want_str`, :func:`want_list` (a value at
  any dotted path), :func:`require`, :func:`optional_str` (a top-level key of the row),
  :func:`type_name`, :func:`extra_fields`
* detection: :func:`share`, :func:`pct`, :func:`seen`, :func:`match_or_none`, :func:`dict_rows`,
  :func:`extra_keys`, :func:`extra_keys_note`, :func:`is_message_list`, :func:`roles_in`,
  :func:`looks_like_hh_transcript`
* source fields and layout hints: :func:`make_meta`, :func:`layout_of`, :func:`source_meta`,
  :func:`add_meta`, :func:`canonical`
* writing: :func:`unheld`, :func:`without_system`, :func:`shared_prefix`
* KTO labels: :func:`read_label`, :func:`write_label`
* whole columns at once, for the optional ``read_columns`` (a fast import path):
  :func:`column_kit`
* tool calls and tool schemas: :func:`tool_call_text`, :func:`canonical_call`, :func:`calls_of`,
  :func:`tools_text`, :func:`tools_value`
* role/content message lists (OpenAI chat, KTO, TRL conversational): :data:`MESSAGE_ROLES`,
  :func:`parse_message`, :func:`read_messages`, :func:`write_messages`
* a prompt or completion held as a string or as a message list (TRL, KTO):
  :func:`text_or_messages_style`, :func:`read_text_or_messages`, :func:`write_text_or_messages`

**Layout hints.** A canonical record says *what* was said; some formats can say the same thing in
several shapes (TRL standard vs conversational, a ShareGPT system column vs a system turn, Dolly's
context folded into the user turn). A reader notes the shape it saw with
``make_meta(fields, "<format>", hint)``, which stores it as ``record.meta["_layout"]``, and only
that format's writer reads it back (:func:`layout_of`), so writing to the same format is exact.
Other writers never copy the hint into their rows (:func:`add_meta` leaves it out), and
:func:`canonical` comparisons ignore it. A writer applies a hint only when it still agrees with
the record's content, so an edited record never gets a stale shape forced on it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Collection, Iterable

from pydantic import BaseModel, ConfigDict

from studio.records import Record, Turn, normalise_tool_call

__all__ = [
    "DatasetFormat", "Match", "Written", "RecordError", "NoOptions", "Record", "Turn", "normalise_tool_call",
    "want_str", "want_list", "require", "optional_str", "type_name", "extra_fields",
    "share", "pct", "seen", "match_or_none", "dict_rows", "extra_keys", "extra_keys_note", "is_message_list",
    "roles_in", "looks_like_hh_transcript",
    "LAYOUT_KEY", "make_meta", "layout_of", "source_meta", "add_meta", "canonical",
    "unheld", "without_system", "shared_prefix", "read_label", "write_label",
    "tool_call_text", "canonical_call", "calls_of", "tools_text", "tools_value",
    "MESSAGE_ROLES", "parse_message", "read_messages", "write_messages",
    "text_or_messages_style", "read_text_or_messages", "write_text_or_messages", "column_kit",
]


# --- the contract -------------------------------------------------------------------------------


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

    def read(self, row: dict[str, Any]) -> Record | list[Record]:
        """Map one raw row to a record, raising :class:`RecordError` naming the field. A row that
        holds several records (one pair per scored response) may give a list of them."""
        raise NotImplementedError

    def read_columns(self, table: Any) -> Any:
        """Optional, for speed: map a whole Arrow table of raw rows (one column per key, no nulls)
        to canonical columns exactly as :meth:`read` maps each row, or return None to leave the
        rows to :meth:`read` (the host then reports each bad one). Formats whose mapping is
        column-wise build it from :func:`column_kit`; tests compare both paths row for row."""
        return None

    def write(self, record: Record) -> Written:
        """Map a record to a raw row; list anything the format cannot hold in ``dropped``.
        ``row`` is None when the record cannot be expressed at all: it is then skipped, and
        ``dropped`` says why (the host shows the reason to the user)."""
        raise NotImplementedError


def column_kit() -> Any:
    """The Arrow helpers for :meth:`DatasetFormat.read_columns` (:mod:`studio.data.column_kit`),
    imported on first use so that Arrow loads when a file is imported, not when plugins load."""
    from studio.data import column_kit as kit  # noqa: PLC0415 - lazy: Arrow is heavy at start-up

    return kit


# --- a row's fields -----------------------------------------------------------------------------


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def want_str(value: Any, field: str, *, allow_none: bool = False) -> str | None:
    """``value`` (found at ``field``) as a string; "missing" when None unless ``allow_none``."""
    if value is None:
        if allow_none:
            return None
        raise RecordError(field, "missing")
    if not isinstance(value, str):
        raise RecordError(field, f"expected a string, got {type_name(value)}")
    return value


def want_list(value: Any, field: str, what: str = "a list") -> list:
    if value is None:
        raise RecordError(field, "missing")
    if not isinstance(value, list):
        raise RecordError(field, f"expected {what}, got {type_name(value)}")
    return value


def require(row: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """``row[key]``, which must be present and of type ``kind`` (a type or a tuple of types)."""
    if key not in row or row[key] is None:
        raise RecordError(key, "missing")
    value = row[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(key, f"expected {expected}, got {type(value).__name__}")
    return value


def optional_str(row: dict[str, Any], key: str) -> str | None:
    """``row[key]`` when it is a string, None when absent or null."""
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(key, f"expected str, got {type(value).__name__}")
    return value


def extra_fields(row: dict[str, Any], known: Collection[str]) -> dict[str, Any]:
    """The row's fields other than ``known``: what a record keeps in ``meta``."""
    return {k: v for k, v in row.items() if k not in known}


# --- detection ----------------------------------------------------------------------------------


def share(rows: list[Any], predicate: Callable[[dict[str, Any]], bool]) -> float:
    """Fraction of rows that are dicts satisfying ``predicate`` (a row that makes it raise
    counts as a miss, so predicates may index freely)."""
    if not rows:
        return 0.0
    hits = 0
    for row in rows:
        try:
            hits += bool(isinstance(row, dict) and predicate(row))
        except Exception:  # noqa: BLE001 - an odd row just does not count as a hit
            pass
    return hits / len(rows)


def pct(value: float) -> str:
    return f"{value:.0%}"


def seen(values: Iterable[str], limit: int = 8) -> str:
    """The distinct values in first-seen order, for a match reason ("roles seen: human, gpt")."""
    ordered: list[str] = []
    for v in values:
        if v not in ordered:
            ordered.append(v)
    text = ", ".join(ordered[:limit])
    return text + (", ..." if len(ordered) > limit else "")


def match_or_none(score: float, reason: str) -> Match | None:
    return Match(score, reason) if score > 0 else None


def dict_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [r for r in rows if isinstance(r, dict)]


def extra_keys(rows: list[Any], known: Collection[str], limit: int = 6) -> list[str]:
    """Keys of the sampled rows outside ``known``, for "extra keys kept as metadata" reasons."""
    out: list[str] = []
    for row in dict_rows(rows):
        for key in row:
            if key not in known and key not in out:
                out.append(key)
    return out[:limit]


def extra_keys_note(rows: list[Any], known: Collection[str]) -> str:
    """The end of a match reason naming the sampled rows' keys outside ``known`` ("; extra keys
    kept as metadata: id, source"), or "" when there are none."""
    extras = extra_keys(rows, known)
    return f"; extra keys kept as metadata: {', '.join(extras)}" if extras else ""


def is_message_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in value))


def roles_in(rows: list[Any], key: str) -> list[str]:
    """Every role string in the message lists under ``key`` of the sampled rows."""
    out: list[str] = []
    for row in dict_rows(rows):
        value = row.get(key)
        if isinstance(value, list):
            for m in value:
                if isinstance(m, dict) and isinstance(m.get("role"), str):
                    out.append(m["role"])
    return out


def looks_like_hh_transcript(value: Any) -> bool:
    """An hh-rlhf transcript ("\\n\\nHuman: ...\\n\\nAssistant: ..."): other formats whose
    chosen/rejected are strings use this to leave such rows to hh_rlhf."""
    return isinstance(value, str) and value.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in value


# --- source fields and layout hints -------------------------------------------------------------

LAYOUT_KEY = "_layout"


def layout_of(record: Record, fmt: str) -> dict[str, Any]:
    """The layout hint a reader of ``fmt`` left on this record, or {}."""
    hint = record.meta.get(LAYOUT_KEY)
    return hint if isinstance(hint, dict) and hint.get("format") == fmt else {}


def make_meta(source: dict[str, Any], fmt: str, hint: dict[str, Any]) -> dict[str, Any]:
    """Source fields without a canonical home, plus the layout hint when there is one."""
    meta = {k: v for k, v in source.items() if k != LAYOUT_KEY}
    hint = {k: v for k, v in hint.items() if v not in (None, {}, [], False)}
    if hint:
        meta[LAYOUT_KEY] = {"format": fmt, **hint}
    return meta


def source_meta(record: Record) -> dict[str, Any]:
    """The record's meta without the layout hint: the source fields only."""
    return {k: v for k, v in record.meta.items() if k != LAYOUT_KEY}


def add_meta(row: dict[str, Any], record: Record) -> dict[str, Any]:
    """Copy the record's source fields into a written row (never overriding the row's own keys)."""
    for key, value in source_meta(record).items():
        row.setdefault(key, value)
    return row


def canonical(record: Record) -> dict[str, Any]:
    """What two records must share to count as equal: everything but the layout hint."""
    row = record.to_row()
    row["meta"] = source_meta(record)
    return row


# --- writing ------------------------------------------------------------------------------------


def unheld(record: Record, *, tools: bool = False, weights: bool = False, label: bool = False) -> list[str]:
    """The ``dropped`` notes for what a format cannot hold (pass True for what it can)."""
    notes = []
    if record.tools and not tools:
        notes.append("tools")
    sides = [record.messages, record.chosen or [], record.rejected or []]
    if not weights and any(t.weight is not None for side in sides for t in side):
        notes.append("per-turn weights")
    if record.label is not None and not label:
        notes.append("label")
    return notes


def without_system(record: Record) -> tuple[list[Turn], list[str]]:
    """The record's turns minus a leading system prompt, for formats that cannot hold one."""
    turns = list(record.messages)
    if turns and turns[0].role == "system":
        return turns[1:], ["system prompt"]
    return turns, []


def shared_prefix(a: list[Turn], b: list[Turn]) -> int:
    """Turns shared by both sides, leaving each side at least one turn of its own."""
    limit = min(len(a), len(b)) - 1
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return max(n, 0)


# --- KTO labels ---------------------------------------------------------------------------------


def read_label(value: Any, field: str) -> tuple[bool, Any]:
    """A KTO label: a bool, or (CSV) the strings true/false/1/0. Returns (label, raw-if-not-bool)."""
    if isinstance(value, bool):
        return value, None
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}, value
    if isinstance(value, int) and value in (0, 1):
        return bool(value), value
    if value is None:
        raise RecordError(field, "missing")
    raise RecordError(field, f"expected true or false, got {value!r}")


def write_label(label: bool, raw: Any) -> Any:
    """The label as the source spelt it (see :func:`read_label`) while that still agrees."""
    if raw is not None:
        try:
            if read_label(raw, "label")[0] == label:
                return raw
        except RecordError:
            pass
    return label


# --- tool calls and tool schemas ----------------------------------------------------------------


def canonical_call(call: dict[str, Any]) -> dict[str, Any]:
    """name, arguments, id first, in that order, so every format spells a call the same way."""
    out = {k: call[k] for k in ("name", "arguments", "id") if k in call}
    out.update({k: v for k, v in call.items() if k not in out})
    return out


def tool_call_text(value: Any, field: str) -> str:
    """Canonical JSON text of a tool call (object) or parallel calls (list of objects)."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise RecordError(field, f"tool call is not valid JSON ({exc.msg})") from None
    if isinstance(parsed, dict):
        if "name" not in parsed:
            raise RecordError(field, "tool call has no 'name'")
        return normalise_tool_call(canonical_call(parsed))
    if isinstance(parsed, list) and parsed and all(isinstance(c, dict) and "name" in c for c in parsed):
        calls = [json.loads(normalise_tool_call(canonical_call(c))) for c in parsed]
        return json.dumps(calls, ensure_ascii=False)
    raise RecordError(field, "tool call must be a JSON object with name and arguments (or a list of them)")


def calls_of(content: str) -> list[dict[str, Any]]:
    parsed = json.loads(content)
    return parsed if isinstance(parsed, list) else [parsed]


def tools_text(value: Any, field: str = "tools") -> tuple[str | None, Any]:
    """Canonical JSON text of tool schemas, plus the raw source value when it is spelt differently."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if not value.strip():
            return None, value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(field, f"not valid JSON ({exc.msg})") from None
    elif isinstance(value, (list, dict)):
        parsed = value
    else:
        raise RecordError(field, f"expected JSON text or a list of tool schemas, got {type_name(value)}")
    text = json.dumps(parsed, ensure_ascii=False)
    return text, (None if value == text else value)


def tools_value(record_tools: str | None, raw: Any, as_text: bool) -> Any:
    """What a writer puts in its ``tools`` field: the raw source spelling when it still agrees."""
    if raw is not None:
        try:
            if tools_text(raw)[0] == record_tools:
                return raw
        except RecordError:
            pass
    if record_tools is None:
        return None
    return record_tools if as_text else json.loads(record_tools)


# --- role/content message lists (OpenAI chat, KTO, TRL conversational) ----------------------------

MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                 "tool": "tool", "function": "tool"}


def _weight(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(field, f"expected a number (0 or 1), got {value!r}")
    return float(value)


def _content(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for k, part in enumerate(value):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type_name(part)
                raise RecordError(f"{field}[{k}]", f"only text content parts can be read, got {kind!r}")
        return "".join(parts)
    raise RecordError(field, f"expected a string or null, got {type_name(value)}")


def _openai_call(call: Any, field: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise RecordError(field, f"expected a tool call object, got {type_name(call)}")
    function = call.get("function")
    if not isinstance(function, dict):
        raise RecordError(f"{field}.function", "missing" if function is None else
                          f"expected an object with name and arguments, got {type_name(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise RecordError(f"{field}.function.name", "missing" if name is None else "expected a non-empty string")
    out: dict[str, Any] = {"name": name, "arguments": function.get("arguments", {})}
    if call.get("id") is not None:
        out["id"] = call["id"]
    if call.get("type") not in (None, "function"):
        out["type"] = call["type"]
    return out


def parse_message(msg: Any, field: str) -> list[Turn]:
    """One role/content message -> one turn (or two: an assistant reply that also calls tools)."""
    if not isinstance(msg, dict):
        raise RecordError(field, f"expected a message object with role and content, got {type_name(msg)}")
    role = msg.get("role")
    if role is None:
        raise RecordError(f"{field}.role", "missing")
    if not isinstance(role, str):
        raise RecordError(f"{field}.role", f"expected a string, got {type_name(role)}")
    canon = MESSAGE_ROLES.get(role)
    if canon is None:
        raise RecordError(f"{field}.role", f"unknown role {role!r}; expected system, user, assistant or tool")
    content = _content(msg.get("content"), f"{field}.content")
    weight = _weight(msg.get("weight"), f"{field}.weight")
    tool_calls = msg.get("tool_calls")
    legacy = msg.get("function_call")
    if tool_calls is not None or legacy is not None:
        if canon != "assistant":
            raise RecordError(f"{field}.tool_calls", f"only assistant messages can call tools, not {role!r}")
        if tool_calls is not None:
            if not isinstance(tool_calls, list) or not tool_calls:
                raise RecordError(f"{field}.tool_calls", f"expected a non-empty list, got {type_name(tool_calls)}")
            calls = [_openai_call(c, f"{field}.tool_calls[{j}]") for j, c in enumerate(tool_calls)]
            call_field = f"{field}.tool_calls"
        else:
            calls = [_openai_call({"function": legacy}, f"{field}.function_call")]
            call_field = f"{field}.function_call"
        text = tool_call_text(calls[0] if len(calls) == 1 else calls, call_field)
        turns = [Turn("assistant", content, weight)] if content else []
        return turns + [Turn("tool_call", text, weight)]
    if content is None:
        raise RecordError(f"{field}.content", "missing (only an assistant message with tool_calls may omit it)")
    return [Turn(canon, content, weight)]


def _group_sizes(turns: list[Turn]) -> list[int]:
    """How the writer groups turns into messages by default: an assistant turn followed by a
    tool call (with the same weight) becomes one message."""
    sizes, i = [], 0
    while i < len(turns):
        if (turns[i].role == "assistant" and i + 1 < len(turns) and turns[i + 1].role == "tool_call"
                and turns[i + 1].weight == turns[i].weight):
            sizes.append(2)
            i += 2
        else:
            sizes.append(1)
            i += 1
    return sizes


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _render_group(group: list[Turn], pending: list[Any]) -> dict[str, Any]:
    """Default spelling of one message. ``pending`` holds ids of calls awaiting their results."""
    last = group[-1]
    if last.role == "tool_call":
        calls = []
        for call in calls_of(last.content):
            call = dict(call)
            entry: dict[str, Any] = {}
            if "id" in call:
                entry["id"] = call.pop("id")
            entry["type"] = call.pop("type", "function")
            args = call.get("arguments", {})
            entry["function"] = {"name": call.get("name"),
                                 "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}
            calls.append(entry)
            pending.append(entry.get("id"))
        msg: dict[str, Any] = {"role": "assistant", "content": group[0].content if len(group) == 2 else None,
                               "tool_calls": calls}
    elif last.role == "tool":
        msg = {"role": "tool", "content": last.content}
        call_id = pending.pop(0) if pending else None
        if call_id is not None:
            msg["tool_call_id"] = call_id
    else:
        msg = {"role": last.role, "content": last.content}
    if last.weight is not None:
        msg["weight"] = _number(last.weight)
    return msg


def _advance(group: list[Turn], pending: list[Any]) -> None:
    _render_group(group, pending)


def _same_message(a: Any, b: Any) -> bool:
    """Equal up to keys whose value is null (Parquet fills absent struct fields with null)."""
    def squeeze(m):
        return {k: v for k, v in m.items() if v is not None or k == "content"} if isinstance(m, dict) else m
    return squeeze(a) == squeeze(b)


def read_messages(value: Any, field: str, *, allow_empty: bool = False) -> tuple[list[Turn], dict[str, Any]]:
    """A message list -> turns, plus the hint that lets :func:`write_messages` reproduce it."""
    items = want_list(value, field, "a list of messages")
    if not items and not allow_empty:
        raise RecordError(field, "empty conversation")
    groups = [parse_message(m, f"{field}[{i}]") for i, m in enumerate(items)]
    turns = [t for g in groups for t in g]
    hint: dict[str, Any] = {}
    sizes = [len(g) for g in groups]
    if sizes != _group_sizes(turns):
        hint["groups"] = sizes
    raw: dict[str, Any] = {}
    pending: list[Any] = []
    for i, (msg, group) in enumerate(zip(items, groups)):
        if not _same_message(_render_group(group, list(pending)), msg):
            raw[str(i)] = msg
        _advance(group, pending)
    if raw:
        hint["raw"] = raw
    return turns, hint


def write_messages(turns: list[Turn], hint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Turns -> role/content messages. Raises ValueError for a tool call that is not JSON."""
    hint = hint or {}
    sizes = hint.get("groups")
    if not (isinstance(sizes, list) and sum(sizes) == len(turns) and all(s in (1, 2) for s in sizes)):
        sizes = _group_sizes(turns)
    raw = hint.get("raw") or {}
    out, pending, cursor = [], [], 0
    for k, size in enumerate(sizes):
        group = turns[cursor:cursor + size]
        cursor += size
        source = raw.get(str(k))
        if source is not None:
            try:
                if parse_message(source, "raw") == group:
                    out.append(source)
                    _advance(group, pending)
                    continue
            except RecordError:
                pass
        for t in group:
            if t.role == "tool_call":
                try:
                    calls_of(t.content)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"tool call is not JSON: {exc.msg}") from None
        if size == 2 and not (group[0].role == "assistant" and group[1].role == "tool_call"):
            for t in group:
                out.append(_render_group([t], pending))
            continue
        out.append(_render_group(group, pending))
    return out



# --- a prompt or completion held as a string or as a message list (TRL, KTO) --------------------
# TRL calls a plain string "standard" and a list of role/content messages "conversational".


def text_or_messages_style(value: Any) -> str | None:
    """The TRL style of ``value``: "standard" (a string), "conversational" (a message list) or None."""
    if isinstance(value, str):
        return "standard"
    if is_message_list(value):
        return "conversational"
    return None


def read_text_or_messages(row: dict[str, Any], key: str, role: str) -> tuple[list[Turn], str, dict[str, Any]]:
    """``row[key]`` as turns (a string is one turn of ``role``), its style, and the message-list
    hint for :func:`write_text_or_messages`."""
    value = row.get(key)
    if value is None:
        raise RecordError(key, "missing")
    if isinstance(value, str):
        return [Turn(role, value)], "standard", {}
    if isinstance(value, list):
        turns, hint = read_messages(value, key)
        return turns, "conversational", hint
    raise RecordError(key, f"expected a string or a list of messages, got {type_name(value)}")


def write_text_or_messages(turns: list[Turn], style: str | None, role: str, hint: dict[str, Any] | None) -> Any:
    """Turns in the source's style: a plain string when it was one and still fits (a single
    unweighted turn of ``role``), otherwise a message list."""
    if style == "standard" and len(turns) == 1 and turns[0].role == role and turns[0].weight is None:
        return turns[0].content
    return write_messages(turns, hint if style == "conversational" else None)
