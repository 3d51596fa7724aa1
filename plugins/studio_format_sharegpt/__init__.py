"""ShareGPT: ``{"conversations": [{"from", "value"}], "system"?, "tools"?}``.

Also LLaMA-Factory's variants: preference rows (``conversations`` + ``chosen``/``rejected`` as one
``{from, value}`` turn each), KTO rows (``kto_tag`` bool -> label) and the ``system``/``tools``
columns (``tools`` is JSON text). When reading, ``user``/``assistant`` and the usual tool spellings
are accepted too, and turns written as ``{role, content}`` are understood.
"""
from __future__ import annotations

from typing import Any

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, column_kit, extra_fields, extra_keys, layout_of,
    make_meta, match_or_none, pct, read_label, seen, share, tool_call_text, tools_text, tools_value, type_name,
    want_list, write_label,
)
from studio.hookspecs import hookimpl

NAME = "sharegpt"
KNOWN = {"conversations", "system", "tools", "chosen", "rejected", "kto_tag"}
FROM_ROLES = {
    "system": "system",
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "function_call": "tool_call", "tool_call": "tool_call", "tool_calls": "tool_call",
    "observation": "tool", "function": "tool", "tool": "tool", "function_response": "tool",
    "tool_response": "tool",
}
ROLE_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool_call": "function_call",
             "tool": "observation"}


def _turn_keys(turn: Any) -> tuple[str, str] | None:
    if isinstance(turn, dict):
        if "from" in turn and "value" in turn:
            return "from", "value"
        if "role" in turn and "content" in turn:
            return "role", "content"
    return None


def _is_sharegpt(row) -> bool:
    conv = row.get("conversations")
    return isinstance(conv, list) and bool(conv) and all(_turn_keys(t) for t in conv)


def parse_turn(turn: Any, field: str) -> Turn:
    if not isinstance(turn, dict):
        raise RecordError(field, f"expected a turn object with from and value, got {type_name(turn)}")
    keys = _turn_keys(turn) or ("from", "value")
    role_key, value_key = keys
    speaker = turn.get(role_key)
    if speaker is None:
        raise RecordError(f"{field}.{role_key}", "missing")
    if not isinstance(speaker, str):
        raise RecordError(f"{field}.{role_key}", f"expected a string, got {type_name(speaker)}")
    role = FROM_ROLES.get(speaker.lower())
    if role is None:
        raise RecordError(f"{field}.{role_key}", f"unknown role {speaker!r}; expected system, human, gpt, "
                                                  f"function_call or observation")
    value = turn.get(value_key)
    if value is None:
        raise RecordError(f"{field}.{value_key}", "missing")
    weight = turn.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
        raise RecordError(f"{field}.weight", f"expected a number, got {weight!r}")
    if role == "tool_call":
        content = tool_call_text(value, f"{field}.{value_key}")
    elif isinstance(value, str):
        content = value
    else:
        raise RecordError(f"{field}.{value_key}", f"expected a string, got {type_name(value)}")
    return Turn(role, content, None if weight is None else float(weight))


def render_turn(turn: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"from": ROLE_FROM[turn.role], "value": turn.content}
    if turn.weight is not None:
        out["weight"] = int(turn.weight) if float(turn.weight).is_integer() else turn.weight
    return out


def read_turns(items: list, field: str, raw: dict[str, Any]) -> list[Turn]:
    """Parse turns, noting in ``raw`` every source turn the default spelling would not reproduce."""
    turns = []
    for i, item in enumerate(items):
        turn = parse_turn(item, f"{field}[{i}]")
        if render_turn(turn) != item:
            raw[str(i)] = item
        turns.append(turn)
    return turns


