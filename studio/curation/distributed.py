"""Running curation ops on an existing distributed engine.

Row-local ops (filters, PII redaction, decontamination: each row's fate depends only on that
row and the op's config) become a plain function from an Arrow batch of canonical rows to the
rows that survive, so an engine that maps Arrow batches runs the studio's own op code:

    # Ray Data
    fn = batch_function("refusal_filter", {"pair_policy": "drop_if_chosen_refuses"})
    ds = ray.data.read_parquet("s3://bucket/canonical/").map_batches(fn, batch_format="pyarrow")

    # Spark
    df.mapInArrow(lambda batches: (fn(b) for b in batches), schema=df.schema)

Dedup needs one global grouping step: ``exact_keys`` gives each row the same normalised key
``exact_dedup`` uses, so ``groupBy(key).first()`` on the engine is exact dedup. Ops that see the
whole dataset (dedup clusters, split, sample, mix) otherwise run on one machine.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

ROW_LOCAL = ("filter", "transform")


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

        from studio.curation.op_base import OpContext, OpInput
        from studio.records import arrow_schema

        schema = arrow_schema()
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.select(schema.names).cast(schema)
        op = _ops()[self.op_name]
        config = op.config_model.model_validate(self.config)
        with tempfile.TemporaryDirectory(prefix="studio-batch-") as tmp:
            path = Path(tmp) / "batch.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                writer.write_table(table)
            # One process per engine task already; no nested worker pool.
            result = op.run(OpInput(path), config, OpContext(num_proc=1))
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
    """Adds ``curation_key``: the digest of the normalised text ``exact_dedup`` compares, so a
    ``groupBy(curation_key)`` keeping the first row of each group is exact dedup on the engine."""
    import pyarrow as pa
    import xxhash

    from studio.curation.text import normalise, row_text

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    keys = [xxhash.xxh3_128_hexdigest(normalise(row_text(row, part)).encode("utf-8")) for row in table.to_pylist()]
    return table.append_column("curation_key", pa.array(keys, pa.string()))
