"""The Ray Data engine for curation recipes: ``studio curate RECIPE --engine ray [--address ADDR]``.

The same recipe, the same ops' code and the same result as :func:`studio.curation.pipeline.run_pipeline`
(the same version id, kept rows, side table and lineage), computed on a Ray cluster:

* rows travel as a Ray Dataset of canonical Arrow rows plus ``_pos`` (see
  :mod:`studio.curation.distributed`), kept in order (``preserve_order``), so no step needs a sort;
* row-local ops map Arrow batches through their own ``run`` (:class:`RowLocalStep`);
* dedup ops run their ``run_on_ray`` (groupbys, distributed components) and the engine applies the
  :class:`~studio.curation.distributed.Duplicates` they return, batch by batch;
* split, sample and mix run their own ``run`` on the driver over the narrow columns they read (no
  conversation text), and the engine applies the rows they pick by position;
* the driver writes the version: rows stream in order into the store, and the side table (removed
  and changed rows only) is sorted as the local engine writes it.

Without an address the engine starts a local Ray instance sized to the machine; with one it joins a
running cluster (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the others).
Input is a workspace version (sent from the driver) or Parquet files of canonical rows that every
node can read. A run that stops part-way writes nothing: the store renames a finished version into
place, so the previous head stays.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from studio.curation.distributed import POS, ROW_LOCAL, Duplicates, EngineContext, run_op_on_table
from studio.curation.op_base import CURRENT_ROWS, CurationOp, OpContext, OpResult
from studio.curation.pipeline import (
    EXAMPLES_PER_STEP, PipelineResult, StepReport, _input_ref, _side_writer, resolve_steps, side_schema,
)
from studio.recipes.curate import CurationRecipe
from studio.recipes.loading import RecipeError
from studio.records import arrow_schema
from studio.store import TableStream, VersionInfo, Workspace

INSTALL_HINT = 'the Ray engine needs Ray Data: pip install "alignment-studio[ray]"'
# Rows per block sent from the driver and per batch a step maps: large enough that an op's per-call
# set-up (a decontamination index, a worker's imports) is paid rarely, small enough to spread.
BLOCK_ROWS = 20_000
# What a mapped batch row is: a kept row, a side-table entry, or the op's report for that batch.
KIND = "_engine_kind"
ROW, SIDE, REPORT = "row", "side", "report"
SIDE_FIELDS = ("step", "op", "action", "reason", "detail", "source_index", "duplicate_of", "similarity")
# Columns split, sample and mix may read; the conversation columns go to them empty.
NARROW_COLUMNS = ("kind", "label", "tools", "meta")
TEXT_COLUMNS = ("messages", "chosen", "rejected")
ACTION_ORDER = {"removed": 0, "changed": 1}


class EngineUnavailable(ValueError):
    """The engine cannot run here (Ray is not installed)."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineUnavailable(INSTALL_HINT) from None
    return ray


@dataclass
class Cluster:
    nodes: int
    cpus: int
    address: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": "ray", "nodes": self.nodes, "cpus": self.cpus, "address": self.address}


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with the reason, when nothing listens at a cluster's HOST:PORT (Ray itself
    waits minutes for a head that is not there)."""
    import socket

    host, _, port = address.rpartition(":")
    if address == "auto" or address.startswith("ray://") or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EngineUnavailable(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                                f"`ray start --head --port {port}` or leave out --address for a local instance") from None


_FAULT_LOG: list[Any] = []  # the stand-in stderr handed to faulthandler: kept open while the process lives


@contextmanager
def _stderr_with_a_descriptor() -> Iterator[None]:
    """ray.init enables faulthandler on sys.stderr, which must have a real file descriptor. The
    terminal app replaces stderr with an object that has none: there, fatal-error tracebacks go to
    the null device instead (the app's screen is on the real stderr)."""
    try:
        usable = sys.stderr is not None and sys.stderr.fileno() >= 0
    except (OSError, ValueError):
        usable = False
    if usable:
        yield
        return
    if not _FAULT_LOG:
        _FAULT_LOG.append(open(os.devnull, "w"))  # noqa: SIM115 - faulthandler keeps writing to it
    saved, sys.stderr = sys.stderr, _FAULT_LOG[0]
    try:
        yield
    finally:
        sys.stderr = saved


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Cluster]:
    """Ray for one run: the instance already started in this process, a running cluster at
    ``address``, or a local instance sized to this machine (stopped again afterwards)."""
    ray = import_ray()
    # Ray Data logs every execution plan, and a failed task's traceback; the CLI shows its own progress
    # and the op's error in one line instead.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    # A local instance starts with token authentication on (Ray's secure default) and says so on
    # stderr, which would land in the middle of the terminal app's screen.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        if address:
            check_reachable(address)
        # log_to_driver off: worker logs would interleave with the CLI's output and JSON.
        try:
            with _stderr_with_a_descriptor():
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        except ConnectionError as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                "; a cluster started where ~/.ray/auth_token exists uses token authentication: set "
                "RAY_AUTH_MODE=token and the cluster's token here too (docs/curate-on-ray.md)")
            raise EngineUnavailable(f"{exc}{hint}") from None
        started = True
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True  # _pos order survives every step
    # Dedup runs a dozen groupbys; the default hash shuffle starts aggregator actors for each one
    # (seconds apiece), the sort shuffle does not: 47 s instead of 181 s for 100k rows on 2 CPUs.
    if not os.environ.get("RAY_DATA_DEFAULT_SHUFFLE_STRATEGY"):
        data_context.shuffle_strategy = "sort_shuffle_pull_based"
    data_context.enable_progress_bars = False
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 1))
        where = address or "local"
        yield Cluster(nodes=len(nodes), cpus=max(cpus, 1), address=where)
    finally:
        if started:
            ray.shutdown()


