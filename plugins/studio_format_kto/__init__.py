"""KTO / unpaired feedback: ``{"messages": [...], "label": bool}`` or
``{"prompt", "completion", "label"}`` (strings, or TRL's conversational message lists).

The record's messages include the completion and ``label`` says whether it is desirable.
The writer uses ``messages`` + ``label`` unless the source had the prompt/completion shape.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Written, add_meta, column_kit, extra_fields, extra_keys_note, is_message_list,
    layout_of, make_meta, match_or_none, pct, read_label, read_messages, read_text_or_messages, roles_in, seen,
    share, text_or_messages_style, tools_text, tools_value, write_label, write_messages, write_text_or_messages,
)
from studio.hookspecs import hookimpl

NAME = "kto"


def _has_label(row) -> bool:
    value = row.get("label")
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"})


def _is_messages(row) -> bool:
    return _has_label(row) and is_message_list(row.get("messages"))


def _is_prompt_completion(row) -> bool:
    return _has_label(row) and all(text_or_messages_style(row.get(k)) for k in ("prompt", "completion"))


class KTOFormat(DatasetFormat):
    name = NAME
    title = "KTO (unpaired feedback)"
    summary = "one completion with a thumbs-up/down label: messages+label or prompt/completion/label"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        msgs = share(rows, _is_messages)
        pc = share(rows, _is_prompt_completion)
        score = max(msgs, pc)
        if score == 0:
            return None
        labels = [r.get("label") for r in rows if isinstance(r, dict) and _has_label(r)]
        good = sum(1 for v in labels if read_label(v, "label")[0])
        if msgs >= pc:
            reason = (f"{pct(msgs)} of sampled rows have messages with role/content and a boolean label (KTO); "
                      f"roles seen: {seen(roles_in(rows, 'messages'))}")
        else:
            reason = f"{pct(pc)} of sampled rows have prompt + completion + a boolean label (unpaired preference)"
        reason += f"; labels in the sample: {good} desirable, {len(labels) - good} undesirable"
        reason += extra_keys_note(rows, {"messages", "label", "prompt", "completion", "tools"})
        return match_or_none(score, reason)

    def read(self, row):
        if "label" not in row:
            raise RecordError("label", "missing (a KTO row needs label: true or false)")
        label, label_raw = read_label(row["label"], "label")
        tools, tools_raw = tools_text(row.get("tools"))
        hint: dict = {"label": label_raw, "tools": tools_raw}
        if "messages" in row or "prompt" not in row:
            turns, hint["messages"] = read_messages(row.get("messages"), "messages")
            meta = extra_fields(row, {"messages", "label", "tools"})
            return Record(turns, label=label, tools=tools, meta=make_meta(meta, NAME, hint))
        prompt, p_style, hint["prompt"] = read_text_or_messages(row, "prompt", "user")
        completion, c_style, hint["completion"] = read_text_or_messages(row, "completion", "assistant")
        hint.update(shape="prompt_completion", prompt_style=p_style, style=c_style,
                    completion_turns=len(completion))
        meta = extra_fields(row, {"prompt", "completion", "label", "tools"})
        return Record(prompt + completion, label=label, tools=tools, meta=make_meta(meta, NAME, hint))

    def read_columns(self, table):
        """:meth:`read` over whole columns for standard prompt/completion rows with a boolean
        label. Message lists, tools and labels spelt as text take the row path."""
        kit = column_kit()
        names = set(table.column_names)
        if "messages" in names or "tools" in names:
            return None
        prompt, completion = kit.string_column(table, "prompt"), kit.string_column(table, "completion")
        label = kit.bool_column(table, "label")
        if prompt is None or completion is None or label is None:
            return None
        n = table.num_rows
        hint = {"shape": '"prompt_completion"', "prompt_style": '"standard"', "style": '"standard"',
                "completion_turns": "1"}
        meta = kit.meta_column(table, {"prompt", "completion", "label", "tools"}, NAME, hint)
        if meta is None:
            return None
        messages = kit.turns(n, [("user", prompt, None), ("assistant", completion, None)])
        return kit.canonical_table(n, "unpaired", messages, meta=meta, label=label)

    def write(self, record):
        if record.kind != "unpaired":
            return Written(None, [f"{record.kind} records without a label (KTO needs a desirable/undesirable flag)"])
        hint = layout_of(record, NAME)
        turns = record.messages
        n = hint.get("completion_turns")
        try:
            if hint.get("shape") == "prompt_completion" and isinstance(n, int) and 0 < n < len(turns):
                row = {"prompt": write_text_or_messages(turns[:-n], hint.get("prompt_style"), "user",
                                                        hint.get("prompt")),
                       "completion": write_text_or_messages(turns[-n:], hint.get("style"), "assistant",
                                                            hint.get("completion"))}
            else:
                row = {"messages": write_messages(turns, hint.get("messages"))}
        except ValueError as exc:
            return Written(None, [f"tool calls that are not JSON ({exc})"])
        row["label"] = write_label(record.label, hint.get("label"))
        tools = tools_value(record.tools, hint.get("tools"), as_text=False)
        if tools is not None:
            row["tools"] = tools
        return Written(add_meta(row, record), [])


@hookimpl
def register_formats(register):
    register(KTOFormat())
