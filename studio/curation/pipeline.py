"""Curation pipelines: a recipe lists ops in order; running it on a stored dataset writes a new
version whose lineage names the input version and the recipe, plus a side table that keeps every
removed or changed row with the op, the reason and (for duplicates) the row it duplicates.

Recipe (YAML)::

    # studio curate recipes/curate-dolly.yaml
    dataset: dolly            # name, name@version or a data file (imported first)
    output: dolly-clean       # optional; default: a new version of the input dataset
    seed: 0
    steps:
      - op: exact_dedup
        part: all
      - op: refusal_filter

Determinism: ops are seeded and versions are content-addressed, so the same recipe on the same
input gives the same version id. A run that is interrupted writes nothing (the store renames a
finished version folder into place), so the previous head stays intact.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from studio.config_schema import validate
from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.data.refs import stored_ref
from studio.recipes.curate import CurationRecipe
from studio.recipes.loading import RecipeError, step_label
from studio.records import arrow_schema
from studio.store import VersionInfo, Workspace

SIDE_TABLE = "curation.arrow"
ORIGIN_FILE = "origin.arrow"
EXAMPLES_PER_STEP = 20


def resolve_steps(recipe: CurationRecipe, ops: dict[str, CurationOp]) -> list[tuple[CurationOp, BaseModel]]:
    """Validate every step's config against its op's schema, naming the step on error."""
    resolved = []
    for i, step in enumerate(recipe.steps):
        where = step_label(i, step)
        op = ops.get(step.op)
        if op is None:
            raise RecipeError(f"step {i}: unknown op {step.op!r}; known ops: {', '.join(sorted(ops))}")
        try:
            config = validate(op.config_model, step.options())
        except ValueError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        if op.makes_splits and i != len(recipe.steps) - 1:
            raise RecipeError(f"{where}: a split must be the last step")
        resolved.append((op, config))
    return resolved


@dataclass
class StepReport:
    index: int
    op: str
    rows_in: int
    removed: int
    changed: int
    added: int
    rows_out: int
    seconds: float
    by_reason: dict[str, int] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    clusters: int = 0
    # A few removals/changes with their rows, for previews (TUI) and dry runs.
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, examples: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not examples:
            data.pop("examples")
        return data


@dataclass
class PipelineResult:
    input: VersionInfo
    steps: list[StepReport]
    version: VersionInfo | None = None
    outputs: dict[str, VersionInfo] = field(default_factory=dict)
    dry_run: bool = False
    side_rows: int = 0
    engine: dict[str, Any] = field(default_factory=lambda: {"name": "local", "nodes": 1})

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": f"{self.input.dataset}@{self.input.id}",
            "dry_run": self.dry_run,
            "steps": [s.to_dict() for s in self.steps],
            "output": None if self.version is None else {
                "dataset": self.version.dataset, "version": self.version.id, "records": self.version.num_records},
            "splits": {k: {"dataset": v.dataset, "version": v.id, "records": v.num_records}
                       for k, v in self.outputs.items()},
            "side_rows": self.side_rows,
            "engine": self.engine,
        }


def side_schema():
    import pyarrow as pa

    fields = [
        ("step", pa.int32()), ("op", pa.string()), ("action", pa.string()), ("reason", pa.string()),
        ("detail", pa.string()), ("source_index", pa.int64()), ("duplicate_of", pa.int64()),
        ("similarity", pa.float64()),
    ]
    return pa.schema(fields + [(f.name, f.type) for f in arrow_schema()])


class _Run:
    """The mutable state of one pipeline run: the current rows (an Arrow file on disk, so
    worker processes can memory-map it) and where each of them came from."""

    def __init__(self, ws: Workspace, input_path: Path, n: int):
        import numpy as np

        self.tmp = ws.root / "tmp" / f"curate-{uuid.uuid4().hex}"
        self.tmp.mkdir(parents=True)
        self.path = input_path
        self.origin = np.arange(n, dtype=np.int64)  # index in the pipeline's input; -1 = added
        self.side: list[dict[str, Any]] = []
        self.counter = 0

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, table) -> Path:
        import pyarrow as pa

        self.counter += 1
        path = self.tmp / f"step-{self.counter}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return path


def _apply(run: _Run, data: OpInput, result: OpResult, index: int, op: CurationOp, limit_examples: int) -> StepReport:
    import numpy as np
    import pyarrow as pa

    n = len(data)
    if len(result.keep) != n:
        raise RecipeError(f"step {index} ({op.name}) returned {len(result.keep)} keep flags for {n} rows")
    keep = np.asarray(result.keep, dtype=bool)
    by_reason: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    removed_idx = np.nonzero(~keep)[0].tolist()
    removed_rows = data.take(removed_idx)  # one Arrow take, not a slice per row
    for i, row in zip(removed_idx, removed_rows):
        removal = result.removals.get(i)
        reason = removal.reason if removal else "removed"
        by_reason[reason] = by_reason.get(reason, 0) + 1
        dup = removal.duplicate_of if removal else None
        entry = {
            "step": index, "op": op.name, "action": "removed", "reason": reason,
            "detail": json.dumps(removal.detail if removal else {}, ensure_ascii=False, default=str),
            "source_index": int(run.origin[i]),
            "duplicate_of": None if dup is None else int(run.origin[dup]),
            "similarity": removal.similarity if removal else None,
            **row,
        }
        run.side.append(entry)
        if len(examples) < limit_examples:
            examples.append({**entry, "input_index": i,
                             "duplicate_row": data.row(dup) if dup is not None else None})
    changed = 0
    for i, change in sorted(result.changes.items()):
        if not keep[i]:
            continue
        changed += 1
        by_reason[change.reason] = by_reason.get(change.reason, 0) + 1
        entry = {
            "step": index, "op": op.name, "action": "changed", "reason": change.reason,
            "detail": json.dumps(change.detail, ensure_ascii=False, default=str),
            "source_index": int(run.origin[i]), "duplicate_of": None, "similarity": None,
            **data.row(i),  # the row as it was before the change, so it can be restored
        }
        run.side.append(entry)
        if len(examples) < limit_examples:
            examples.append({**entry, "input_index": i, "changed_row": change.row})

    table = data.table
    schema = arrow_schema()
    changed_idx = [i for i in sorted(result.changes) if keep[i]]
    if changed_idx:
        # Kept-and-unchanged rows come from Arrow as is; changed rows are rebuilt, then every
        # row goes back to its position.
        plain = keep.copy()
        plain[changed_idx] = False
        pos = np.nonzero(keep)[0]
        base = table.filter(pa.array(plain)).select(schema.names).cast(schema)
        new = pa.Table.from_pylist([result.changes[i].row for i in changed_idx], schema=schema)
        merged = pa.concat_tables([base, new])
        order = np.argsort(np.concatenate([np.nonzero(plain)[0], np.asarray(changed_idx)]), kind="stable")
        out = merged.take(pa.array(order))
        origin = run.origin[pos]
    else:
        out = table.filter(pa.array(keep)).select(schema.names).cast(schema)
        origin = run.origin[keep]
    if result.added:
        out = pa.concat_tables([out, pa.Table.from_pylist(result.added, schema=schema)])
        origin = np.concatenate([origin, np.full(len(result.added), -1, dtype=np.int64)])
    run.origin = origin
    run.path = run.write(out)
    if result.added_from:
        sources: dict[str, int] = {}
        for src in result.added_from:
            key = f"{src.get('dataset')}@{src.get('version')}"
            sources[key] = sources.get(key, 0) + 1
        result.report = {**result.report, "added_from": sources}
    return StepReport(index=index, op=op.name, rows_in=n, removed=int((~keep).sum()), changed=changed,
                      added=len(result.added), rows_out=out.num_rows, seconds=0.0, by_reason=by_reason,
                      report=result.report, clusters=len(result.clusters), examples=examples)


def _side_writer(side_rows, origin) -> Callable[[Path], None]:
    """Writes the side table (row dicts or an Arrow table) and each output row's source index
    into a version folder."""
    def write(folder: Path) -> None:
        import pyarrow as pa

        schema = side_schema()
        side = side_rows if isinstance(side_rows, pa.Table) else pa.Table.from_pylist(side_rows, schema=schema)
        for name, table in ((SIDE_TABLE, side.cast(schema)),
                            (ORIGIN_FILE, pa.table({"source_index": pa.array(origin, pa.int64())}))):
            with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)

    return write


def _input_ref(ws: Workspace, ref: str, emit: Callable[[dict[str, Any]], None]) -> str:
    """The stored version to curate; a data file is imported first, with lineage to the file."""
    from studio.plugins import get_host

    stored, imported = stored_ref(ws, ref, get_host().formats())
    if imported is not None:
        emit({"event": "imported", "file": ref, "dataset": stored, "records": imported.version.num_records,
              "rejects": len(imported.rejects)})
    return stored


def run_pipeline(
    ws: Workspace,
    recipe: CurationRecipe,
    ops: dict[str, CurationOp],
    emit: Callable[[dict[str, Any]], None] = lambda event: None,
    cancelled: Callable[[], bool] = lambda: False,
    dry_run: bool = False,
    limit: int | None = None,
    base_dir: Path | None = None,
    examples: int = EXAMPLES_PER_STEP,
) -> PipelineResult:
    """Run the recipe's steps in order. ``limit`` runs on the first N rows only (a preview);
    ``dry_run`` reports what would happen without writing a version."""
    steps = resolve_steps(recipe, ops)
    view = ws.open(_input_ref(ws, recipe.dataset, emit))
    input_info = view.info
    input_path = view.path / "data.arrow"
    n = view.num_rows
    if limit is not None and limit < n:
        dry_run = True  # a partial run must never become a version
    ctx = OpContext(emit=emit, cancelled=cancelled, seed=recipe.seed, workspace=ws,
                    base_dir=Path(base_dir or Path.cwd()))
    if recipe.num_proc:
        ctx.num_proc = recipe.num_proc
    run = _Run(ws, input_path, n)
    try:
        if limit is not None and limit < n:
            import numpy as np

            run.path = run.write(view._table.slice(0, limit))
            run.origin = np.arange(limit, dtype=np.int64)
        reports: list[StepReport] = []
        outputs_idx: dict[str, list[int]] | None = None
        last_keep: list[bool] = []
        for index, (op, config) in enumerate(steps):
            if cancelled():
                raise InterruptedError("curation cancelled")
            ctx.step = index
            data = OpInput(run.path)
            emit({"event": "step_start", "step": index, "op": op.name, "rows": len(data)})
            started = time.perf_counter()
            result = op.run(data, config, ctx)
            report = _apply(run, data, result, index, op, examples)
            report.seconds = round(time.perf_counter() - started, 3)
            reports.append(report)
            emit({"event": "step_done", **report.to_dict()})
            if result.outputs is not None:
                if index != len(steps) - 1:
                    raise RecipeError(f"step {index} ({op.name}) split the rows; a split must be the last step")
                outputs_idx = result.outputs
                last_keep = result.keep
        out = PipelineResult(input=input_info, steps=reports, dry_run=dry_run, side_rows=len(run.side),
                             engine={"name": "local", "nodes": 1, "cpus": ctx.num_proc})
        if dry_run:
            return out
        final = OpInput(run.path).table
        target = recipe.output or input_info.dataset
        operation = {"name": "curate", "input": f"{input_info.dataset}@{input_info.id}",
                     "recipe": recipe.model_dump(exclude_none=True),
                     "steps": [r.to_dict() for r in reports],
                     "engine": out.engine}
        parent = input_info.id
        if outputs_idx is None:
            out.version = ws.write_version(target, final, operation, parent=parent, side_files=_side_writer(run.side, run.origin))
        else:
            import numpy as np
            import pyarrow as pa

            # Output indices name rows of the split step's input; map them to positions in the
            # final table (rows the step removed have no position).
            position = np.cumsum(np.asarray(last_keep, dtype=bool)) - 1
            for split_name, indices in outputs_idx.items():
                idx = np.asarray(sorted(i for i in indices if last_keep[i]), dtype=np.int64)
                idx = position[idx] if len(idx) else idx
                part = final.take(pa.array(idx)) if len(idx) else final.slice(0, 0)
                out.outputs[split_name] = ws.write_version(
                    f"{target}-{split_name}", part, {**operation, "split": split_name},
                    parent=parent, side_files=_side_writer(run.side, run.origin[idx]))
        emit({"event": "done"})
        return out
    finally:
        ctx.close()
        run.close()


# --- inspecting and overriding removals ----------------------------------------------------------


def load_side_table(ws: Workspace, ref: str):
    """The side table of a curated version as a ``datasets.Dataset`` (empty when none)."""
    import datasets
    import pyarrow as pa

    name, _, version = ref.partition("@")
    path = ws.version_dir(name, version or None) / SIDE_TABLE
    if not path.is_file():
        return datasets.Dataset(pa.Table.from_pylist([], schema=side_schema()))
    return datasets.Dataset.from_file(str(path))


def load_origin(ws: Workspace, ref: str):
    import numpy as np
    import pyarrow as pa

    name, _, version = ref.partition("@")
    folder = ws.version_dir(name, version or None)
    path = folder / ORIGIN_FILE
    if not path.is_file():
        n = ws.open(ref).num_rows
        return np.arange(n, dtype=np.int64)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().column("source_index").to_numpy()


def amend_curated(ws: Workspace, ref: str, restore: list[int] | None = None, drop: list[int] | None = None,
                    note: str = "") -> VersionInfo:
    """A new version of a curated dataset with side-table entries ``restore``d (removed rows come
    back, changed rows get their original content back) and current rows ``drop``ped by hand.
    Rows keep the order of the pipeline's input; the side table carries over, updated."""
    import numpy as np
    import pyarrow as pa

    restore = sorted(set(restore or []))
    drop = sorted(set(drop or []))
    view = ws.open(ref)
    side = load_side_table(ws, ref)
    origin = load_origin(ws, ref)
    table = view._table
    schema = arrow_schema()
    if any(not 0 <= i < len(side) for i in restore):
        raise ValueError(f"side-table entries must be in 0..{len(side) - 1}")
    if any(not 0 <= i < table.num_rows for i in drop):
        raise ValueError(f"rows to drop must be in 0..{table.num_rows - 1}")
    side_table = side.data.table
    # Only the restored entries become Python rows; the rest of the side table stays Arrow.
    restored = side_table.take(pa.array(restore, pa.int64())).to_pylist() if restore else []
    keep = np.ones(table.num_rows, dtype=bool)
    keep[drop] = False
    dropped_entries = [{"step": -1, "op": "review", "action": "removed", "reason": note or "dropped by hand",
                        "detail": "{}", "source_index": int(origin[i]), "duplicate_of": None, "similarity": None,
                        **table.slice(i, 1).select(schema.names).to_pylist()[0]} for i in drop]
    # A restored change replaces the current row that came from the same source row.
    replace = {r["source_index"]: r for r in restored if r["action"] == "changed"}
    back = [r for r in restored if r["action"] == "removed"]
    rows_keep = table.filter(pa.array(keep)).select(schema.names).cast(schema)
    kept_origin = origin[keep]
    if replace:
        positions = [i for i, src in enumerate(kept_origin.tolist()) if src in replace]
        mask = np.ones(rows_keep.num_rows, dtype=bool)
        mask[positions] = False
        fixed = pa.Table.from_pylist([{k: replace[int(kept_origin[i])][k] for k in schema.names} for i in positions],
                                     schema=schema)
        rows_keep = pa.concat_tables([rows_keep.filter(pa.array(mask)), fixed])
        kept_origin = np.concatenate([kept_origin[mask], kept_origin[positions]])
    back_table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in back], schema=schema)
    merged = pa.concat_tables([rows_keep, back_table])
    merged_origin = np.concatenate([kept_origin, np.asarray([r["source_index"] for r in back], dtype=np.int64)])
    order = np.argsort(merged_origin, kind="stable")
    out = merged.take(pa.array(order))
    remaining = np.ones(len(side), dtype=bool)
    remaining[restore] = False
    remaining_side = pa.concat_tables([
        side_table.filter(pa.array(remaining)).cast(side_schema()),
        pa.Table.from_pylist(dropped_entries, schema=side_schema()),
    ])
    name = view.info.dataset
    operation = {"name": "override", "input": f"{name}@{view.info.id}", "restored": len(restore),
                 "dropped": len(drop), "note": note}
    return ws.write_version(name, out, operation, parent=view.info.id,
                            side_files=_side_writer(remaining_side, merged_origin[order]))