# --- functions mapped over batches (module level: Ray ships them to workers by reference) --------


def _origin(pos: np.ndarray, inputs: int) -> np.ndarray:
    """The pipeline-input index of rows at these positions (-1 for rows an op added)."""
    return np.where(pos < inputs, pos, -1)


def _mapped_table(rows, side: list[dict[str, Any]], report: dict[str, Any] | None):
    """One table of a step's output for a batch: kept rows, side entries, and the batch's report."""
    import pyarrow as pa

    schema = _mapped_schema()
    n = rows.num_rows
    columns = [rows.column(f.name).cast(f.type) if f.name in rows.column_names else
               pa.array([ROW] * n, pa.string()) if f.name == KIND else pa.nulls(n, f.type) for f in schema]
    parts = [pa.Table.from_arrays(columns, schema=schema)]
    extra = list(side)
    if report is not None:
        extra.append({KIND: REPORT, "_report": json.dumps(report, ensure_ascii=False, default=str)})
    if extra:
        parts.append(pa.Table.from_pylist(extra, schema=schema))
    return pa.concat_tables(parts)


def _mapped_schema():
    import pyarrow as pa

    side = side_schema()
    fields = [*arrow_schema(), pa.field(POS, pa.int64()), pa.field(KIND, pa.string())]
    fields += [side.field(name) for name in SIDE_FIELDS]
    fields.append(pa.field("_report", pa.string()))
    return pa.schema(fields)


def _side_entry(step: int, op: str, action: str, reason: str, detail: Any, pos: int, row: dict[str, Any],
                inputs: int, duplicate_of: int | None = None, similarity: float | None = None) -> dict[str, Any]:
    origin = int(pos) if pos < inputs else -1
    dup = None if duplicate_of is None else (int(duplicate_of) if duplicate_of < inputs else -1)
    return {KIND: SIDE, "step": step, "op": op, "action": action, "reason": reason,
            "detail": detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, default=str),
            "source_index": origin, "duplicate_of": dup, "similarity": similarity, POS: int(pos), **row}


class RowLocalStep:
    """A row-local op over one batch, through the op's own ``run`` (one worker, no pool)."""

    def __init__(self, op_name: str, config: dict[str, Any], step: int, inputs: int, seed: int, base_dir: str):
        self.op_name, self.config, self.step, self.inputs = op_name, config, step, inputs
        self.seed, self.base_dir = seed, base_dir

    def __call__(self, batch):
        import pyarrow as pa

        from studio.plugins import get_host

        op = get_host().items("curation_op")[self.op_name]
        config = op.config_model.model_validate(self.config)
        schema = arrow_schema()
        table = batch.select(schema.names).cast(schema)
        pos = batch.column(POS).to_numpy()
        result = run_op_on_table(op, table, config, OpContext(num_proc=1, seed=self.seed, base_dir=Path(self.base_dir)))
        keep = np.asarray(result.keep, dtype=bool)
        side = []
        removed = np.flatnonzero(~keep).tolist()
        for i, row in zip(removed, table.take(pa.array(removed, pa.int64())).to_pylist() if removed else []):
            removal = result.removals.get(i)
            side.append(_side_entry(self.step, op.name, "removed", removal.reason if removal else "removed",
                                    removal.detail if removal else {}, pos[i], row, self.inputs,
                                    similarity=removal.similarity if removal else None))
        changed = [i for i in sorted(result.changes) if keep[i]]
        for i in changed:
            change = result.changes[i]
            side.append(_side_entry(self.step, op.name, "changed", change.reason, change.detail, pos[i],
                                    table.slice(i, 1).to_pylist()[0], self.inputs))
        out = batch
        if changed:
            rows = table.to_pylist()
            for i in changed:
                rows[i] = result.changes[i].row
            out = pa.Table.from_pylist(rows, schema=schema).append_column(POS, batch.column(POS))
        return _mapped_table(out.filter(pa.array(keep)), side, result.report)


