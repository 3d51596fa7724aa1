"""Reviewing a dataset version by hand: flag, edit, delete, and for preference pairs accept,
reject or swap chosen and rejected; ``commit`` turns the edits into a new version.

Every edit is appended to a journal in the workspace (``data/<name>/reviews/<version>.jsonl``)
before it counts, so a killed TUI or CLI loses nothing and reopening the review resumes it. The
journal is the only truth: the in-memory state is rebuilt by replaying it, including undo. Only
the indices that were touched are held in memory, so the size of the dataset does not matter.

``commit`` streams the reviewed version from Arrow in batches with the edits applied and writes
a new version (parent = the reviewed one, operation ``review``). Deleted and rejected rows go
into the version's side table (the curation pipeline's schema, op ``review``), and edited or
swapped rows are kept there as they were before, so :func:`studio.curation.pipeline.amend_curated` can restore either.
The side table of the reviewed version carries over, and both use the same source indices, so
earlier curation removals stay restorable too. Flags live in the ``review.json`` side file.
"""
from __future__ import annotations

import bisect
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.curation.pipeline import ORIGIN_FILE, SIDE_TABLE, load_origin, load_side_table, side_schema
from studio.records import ROLES, Record, Turn
from studio.store import BATCH_ROWS, VersionInfo, VersionView, Workspace

JOURNAL_DIR = "reviews"
FLAGS_FILE = "review.json"
JOURNAL_COPY = "review-journal.jsonl"
UNDO_DEPTH = 1000
RECORD_KEYS = ("messages", "chosen", "rejected", "label", "tools", "meta")
REASONS = {"deleted": "deleted in review", "rejected": "rejected in review",
           "edited": "edited in review", "swapped": "swapped in review"}


class ReviewError(ValueError):
    pass


# --- the record as JSON (what `studio review edit --file` and the TUI's editor read) ----------


def record_to_json(record: Record) -> dict[str, Any]:
    """A record as the canonical JSON an editor shows: only the fields it uses."""
    def turns(items: list[Turn]) -> list[dict[str, Any]]:
        return [{"role": t.role, "content": t.content, **({"weight": t.weight} if t.weight is not None else {})}
                for t in items]

    out: dict[str, Any] = {"messages": turns(record.messages)}
    if record.chosen is not None or record.rejected is not None:
        out["chosen"] = turns(record.chosen or [])
        out["rejected"] = turns(record.rejected or [])
    if record.label is not None:
        out["label"] = record.label
    if record.tools is not None:
        try:
            out["tools"] = json.loads(record.tools)
        except json.JSONDecodeError:
            out["tools"] = record.tools
    if record.meta:
        out["meta"] = record.meta
    return out


def _turns(value: Any, where: str, required: bool) -> list[Turn] | None:
    if value is None:
        if required:
            raise ReviewError(f"{where}: a list of turns is required")
        return None
    if not isinstance(value, list):
        raise ReviewError(f"{where}: expected a list of turns, got {type(value).__name__}")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ReviewError(f"{where}[{i}]: expected an object with role and content")
        unknown = set(turn) - {"role", "content", "weight"}
        if unknown:
            raise ReviewError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
        role, content, weight = turn.get("role"), turn.get("content"), turn.get("weight")
        if role not in ROLES:
            raise ReviewError(f"{where}[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
        if role == "tool_call" and isinstance(content, (dict, list)):
            content = json.dumps(content, ensure_ascii=False)
        if not isinstance(content, str):
            raise ReviewError(f"{where}[{i}].content: expected a string, got {type(content).__name__}")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
            raise ReviewError(f"{where}[{i}].weight: expected a number")
        out.append(Turn(role, content, None if weight is None else float(weight)))
    return out


def record_from_json(data: Any) -> Record:
    """Validate a canonical record JSON object (messages, chosen, rejected, label, tools, meta)."""
    if not isinstance(data, dict):
        raise ReviewError("a record is a JSON object with messages (and chosen/rejected, label, tools, meta)")
    unknown = set(data) - set(RECORD_KEYS) - {"kind"}
    if unknown:
        raise ReviewError(f"unknown key(s) {', '.join(sorted(unknown))}; a record has {', '.join(RECORD_KEYS)}")
    messages = _turns(data.get("messages", []), "messages", required=True) or []
    chosen = _turns(data.get("chosen"), "chosen", required=False)
    rejected = _turns(data.get("rejected"), "rejected", required=False)
    if (chosen is None) != (rejected is None):
        raise ReviewError("a preference pair needs both chosen and rejected")
    label = data.get("label")
    if label is not None and not isinstance(label, bool):
        raise ReviewError(f"label: expected true, false or null, got {label!r}")
    if label is not None and chosen is not None:
        raise ReviewError("a record is either a preference pair or labelled, not both")
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, str):
        if not isinstance(tools, (list, dict)):
            raise ReviewError("tools: expected a list of tool schemas (or their JSON text)")
        tools = json.dumps(tools, ensure_ascii=False)
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ReviewError("meta: expected an object")
    if not messages and chosen is None:
        raise ReviewError("messages: a record needs at least one turn")
    record = Record(messages, chosen=chosen, rejected=rejected, label=label, tools=tools, meta=meta)
    if data.get("kind") not in (None, record.kind):
        raise ReviewError(f"kind says {data['kind']!r} but the fields make a {record.kind}")
    return record


