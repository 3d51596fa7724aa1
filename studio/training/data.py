"""Training data: records from a stored dataset or a data file, the held-out split, the checks
that run before a run starts, and the row shapes trl's trainers expect.

Every check names the record (its 1-based row in the source) and the field, so a wrong shape is
one clear message before training, not a traceback ten minutes in.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.records import Record, Turn
from studio.data.refs import looks_like_file

# What each back-end can ask for; ``prompt`` means any record that ends on a user turn (or whose
# trailing assistant turns can be dropped), ``conversation`` one with at least one assistant turn.
DATA_KINDS = ("conversation", "preference", "unpaired", "prompt")
MAX_LISTED = 5


@dataclass
class LoadedData:
    records: list[Record]
    source: dict[str, Any]  # what to write in the run folder: stored version or file + sha256
    warnings: list[str] = field(default_factory=list)


def load_records(ref: str, ws=None, formats=None, limit: int | None = None) -> LoadedData:
    """A stored dataset ``NAME[@VERSION]`` (pinned to its version) or a data file (format detected)."""
    if looks_like_file(ref) or ws is None:
        return _load_file(Path(ref), formats, limit)
    view = ws.open(ref)
    records = []
    for record in view.records():
        records.append(record)
        if limit and len(records) >= limit:
            break
    return LoadedData(records, {"dataset": view.info.dataset, "version": view.info.id,
                                "ref": f"{view.info.dataset}@{view.info.id}"})


def _load_file(path: Path, formats, limit: int | None) -> LoadedData:
    from studio.data.convert import read_file
    from studio.store import file_sha256

    if not path.is_file():
        raise ValueError(f"{path}: no such data file (and no stored dataset by that name)")
    if formats is None:
        from studio.plugins import get_host

        formats = get_host().formats()
    result = read_file(path, formats)
    records = list(result.records)[:limit] if limit else list(result.records)
    warnings = [str(r) for r in result.rejects[:MAX_LISTED]]
    if len(result.rejects) > MAX_LISTED:
        warnings.append(f"... and {len(result.rejects) - MAX_LISTED} more malformed rows in {path}")
    return LoadedData(records, {"file": str(path), "sha256": file_sha256(path), "format": result.detection.format,
                                "ref": str(path)}, warnings)


def split_eval(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A seeded held-out split; at least one eval record whenever a fraction is asked for."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(records) * fraction))
    held = set(order[:n_eval])
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def check_records(records: list[Record], kind: str, where: str) -> list[str]:
    """Problems with using ``records`` as ``kind`` data, each naming the record and the field."""
    if not records:
        return [f"{where}: no records"]
    problems = []
    for index, record in enumerate(records, start=1):
        problem = _record_problem(record, kind)
        if problem:
            problems.append(f"{where}: record {index}: {problem}")
    if len(problems) > MAX_LISTED:
        problems = problems[:MAX_LISTED] + [f"{where}: ... {len(problems) - MAX_LISTED} more records with problems"]
    return problems


def _record_problem(record: Record, kind: str) -> str | None:
    if kind == "conversation":
        if not any(t.role in ("assistant", "tool_call") for t in record.messages):
            return f"field 'messages': no assistant turn to learn from (this is a {record.kind} record)"
    elif kind == "preference":
        if not record.chosen or not record.rejected:
            missing = "chosen" if not record.chosen else "rejected"
            return f"field '{missing}': a preference pair needs chosen and rejected (this is a {record.kind} record)"
        if not record.messages:
            return "field 'messages': a preference pair needs a prompt"
    elif kind == "unpaired":
        if record.label is None:
            return f"field 'label': unpaired feedback needs a true/false label (this is a {record.kind} record)"
        if not record.messages or record.messages[-1].role != "assistant":
            return "field 'messages': the last turn must be the assistant completion the label judges"
        if len(record.messages) < 2:
            return "field 'messages': a prompt turn is needed before the completion"
    elif kind == "prompt":
        if not prompt_turns(record):
            return "field 'messages': no user turn to use as a prompt"
    else:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(DATA_KINDS)}")
    return None


def turn_dict(turn: Turn) -> dict[str, str]:
    # Tool calls train as assistant text and tool results as tool turns; chat templates without
    # tool support still render them.
    role = "assistant" if turn.role == "tool_call" else turn.role
    return {"role": role, "content": turn.content}


def prompt_turns(record: Record) -> list[dict[str, str]]:
    """The conversation up to and including its last user turn."""
    turns = [turn_dict(t) for t in record.messages]
    while turns and turns[-1]["role"] != "user":
        turns.pop()
    return turns


def conversation_row(record: Record) -> dict[str, Any]:
    return {"messages": [turn_dict(t) for t in record.messages]}


def preference_row(record: Record) -> dict[str, Any]:
    return {"prompt": [turn_dict(t) for t in record.messages],
            "chosen": [turn_dict(t) for t in record.chosen or []],
            "rejected": [turn_dict(t) for t in record.rejected or []]}


def unpaired_row(record: Record) -> dict[str, Any]:
    turns = [turn_dict(t) for t in record.messages]
    return {"prompt": turns[:-1], "completion": turns[-1:], "label": bool(record.label)}


def prompt_row(record: Record) -> dict[str, Any]:
    """A prompt for online RL; the reference answer (when the record has one) goes along for
    rule-based rewards."""
    turns = [turn_dict(t) for t in record.messages]
    prompt = prompt_turns(record)
    answer = turns[len(prompt)]["content"] if len(turns) > len(prompt) else ""
    return {"prompt": prompt, "answer": answer}


ROW_BUILDERS = {"conversation": conversation_row, "preference": preference_row,
                "unpaired": unpaired_row, "prompt": prompt_row}


def to_dataset(records: list[Record], kind: str):
    """A ``datasets.Dataset`` of ``kind`` rows (the conversational shapes trl documents)."""
    from datasets import Dataset

    build = ROW_BUILDERS[kind]
    return Dataset.from_list([build(r) for r in records])
