"""Self-Instruct seed tasks: ``{"id", "name", "instruction", "instances": [{"input", "output"}],
"is_classification"}`` and the user-oriented variant ``{"id", "motivation_app", "instruction",
"instances"}``.

User turn = instruction (+ ``"\\n\\n"`` + the first instance's input when there is one);
assistant turn = the first instance's output. Everything else (id, name, is_classification,
motivation_app, further instances as ``extra_instances``) is kept in ``meta``, and the layout hint
remembers the input so the writer splits the user turn back exactly.
"""
from __future__ import annotations

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, extra_fields, extra_keys_note, layout_of, make_meta,
    match_or_none, pct, share, source_meta, type_name, unheld, want_list, want_str, without_system,
)
from studio.hookspecs import hookimpl

NAME = "self_instruct"
SEP = "\n\n"


def _is_seed(row) -> bool:
    inst = row.get("instances")
    return (isinstance(row.get("instruction"), str) and isinstance(inst, list) and bool(inst)
            and all(isinstance(i, dict) and "output" in i for i in inst))


class SelfInstructFormat(DatasetFormat):
    name = NAME
    title = "Self-Instruct seed tasks"
    summary = "instruction with instances [{input, output}] (seed tasks and user-oriented tasks)"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        score = share(rows, _is_seed)
        if score == 0:
            return None
        kinds = []
        if share(rows, lambda r: "is_classification" in r) > 0:
            cls = share(rows, lambda r: r.get("is_classification") is True)
            kinds.append(f"seed tasks with is_classification ({pct(cls)} classification)")
        if share(rows, lambda r: "motivation_app" in r) > 0:
            kinds.append("user-oriented tasks with motivation_app")
        reason = f"{pct(score)} of sampled rows have instruction + instances [{{input, output}}] (Self-Instruct)"
        if kinds:
            reason += "; " + ", ".join(kinds)
        reason += extra_keys_note(rows, {"id", "name", "instruction", "instances", "is_classification",
                                         "motivation_app"})
        return match_or_none(score, reason)

    def read(self, row):
        instruction = want_str(row.get("instruction"), "instruction")
        instances = want_list(row.get("instances"), "instances", "a list of {input, output} instances")
        if not instances:
            raise RecordError("instances", "empty list (a task needs at least one instance)")
        first = instances[0]
        if not isinstance(first, dict):
            raise RecordError("instances[0]", f"expected an object with input and output, got {type_name(first)}")
        inp = want_str(first.get("input", ""), "instances[0].input")
        out = want_str(first.get("output"), "instances[0].output")
        for i, inst in enumerate(instances[1:], start=1):
            if not isinstance(inst, dict):
                raise RecordError(f"instances[{i}]", f"expected an object with input and output, got {type_name(inst)}")
        if not instruction.strip() and not inp.strip():
            raise RecordError("instruction", "empty instruction")
        prompt = f"{instruction}{SEP}{inp}" if inp else instruction
        meta = extra_fields(row, {"instruction", "instances"})
        if len(instances) > 1:
            meta["extra_instances"] = instances[1:]
        hint = {"input": inp or None, "no_input": "input" not in first,
                "instance_extras": extra_fields(first, {"input", "output"})}
        return Record([Turn("user", prompt), Turn("assistant", out)], meta=make_meta(meta, NAME, hint))

    def write(self, record):
        if record.kind != "conversation":
            return Written(None, [f"{record.kind} records (a seed task holds one instruction and its output)"])
        turns, dropped = without_system(record)
        if [t.role for t in turns] != ["user", "assistant"]:
            return Written(None, ["conversations other than one user turn and one assistant reply"])
        hint = layout_of(record, NAME)
        prompt = turns[0].content
        inp = hint.get("input") or ""
        if inp and prompt.endswith(SEP + inp):
            instruction = prompt[: -len(SEP + inp)]
        else:
            instruction, inp = prompt, ""
        first = {} if hint.get("no_input") and not inp else {"input": inp}
        first["output"] = turns[1].content
        first.update({k: v for k, v in (hint.get("instance_extras") or {}).items() if k not in first})
        meta = source_meta(record)
        more = meta.pop("extra_instances", None)
        instances = [first] + (more if isinstance(more, list) else [])
        row = {}
        for key in ("id", "name", "motivation_app"):
            if key in meta:
                row[key] = meta[key]
        row["instruction"] = instruction
        row["instances"] = instances
        if "is_classification" in meta:
            row["is_classification"] = meta["is_classification"]
        for key, value in meta.items():
            row.setdefault(key, value)
        return Written(row, dropped + unheld(record))


@hookimpl
def register_formats(register):
    register(SelfInstructFormat())
