"""Databricks Dolly 15k: ``{"instruction", "context", "response", "category"}``.

The context becomes part of the user turn (``instruction + "\\n\\n" + context``), like Alpaca's
input. The reader remembers the context in the layout hint, so the writer splits the user turn
back into instruction and context exactly; category and any extra keys live in ``meta``.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, column_kit, extra_fields, extra_keys_note, layout_of,
    make_meta, match_or_none, pct, seen, share, unheld, want_str, without_system,
)
from studio.hookspecs import hookimpl

NAME = "dolly"
KNOWN = {"instruction", "context", "response"}
SEP = "\n\n"


def _is_dolly(row) -> bool:
    return isinstance(row.get("instruction"), str) and isinstance(row.get("response"), str) and "context" in row


class DollyFormat(DatasetFormat):
    name = NAME
    title = "Dolly 15k"
    summary = "instruction / context / response / category (Databricks Dolly)"
    default_extension = ".jsonl"
    specificity = 15

    def match(self, rows):
        score = share(rows, _is_dolly)
        if score == 0:
            return None
        cats = [r["category"] for r in rows if isinstance(r, dict) and isinstance(r.get("category"), str)]
        with_context = share(rows, lambda r: _is_dolly(r) and bool(r.get("context")))
        reason = (f"{pct(score)} of sampled rows have instruction + context + response (Dolly); "
                  f"{pct(with_context)} have a non-empty context")
        if cats:
            reason += f"; categories: {seen(cats)}"
        reason += extra_keys_note(rows, KNOWN | {"category"})
        return match_or_none(score, reason)

    def read(self, row):
        instruction = want_str(row.get("instruction"), "instruction")
        response = want_str(row.get("response"), "response")
        context = want_str(row.get("context"), "context", allow_none=True)
        if not instruction.strip() and not (context or "").strip():
            raise RecordError("instruction", "empty instruction")
        prompt = f"{instruction}{SEP}{context}" if context else instruction
        hint = {"context": context or None, "no_context": "context" not in row,
                "null_context": "context" in row and row["context"] is None}
        meta = make_meta(extra_fields(row, KNOWN), NAME, hint)
        return Record([Turn("user", prompt), Turn("assistant", response)], meta=meta)

    def read_columns(self, table):
        """:meth:`read` over whole columns (rows without nulls: the host leaves those to :meth:`read`)."""
        kit = column_kit()
        instruction = kit.string_column(table, "instruction")
        response = kit.string_column(table, "response")
        context = kit.string_column(table, "context")
        if instruction is None or response is None or (context is None and "context" in table.column_names):
            return None
        n = table.num_rows
        empty = kit.blank(instruction)
        if context is not None:
            empty = kit.both(empty, kit.blank(context))
        if kit.any_true(empty):
            return None  # an empty instruction: the row path reports it
        prompt = instruction if context is None else kit.join_if(instruction, context, SEP)
        hint = {"context": None if context is None else kit.json_text_where(context, kit.nonempty(context)),
                "no_context": "true" if context is None else None}
        meta = kit.meta_column(table, KNOWN, NAME, hint)
        if meta is None:
            return None
        messages = kit.turns(n, [("user", prompt, None), ("assistant", response, None)])
        return kit.canonical_table(n, "conversation", messages, meta=meta)

    def write(self, record):
        if record.kind != "conversation":
            return Written(None, [f"{record.kind} records (Dolly holds one instruction and one response)"])
        turns, dropped = without_system(record)
        if [t.role for t in turns] != ["user", "assistant"]:
            return Written(None, ["conversations other than one user turn and one assistant reply"])
        prompt, response = turns[0].content, turns[1].content
        hint = layout_of(record, NAME)
        context = hint.get("context") or ""
        if context and prompt.endswith(SEP + context):
            instruction = prompt[: -len(SEP + context)]
        else:
            # No hint (or an edited prompt): the whole user turn is the instruction.
            instruction, context = prompt, ""
        row = {"instruction": instruction}
        if hint.get("null_context") and not context:
            row["context"] = None
        elif not (hint.get("no_context") and not context):
            row["context"] = context
        row["response"] = response
        if "category" in record.meta:
            row["category"] = record.meta["category"]
        dropped += unheld(record)
        return Written(add_meta(row, record), dropped)


@hookimpl
def register_formats(register):
    register(DollyFormat())