class ApplyDecisions:
    """Removals decided elsewhere (a dedup's Duplicates, a sample on the driver), by ``_pos``."""

    def __init__(self, decisions_ref, step: int, op_name: str, inputs: int):
        self.decisions_ref, self.step, self.op_name, self.inputs = decisions_ref, step, op_name, inputs
        self._decisions = None

    def __call__(self, batch):
        import pyarrow as pa

        if self._decisions is None:
            import ray

            self._decisions = ray.get(self.decisions_ref)
        d = self._decisions
        pos = batch.column(POS).to_numpy()
        at = np.searchsorted(d["pos"], pos)
        hit = np.zeros(len(pos), dtype=bool)
        if len(d["pos"]):
            hit = d["pos"][np.minimum(at, len(d["pos"]) - 1)] == pos
        hits = np.flatnonzero(hit)
        side = []
        if len(hits):
            rows = batch.select(arrow_schema().names).take(pa.array(hits)).to_pylist()
            for i, row in zip(hits.tolist(), rows):
                k = int(at[i])
                root = int(d["root"][k])
                sim = d["similarity"][k]
                side.append(_side_entry(self.step, self.op_name, "removed", d["reason"][k], d["detail"][k],
                                        pos[i], row, self.inputs, duplicate_of=None if root < 0 else root,
                                        similarity=None if np.isnan(sim) else float(sim)))
        return _mapped_table(batch.filter(pa.array(~hit)), side, None)


def _only(kind: str, columns: list[str]):
    def select(batch):
        import pyarrow.compute as pc

        return batch.filter(pc.equal(batch.column(KIND), kind)).select(columns)

    return select


def _keep_positions(positions_ref):
    def select(batch):
        import pyarrow as pa
        import ray

        wanted = ray.get(positions_ref)
        return batch.filter(pa.array(np.isin(batch.column(POS).to_numpy(), wanted)))

    return select


# --- input -------------------------------------------------------------------------------------


def _read_parquet_part(path: str, row_group: int, start: int):
    """A row group of a Parquet file of canonical rows, with its ``_pos`` (runs on a worker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(row_group)
    schema = arrow_schema()
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not canonical studio rows (missing {', '.join(missing)}); "
                         "import it with `studio data import` first")
    table = table.select(schema.names).cast(schema)
    return table.append_column(POS, pa.array(np.arange(start, start + table.num_rows, dtype=np.int64)))


def parquet_files(ref: str) -> list[Path] | None:
    """The Parquet files a recipe's ``dataset`` names (a file, a folder or a glob), or None."""
    path = Path(ref).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".pq"))
        return files or None
    if any(c in ref for c in "*?["):
        # glob.glob, not Path.glob: the pattern may be absolute (/mnt/shared/*.parquet).
        found = glob.glob(os.path.expanduser(ref), recursive=True)
        files = sorted(Path(p) for p in found if Path(p).suffix in (".parquet", ".pq"))
        return files or None
    if path.is_file() and path.suffix in (".parquet", ".pq") and _canonical_parquet(path):
        return [path]
    return None


def _canonical_parquet(path: Path) -> bool:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(str(path)).names)
    return set(arrow_schema().names) <= names


