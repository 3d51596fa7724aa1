"""What the three dedup ops share: which text parts they compare, reading row texts straight from
the Arrow file in worker processes, a chunked parallel map, and turning duplicate edges into
clusters and an :class:`OpResult`."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Sequence, Union

import numpy as np
from pydantic import field_validator

from studio.curation import op_base
from studio.curation.op_base import OpContext, OpInput, OpResult, Removal
from studio.curation.text import ANSWER_ROLES, TextPart, row_text

PartSpec = Union[TextPart, list[TextPart]]
PART_HELP = ("which text of a record to compare: all | prompt | response | user | assistant | chosen | "
             "rejected, or a list of them (compared together, e.g. [prompt, response])")
# Columns row_text reads; the rest (meta, tools) is never materialised.
TEXT_COLUMNS = ("messages", "chosen", "rejected")
PART_SEPARATOR = "\x1e"  # joins several parts so that text never bleeds from one part into the next


def parts_validator(field: str = "part"):
    """A pydantic validator accepting ``"prompt,response"`` (CLI) as well as a list."""

    @field_validator(field, mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and "," in value:
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    return _split


def as_parts(part: PartSpec) -> list[str]:
    return [part] if isinstance(part, str) else list(dict.fromkeys(part))


def input_table(data: OpInput):
    """The pyarrow Table under an OpInput (memory-mapped; no copy)."""
    return data.table


# --- reading rows in workers ------------------------------------------------------------------

_TABLES: dict[str, Any] = {}
# Rows per worker task at most: ~1 s of MinHash work, fine-grained enough for progress and for
# balancing two workers, large enough that a task's overhead does not matter.
CHUNK_ROWS = 10_000


def arrow_table(path: str):
    """The version's Arrow table, memory-mapped once per process. Workers read it with pyarrow
    directly rather than through ``datasets`` (whose import alone costs a second per worker)."""
    table = _TABLES.get(path)
    if table is None:
        import pyarrow as pa

        source = pa.memory_map(path, "r")
        table = pa.ipc.open_stream(source).read_all()
        _TABLES.clear()
        _TABLES[path] = table
    return table


def _joined_turns(table, columns: Sequence[str], roles: tuple[str, ...] | None) -> list[str]:
    """Per row, the contents of the turns in these list<turn> columns (in column order) joined by
    newlines, keeping only turns of these roles: ``row_text`` computed column-wise in Arrow,
    without turning each row into Python dicts (which costs more than the rest of exact dedup)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    contents, parents = [], []
    for name in columns:
        col = table.column(name).combine_chunks()
        if isinstance(col, pa.ChunkedArray):  # an empty table
            col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
        turns = col.flatten()  # respects the slice's offsets; null lists contribute nothing
        parent = pc.list_parent_indices(col)
        content = pc.fill_null(turns.field("content"), "")
        if roles is not None:
            keep = pc.is_in(turns.field("role"), value_set=pa.array(roles))
            keep = pc.fill_null(keep, False)
            content, parent = content.filter(keep), parent.filter(keep)
        contents.append(content.cast(pa.large_string()))
        parents.append(np.asarray(parent.to_numpy(zero_copy_only=False), dtype=np.int64))
    parent = np.concatenate(parents) if parents else np.zeros(0, np.int64)
    order = np.argsort(parent, kind="stable")  # row by row, each row's columns in order
    content = pa.concat_arrays(contents).take(pa.array(order)) if contents else pa.array([], pa.large_string())
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(parent, minlength=n), out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), content)
    return pc.binary_join(lists, pa.scalar("\n", pa.large_string())).to_pylist()


# part -> (columns, roles) for parts that are plain column/role selections
_COLUMNAR_PARTS = {
    "all": (TEXT_COLUMNS, None),
    "user": (TEXT_COLUMNS, ("user",)),
    "assistant": (TEXT_COLUMNS, ANSWER_ROLES),
    "chosen": (("chosen",), None),
    "rejected": (("rejected",), None),
}


def part_texts(table, part: str) -> list[str]:
    """``[row_text(row, part) for row in table]``, column-wise where the part allows it (prompt and
    response depend on where each conversation's answer starts: those go row by row)."""
    if part in _COLUMNAR_PARTS:
        columns, roles = _COLUMNAR_PARTS[part]
        return _joined_turns(table, columns, roles)
    return [row_text(row, part) for row in table.select(list(TEXT_COLUMNS)).to_pylist()]


def range_table(path: str, lo: int, hi: int):
    """Rows [lo, hi) of the Arrow file (a zero-copy slice)."""
    return arrow_table(path).slice(lo, hi - lo)


def table_texts(table, parts: Sequence[str]) -> list[str]:
    """Per row of an Arrow table with the canonical text columns, the compared text: the parts
    joined by PART_SEPARATOR."""
    per_part = [part_texts(table, part) for part in parts]
    if len(per_part) == 1:
        return per_part[0]
    return [PART_SEPARATOR.join(texts) for texts in zip(*per_part)]


