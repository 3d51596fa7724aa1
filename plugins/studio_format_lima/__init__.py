"""LIMA (native): ``{"conversations": [str, str, ...], "source": str}``.

Turns are plain strings alternating user, assistant, user, ... (the test split has a single user
turn). ``source`` and any other keys go to ``meta``.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, extra_fields, extra_keys_note, match_or_none,
    pct, seen, share, type_name, unheld, want_list, without_system,
)
from studio.hookspecs import hookimpl

NAME = "lima"


def _is_lima(row) -> bool:
    conv = row.get("conversations")
    return isinstance(conv, list) and bool(conv) and all(isinstance(t, str) for t in conv)


class LimaFormat(DatasetFormat):
    name = NAME
    title = "LIMA"
    summary = "conversations as a list of strings alternating user/assistant, with a source"
    default_extension = ".jsonl"
    specificity = 10

    def match(self, rows):
        score = share(rows, _is_lima)
        if score == 0:
            return None
        sources = [r["source"] for r in rows if isinstance(r, dict) and isinstance(r.get("source"), str)]
        reason = f"{pct(score)} of sampled rows have conversations as plain strings (LIMA, alternating user/assistant)"
        if sources:
            reason += f"; sources: {seen(sources)}"
        reason += extra_keys_note(rows, {"conversations", "source"})
        return match_or_none(score, reason)

    def read(self, row):
        conv = want_list(row.get("conversations"), "conversations", "a list of strings")
        if not conv:
            raise RecordError("conversations", "empty conversation")
        turns = []
        for i, text in enumerate(conv):
            if not isinstance(text, str):
                hint = " (a {from, value} turn: this looks like ShareGPT)" if isinstance(text, dict) else ""
                raise RecordError(f"conversations[{i}]", f"expected a string, got {type_name(text)}{hint}")
            turns.append(Turn("user" if i % 2 == 0 else "assistant", text))
        return Record(turns, meta=extra_fields(row, {"conversations"}))

    def write(self, record):
        if record.kind != "conversation":
            return Written(None, [f"{record.kind} records (LIMA holds plain conversations)"])
        turns, dropped = without_system(record)
        if not turns or any(t.role != ("user" if i % 2 == 0 else "assistant") for i, t in enumerate(turns)):
            return Written(None, ["conversations that do not alternate user/assistant (tool turns, system turns)"])
        dropped += unheld(record)
        return Written(add_meta({"conversations": [t.content for t in turns]}, record), dropped)


@hookimpl
def register_formats(register):
    register(LimaFormat())