def _parquet_input(ray, files: list[Path]):
    import hashlib

    import pyarrow.parquet as pq

    read = ray.remote(_read_parquet_part)
    refs, start, digest = [], 0, hashlib.sha256()
    for path in files:
        meta = pq.ParquetFile(str(path)).metadata
        digest.update(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            refs.append(read.remote(str(path.resolve()), group, start))
            start += rows
    name = files[0].stem if len(files) == 1 else files[0].parent.name
    info = VersionInfo(id=digest.hexdigest()[:16], dataset=name, created=time.time(), num_records=start, kinds={},
                       source={"parquet": [str(p.resolve()) for p in files]})
    return ray.data.from_arrow_refs(refs), start, info


def _version_input(ray, view, limit: int | None):
    """Blocks of the stored version, sent from the driver, each with its ``_pos``."""
    import pyarrow as pa

    table = view._table
    n = table.num_rows if limit is None else min(limit, table.num_rows)
    refs = []
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        block = pa.Table.from_batches(table.slice(lo, hi - lo).to_batches())
        refs.append(ray.put(block.append_column(POS, pa.array(np.arange(lo, hi, dtype=np.int64)))))
    if not refs:
        refs.append(ray.put(table.slice(0, 0).append_column(POS, pa.array([], pa.int64()))))
    return ray.data.from_arrow_refs(refs), n


# --- the steps ---------------------------------------------------------------------------------


@dataclass
class _State:
    """One run: the current rows on the cluster, the input's row count (the first ``_pos`` an added
    row gets), and the side-table parts so far."""

    rows: Any
    count: int
    inputs: int
    next_pos: int
    side: list[Any]


def _split_mapped(mapped, state: _State) -> tuple[Any, dict[str, Any] | None]:
    """Kept rows and side entries out of a mapped dataset; returns the merged per-batch report."""
    mapped = mapped.materialize()
    row_columns = [*arrow_schema().names, POS]
    state.rows = mapped.map_batches(_only(ROW, row_columns), batch_format="pyarrow", batch_size=None).materialize()
    side = mapped.map_batches(_only(SIDE, [*side_schema().names, POS]), batch_format="pyarrow",
                              batch_size=None).materialize()
    reports = mapped.map_batches(_only(REPORT, ["_report"]), batch_format="pyarrow", batch_size=None).take_all()
    state.side.append(side)
    state.count = state.rows.count()
    merged = merge_reports([json.loads(item["_report"]) for item in reports])
    return side, merged


# Report keys that count rows: they add up over batches. Any other value that every batch reports
# alike (a setting, the size of an index) is kept as it is; one that differs adds up when numeric.
COUNT_KEYS = {"rows", "kept", "removed", "changed", "rows_with_pii", "rows_removed", "items_leaked", "by_reason"}


def merge_reports(reports: list[Any], counts: bool = False) -> Any:
    """A row-local op's per-batch reports as one report of the whole step."""
    if not reports:
        return None
    first = reports[0]
    if all(isinstance(r, dict) for r in reports):
        keys = list(dict.fromkeys(k for r in reports for k in r))
        return {k: merge_reports([r[k] for r in reports if k in r], counts or k in COUNT_KEYS or k.startswith("by_"))
                for k in keys}
    if all(isinstance(r, list) for r in reports) and len({len(r) for r in reports}) == 1:
        return [merge_reports(list(items), counts) for items in zip(*reports)]
    numeric = all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in reports)
    if numeric and (counts or any(r != first for r in reports)):
        return sum(reports)
    return first


def _side_summary(side, examples: int) -> tuple[dict[str, int], int, int, list[dict[str, Any]]]:
    """By-reason counts, removed and changed counts, and the first entries, of one step's side rows."""
    import pyarrow.compute as pc

    import pyarrow as pa

    narrow = _to_table(side.select_columns(["action", "reason", POS]),
                       pa.schema([("action", pa.string()), ("reason", pa.string()), (POS, pa.int64())]))
    by_reason: dict[str, int] = {}
    for item in pc.value_counts(narrow.column("reason")).to_pylist() if narrow.num_rows else []:
        by_reason[item["values"]] = item["counts"]
    actions = narrow.column("action").to_pylist()
    removed = sum(1 for a in actions if a == "removed")
    first = []
    if examples and narrow.num_rows:
        first = sorted(side.take(min(side.count(), 4 * examples + 64)),
                       key=lambda e: (ACTION_ORDER[e["action"]], e[POS]))[:examples]
        for entry in first:
            entry.pop(POS, None)
            entry["input_index"] = None
    return by_reason, removed, len(actions) - removed, first


