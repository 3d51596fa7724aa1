"""TRL datasets: preference ``{"prompt", "chosen", "rejected"}`` and prompt-completion
``{"prompt", "completion"}``, each *standard* (strings) or *conversational* (lists of
role/content messages).

Also read: implicit-prompt preference (``chosen``/``rejected`` without ``prompt``; for message
lists their shared leading turns are the prompt) and StackExchange-paired files
(``{"question", "response_j" (preferred), "response_k"}``). The shape of the source is kept in
the layout hint, so writing back to TRL gives the same shape; canonical records do not depend on it.
A standard prompt is read as one user turn and a standard answer as one assistant turn.
"""
from __future__ import annotations

from typing import Any

from studio.data.format_base import DatasetFormat, RecordError, Written
from studio.hookspecs import hookimpl
from studio.records import Record, Turn
from studio_format_common import (
    add_meta, extra_keys, is_message_list, layout_of, make_meta, match_or_none, pct, read_messages,
    shared_prefix, tools_text, tools_value, type_name, write_messages,
)

NAME = "trl_preference"
STACK = ("question", "response_j", "response_k")


def _looks_hh(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in value


def _side(value: Any) -> str | None:
    if isinstance(value, str):
        return "standard"
    if is_message_list(value):
        return "conversational"
    return None


def _shape(row: dict) -> str | None:
    if "label" in row:
        return None  # prompt/completion/label is the unpaired (KTO) shape
    if all(isinstance(row.get(k), str) for k in STACK):
        return "stack_exchange"
    chosen, rejected = _side(row.get("chosen")), _side(row.get("rejected"))
    if chosen and chosen == rejected:
        if "prompt" in row:
            return "explicit" if _side(row["prompt"]) else None
        if chosen == "standard" and (_looks_hh(row["chosen"]) or "conversations" in row or "instruction" in row):
            return None  # hh-rlhf transcripts, ShareGPT/Alpaca preference rows
        return "implicit"
    if "chosen" not in row and "rejected" not in row and _side(row.get("completion")) and _side(row.get("prompt")):
        return "prompt_completion"
    return None


class TRLPreferenceFormat(DatasetFormat):
    name = NAME
    title = "TRL preference / prompt-completion"
    summary = "prompt/chosen/rejected (standard strings or conversational messages), prompt/completion"
    default_extension = ".jsonl"
    specificity = 10

    def match(self, rows):
        shapes = [_shape(r) if isinstance(r, dict) else None for r in rows]
        score = sum(s is not None for s in shapes) / len(rows) if rows else 0
        if score == 0:
            return None
        counts = {s: shapes.count(s) for s in dict.fromkeys(shapes) if s}
        main = max(counts, key=counts.get)
        styles = {_side(r.get("chosen", r.get("completion"))) for r, s in zip(rows, shapes) if s and s != "stack_exchange"}
        style = " and ".join(sorted(s for s in styles if s)) or "standard"
        what = {
            "explicit": f"prompt + chosen + rejected ({style})",
            "implicit": f"chosen + rejected without a prompt ({style}; the shared start is the prompt)",
            "stack_exchange": "question + response_j + response_k (StackExchange-paired: j preferred)",
            "prompt_completion": f"prompt + completion without a label ({style} prompt-completion)",
        }[main]
        reason = f"{pct(score)} of sampled rows are TRL rows; most have {what}"
        extras = extra_keys(rows, {"prompt", "chosen", "rejected", "completion", "tools", *STACK})
        if extras:
            reason += f"; extra keys kept as metadata: {', '.join(extras)}"
        return match_or_none(score, reason)

    # --- reading ---------------------------------------------------------------------------

    def read(self, row):
        if all(k in row for k in STACK) and "chosen" not in row:
            return self._read_stack(row)
        if "chosen" in row or "rejected" in row:
            return self._read_preference(row)
        if "completion" in row:
            return self._read_prompt_completion(row)
        raise RecordError("chosen", "missing (a TRL row has prompt/chosen/rejected or prompt/completion)")

    def _read_stack(self, row):
        question, preferred, other = (self._text(row, k) for k in STACK)
        meta = make_meta({k: v for k, v in row.items() if k not in STACK}, NAME, {"shape": "stack_exchange"})
        return Record([Turn("user", question)], [Turn("assistant", preferred)], [Turn("assistant", other)], meta=meta)

    @staticmethod
    def _text(row, key) -> str:
        value = row.get(key)
        if value is None:
            raise RecordError(key, "missing")
        if not isinstance(value, str):
            raise RecordError(key, f"expected a string, got {type_name(value)}")
        return value

    def _part(self, row, key, role: str) -> tuple[list[Turn], str, dict]:
        value = row.get(key)
        if value is None:
            raise RecordError(key, "missing")
        if isinstance(value, str):
            return [Turn(role, value)], "standard", {}
        if isinstance(value, list):
            turns, hint = read_messages(value, key)
            return turns, "conversational", hint
        raise RecordError(key, f"expected a string or a list of messages, got {type_name(value)}")

    def _read_preference(self, row):
        chosen, style, chosen_hint = self._part(row, "chosen", "assistant")
        rejected, style_r, rejected_hint = self._part(row, "rejected", "assistant")
        if style_r != style:
            raise RecordError("rejected", f"is {style_r} but chosen is {style}; both must be strings or both lists")
        meta = {k: v for k, v in row.items() if k not in {"prompt", "chosen", "rejected", "tools"}}
        tools, tools_raw = tools_text(row.get("tools"))
        if "prompt" in row:
            prompt, style_p, prompt_hint = self._part(row, "prompt", "user")
            hint = {"shape": "explicit", "style": style, "prompt_style": style_p if style_p != style else None,
                    "prompt": prompt_hint, "chosen": chosen_hint, "rejected": rejected_hint, "tools": tools_raw}
            return Record(prompt, chosen, rejected, tools=tools, meta=make_meta(meta, NAME, hint))
        if style == "standard":
            # Implicit prompt in plain text: nothing marks where the prompt ends.
            hint = {"shape": "implicit", "style": style, "tools": tools_raw}
            return Record([], chosen, rejected, tools=tools, meta=make_meta(meta, NAME, hint))
        n = shared_prefix(chosen, rejected)
        hint = {"shape": "implicit", "style": style, "chosen": chosen_hint, "rejected": rejected_hint, "tools": tools_raw}
        return Record(chosen[:n], chosen[n:], rejected[n:], tools=tools, meta=make_meta(meta, NAME, hint))

    def _read_prompt_completion(self, row):
        prompt, style_p, prompt_hint = self._part(row, "prompt", "user")
        completion, style, completion_hint = self._part(row, "completion", "assistant")
        meta = {k: v for k, v in row.items() if k not in {"prompt", "completion", "tools"}}
        tools, tools_raw = tools_text(row.get("tools"))
        hint = {"shape": "prompt_completion", "style": style, "prompt_style": style_p if style_p != style else None,
                "prompt": prompt_hint, "completion": completion_hint, "completion_turns": len(completion),
                "tools": tools_raw}
        return Record(prompt + completion, tools=tools, meta=make_meta(meta, NAME, hint))

    # --- writing ---------------------------------------------------------------------------

    @staticmethod
    def _out(turns: list[Turn], style: str, role: str, hint: dict | None) -> Any:
        if style == "standard" and len(turns) == 1 and turns[0].role == role and turns[0].weight is None:
            return turns[0].content
        return write_messages(turns, hint if style == "conversational" else None)

    def write(self, record):
        hint = layout_of(record, NAME)
        shape, style = hint.get("shape"), hint.get("style", "conversational")
        try:
            if record.kind == "preference":
                return self._write_preference(record, hint, shape, style)
            if record.kind == "conversation":
                return self._write_prompt_completion(record, hint, style)
        except ValueError as exc:
            return Written(None, [f"tool calls that are not JSON ({exc})"])
        return Written(None, ["unpaired (labelled) records: write them with the kto format"])

    @staticmethod
    def _finish(row, record, hint):
        """TRL keeps tool schemas in a ``tools`` column (a list), next to the messages."""
        tools = tools_value(record.tools, hint.get("tools"), as_text=False)
        if tools is not None:
            row["tools"] = tools
        return Written(add_meta(row, record), [])

    def _write_preference(self, record, hint, shape, style):
        prompt, chosen, rejected = record.messages, record.chosen or [], record.rejected or []
        if not chosen or not rejected:
            return Written(None, ["preference records with an empty chosen or rejected side"])
        single = (len(prompt) == 1 and prompt[0].role == "user" and
                  all(len(s) == 1 and s[0].role == "assistant" and s[0].weight is None for s in (chosen, rejected)))
        if shape == "stack_exchange" and single and not record.tools:
            row = {"question": prompt[0].content, "response_j": chosen[0].content, "response_k": rejected[0].content}
            return Written(add_meta(row, record), [])
        if shape == "implicit" and style == "standard" and not prompt and all(
                len(s) == 1 and s[0].role == "assistant" for s in (chosen, rejected)):
            return self._finish({"chosen": chosen[0].content, "rejected": rejected[0].content}, record, hint)
        if shape == "implicit" and style == "conversational" and prompt \
                and shared_prefix(prompt + chosen, prompt + rejected) == len(prompt):
            row = {"chosen": write_messages(prompt + chosen, hint.get("chosen")),
                   "rejected": write_messages(prompt + rejected, hint.get("rejected"))}
            return self._finish(row, record, hint)
        if shape == "explicit" and style == "standard" and single:
            row = {"prompt": prompt[0].content, "chosen": chosen[0].content, "rejected": rejected[0].content}
            return self._finish(row, record, hint)
        if shape == "explicit" and style == "conversational":
            prompt_style = hint.get("prompt_style") or style
            row = {"prompt": self._out(prompt, prompt_style, "user", hint.get("prompt")),
                   "chosen": write_messages(chosen, hint.get("chosen")),
                   "rejected": write_messages(rejected, hint.get("rejected"))}
            return self._finish(row, record, hint)
        # Default: conversational with an explicit prompt (holds system prompts, tools, many turns).
        row = {"prompt": write_messages(prompt), "chosen": write_messages(chosen),
               "rejected": write_messages(rejected)}
        return self._finish(row, record, hint)

    def _write_prompt_completion(self, record, hint, style):
        turns = record.messages
        n = hint.get("completion_turns")
        if not isinstance(n, int) or not 0 < n < len(turns) or hint.get("shape") != "prompt_completion":
            n = 1
            style = "conversational"
        if len(turns) < 2 or turns[-1].role not in ("assistant", "tool_call"):
            return Written(None, ["conversations that do not end with an assistant turn"])
        prompt, completion = turns[:-n], turns[-n:]
        prompt_style = hint.get("prompt_style") or style
        row = {"prompt": self._out(prompt, prompt_style, "user", hint.get("prompt")),
               "completion": self._out(completion, style, "assistant", hint.get("completion"))}
        return self._finish(row, record, hint)


@hookimpl
def register_formats(register):
    register(TRLPreferenceFormat())