def map_chunks(ctx: OpContext, data: OpInput, fn: Callable[..., Any], what: str,
               chunk_rows: int | None = None, consume: Callable[[int, int, Any], None] | None = None,
               **kwargs: Any) -> list[Any]:
    """``[fn(path, lo, hi, **kwargs) for each chunk of rows]`` over all cores, in order.

    Like ``ctx.map_rows`` but a call gets a whole chunk, so it can vectorise across rows and
    return one array instead of a Python object per row. Workers are spawned (not forked: the
    TUI runs ops from a thread) and memory-map the same Arrow file; the context's pool is reused
    when it has one. With ``consume``, each
    result is handed to ``consume(lo, hi, result)`` as it arrives (in any order) and not kept, so
    the caller can fill one preallocated array instead of holding every chunk and a copy."""
    n = len(data)
    path = str(data.path)
    # Read at call time (not import time) so that tests can shrink them to exercise the pool.
    chunk_rows = chunk_rows or min(op_base.CHUNK_ROWS, CHUNK_ROWS)
    chunks = [(lo, min(lo + chunk_rows, n)) for lo in range(0, n, chunk_rows)]
    results: list[Any] = [None] * len(chunks)
    ctx.progress(0, n, what)
    if n < op_base.PARALLEL_MIN_ROWS or ctx.num_proc <= 1 or len(chunks) == 1:
        # In-process: read through the input's own table instead of mapping the file again.
        _TABLES[path] = input_table(data)
        try:
            for i, (lo, hi) in enumerate(chunks):
                if ctx.cancelled():
                    raise InterruptedError("cancelled")
                result = fn(path, lo, hi, **kwargs)
                if consume is None:
                    results[i] = result
                else:
                    consume(lo, hi, result)
                ctx.progress(hi, n, what)
        finally:
            _TABLES.pop(path, None)
        return [] if consume is not None else results
    # The run's pool when the context keeps one (its workers and their imports are started once
    # per recipe run, not per step); otherwise a pool for this call.
    shared = getattr(ctx, "pool", None)
    pool = shared() if shared is not None else ProcessPoolExecutor(
        max_workers=min(ctx.num_proc, len(chunks)), mp_context=get_context("spawn"))
    futures = {}
    try:
        futures = {pool.submit(fn, path, lo, hi, **kwargs): i for i, (lo, hi) in enumerate(chunks)}
        done = 0
        for future in as_completed(futures):
            if ctx.cancelled():
                raise InterruptedError("cancelled")
            i = futures[future]
            lo, hi = chunks[i]
            if consume is None:
                results[i] = future.result()
            else:
                consume(lo, hi, future.result())
            done += hi - lo
            ctx.progress(done, n, what)
    finally:
        for future in futures:
            future.cancel()  # no-op for finished ones; drops queued chunks after a cancel or error
        if shared is None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [] if consume is not None else results


# --- clusters ---------------------------------------------------------------------------------

def components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Union-find over the edges (u[i], v[i]), vectorised: returns, for every node, the smallest
    node index of its connected component (so the root is the first occurrence, the one kept).

    Hooking (each root points at the smaller root of an edge) alternates with pointer jumping
    until every edge joins two nodes with the same root; ``parent[x] <= x`` holds throughout."""
    parent = np.arange(n, dtype=np.int64)
    if len(u) == 0:
        return parent
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while True:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            return parent
        ru, rv = ru[differ], rv[differ]
        low = np.minimum(ru, rv)
        np.minimum.at(parent, ru, low)
        np.minimum.at(parent, rv, low)
        while True:  # pointer jumping until every node points at a root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        u, v = u[differ], v[differ]


def result_from_roots(roots: np.ndarray, reason: str, similarity_to_root: np.ndarray | None,
                      detail_of: Callable[[int, int], dict[str, Any]] | None = None,
                      ) -> tuple[OpResult, dict[str, Any]]:
    """OpResult from component roots: the root (first occurrence) of each component is kept, every
    other member is removed as a duplicate of it. Returns the result and cluster statistics."""
    n = len(roots)
    index = np.arange(n)
    dup = roots != index
    keep = (~dup).tolist()
    dup_rows = np.flatnonzero(dup)
    removals: dict[int, Removal] = {}
    sims = similarity_to_root.tolist() if similarity_to_root is not None else None
    roots_list = roots.tolist()
    for i in dup_rows.tolist():
        root = roots_list[i]
        removals[i] = Removal(reason=reason, detail=detail_of(i, root) if detail_of else {},
                              duplicate_of=root,
                              similarity=None if sims is None else round(float(sims[i]), 4))
    clusters: list[list[int]] = []
    if len(dup_rows):
        members = np.concatenate([np.unique(roots[dup_rows]), dup_rows])
        order = np.lexsort((members, roots[members]))  # by root, then index: the root first
        members = members[order]
        cuts = np.flatnonzero(np.diff(roots[members])) + 1
        clusters = [c.tolist() for c in np.split(members, cuts)]
    sizes = [len(c) for c in clusters]
    stats = {
        "rows": n,
        "kept": n - len(dup_rows),
        "removed": int(len(dup_rows)),
        "clusters": len(clusters),
        "largest_cluster": max(sizes, default=0),
        "rows_in_clusters": int(sum(sizes)),
    }
    return OpResult(keep=keep, removals=removals, clusters=clusters), stats


def check_cancel(ctx: OpContext) -> None:
    if ctx.cancelled():
        raise InterruptedError("cancelled")

