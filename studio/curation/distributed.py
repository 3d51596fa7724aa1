"""Curation on a distributed engine: what the studio's Ray engine (``studio curate RECIPE --engine
ray``, :mod:`studio.curation.ray_engine`) and an op's engine-side code agree on, with no engine
imported here.

Rows on the engine carry ``_pos`` (int64): a row's position in the pipeline's order. Rows of the
pipeline's input have ``_pos`` = their index there; rows an op adds come after them. Sorting by
``_pos`` gives the order the local engine holds, so "the first occurrence" and "the smallest index
of a cluster" mean the same on both engines.

* Row-local ops (filters, PII, decontamination: a row's fate depends on that row and the op's
  config only) need nothing from their plugin: the engine maps Arrow batches through the op's own
  ``run`` (:func:`apply_to_batch`).
* An op that groups the whole dataset (dedup) implements ``run_on_ray(rows, config, ctx)``: it gets
  the step's rows as a Ray Dataset (materialised, in ``_pos`` order) and an :class:`EngineContext`,
  and returns :class:`Duplicates`, which the engine applies batch by batch.
* Split, sample and mix need only row counts and a few narrow columns: the engine runs their own
  ``run`` on the driver over a table without the conversation columns.

Other engines can use :func:`batch_function` (Arrow batch -> surviving rows) and :func:`exact_keys`:

    fn = batch_function("refusal_filter", {"pair_policy": "drop_if_chosen_refuses"})
    df.mapInArrow(lambda batches: (fn(b) for b in batches), schema=df.schema)   # Spark
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROW_LOCAL = ("filter", "transform")
POS = "_pos"


@dataclass
class EngineContext:
    """What an op's engine-side code gets besides its rows and config."""

    seed: int  # the recipe's seed (an op's own seed option wins, as on the local engine)
    rows: int  # rows in this step's input
    num_cpus: int  # CPUs of the cluster: a hint for how many blocks/partitions to use
    step: int = 0
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    cancelled: Callable[[], bool] = lambda: False

    def progress(self, done: int, total: int, what: str = "") -> None:
        self.emit({"event": "progress", "step": self.step, "done": done, "total": total, "what": what})

    def check(self) -> None:
        if self.cancelled():
            raise InterruptedError("curation cancelled")


@dataclass
class Duplicates:
    """A dedup op's result on an engine, by ``_pos``: the rows it removes, each with the kept row of
    its cluster, exactly as the local op's :class:`~studio.curation.op_base.OpResult` would say."""

    reason: str  # the local op's Removal.reason ("exact duplicate", ...)
    pos: np.ndarray  # int64, ascending: the removed rows
    root: np.ndarray  # int64: per removed row, the kept row of its cluster (the smallest _pos)
    similarity: np.ndarray | None = None  # float64 per removed row, to the kept row, unrounded
    detail: list[dict[str, Any]] | None = None  # per removed row: the local Removal.detail
    report: dict[str, Any] = field(default_factory=dict)  # the local op's result.report

    def cluster_stats(self, rows: int) -> dict[str, Any]:
        """The statistics ``result_from_roots`` reports, from the removed rows alone."""
        roots, per_root = np.unique(self.root, return_counts=True)
        return {"rows": rows, "kept": rows - len(self.pos), "removed": int(len(self.pos)),
                "clusters": int(len(roots)), "largest_cluster": int(per_root.max() + 1) if len(roots) else 0,
                "rows_in_clusters": int(len(self.pos) + len(roots))}


def run_op_on_table(op, table, config, ctx):
    """``op.run`` over an Arrow table of canonical rows (ops read an Arrow file: written to a
    temporary one). Returns the op's OpResult."""
    import pyarrow as pa

    from studio.curation.op_base import OpInput
    from studio.records import arrow_schema

    schema = arrow_schema()
    with tempfile.TemporaryDirectory(prefix="studio-batch-") as tmp:
        path = Path(tmp) / "batch.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table.select(schema.names).cast(schema))
        return op.run(OpInput(path), config, ctx)


def _ops():
    from studio.plugins import get_host

    return get_host().items("curation_op")


def batch_function(op_name: str, config: dict[str, Any] | None = None,
                   with_reasons: bool = False) -> Callable[[Any], Any]:
    """A picklable-by-name function ``batch -> table`` that applies a row-local op.
    ``with_reasons`` adds ``curation_reason`` (null for kept rows) and keeps every row."""
    ops = _ops()
    if op_name not in ops:
        raise ValueError(f"unknown op {op_name!r}; known: {', '.join(sorted(ops))}")
    op = ops[op_name]
    if op.category not in ROW_LOCAL or op.name.endswith("dedup"):
        raise ValueError(f"{op_name!r} looks at the whole dataset ({op.category}); "
                         f"only row-local ops ({', '.join(ROW_LOCAL)}) run batch by batch")
    from studio.config_schema import validate

    validated = validate(op.config_model, config or {})
    return _BatchOp(op_name, validated.model_dump(), with_reasons)


class _BatchOp:
    """Holds only names and plain config so engines can ship it to workers (pickle)."""

    def __init__(self, op_name: str, config: dict[str, Any], with_reasons: bool):
        self.op_name, self.config, self.with_reasons = op_name, config, with_reasons

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        from studio.curation.op_base import OpContext
        from studio.records import arrow_schema

        schema = arrow_schema()
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.select(schema.names).cast(schema)
        op = _ops()[self.op_name]
        config = op.config_model.model_validate(self.config)
        # One process per engine task already; no nested worker pool.
        result = run_op_on_table(op, table, config, OpContext(num_proc=1))
        rows = None
        if result.changes:
            rows = table.to_pylist()
            for i, change in result.changes.items():
                rows[i] = change.row
            table = pa.Table.from_pylist(rows, schema=schema)
        keep = np.asarray(result.keep, dtype=bool)
        if self.with_reasons:
            reasons = [None if keep[i] else (result.removals[i].reason if i in result.removals else "removed")
                       for i in range(len(keep))]
            return table.append_column("curation_reason", pa.array(reasons, pa.string()))
        return table.filter(pa.array(keep))


def exact_keys(batch, part: str = "all"):
    """Adds ``curation_key``: the digest of the normalised text ``exact_dedup`` compares with its
    default normalisation and one ``part``, for engines other than Ray (whose engine runs the op's
    own ``run_on_ray``): ``groupBy(curation_key)`` keeping the first row of each group is then exact
    dedup, except that rows with no text group together (the op never calls them duplicates)."""
    import pyarrow as pa
    import xxhash

    from studio.curation.text import normalise, row_text

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    keys = [xxhash.xxh3_128_hexdigest(normalise(row_text(row, part)).encode("utf-8")) for row in table.to_pylist()]
    return table.append_column("curation_key", pa.array(keys, pa.string()))
