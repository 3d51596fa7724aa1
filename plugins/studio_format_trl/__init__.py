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

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, column_kit, extra_fields, extra_keys_note, layout_of,
    looks_like_hh_transcript, make_meta, match_or_none, pct, read_text_or_messages, shared_prefix,
    text_or_messages_style, tools_text, tools_value, want_str, write_messages, write_text_or_messages,
)
from studio.hookspecs import hookimpl

NAME = "trl_preference"
STACK = ("question", "response_j", "response_k")


def _shape(row: dict) -> str | None:
    if "label" in row:
        return None  # prompt/completion/label is the unpaired (KTO) shape
    if all(isinstance(row.get(k), str) for k in STACK):
        return "stack_exchange"
    chosen, rejected = (text_or_messages_style(row.get(k)) for k in ("chosen", "rejected"))
    if chosen and chosen == rejected:
        if "prompt" in row:
            return "explicit" if text_or_messages_style(row["prompt"]) else None
        if chosen == "standard" and (looks_like_hh_transcript(row["chosen"])
                                     or "conversations" in row or "instruction" in row):
            return None  # hh-rlhf transcripts, ShareGPT/Alpaca preference rows
        return "implicit"
    if ("chosen" not in row and "rejected" not in row
            and text_or_messages_style(row.get("completion")) and text_or_messages_style(row.get("prompt"))):
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
        styles = {text_or_messages_style(r.get("chosen", r.get("completion")))
                  for r, s in zip(rows, shapes) if s and s != "stack_exchange"}
        style = " and ".join(sorted(s for s in styles if s)) or "standard"
        what = {
            "explicit": f"prompt + chosen + rejected ({style})",
            "implicit": f"chosen + rejected without a prompt ({style}; the shared start is the prompt)",
            "stack_exchange": "question + response_j + response_k (StackExchange-paired: j preferred)",
            "prompt_completion": f"prompt + completion without a label ({style} prompt-completion)",
        }[main]
        reason = f"{pct(score)} of sampled rows are TRL rows; most have {what}"
        reason += extra_keys_note(rows, {"prompt", "chosen", "rejected", "completion", "tools", *STACK})
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
        question, preferred, other = (want_str(row.get(k), k) for k in STACK)
        meta = make_meta(extra_fields(row, STACK), NAME, {"shape": "stack_exchange"})
        return Record([Turn("user", question)], [Turn("assistant", preferred)], [Turn("assistant", other)], meta=meta)

    def _read_preference(self, row):
        chosen, style, chosen_hint = read_text_or_messages(row, "chosen", "assistant")
        rejected, style_r, rejected_hint = read_text_or_messages(row, "rejected", "assistant")
        if style_r != style:
            raise RecordError("rejected", f"is {style_r} but chosen is {style}; both must be strings or both lists")
        meta = extra_fields(row, {"prompt", "chosen", "rejected", "tools"})
        tools, tools_raw = tools_text(row.get("tools"))
        if "prompt" in row:
            prompt, style_p, prompt_hint = read_text_or_messages(row, "prompt", "user")
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
        prompt, style_p, prompt_hint = read_text_or_messages(row, "prompt", "user")
        completion, style, completion_hint = read_text_or_messages(row, "completion", "assistant")
        meta = extra_fields(row, {"prompt", "completion", "tools"})
        tools, tools_raw = tools_text(row.get("tools"))
        hint = {"shape": "prompt_completion", "style": style, "prompt_style": style_p if style_p != style else None,
                "prompt": prompt_hint, "completion": completion_hint, "completion_turns": len(completion),
                "tools": tools_raw}
        return Record(prompt + completion, tools=tools, meta=make_meta(meta, NAME, hint))

    # --- writing ---------------------------------------------------------------------------

    def read_columns(self, table):
        """:meth:`read` over whole columns for the standard (string) shapes with a prompt:
        prompt/chosen/rejected and prompt/completion. Other shapes take the row path."""
        kit = column_kit()
        names = set(table.column_names)
        if "tools" in names or "prompt" not in names or (all(k in names for k in STACK) and "chosen" not in names):
            return None
        preference = "chosen" in names or "rejected" in names
        keys = ("prompt", "chosen", "rejected") if preference else ("prompt", "completion")
        texts = [kit.string_column(table, k) for k in keys]
        if any(t is None for t in texts):
            return None
        n = table.num_rows
        user = kit.turns(n, [("user", texts[0], None)])
        if preference:
            meta = kit.meta_column(table, {"prompt", "chosen", "rejected", "tools"}, NAME,
                                   {"shape": '"explicit"', "style": '"standard"'})
            return None if meta is None else kit.canonical_table(
                n, "preference", user, chosen=kit.turns(n, [("assistant", texts[1], None)]),
                rejected=kit.turns(n, [("assistant", texts[2], None)]), meta=meta)
        meta = kit.meta_column(table, {"prompt", "completion", "tools"}, NAME,
                               {"shape": '"prompt_completion"', "style": '"standard"', "completion_turns": "1"})
        messages = kit.turns(n, [("user", texts[0], None), ("assistant", texts[1], None)])
        return None if meta is None else kit.canonical_table(n, "conversation", messages, meta=meta)

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
            row = {"prompt": write_text_or_messages(prompt, prompt_style, "user", hint.get("prompt")),
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
        row = {"prompt": write_text_or_messages(prompt, prompt_style, "user", hint.get("prompt")),
               "completion": write_text_or_messages(completion, style, "assistant", hint.get("completion"))}
        return self._finish(row, record, hint)


@hookimpl
def register_formats(register):
    register(TRLPreferenceFormat())