def write_turns(turns: list[Turn], raw: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, turn in enumerate(turns):
        source = raw.get(str(i))
        if source is not None:
            try:
                if parse_turn(source, "raw") == turn:
                    out.append(source)
                    continue
            except RecordError:
                pass
        out.append(render_turn(turn))
    return out


class ShareGPTFormat(DatasetFormat):
    name = NAME
    title = "ShareGPT"
    summary = "conversations of {from, value} turns; system/tools columns; LLaMA-Factory preference and KTO rows"
    default_extension = ".json"
    specificity = 10

    def match(self, rows):
        score = share(rows, _is_sharegpt)
        if score == 0:
            return None
        froms = []
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("conversations"), list):
                for t in row["conversations"]:
                    keys = _turn_keys(t)
                    if keys and isinstance(t[keys[0]], str):
                        froms.append(t[keys[0]])
        spelling = "from/value" if share(rows, lambda r: _turn_keys(r["conversations"][0]) == ("from", "value")) \
            >= share(rows, lambda r: _turn_keys(r["conversations"][0]) == ("role", "content")) else "role/content"
        notes = [f"roles seen: {seen(froms)}"]
        if share(rows, lambda r: isinstance(r.get("chosen"), (dict, list)) and "rejected" in r) > 0:
            notes.append("preference pairs (chosen/rejected turns)")
        if share(rows, lambda r: "kto_tag" in r) > 0:
            notes.append("kto_tag labels")
        if share(rows, lambda r: "tools" in r) > 0:
            notes.append("tools present")
        if share(rows, lambda r: "system" in r) > 0:
            notes.append("system column")
        extras = extra_keys(rows, KNOWN)
        if extras:
            notes.append(f"extra keys kept as metadata: {', '.join(extras)}")
        return match_or_none(score, f"{pct(score)} of sampled rows have conversations with {spelling} turns; "
                             + "; ".join(notes))

    def read(self, row):
        conv = want_list(row.get("conversations"), "conversations", "a list of {from, value} turns")
        if not conv:
            raise RecordError("conversations", "empty conversation")
        raw: dict[str, Any] = {}
        turns = read_turns(conv, "conversations", raw)
        hint: dict[str, Any] = {"turns": raw}
        system = row.get("system")
        if system is not None:
            if not isinstance(system, str):
                raise RecordError("system", f"expected a string, got {type_name(system)}")
            if system:
                turns.insert(0, Turn("system", system))
                hint["system"] = "column"
            else:
                hint["system"] = "empty column"
        tools, tools_raw = tools_text(row.get("tools"))
        hint["tools"] = tools_raw
        meta = extra_fields(row, KNOWN)
        chosen = rejected = label = None
        if "chosen" in row or "rejected" in row:
            chosen, hint["chosen"] = self._side(row, "chosen")
            rejected, hint["rejected"] = self._side(row, "rejected")
        if "kto_tag" in row:
            label, hint["label"] = read_label(row["kto_tag"], "kto_tag")
        return Record(turns, chosen, rejected, label, tools, make_meta(meta, NAME, hint))

    def read_columns(self, table):
        """:meth:`read` over whole columns for conversations of from/value turns spelt as the
        writer spells them (system, human, gpt, observation), with an optional system column.
        Preference, KTO and tool rows, and other spellings, take the row path."""
        kit = column_kit()
        if set(table.column_names) & {"tools", "chosen", "rejected", "kto_tag"}:
            return None
        spelt = {ROLE_FROM[r]: r for r in ("system", "user", "assistant", "tool")}
        turns = kit.mapped_turns(table, "conversations", ("from", "value"), spelt)
        if turns is None:
            return None
        hint = {}
        system = kit.string_column(table, "system")
        if system is not None:
            has_system = kit.nonempty(system)
            turns = kit.prepend_turn(turns, "system", system, has_system)
            hint["system"] = kit.if_else_text(has_system, '"column"', '"empty column"')
        elif "system" in table.column_names:
            return None
        meta = kit.meta_column(table, KNOWN, NAME, hint)
        return None if meta is None else kit.canonical_table(table.num_rows, "conversation", turns, meta=meta)

    @staticmethod
    def _side(row, key):
        value = row.get(key)
        if value is None:
            raise RecordError(key, "missing (a preference row needs both chosen and rejected)")
        if isinstance(value, dict):
            turn = parse_turn(value, key)
            return [turn], ({"one": value} if render_turn(turn) != value else {})
        if isinstance(value, list):
            if not value:
                raise RecordError(key, "empty list of turns")
            raw: dict[str, Any] = {}
            return read_turns(value, key, raw), {"list": True, "turns": raw}
        raise RecordError(key, f"expected a {{from, value}} turn, got {type_name(value)}")

    def write(self, record):
        hint = layout_of(record, NAME)
        turns = list(record.messages)
        row: dict[str, Any] = {}
        if hint.get("system") == "column" and turns and turns[0].role == "system":
            system = turns.pop(0).content
        else:
            system = "" if hint.get("system") == "empty column" else None
        if not turns:
            return Written(None, ["records with no conversation turns besides the system prompt"])
        row["conversations"] = write_turns(turns, hint.get("turns") or {})
        if system is not None:
            row["system"] = system
        tools = tools_value(record.tools, hint.get("tools"), as_text=True)
        if tools is not None:
            row["tools"] = tools
        if record.kind == "preference":
            for key, side in (("chosen", record.chosen or []), ("rejected", record.rejected or [])):
                side_hint = hint.get(key) or {}
                if len(side) == 1 and not side_hint.get("list"):
                    one = side_hint.get("one")
                    try:
                        keep = one is not None and parse_turn(one, key) == side[0]
                    except RecordError:
                        keep = False
                    row[key] = one if keep else render_turn(side[0])
                else:
                    # More than one turn: LLaMA-Factory holds one; a list keeps the whole continuation.
                    row[key] = write_turns(side, side_hint.get("turns") or {})
        if record.label is not None:
            row["kto_tag"] = write_label(record.label, hint.get("label"))
        return Written(add_meta(row, record), [])


@hookimpl
def register_formats(register):
    register(ShareGPTFormat())
