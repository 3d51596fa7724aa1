"""The contract of a curation operation plugin.

An op receives the current rows (an :class:`OpInput` over a memory-mapped Arrow file) and its
validated config, and returns an :class:`OpResult` that says which rows to keep, why each other
row was removed (and which row it duplicates), which rows it changed and how. The pipeline, not
the op, writes versions and the side table, so every op gets lineage, revert and dry runs free.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from pydantic import BaseModel

# Rows per task handed to a worker process; small inputs run in-process (a pool costs ~1 s).
PARALLEL_MIN_ROWS = 20_000
CHUNK_ROWS = 25_000
# ``OpResult.added_from`` names this dataset for rows copied from the op's own input (mix upsampling).
CURRENT_ROWS = "(current)"


@dataclass
class Removal:
    reason: str  # short, groupable: "exact duplicate", "refusal", "benchmark overlap"...
    detail: dict[str, Any] = field(default_factory=dict)  # what exactly matched, scores, ...
    duplicate_of: int | None = None  # row index (in this op's input) of the kept original
    similarity: float | None = None


@dataclass
class Change:
    row: dict[str, Any]  # the new canonical row
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpResult:
    keep: list[bool]  # one per input row
    removals: dict[int, Removal] = field(default_factory=dict)
    changes: dict[int, Change] = field(default_factory=dict)
    # Groups of input row indices that are duplicates of each other (first = kept one).
    clusters: list[list[int]] = field(default_factory=list)
    # Split ops: named subsets (input row indices). The pipeline writes one dataset per name.
    outputs: dict[str, list[int]] | None = None
    # Rows the op adds (mix): canonical rows, with where they came from in ``added_from``.
    added: list[dict[str, Any]] = field(default_factory=list)
    added_from: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # op-specific summary for --json and the TUI

    @classmethod
    def keep_all(cls, n: int) -> "OpResult":
        return cls(keep=[True] * n)


class OpInput:
    """Rows an op runs on: a ``datasets.Dataset`` memory-mapped from ``path``."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = Path(path)
        # pyarrow directly (not `datasets`): worker processes open this too, and importing
        # `datasets` costs each of them about a second.
        with pa.memory_map(str(self.path)) as source:
            self._table = pa.ipc.open_stream(source).read_all()
        self._dataset = None

    @property
    def dataset(self):
        """The rows as a ``datasets.Dataset`` (for ops that want its API)."""
        if self._dataset is None:
            import datasets

            self._dataset = datasets.Dataset(self._table)
        return self._dataset

    @property
    def table(self):
        return self._table

    def take(self, indices: list[int]) -> list[dict[str, Any]]:
        import pyarrow as pa

        return self._table.take(pa.array(indices, pa.int64())).to_pylist() if indices else []

    def __len__(self) -> int:
        return self._table.num_rows

    def rows(self, start: int = 0, stop: int | None = None, batch: int = 4096) -> Iterator[dict[str, Any]]:
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, batch):
            yield from self._table.slice(lo, min(batch, stop - lo)).to_pylist()

    def row(self, index: int) -> dict[str, Any]:
        return self._table.slice(index, 1).to_pylist()[0]

    def column(self, name: str) -> list[Any]:
        return self._table.column(name).to_pylist()


def _run_chunk(path: str, start: int, stop: int, fn: Callable, kwargs: dict[str, Any]) -> list[Any]:
    data = OpInput(Path(path))
    return [fn(row, **kwargs) for row in data.rows(start, stop)]


@dataclass
class OpContext:
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    cancelled: Callable[[], bool] = lambda: False
    num_proc: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    workspace: Any = None  # studio.store.Workspace, for ops that read other datasets (mix)
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths in configs resolve here
    step: int = 0
    _pool: ProcessPoolExecutor | None = field(default=None, repr=False)

    def progress(self, done: int, total: int, what: str = "") -> None:
        self.emit({"event": "progress", "step": self.step, "done": done, "total": total, "what": what})

    def map_rows(self, data: OpInput, fn: Callable[..., Any], what: str = "", **kwargs: Any) -> list[Any]:
        """``[fn(row, **kwargs) for row in data]`` over all cores. ``fn`` must be a module-level
        function (it is pickled into worker processes, which memory-map the same Arrow file)."""
        n = len(data)
        if n < PARALLEL_MIN_ROWS or self.num_proc <= 1:
            out = []
            for i, row in enumerate(data.rows()):
                if i % CHUNK_ROWS == 0:
                    if self.cancelled():
                        raise InterruptedError("cancelled")
                    self.progress(i, n, what)
                out.append(fn(row, **kwargs))
            self.progress(n, n, what)
            return out
        chunks = [(lo, min(lo + CHUNK_ROWS, n)) for lo in range(0, n, CHUNK_ROWS)]
        results: list[list[Any]] = [[] for _ in chunks]
        pool = self.pool()
        futures = {pool.submit(_run_chunk, str(data.path), lo, hi, fn, kwargs): i for i, (lo, hi) in enumerate(chunks)}
        done = 0
        for future in as_completed(futures):
            if self.cancelled():
                for f in futures:
                    f.cancel()
                raise InterruptedError("cancelled")
            results[futures[future]] = future.result()
            done += len(results[futures[future]])
            self.progress(done, n, what)
        return [item for chunk in results for item in chunk]

    def pool(self) -> ProcessPoolExecutor:
        """The run's worker processes, for ops that map their own chunk functions."""
        # One pool for the whole run: starting workers (and their imports) once, not per step.
        # spawn, not fork: the TUI runs ops from a worker thread, and forking a threaded
        # process can deadlock.
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.num_proc, mp_context=get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class CurationOp:
    """Base class of curation ops. Subclasses set the class attributes and ``run``.

    An op that groups the whole dataset may also run on the Ray engine by defining
    ``run_on_ray(rows, config, ctx) -> studio.curation.distributed.Duplicates`` (see that module);
    row-local ops (filters, transforms) run there through their own ``run`` with nothing added."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    # "filter" | "dedup" | "transform" | "split" | "mix": groups ops in the TUI's picker.
    category: ClassVar[str] = "filter"
    # True for ops that return named ``outputs`` (train/validation/test): they end a pipeline.
    makes_splits: ClassVar[bool] = False

    def run(self, data: OpInput, config: BaseModel, ctx: OpContext) -> OpResult:
        raise NotImplementedError
