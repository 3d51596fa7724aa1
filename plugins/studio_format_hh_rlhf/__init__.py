"""Anthropic hh-rlhf: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}``.

Each string is a whole transcript. It is split on ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` markers;
the turns both transcripts share (leaving each side at least its last turn) are the prompt, the
rest are the chosen and rejected continuations. Turn text is kept verbatim (odd whitespace,
empty replies, "Human:" inside a line), so writing back gives byte-identical strings.
"""
from __future__ import annotations

import re

from studio.data.format_base import DatasetFormat, RecordError, Written
from studio.hookspecs import hookimpl
from studio.records import Record, Turn
from studio_format_common import (
    add_meta, extra_keys, layout_of, make_meta, match_or_none, pct, share, shared_prefix, type_name, unheld,
)

NAME = "hh_rlhf"
MARKER = re.compile(r"\n\n(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}
LABEL = {"user": "Human", "assistant": "Assistant"}


def _is_transcript(value) -> bool:
    return isinstance(value, str) and value.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in value


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
        score = share(rows, lambda r: _is_transcript(r.get("chosen")) and _is_transcript(r.get("rejected")))
        if score == 0:
            return None
        turns = [len(MARKER.findall(r["chosen"])) for r in rows if isinstance(r, dict) and _is_transcript(r.get("chosen"))]
        reason = (f"{pct(score)} of sampled rows have chosen and rejected strings that are '\\n\\nHuman: ... "
                  f"\\n\\nAssistant: ...' transcripts (hh-rlhf); {min(turns)}-{max(turns)} turns each")
        extras = extra_keys(rows, {"chosen", "rejected"})
        if extras:
            reason += f"; extra keys kept as metadata: {', '.join(extras)}"
        return match_or_none(score, reason)

    def read(self, row):
        chosen, chosen_hint = parse_transcript(row.get("chosen"), "chosen")
        rejected, rejected_hint = parse_transcript(row.get("rejected"), "rejected")
        n = shared_prefix(chosen, rejected)
        meta = {k: v for k, v in row.items() if k not in {"chosen", "rejected"}}
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
