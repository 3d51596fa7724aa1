"""Which text of a record an operation looks at. Ops work on Arrow rows (plain dicts in the
canonical schema), so these functions take rows, not Record objects: no per-row object churn."""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

# prompt: every turn before the answer (system, user, tools); response: the answer turns
# (the last assistant turn of a conversation, or chosen and rejected of a pair); user/assistant:
# turns of that role anywhere; all: every turn.
TextPart = Literal["all", "prompt", "response", "user", "assistant", "chosen", "rejected"]
ANSWER_ROLES = ("assistant", "tool_call")


def _contents(turns: Any, roles: tuple[str, ...] | None = None) -> list[str]:
    if not turns:
        return []
    return [t["content"] or "" for t in turns if roles is None or t["role"] in roles]


def split_turns(row: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(prompt turns, response turns) of a row."""
    messages = row.get("messages") or []
    if row.get("chosen") is not None or row.get("rejected") is not None:
        return list(messages), list(row.get("chosen") or []) + list(row.get("rejected") or [])
    last = len(messages)
    while last > 0 and messages[last - 1]["role"] in ANSWER_ROLES:
        last -= 1
    if last == len(messages):  # no answer at the end: the whole record is prompt
        return list(messages), []
    return list(messages[:last]), list(messages[last:])


def row_text(row: dict[str, Any], part: TextPart = "all") -> str:
    if part == "all":
        return "\n".join(_contents(row.get("messages")) + _contents(row.get("chosen")) + _contents(row.get("rejected")))
    if part == "prompt":
        return "\n".join(_contents(split_turns(row)[0]))
    if part == "response":
        return "\n".join(_contents(split_turns(row)[1]))
    if part in ("chosen", "rejected"):
        return "\n".join(_contents(row.get(part)))
    roles = (part,) if part == "user" else ANSWER_ROLES
    return "\n".join(_contents(row.get("messages"), roles) + _contents(row.get("chosen"), roles)
                     + _contents(row.get("rejected"), roles))


def responses(row: dict[str, Any]) -> list[str]:
    """Each answer separately (a pair has two): filters judge every one."""
    if row.get("chosen") is not None or row.get("rejected") is not None:
        return ["\n".join(_contents(row.get("chosen"))), "\n".join(_contents(row.get("rejected")))]
    answer = split_turns(row)[1]
    return ["\n".join(_contents(answer))] if answer else []


_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalise(text: str, lowercase: bool = True, collapse_whitespace: bool = True,
              strip_punctuation: bool = False, unicode_nfkc: bool = True) -> str:
    """The text exact dedup compares: NFKC, case-folded, whitespace collapsed (by default)."""
    if unicode_nfkc:
        text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.casefold()
    if strip_punctuation:
        text = _NOT_WORD.sub(" " if collapse_whitespace else "", text)
    if collapse_whitespace:
        text = " ".join(text.split())
    return text
