"""OpenAI chat fine-tuning files.

* ``{"messages": [{"role", "content", "tool_calls"?, "tool_call_id"?, "weight"?}], "tools"?}``
* preference fine-tuning: ``{"input": {"messages", "tools"?}, "preferred_output": [...],
  "non_preferred_output": [...]}`` (the writer uses it for preference records)
* ``{"messages", "label"}`` unpaired rows are read too, but detection leaves them to ``kto``.

Tool calls become ``tool_call`` turns whose content is the normalised call JSON (name, arguments
and the call id when there is one), so OpenAI -> OpenAI keeps every id.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Written, add_meta, column_kit, extra_fields, extra_keys, is_message_list,
    layout_of, make_meta, match_or_none, pct, read_label, read_messages, roles_in, seen, share, tools_text,
    tools_value, write_label, write_messages,
)
from studio.hookspecs import hookimpl

NAME = "openai"
CHAT_KEYS = {"messages", "tools", "label"}
PREF_KEYS = {"input", "preferred_output", "non_preferred_output"}


def _is_chat(row) -> bool:
    return is_message_list(row.get("messages"))


def _is_pref(row) -> bool:
    inp = row.get("input")
    return (isinstance(inp, dict) and isinstance(inp.get("messages"), list)
            and isinstance(row.get("preferred_output"), list) and isinstance(row.get("non_preferred_output"), list))


class OpenAIChatFormat(DatasetFormat):
    name = NAME
    title = "OpenAI chat"
    summary = "messages with role/content (tool calls, weights); preference input/preferred_output"
    default_extension = ".jsonl"
    specificity = 10

    def match(self, rows):
        chat = share(rows, _is_chat)
        pref = share(rows, _is_pref)
        score = max(chat, pref)
        if score == 0:
            return None
        if pref > chat:
            return match_or_none(score, f"{pct(pref)} of sampled rows have input.messages with "
                                        f"preferred_output/non_preferred_output (OpenAI preference fine-tuning)")
        labelled = share(rows, lambda r: _is_chat(r) and "label" in r)
        roles = seen(roles_in(rows, "messages"))
        notes = []
        if share(rows, lambda r: any(isinstance(m, dict) and m.get("tool_calls") for m in r["messages"])) > 0:
            notes.append("tool calls present")
        if share(rows, lambda r: "tools" in r) > 0:
            notes.append("tools present")
        extras = extra_keys(rows, CHAT_KEYS)
        if extras:
            notes.append(f"extra keys kept as metadata: {', '.join(extras)}")
        reason = f"{pct(chat)} of sampled rows have messages with role/content; roles seen: {roles}"
        if labelled >= 0.5:
            # messages + label is KTO's shape: readable here, but the kto format explains it better.
            score *= 0.9
            notes.append(f"{pct(labelled)} carry a label (KTO's unpaired shape)")
        return match_or_none(score, reason + "".join(f"; {n}" for n in notes))

    def read(self, row):
        if "messages" not in row and "input" in row:
            return self._read_preference(row)
        turns, msg_hint = read_messages(row.get("messages"), "messages")
        tools, tools_raw = tools_text(row.get("tools"))
        label = label_raw = None
        if "label" in row:
            label, label_raw = read_label(row["label"], "label")
        meta = extra_fields(row, CHAT_KEYS)
        hint = {"messages": msg_hint, "tools": tools_raw, "label": label_raw}
        return Record(turns, label=label, tools=tools, meta=make_meta(meta, NAME, hint))

    def read_columns(self, table):
        """:meth:`read` over whole columns for chat rows of plain role/content messages (no
        tools, labels, weights or tool calls: those take the row path)."""
        kit = column_kit()
        if set(table.column_names) & {"tools", "label", "input"}:
            return None
        messages = kit.role_content_turns(table, "messages")
        if messages is None:
            return None
        meta = kit.meta_column(table, CHAT_KEYS, NAME, {})
        return None if meta is None else kit.canonical_table(table.num_rows, "conversation", messages, meta=meta)

    def _read_preference(self, row):
        inp = row.get("input")
        if not isinstance(inp, dict):
            raise RecordError("input", f"expected an object with messages, got {type(inp).__name__}")
        prompt, prompt_hint = read_messages(inp.get("messages"), "input.messages")
        tools, tools_raw = tools_text(inp.get("tools"), "input.tools")
        chosen, chosen_hint = read_messages(row.get("preferred_output"), "preferred_output")
        rejected, rejected_hint = read_messages(row.get("non_preferred_output"), "non_preferred_output")
        input_extras = extra_fields(inp, {"messages", "tools"})
        meta = extra_fields(row, PREF_KEYS)
        hint = {"input": prompt_hint, "chosen": chosen_hint, "rejected": rejected_hint,
                "tools": tools_raw, "input_extras": input_extras}
        return Record(prompt, chosen, rejected, tools=tools, meta=make_meta(meta, NAME, hint))

    def write(self, record):
        hint = layout_of(record, NAME)
        try:
            if record.kind == "preference":
                inp = {"messages": write_messages(record.messages, hint.get("input"))}
                tools = tools_value(record.tools, hint.get("tools"), as_text=False)
                if tools is not None:
                    inp["tools"] = tools
                inp.update({k: v for k, v in (hint.get("input_extras") or {}).items() if k not in inp})
                row = {"input": inp,
                       "preferred_output": write_messages(record.chosen or [], hint.get("chosen")),
                       "non_preferred_output": write_messages(record.rejected or [], hint.get("rejected"))}
                dropped = ["label"] if record.label is not None else []
                return Written(add_meta(row, record), dropped)
            row = {"messages": write_messages(record.messages, hint.get("messages"))}
        except ValueError as exc:
            return Written(None, [f"tool calls that are not JSON ({exc})"])
        tools = tools_value(record.tools, hint.get("tools"), as_text=False)
        if tools is not None:
            row["tools"] = tools
        if record.label is not None:
            row["label"] = write_label(record.label, hint.get("label"))
        return Written(add_meta(row, record), [])


@hookimpl
def register_formats(register):
    register(OpenAIChatFormat())
