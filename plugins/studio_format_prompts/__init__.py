"""Prompt-only rows: ``{"question_id", "question"}``, ``{"prompt"}`` or ``{"instruction"}`` alone
(plus id-like keys), and TRL's conversational prompt-only ``{"prompt": [messages]}``.

Each becomes a record with user turn(s) and no assistant turn: the input of generation and
evaluation runs. Keys other than the prompt go to ``meta``.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, extra_fields, extra_keys, is_message_list,
    layout_of, make_meta, match_or_none, pct, read_messages, type_name, unheld, write_messages,
)
from studio.hookspecs import hookimpl

NAME = "prompts"
PROMPT_KEYS = ("prompt", "question", "instruction")
# A row holding any of these has more than a prompt: some other format explains it.
ANSWER_KEYS = {"answer", "answers", "output", "response", "completion", "chosen", "rejected", "turns",
               "instances", "messages", "conversations", "canonical_solution", "test", "context", "input",
               "label", "reference", "target", "solution", "text", "response_j", "response_k",
               "responses", "completions"}
LONG_TEXT = 400  # a prompt-only row's other fields are ids and tags, not passages of text


def _prompt_key(row) -> str | None:
    if ANSWER_KEYS & row.keys():
        return None
    keys = [k for k in PROMPT_KEYS if k in row]
    if len(keys) != 1:
        return None
    if any(isinstance(v, str) and len(v) > LONG_TEXT for k, v in row.items() if k != keys[0]):
        return None
    value = row[keys[0]]
    if isinstance(value, str) or (keys[0] == "prompt" and is_message_list(value)):
        return keys[0]
    return None


class PromptsFormat(DatasetFormat):
    name = NAME
    title = "Prompts only"
    summary = "rows holding only a prompt (question / prompt / instruction) and ids: input for generation"
    default_extension = ".jsonl"
    specificity = 5

    def match(self, rows):
        keys = [_prompt_key(r) if isinstance(r, dict) else None for r in rows]
        score = sum(k is not None for k in keys) / len(rows) if rows else 0
        if score == 0:
            return None
        main = max(set(k for k in keys if k), key=keys.count)
        extras = extra_keys(rows, set(PROMPT_KEYS))
        reason = (f"{pct(score)} of sampled rows hold only a prompt ({main!r}) and no answer/response field: "
                  f"prompt-only rows")
        if extras:
            reason += f"; other keys kept as metadata: {', '.join(extras)}"
        return match_or_none(score, reason)

    def read(self, row):
        present = [k for k in PROMPT_KEYS if k in row]
        if not present:
            raise RecordError("prompt", "missing (a prompt-only row needs prompt, question or instruction)")
        key = present[0]
        value = row[key]
        meta = extra_fields(row, {key})
        if key == "prompt" and isinstance(value, list):
            turns, msg_hint = read_messages(value, "prompt")
            return Record(turns, meta=make_meta(meta, NAME, {"key": key, "messages": msg_hint, "style": "conversational"}))
        if value is None:
            raise RecordError(key, "missing")
        if not isinstance(value, str):
            raise RecordError(key, f"expected a string, got {type_name(value)}")
        if not value.strip():
            raise RecordError(key, "empty prompt")
        return Record([Turn("user", value)], meta=make_meta(meta, NAME, {"key": key if key != "prompt" else None}))

    def write(self, record):
        turns = list(record.messages)
        dropped = []
        # The prompt is everything before the first reply.
        for i, t in enumerate(turns):
            if t.role in ("assistant", "tool_call"):
                turns = turns[:i]
                dropped.append("responses")
                break
        if record.kind == "preference":
            dropped.append("chosen/rejected responses")
        if not turns:
            return Written(None, ["records with no prompt before the first reply"])
        hint = layout_of(record, NAME)
        key = hint.get("key") or "prompt"
        if len(turns) == 1 and turns[0].role == "user" and hint.get("style") != "conversational":
            row = {key: turns[0].content}
        else:
            try:
                row = {"prompt": write_messages(turns, hint.get("messages"))}
            except ValueError as exc:
                return Written(None, [f"tool calls that are not JSON ({exc})"])
        dropped += unheld(record, weights=True)
        return Written(add_meta(row, record), dropped)


@hookimpl
def register_formats(register):
    register(PromptsFormat())