def _to_table(ds, schema=None):
    """A dataset's rows on the driver, in order (only for what is small: side rows, narrow columns)."""
    import pyarrow as pa
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_columns]
    if not tables:
        return (schema or pa.schema([])).empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def _decisions_payload(pos, root, reasons, details, similarity) -> dict[str, Any]:
    order = np.argsort(pos, kind="stable")
    return {"pos": np.asarray(pos, dtype=np.int64)[order], "root": np.asarray(root, dtype=np.int64)[order],
            "reason": [reasons[i] for i in order], "detail": [details[i] for i in order],
            "similarity": np.asarray(similarity, dtype=np.float64)[order]}


def _duplicates_payload(dups: Duplicates) -> dict[str, Any]:
    n = len(dups.pos)
    sims = np.full(n, np.nan) if dups.similarity is None else np.round(np.asarray(dups.similarity, dtype=np.float64), 4)
    details = [json.dumps(d, ensure_ascii=False, default=str) for d in (dups.detail or [{}] * n)]
    return _decisions_payload(dups.pos, dups.root, [dups.reason] * n, details, sims)


def _apply_removals(ray, state: _State, payload: dict[str, Any], index: int, op: CurationOp):
    """Removals decided by position, applied batch by batch on the cluster; returns the side entries."""
    mapped = state.rows.map_batches(ApplyDecisions(ray.put(payload), index, op.name, state.inputs),
                                    batch_format="pyarrow", batch_size=BLOCK_ROWS)
    side, _ = _split_mapped(mapped, state)
    return side


def _narrow_run(state: _State, op: CurationOp, config, ctx: OpContext):
    """Split, sample and mix through their own ``run`` on the driver, over the columns they read;
    returns (result, positions of the step's input rows in order)."""
    import pyarrow as pa

    schema = arrow_schema()
    narrow = _to_table(state.rows.select_columns([POS, *NARROW_COLUMNS]),
                       pa.schema([(POS, pa.int64()), *(schema.field(c) for c in NARROW_COLUMNS)]))
    positions = narrow.column(POS).to_numpy()
    columns = {name: (narrow.column(name) if name in NARROW_COLUMNS else
                      pa.array([[]] * narrow.num_rows, schema.field(name).type)) for name in schema.names}
    return run_op_on_table(op, pa.table(columns, schema=schema), config, ctx), positions


def _full_rows(ray, state: _State, positions: np.ndarray):
    """Whole rows at these positions, in position order (for rows an op copies)."""
    wanted = ray.put(np.unique(positions))
    return _to_table(state.rows.map_batches(_keep_positions(wanted), batch_format="pyarrow", batch_size=None))


def _apply_result(ray, state: _State, result: OpResult, positions: np.ndarray, index: int, op: CurationOp):
    """A driver-run op's keep flags, removals and added rows, applied on the cluster by position."""
    import pyarrow as pa

    keep = np.asarray(result.keep, dtype=bool)
    removed = np.flatnonzero(~keep)
    reasons, details, roots, sims = [], [], [], []
    for i in removed.tolist():
        removal = result.removals.get(i)
        reasons.append(removal.reason if removal else "removed")
        details.append(json.dumps(removal.detail if removal else {}, ensure_ascii=False, default=str))
        roots.append(-1 if removal is None or removal.duplicate_of is None else int(positions[removal.duplicate_of]))
        sims.append(np.nan if removal is None or removal.similarity is None else removal.similarity)
    side = _apply_removals(ray, state, _decisions_payload(positions[removed], roots, reasons, details, sims), index, op)
    if result.added:
        added = pa.Table.from_pylist(result.added, schema=arrow_schema())
        copies = [k for k, src in enumerate(result.added_from) if src.get("dataset") == CURRENT_ROWS]
        if copies:
            # The narrow table gave mix no conversation text: copies of current rows come from the cluster.
            sources = positions[[result.added_from[k]["index"] for k in copies]]
            full = _full_rows(ray, state, sources)
            at = np.searchsorted(full.column(POS).to_numpy(), sources)
            rows = added.to_pylist()
            full_rows = full.select(arrow_schema().names).to_pylist()
            for k, j in zip(copies, at.tolist()):
                rows[k] = full_rows[j]
            added = pa.Table.from_pylist(rows, schema=arrow_schema())
        new_pos = np.arange(state.next_pos, state.next_pos + added.num_rows, dtype=np.int64)
        state.next_pos += added.num_rows
        added_ds = ray.data.from_arrow(added.append_column(POS, pa.array(new_pos)))
        state.rows = state.rows.union(added_ds).materialize()
        state.count += added.num_rows
    return side


