"""Alpaca: ``{"instruction", "input", "output"}`` plus LLaMA-Factory's optional ``system`` and
``history`` ([[user, assistant], ...] turns before this one), and its preference variant with
``chosen`` / ``rejected`` strings instead of ``output``."""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Match, Record, RecordError, Turn, Written, add_meta, column_kit, dict_rows, extra_fields, layout_of,
    make_meta, optional_str, require, share,
)
from studio.hookspecs import hookimpl

KNOWN = {"instruction", "input", "output", "system", "history", "chosen", "rejected"}


class AlpacaFormat(DatasetFormat):
    name = "alpaca"
    title = "Alpaca"
    summary = "instruction / input / output, with optional system and history (LLaMA-Factory)"
    default_extension = ".json"
    specificity = 10

    def match(self, rows):
        sft = share(rows, lambda r: {"instruction", "output"} <= r.keys())
        pref = share(rows, lambda r: {"instruction", "chosen", "rejected"} <= r.keys())
        score = max(sft, pref)
        if score == 0:
            return None
        extras = [k for k in ("input", "history", "system") if any(k in r for r in dict_rows(rows))]
        kind = "preference pairs (chosen/rejected)" if pref > sft else "instruction/output rows"
        return Match(score, f"{score:.0%} of sampled rows have instruction + "
                            f"{'chosen/rejected' if pref > sft else 'output'}: {kind}"
                            + (f", with {', '.join(extras)}" if extras else ""))

    def read(self, row):
        instruction = require(row, "instruction")
        extra = optional_str(row, "input") or ""
        system = optional_str(row, "system")
        turns: list[Turn] = [Turn("system", system)] if system else []
        history = row.get("history") or []
        if not isinstance(history, list):
            raise RecordError("history", f"expected a list of [user, assistant] pairs, got {type(history).__name__}")
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise RecordError(f"history[{i}]", "expected a [user, assistant] pair of strings")
            turns += [Turn("user", pair[0]), Turn("assistant", pair[1])]
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        if not prompt.strip():
            raise RecordError("instruction", "empty instruction")
        turns.append(Turn("user", prompt))
        # The input is folded into the user turn; the layout hint lets the writer split it back.
        meta = make_meta(extra_fields(row, KNOWN), "alpaca", {"input": extra or None, "no_input": "input" not in row,
                                                            "empty_history": row.get("history") == []})
        if "chosen" in row or "rejected" in row:
            chosen = require(row, "chosen")
            rejected = require(row, "rejected")
            return Record(turns, [Turn("assistant", chosen)], [Turn("assistant", rejected)], meta=meta)
        output = require(row, "output")
        return Record(turns + [Turn("assistant", output)], meta=meta)

    def read_columns(self, table):
        """:meth:`read` over whole columns, for rows without history (the row path maps those)."""
        kit = column_kit()
        names = set(table.column_names)
        preference = "chosen" in names or "rejected" in names
        if "history" in names or (preference and ("output" in names or not {"chosen", "rejected"} <= names)):
            return None
        texts = {k: kit.string_column(table, k) for k in ("instruction", "input", "system", "output",
                                                               "chosen", "rejected") if k in names}
        if None in texts.values() or "instruction" not in texts or not (preference or "output" in texts):
            return None
        n = table.num_rows
        extra = texts.get("input")
        prompt = texts["instruction"] if extra is None else kit.join_if(texts["instruction"], extra, "\n\n")
        if kit.any_true(kit.blank(prompt)):
            return None  # an empty instruction: the row path reports it
        system = texts.get("system")
        slots = [("system", system, kit.nonempty(system))] if system is not None else []
        slots.append(("user", prompt, None))
        input_hint = None if extra is None else kit.json_text_where(extra, kit.nonempty(extra))
        meta = kit.meta_column(table, KNOWN, "alpaca", {"input": input_hint,
                                                             "no_input": "true" if extra is None else None})
        if meta is None:
            return None
        if preference:
            return kit.canonical_table(
                n, "preference", kit.turns(n, slots),
                chosen=kit.turns(n, [("assistant", texts["chosen"], None)]),
                rejected=kit.turns(n, [("assistant", texts["rejected"], None)]), meta=meta)
        return kit.canonical_table(n, "conversation", kit.turns(n, slots + [("assistant", texts["output"], None)]),
                                        meta=meta)

    def write(self, record):
        dropped: list[str] = []
        turns = list(record.messages)
        if record.kind == "preference":
            chosen, rejected = record.chosen or [], record.rejected or []
            if len(chosen) != 1 or len(rejected) != 1 or chosen[0].role != "assistant" or rejected[0].role != "assistant":
                return Written(None, ["preference pairs longer than one assistant turn"])
            answer = None
        else:
            if not turns or turns[-1].role != "assistant":
                return Written(None, ["conversations that do not end with an assistant turn"])
            answer = turns.pop().content
        system = None
        if turns and turns[0].role == "system":
            system = turns.pop(0).content
        if not turns or turns[-1].role != "user":
            return Written(None, ["conversations whose last prompt turn is not a user turn"])
        instruction = turns.pop().content
        hint = layout_of(record, "alpaca")
        extra = hint.get("input") or ""
        if extra and instruction.endswith(f"\n\n{extra}"):
            instruction = instruction[: -len(extra) - 2]
        else:
            extra = ""
        history = []
        pairs = iter(turns)
        for user in pairs:
            assistant = next(pairs, None)
            if user.role != "user" or assistant is None or assistant.role != "assistant":
                return Written(None, ["tool calls and non-alternating turns (Alpaca holds only user/assistant pairs)"])
            history.append([user.content, assistant.content])
        row = {"instruction": instruction}
        if extra or not hint.get("no_input"):
            row["input"] = extra
        if answer is not None:
            row["output"] = answer
        else:
            row["chosen"] = record.chosen[0].content
            row["rejected"] = record.rejected[0].content
        if system is not None:
            row["system"] = system
        if history or hint.get("empty_history"):
            row["history"] = history
        if record.label is not None:
            dropped.append("label")
        if record.tools:
            dropped.append("tools")
        if any(t.weight is not None for t in record.messages):
            dropped.append("per-turn weights")
        return Written(add_meta(row, record), dropped)


@hookimpl
def register_formats(register):
    register(AlpacaFormat())
