"""Anthropic hh-rlhf: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}``.

Each string is a whole transcript. It is split on ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` markers;
the turns both transcripts share (leaving each side at least its last turn) are the prompt, the
rest are the chosen and rejected continuations. Turn text is kept verbatim (odd whitespace,
empty replies, "Human:" inside a line), so writing back gives byte-identical strings.
"""
from __future__ import annotations

import re

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, dict_rows, extra_fields, extra_keys_note,
    layout_of, looks_like_hh_transcript, make_meta, match_or_none, pct, share, shared_prefix, type_name, unheld,
)
from studio.hookspecs import hookimpl

NAME = "hh_rlhf"
MARKER = re.compile(r"\n\n(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}
LABEL = {"user": "Human", "assistant": "Assistant"}


def parse_transcript(text, field: str) -> tuple[list[Turn], dict]:
    """A transcript -> turns, plus what rendering needs to give back the same bytes."""
    if text is None:
        raise RecordError(field, "missing")
    if not isinstance(text, str):
        raise RecordError(field, f"expected a transcript string, got {type_name(text)}")
    hint: dict = {}
    body = text
    if not body.startswith("\n\n"):
        # Some copies strip the leading blank line ("Human: ..."); remember to leave it off.
        if body.startswith("Human:"):
            body = "\n\n" + body
            hint["lead"] = False
    parts = MARKER.split(body)
    if parts[0] != "" or len(parts) < 3:
        raise RecordError(field, "expected a transcript starting with '\\n\\nHuman:' turns")
    turns: list[Turn] = []
    tight: list[int] = []  # turns whose marker is not followed by a space
    for i in range(1, len(parts), 2):
        content = parts[i + 1]
        if content.startswith(" "):
            content = content[1:]
        else:
            tight.append(len(turns))
        turns.append(Turn(ROLE[parts[i]], content))
    if tight:
        hint["tight"] = tight
    return turns, hint


def render_transcript(turns: list[Turn], hint: dict) -> str:
    tight = set(hint.get("tight") or [])
    text = "".join(f"\n\n{LABEL[t.role]}:{'' if i in tight else ' '}{t.content}" for i, t in enumerate(turns))
    return text[2:] if hint.get("lead") is False else text


class HHRLHFFormat(DatasetFormat):
    name = NAME
    title = "Anthropic hh-rlhf"
    summary = "chosen/rejected transcripts of Human:/Assistant: turns; the prompt is their shared start"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: all(looks_like_hh_transcript(r.get(k)) for k in ("chosen", "rejected")))
        if score == 0:
            return None
        turns = [len(MARKER.findall(r["chosen"])) for r in dict_rows(rows) if looks_like_hh_transcript(r.get("chosen"))]
        reason = (f"{pct(score)} of sampled rows have chosen and rejected strings that are '\\n\\nHuman: ... "
                  f"\\n\\nAssistant: ...' transcripts (hh-rlhf); {min(turns)}-{max(turns)} turns each")
        reason += extra_keys_note(rows, {"chosen", "rejected"})
        return match_or_none(score, reason)

    def read(self, row):
        chosen, chosen_hint = parse_transcript(row.get("chosen"), "chosen")
        rejected, rejected_hint = parse_transcript(row.get("rejected"), "rejected")
        n = shared_prefix(chosen, rejected)
        meta = extra_fields(row, {"chosen", "rejected"})
        hint = {"chosen": chosen_hint, "rejected": rejected_hint}
        return Record(chosen[:n], chosen[n:], rejected[n:], meta=make_meta(meta, NAME, hint))

    def write(self, record):
        if record.kind != "preference" or not record.chosen or not record.rejected:
            return Written(None, [f"{record.kind} records (hh-rlhf holds chosen/rejected pairs)"])
        prompt = list(record.messages)
        dropped = []
        if prompt and prompt[0].role == "system":
            prompt.pop(0)
            dropped.append("system prompt")
        sides = (prompt + record.chosen, prompt + record.rejected)
        if any(t.role not in LABEL for side in sides for t in side):
            return Written(None, ["tool calls and system turns inside the conversation (hh-rlhf has Human/Assistant only)"])
        hint = layout_of(record, NAME)
        row = {"chosen": render_transcript(sides[0], hint.get("chosen") or {}),
               "rejected": render_transcript(sides[1], hint.get("rejected") or {})}
        dropped += unheld(record)
        return Written(add_meta(row, record), dropped)


@hookimpl
def register_formats(register):
    register(HHRLHFFormat())