# --- the run -----------------------------------------------------------------------------------


# The last line of a Python traceback: "FileNotFoundError: benchmark file ... does not exist".
_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.M)


def user_error(exc: BaseException) -> BaseException:
    """The op's own error inside Ray's wrappers, so the CLI says what went wrong in one line, as the
    local engine does. Ray hands back a task error around a user-code error whose own cause stays
    in the worker; its traceback text still ends each exception with "Name: message"."""
    outer, seen, texts = exc, set(), []
    while id(exc) not in seen and type(exc).__module__.startswith("ray"):
        seen.add(id(exc))
        texts.append(str(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if inner is None:
            found = [m for text in texts for m in _RAISED.finditer(text) if not m.group(1).startswith("ray.")]
            return ValueError(found[0].group(2)) if found else outer
        exc = inner
    return exc


def run_on_ray(
    ws: Workspace,
    recipe: CurationRecipe,
    ops: dict[str, CurationOp],
    emit: Callable[[dict[str, Any]], None] = lambda event: None,
    cancelled: Callable[[], bool] = lambda: False,
    dry_run: bool = False,
    limit: int | None = None,
    base_dir: Path | None = None,
    examples: int = EXAMPLES_PER_STEP,
    address: str | None = None,
) -> PipelineResult:
    """``run_pipeline`` on Ray: the same arguments and result, plus ``address`` (a running cluster;
    none: a local instance)."""
    steps = resolve_steps(recipe, ops)
    ray = import_ray()
    base = Path(base_dir or Path.cwd())
    # A stored dataset wins over a folder of the same name in the current directory.
    stored = recipe.dataset.partition("@")[0] in ws.dataset_names()
    files = None if stored else parquet_files(str(base / recipe.dataset)) if (base / recipe.dataset).is_file() \
        else parquet_files(recipe.dataset)
    view = None
    if files is None:
        view = ws.open(_input_ref(ws, recipe.dataset, emit))
    try:
        return _run(ray, ws, recipe, steps, view, files, emit, cancelled, dry_run, limit, base, examples, address)
    except Exception as exc:  # noqa: BLE001 - re-raised: the op's own error, without Ray's wrappers
        cause = user_error(exc)
        if cause is exc:
            raise
        raise cause from None


def _run(ray, ws, recipe, steps, view, files, emit, cancelled, dry_run, limit, base, examples, address):
    with ray_session(address) as cluster:
        emit({"event": "engine", "engine": cluster.to_dict()})
        if view is not None:
            input_info = view.info
            rows, n = _version_input(ray, view, limit)
            partial = limit is not None and limit < view.num_rows
        else:
            rows, n, input_info = _parquet_input(ray, files)
            partial = False
            if limit is not None and limit < n:
                rows, n, partial = rows.limit(limit), limit, True
        dry_run = dry_run or partial  # a partial run must never become a version
        state = _State(rows=rows.materialize(), count=n, inputs=n, next_pos=n, side=[])
        reports: list[StepReport] = []
        outputs_pos: dict[str, np.ndarray] | None = None
        for index, (op, config) in enumerate(steps):
            if cancelled():
                raise InterruptedError("curation cancelled")
            emit({"event": "step_start", "step": index, "op": op.name, "rows": state.count})
            started = time.perf_counter()
            rows_in = state.count
            report, clusters, added = {}, 0, 0
            run_on_engine = getattr(op, "run_on_ray", None)
            if run_on_engine is not None:
                ectx = EngineContext(seed=recipe.seed, rows=rows_in, num_cpus=cluster.cpus, step=index, emit=emit,
                                     cancelled=cancelled)
                dups = run_on_engine(state.rows, config, ectx)
                side = _apply_removals(ray, state, _duplicates_payload(dups), index, op)
                report, clusters = dups.report, len(np.unique(dups.root))
            elif op.category in ROW_LOCAL:
                fn = RowLocalStep(op.name, config.model_dump(), index, state.inputs, recipe.seed, str(base))
                mapped = state.rows.map_batches(fn, batch_format="pyarrow", batch_size=BLOCK_ROWS)
                side, report = _split_mapped(mapped, state)
                report = report or {}
            else:
                # split, sample, mix, and any op with no engine-side code: its own run, on the driver.
                if op.category not in ("split", "mix"):
                    emit({"event": "engine_note", "step": index,
                          "note": f"{op.name} has no Ray implementation; it runs on the driver"})
                ctx = OpContext(emit=emit, cancelled=cancelled, seed=recipe.seed, workspace=ws, base_dir=base,
                                step=index, num_proc=1)
                if op.category in ("split", "mix"):
                    result, positions = _narrow_run(state, op, config, ctx)
                else:
                    result, positions = _driver_run(state, op, config, ctx)
                side = _apply_result(ray, state, result, positions, index, op)
                report, clusters, added = result.report, len(result.clusters), len(result.added)
                if result.outputs is not None:
                    outputs_pos = {name: positions[np.asarray(sorted(idx), dtype=np.int64)]
                                   for name, idx in result.outputs.items()}
            by_reason, removed, changed, first = _side_summary(side, examples)
            step_report = StepReport(index=index, op=op.name, rows_in=rows_in, removed=removed, changed=changed,
                                     added=added, rows_out=state.count, seconds=round(time.perf_counter() - started, 3),
                                     by_reason=by_reason, report=report, clusters=clusters, examples=first)
            reports.append(step_report)
            emit({"event": "step_done", **step_report.to_dict()})
        side_rows = sum(part.count() for part in state.side)
        out = PipelineResult(input=input_info, steps=reports, dry_run=dry_run, side_rows=side_rows,
                             engine=cluster.to_dict())
        if dry_run:
            return out
        side_table = _ordered_side(state.side)
        target = recipe.output or input_info.dataset
        operation = {"name": "curate", "input": f"{input_info.dataset}@{input_info.id}",
                     "recipe": recipe.model_dump(exclude_none=True), "steps": [r.to_dict() for r in reports],
                     "engine": cluster.to_dict()}
        parent = input_info.id if view is not None else None
        source = None if view is not None else input_info.source
        if outputs_pos is None:
            origin: list[np.ndarray] = []
            out.version = ws.write_version(target, TableStream(_ordered_rows(state.rows, origin, state.inputs)),
                                           {**operation}, parent=parent, source=source,
                                           side_files=_LazySide(side_table, origin))
        else:
            for split_name, wanted in outputs_pos.items():
                origin = []
                ref = ray.put(wanted)
                part = state.rows.map_batches(_keep_positions(ref), batch_format="pyarrow", batch_size=None)
                out.outputs[split_name] = ws.write_version(
                    f"{target}-{split_name}", TableStream(_ordered_rows(part, origin, state.inputs)),
                    {**operation, "split": split_name}, parent=parent, source=source,
                    side_files=_LazySide(side_table, origin))
        emit({"event": "done"})
        return out


def _driver_run(state: _State, op: CurationOp, config, ctx: OpContext):
    """An op with no engine-side code, on the driver over every column."""
    table = _to_table(state.rows)
    result = run_op_on_table(op, table, config, ctx)
    if result.changes:
        raise RecipeError(f"{op.name} changes rows and has no Ray implementation; run it with --engine local")
    return result, table.column(POS).to_numpy()


def _ordered_rows(rows, origin: list[np.ndarray], inputs: int) -> Iterator[Any]:
    """The rows in ``_pos`` order (kept by every step), noting each one's origin as it passes."""
    for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
        if batch.num_rows:
            origin.append(_origin(batch.column(POS).to_numpy(), inputs))
            yield batch.drop_columns([POS])


class _LazySide:
    """Side files written once the rows (and so their origins) have streamed into the version."""

    def __init__(self, side_table, origin: list[np.ndarray]):
        self.side_table, self.origin = side_table, origin

    def __call__(self, folder: Path) -> None:
        origin = np.concatenate(self.origin) if self.origin else np.zeros(0, np.int64)
        _side_writer(self.side_table, origin)(folder)


def _ordered_side(parts: list[Any]):
    """Every step's side entries, ordered as the local engine writes them: by step, removals before
    changes, then by row position."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = side_schema()
    tables = [_to_table(part) for part in parts]  # removed and changed rows only
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.Table.from_pylist([], schema=schema)
    table = pa.concat_tables([t.select([*schema.names, POS]).cast(pa.schema([*schema, (POS, pa.int64())]))
                              for t in tables])
    rank = pc.if_else(pc.equal(table.column("action"), "removed"), 0, 1)
    table = table.append_column("_rank", rank)
    table = table.sort_by([("step", "ascending"), ("_rank", "ascending"), (POS, "ascending")])
    return table.select(schema.names)
