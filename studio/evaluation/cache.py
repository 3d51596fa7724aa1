"""Per-item results of evaluations, reused across runs: ``<workspace>/evaluations/cache.sqlite``.

A sample is stored under (model fingerprint, task, config digest, item id), so a re-run, a resumed
run or a second evaluation naming the same model and task scores only the items never seen under
the same options. Each entry also keeps a hash of the item it scored: an item edited in its file
(same id, other text) is scored again rather than answered from the cache. Each chunk of samples is written in one transaction in WAL mode: a writer killed
mid-chunk leaves the database as it was before that chunk, and readers never see half a chunk.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

CACHE_FILE = "cache.sqlite"
# Bumped when the table changes shape: an older cache file is set aside, never misread.
SCHEMA_VERSION = 1
# SQLite caps the number of bound parameters of one statement; look ids up in slices.
LOOKUP_SLICE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    config TEXT NOT NULL,
    item TEXT NOT NULL,
    item_hash TEXT NOT NULL,
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
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{self.path} was written by another version of the studio (schema {version}); "
                               f"move it aside to start a new cache")
        self._db.execute(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def get_many(self, model: str, task: str, config: str, items: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The cached samples of ``items`` (item id -> item hash), by item id; an entry whose item
        hash differs (the item changed) is left out."""
        ids = list(items)
        found: dict[str, dict[str, Any]] = {}
        for lo in range(0, len(ids), LOOKUP_SLICE):
            part = ids[lo:lo + LOOKUP_SLICE]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT item, item_hash, sample FROM samples WHERE model=? AND task=? AND config=? "
                f"AND item IN ({marks})", (model, task, config, *part))
            for item, item_hash, sample in rows:
                if items.get(item) == item_hash:
                    found[item] = json.loads(sample)
        return found

    def put_many(self, model: str, task: str, config: str, samples: list[dict[str, Any]],
                 item_hashes: list[str]) -> None:
        """Store one chunk of samples (with the hash of the item each scored), all or nothing."""
        rows = [(model, task, config, str(s["id"]), h, json.dumps(s, ensure_ascii=False, default=str))
                for s, h in zip(samples, item_hashes)]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows)
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


def item_hash(item: dict[str, Any]) -> str:
    text = json.dumps(item, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(ws) -> Path:
    from studio.evaluation.reports import evaluations_dir

    return evaluations_dir(ws) / CACHE_FILE


def open_cache(ws) -> EvalCache:
    return EvalCache(cache_path(ws))