def swapped(record: Record) -> Record:
    return replace(record, chosen=record.rejected, rejected=record.chosen)


# --- the review state of one record -----------------------------------------------------------


@dataclass
class ReviewState:
    """What the review did to one record. ``flagged`` is None when this review left the flag as
    it was committed (a flag of the reviewed version carries over)."""

    flagged: bool | None = None
    flag_note: str = ""
    deleted: bool = False
    verdict: str | None = None  # "accepted" | "rejected" (preference pairs)
    swapped: bool = False
    edit: dict[str, Any] | None = None  # canonical row that replaces the record
    note: str = ""

    def is_clear(self) -> bool:
        return self == ReviewState()

    @property
    def removed(self) -> bool:
        return self.deleted or self.verdict == "rejected"

    @property
    def changed(self) -> bool:
        return self.edit is not None or self.swapped

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False, "")}


@dataclass
class CommitResult:
    version: VersionInfo
    new_version: bool  # False: only flags changed, the data equals an existing version
    counts: dict[str, int] = field(default_factory=dict)
    flags: int = 0


def journal_path(ws: Workspace, name: str, version_id: str) -> Path:
    return ws.data_dir / name / JOURNAL_DIR / f"{version_id}.jsonl"


def read_flags(ws: Workspace, ref: str) -> dict[str, Any]:
    """The ``review.json`` side file of a version: committed flags ({} when there is none)."""
    name, _, version = ref.partition("@")
    path = ws.version_dir(name, version or None) / FLAGS_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def pending_reviews(ws: Workspace, name: str) -> list[str]:
    """Version ids of ``name`` with an uncommitted review journal."""
    folder = ws.data_dir / name / JOURNAL_DIR
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def _atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


