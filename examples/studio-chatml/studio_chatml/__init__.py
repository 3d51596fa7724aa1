"""ChatML as a studio dataset format: one row per conversation, a single ``text`` field holding

    <|im_start|>system
    You are terse.<|im_end|>
    <|im_start|>user
    Hi<|im_end|>
    <|im_start|>assistant
    Hello.<|im_end|>

Tool calls follow the Hermes/Qwen convention: an assistant turn whose content is only
``<tool_call>{json}</tool_call>`` blocks is a canonical ``tool_call`` turn, and tool results are
turns of role ``tool``. Other row fields are kept in the record's ``meta`` and written back.
"""
from __future__ import annotations

import json
import re
from typing import Any

from studio.data.format_kit import (
    DatasetFormat, Match, Record, RecordError, Turn, Written, add_meta, extra_fields, normalise_tool_call, require,
    unheld,
)
from studio.hookspecs import hookimpl

__version__ = "0.1.0"

START = "<|im_start|>"
END = "<|im_end|>"
ROLES = ("system", "user", "assistant", "tool")
FIELD = "text"

_TOOL_CALLS = re.compile(r"\A\s*(?:<tool_call>.*?</tool_call>\s*)+\Z", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def parse(text: str) -> list[Turn]:
    """Split ChatML markup into turns, raising :class:`RecordError` (field ``text``) that says
    which turn is wrong and why."""
    turns: list[Turn] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        number = len(turns) + 1
        if not text.startswith(START, pos):
            raise RecordError(FIELD, f"turn {number}: expected {START} at character {pos}, "
                                     f"found {text[pos:pos + 30]!r}")
        pos += len(START)
        newline = text.find("\n", pos)
        if newline < 0:
            raise RecordError(FIELD, f"turn {number}: role line {text[pos:pos + 30]!r} is not "
                                     f"followed by a newline (unclosed turn)")
        role = text[pos:newline].strip()
        if role not in ROLES:
            raise RecordError(FIELD, f"turn {number}: unknown role {role!r} "
                                     f"(expected one of {', '.join(ROLES)})")
        body_start = newline + 1
        end = text.find(END, body_start)
        restart = text.find(START, body_start)
        if end < 0 or (0 <= restart < end):
            raise RecordError(FIELD, f"turn {number} ({role}): unclosed turn, no {END} before "
                                     f"{'the next ' + START if 0 <= restart else 'the end of the text'}")
        turns.append(_turn(role, text[body_start:end], number))
        pos = end + len(END)
    if not turns:
        raise RecordError(FIELD, "no ChatML turns (empty text)")
    return turns


def _turn(role: str, content: str, number: int) -> Turn:
    if role == "assistant" and _TOOL_CALLS.match(content):
        calls = []
        for raw in _TOOL_CALL.findall(content):
            try:
                calls.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise RecordError(FIELD, f"turn {number} (assistant): <tool_call> is not valid JSON: {exc}") from None
        return Turn("tool_call", normalise_tool_call(calls[0] if len(calls) == 1 else calls))
    return Turn(role, content)


def render(turns: list[Turn]) -> str:
    parts = []
    for turn in turns:
        if turn.role == "tool_call":
            value = json.loads(turn.content)
            calls = value if isinstance(value, list) else [value]
            body = "\n".join(f"<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>" for c in calls)
            parts.append(f"{START}assistant\n{body}{END}")
        else:
            parts.append(f"{START}{turn.role}\n{turn.content}{END}")
    return "\n".join(parts)


class ChatMLFormat(DatasetFormat):
    name = "chatml"
    title = "ChatML"
    summary = "one 'text' field per row holding <|im_start|>role ... <|im_end|> turns"
    # More specific than any format that merely accepts a free-text 'text' column.
    specificity = 20

    def match(self, rows: list[Any]) -> Match | None:
        candidates = [r for r in rows if isinstance(r, dict) and isinstance(r.get(FIELD), str)
                      and START in r[FIELD]]
        if not candidates:
            return None
        good = 0
        first_error = None
        for row in candidates:
            try:
                parse(row[FIELD])
                good += 1
            except RecordError as exc:
                first_error = first_error or exc.message
        score = good / len(rows)
        reason = f"{good} of {len(rows)} sampled rows have a 'text' field in ChatML markup"
        if first_error:
            reason += f" (first malformed one: {first_error})"
        return Match(score, reason)

    def read(self, row: dict[str, Any]) -> Record:
        text = require(row, FIELD)
        turns = parse(text)
        if all(t.role == "system" for t in turns):
            raise RecordError(FIELD, "only a system turn, no conversation")
        return Record(turns, meta=extra_fields(row, {FIELD}))

    def write(self, record: Record) -> Written:
        if record.kind == "preference":
            return Written(None, ["preference pairs (a ChatML row holds one conversation)"])
        if not record.messages:
            return Written(None, ["records without messages"])
        try:
            row: dict[str, Any] = {FIELD: render(record.messages)}
        except json.JSONDecodeError:
            return Written(None, ["tool calls whose content is not JSON"])
        # add_meta writes back the source fields, never the layout hints other formats leave in meta.
        return Written(add_meta(row, record), unheld(record))


@hookimpl
def register_formats(register):
    register(ChatMLFormat())
