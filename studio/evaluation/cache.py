"""Per-item results of evaluations, reused across runs: ``<workspace>/evaluations/cache.sqlite``.

A sample is stored under (model fingerprint, task, config digest, item id), so a re-run, a resumed
run or a second evaluation naming the same model and task scores only the items never seen under
the same options. Each chunk of samples is written in one transaction in WAL mode: a writer killed
mid-chunk leaves the database as it was before that chunk, and readers never see half a chunk.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

CACHE_FILE = "cache.sqlite"
# SQLite caps the number of bound parameters of one statement; look ids up in slices.
LOOKUP_SLICE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    config TEXT NOT NULL,
    item TEXT NOT NULL,
    sample TEXT NOT NULL,
    PRIMARY KEY (model, task, config, item)
)
"""


class EvalCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A second process (the TUI and a CLI run) may write at the same time: wait, do not fail.
        self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses no committed transaction when a process dies (only on power loss).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, model: str, task: str, config: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The cached samples among ``ids``, by item id."""
        ids = [str(i) for i in ids]
        found: dict[str, dict[str, Any]] = {}
        for lo in range(0, len(ids), LOOKUP_SLICE):
            part = ids[lo:lo + LOOKUP_SLICE]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT item, sample FROM samples WHERE model=? AND task=? AND config=? AND item IN ({marks})",
                (model, task, config, *part))
            for item, sample in rows:
                found[item] = json.loads(sample)
        return found

    def put_many(self, model: str, task: str, config: str, samples: list[dict[str, Any]]) -> None:
        """Store one chunk of samples, all or nothing."""
        rows = [(model, task, config, str(s["id"]), json.dumps(s, ensure_ascii=False, default=str)) for s in samples]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self, model: str | None = None, task: str | None = None) -> int:
        where, args = [], []
        for column, value in (("model", model), ("task", task)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = "SELECT COUNT(*) FROM samples" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._db.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EvalCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cache_path(ws) -> Path:
    from studio.evaluation.reports import evaluations_dir

    return evaluations_dir(ws) / CACHE_FILE


def open_cache(ws) -> EvalCache:
    return EvalCache(cache_path(ws))