class ReviewSession:
    """The review of one version. Open it with ``ReviewSession(ws, "name@version")``."""

    def __init__(self, ws: Workspace, ref: str):
        self.ws = ws
        self.view: VersionView = ws.open(ref)
        self.dataset = self.view.info.dataset
        self.version = self.view.info.id
        self.ref = f"{self.dataset}@{self.version}"
        self.path = journal_path(ws, self.dataset, self.version)
        self.states: dict[int, ReviewState] = {}
        committed = read_flags(ws, self.ref)
        self.base_flags: dict[int, str] = {int(f["index"]): f.get("note", "") for f in committed.get("flags", [])
                                           if f.get("index") is not None}
        self._undo: list[list[tuple[int, ReviewState | None]]] = []
        self._offset = 0
        self.closed = False
        self._sync()

    # --- the journal ------------------------------------------------------------------------

    def _sync(self) -> None:
        """Replay journal lines written since we last looked (another process may append)."""
        if not self.path.is_file():
            if self._offset:  # discarded or committed elsewhere
                self.states, self._undo, self._offset = {}, [], 0
            return
        size = self.path.stat().st_size
        if size < self._offset:  # replaced: start over
            self.states, self._undo, self._offset = {}, [], 0
        if size == self._offset:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line cut short by a kill: ignored, and overwritten by the next append
                self._offset += len(raw)
                try:
                    entry = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if entry.get("op") != "header":
                    self._apply(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        if self.closed:
            raise ReviewError("this review was committed or discarded; open it again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.is_file() or self.path.stat().st_size == 0
        lines = []
        if fresh:
            lines.append({"op": "header", "dataset": self.dataset, "version": self.version, "created": time.time()})
        lines.append({**entry, "at": round(time.time(), 3)})
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        start = 0 if fresh else self._offset
        with open(self.path, "wb" if fresh else "r+b") as fh:
            fh.seek(start)
            fh.truncate()  # drops a line cut short by a kill (``_sync`` stopped before it)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._offset = start + len(data)
        self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry.get("op")
        if op == "undo":
            if self._undo:
                for index, before in reversed(self._undo.pop()):
                    self._set(index, before)
            return
        group = []
        for index in entry.get("indices", []):
            before = self.states.get(index)
            state = replace(before) if before is not None else ReviewState()
            note = entry.get("note") or ""
            if op == "flag":
                state.flagged, state.flag_note = True, note
            elif op == "unflag":
                state.flagged, state.flag_note = (None if index not in self.base_flags else False), ""
            elif op == "delete":
                state.deleted = True
                state.note = note or state.note
            elif op == "undelete":
                state.deleted = False
            elif op == "accept":
                state.verdict = "accepted"
            elif op == "reject":
                state.verdict = "rejected"
                state.note = note or state.note
            elif op == "clear_verdict":
                state.verdict = None
            elif op == "swap":
                state.swapped = not state.swapped
            elif op == "edit":
                state.edit, state.swapped = entry["row"], False
                state.note = note or state.note
            elif op == "revert":
                state = ReviewState()
            else:
                continue  # an op from a newer studio: ignored rather than fatal
            group.append((index, before))
            self._set(index, state)
        if group:
            self._undo.append(group)
            del self._undo[:-UNDO_DEPTH]

    def _set(self, index: int, state: ReviewState | None) -> None:
        if state is None or state.is_clear():
            self.states.pop(index, None)
        else:
            self.states[index] = state

    # --- actions ----------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        return self.view.num_rows

    def _indices(self, indices: int | list[int]) -> list[int]:
        items = [indices] if isinstance(indices, int) else list(indices)
        if not items:
            raise ReviewError("name at least one record index")
        for i in items:
            if not isinstance(i, int) or not 0 <= i < self.num_rows:
                raise ReviewError(f"record index {i} is outside 0..{self.num_rows - 1}")
        return list(dict.fromkeys(items))

    def _require_pairs(self, indices: list[int], action: str) -> None:
        for i in indices:
            kind = self.effective(i).kind
            if kind != "preference":
                raise ReviewError(f"record {i} is a {kind}; {action} applies to preference pairs (delete it instead)")

    def _do(self, op: str, indices: int | list[int], note: str = "", **extra: Any) -> list[int]:
        self._sync()
        items = self._indices(indices)
        if op in ("accept", "reject", "swap"):
            self._require_pairs(items, op)
        entry: dict[str, Any] = {"op": op, "indices": items, **extra}
        if note:
            entry["note"] = note
        self._append(entry)
        return items

    def flag(self, indices: int | list[int], note: str = "") -> None:
        self._do("flag", indices, note)

    def unflag(self, indices: int | list[int]) -> None:
        self._do("unflag", indices)

    def delete(self, indices: int | list[int], note: str = "") -> None:
        self._do("delete", indices, note)

    def undelete(self, indices: int | list[int]) -> None:
        self._do("undelete", indices)

    def accept(self, indices: int | list[int]) -> None:
        self._do("accept", indices)

    def reject(self, indices: int | list[int], note: str = "") -> None:
        self._do("reject", indices, note)

    def clear_verdict(self, indices: int | list[int]) -> None:
        self._do("clear_verdict", indices)

    def swap(self, indices: int | list[int]) -> None:
        """Swap chosen and rejected (again: swaps back)."""
        self._do("swap", indices)

    def edit(self, index: int, record: Record | dict[str, Any], note: str = "") -> None:
        """Replace a record; a dict is validated as canonical record JSON."""
        if not isinstance(record, Record):
            record = record_from_json(record)
        self._do("edit", index, note, row=record.to_row())

    def revert(self, indices: int | list[int]) -> None:
        """Forget everything this review did to these records."""
        self._do("revert", indices)

    def undo(self) -> list[int]:
        """Take back the last action; returns the indices it touched (empty: nothing to undo)."""
        self._sync()
        if not self._undo:
            return []
        touched = [index for index, _ in self._undo[-1]]
        self._append({"op": "undo"})
        return touched

    def discard(self) -> None:
        """Throw the whole pending review away."""
        self.path.unlink(missing_ok=True)
        self.states, self._undo, self._offset = {}, [], 0

    # --- reading the state --------------------------------------------------------------------

    def state(self, index: int) -> ReviewState:
        return self.states.get(index) or ReviewState()

    def is_flagged(self, index: int) -> bool:
        state = self.states.get(index)
        if state is not None and state.flagged is not None:
            return state.flagged
        return index in self.base_flags

    def flag_note(self, index: int) -> str:
        state = self.states.get(index)
        if state is not None and state.flagged is not None:
            return state.flag_note
        return self.base_flags.get(index, "")

    def effective(self, index: int, original: Record | None = None) -> Record:
        """The record as the commit will write it (edits and swap applied)."""
        state = self.states.get(index)
        if state is not None and state.edit is not None:
            return Record.from_row(state.edit)
        record = original if original is not None else self.view.record(index)
        return swapped(record) if state is not None and state.swapped else record

    def undo_depth(self) -> int:
        return len(self._undo)

    def counts(self) -> dict[str, int]:
        """Pending changes by kind (a record may count under several)."""
        self._sync()
        out = {"flagged": 0, "unflagged": 0, "edited": 0, "swapped": 0, "deleted": 0, "accepted": 0, "rejected": 0}
        for state in self.states.values():
            if state.flagged is True:
                out["flagged"] += 1
            elif state.flagged is False:
                out["unflagged"] += 1
            if state.edit is not None:
                out["edited"] += 1
            elif state.swapped:
                out["swapped"] += 1
            if state.deleted:
                out["deleted"] += 1
            if state.verdict is not None:
                out[state.verdict] += 1
        return out

    @property
    def pending(self) -> int:
        self._sync()
        return len(self.states)

    def entries(self) -> list[tuple[int, ReviewState]]:
        self._sync()
        return sorted(self.states.items())

    def flags(self) -> dict[int, str]:
        """Every flag the commit would keep (committed ones plus this review's), by index."""
        self._sync()
        out = {i: note for i, note in self.base_flags.items()}
        for i, state in self.states.items():
            if state.flagged is True:
                out[i] = state.flag_note
            elif state.flagged is False:
                out.pop(i, None)
        return dict(sorted(out.items()))

    # --- commit -------------------------------------------------------------------------------

    def commit(self, note: str = "", emit: Callable[[dict[str, Any]], None] = lambda event: None,
               cancelled: Callable[[], bool] = lambda: False) -> CommitResult:
        """Write the reviewed rows as a new version and close the review."""
        import numpy as np
        import pyarrow as pa

        self._sync()
        if not self.states:
            raise ReviewError(f"nothing to commit: no pending review of {self.ref}")
        n = self.num_rows
        touched = sorted(self.states)
        removed = [i for i in touched if self.states[i].removed]
        changed = [i for i in touched if not self.states[i].removed and self.states[i].changed]
        origin = load_origin(self.ws, self.ref)
        keep = np.ones(n, dtype=bool)
        keep[removed] = False
        new_origin = origin[keep]

        def new_index(i: int) -> int:
            return i - bisect.bisect_left(removed, i)

        side_entries: list[dict[str, Any]] = []  # only touched rows: sparse

        def side_entry(i: int, row: dict[str, Any], action: str, reason: str) -> dict[str, Any]:
            state = self.states[i]
            detail = {"index": i, "review": f"{self.ref}"}
            if state.note:
                detail["note"] = state.note
            if action == "changed":
                detail["swapped"] = state.swapped and state.edit is None
            return {"step": -1, "op": "review", "action": action, "reason": reason,
                    "detail": json.dumps(detail, ensure_ascii=False), "source_index": int(origin[i]),
                    "duplicate_of": None, "similarity": None, **row}

        table = self.view._table

        def rows() -> Iterator[dict[str, Any]]:
            for lo in range(0, n, BATCH_ROWS):
                if cancelled():
                    raise InterruptedError("commit cancelled")
                hi = min(lo + BATCH_ROWS, n)
                batch = table.slice(lo, hi - lo).to_pylist()
                first = bisect.bisect_left(touched, lo)
                if first == len(touched) or touched[first] >= hi:
                    yield from batch
                else:
                    for offset, row in enumerate(batch):
                        i = lo + offset
                        state = self.states.get(i)
                        if state is None:
                            yield row
                        elif state.removed:
                            reason = REASONS["rejected" if state.verdict == "rejected" else "deleted"]
                            side_entries.append(side_entry(i, row, "removed", reason))
                        elif state.changed:
                            side_entries.append(side_entry(i, row, "changed",
                                                           REASONS["edited" if state.edit is not None else "swapped"]))
                            yield self.effective(i, Record.from_row(row)).to_row()
                        else:
                            yield row
                emit({"event": "progress", "done": hi, "total": n})

        flags = self.flags()
        counts = self.counts()
        flags_doc = {
            "reviewed": self.ref,
            "note": note,
            "flags": [{"index": new_index(i), "source_index": int(origin[i]), "note": text}
                      for i, text in flags.items() if keep[i]],
            "removed_flags": [{"source_index": int(origin[i]), "note": text} for i, text in flags.items() if not keep[i]],
            "accepted": [new_index(i) for i, s in sorted(self.states.items()) if s.verdict == "accepted" and keep[i]],
            "counts": counts,
        }
        operation = {"name": "review", "input": self.ref, "note": note, "counts": counts,
                     "removed": len(removed), "changed": len(changed), "flags": len(flags_doc["flags"])}
        if not removed and not changed:
            # Only flags or verdicts: the rows would equal this version, which content addressing
            # would hand back anyway; its flags file is brought up to date instead.
            _atomic_write_json(self.view.path / FLAGS_FILE, flags_doc)
            self.path.unlink(missing_ok=True)
            self.closed = True
            return CommitResult(version=self.view.info, new_version=False, counts=counts,
                                flags=len(flags_doc["flags"]))
        parent_side = load_side_table(self.ws, self.ref).data.table
        journal = self.path

        def side_files(folder: Path) -> None:
            schema = side_schema()
            with pa.OSFile(str(folder / SIDE_TABLE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for batch in parent_side.select(schema.names).cast(schema).to_batches(max_chunksize=BATCH_ROWS):
                    writer.write_batch(batch)
                if side_entries:
                    writer.write_table(pa.Table.from_pylist(side_entries, schema=schema))
            origin_table = pa.table({"source_index": pa.array(new_origin, pa.int64())})
            with pa.OSFile(str(folder / ORIGIN_FILE), "wb") as sink, \
                    pa.ipc.new_stream(sink, origin_table.schema) as writer:
                writer.write_table(origin_table)
            (folder / FLAGS_FILE).write_text(json.dumps(flags_doc, indent=2, ensure_ascii=False), encoding="utf-8")
            if journal.is_file():
                (folder / JOURNAL_COPY).write_bytes(journal.read_bytes())

        info = self.ws.write_version(self.dataset, rows(), operation, parent=self.version, side_files=side_files)
        new = (info.operation or {}).get("name") == "review" and (info.operation or {}).get("input") == self.ref
        if not new:
            # The edits reproduce a version that already exists: content addressing hands it
            # back without our side files, so at least its flags are brought up to date.
            _atomic_write_json(self.ws.version_dir(self.dataset, info.id) / FLAGS_FILE, flags_doc)
        self.path.unlink(missing_ok=True)
        self.closed = True
        return CommitResult(version=info, new_version=new, counts=counts, flags=len(flags_doc["flags"]))
