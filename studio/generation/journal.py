"""The request journal: every answered (or finally failed) request, keyed by a hash of what was
asked. It lives in the workspace, so any later run, a resumed run after ``kill -9`` or a re-run
of the same recipe, gets stored answers back instead of paying for them again.

SQLite in WAL mode commits each answer as soon as it arrives; a killed process loses at most
the requests that were still in flight.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- ok | failed
    endpoint TEXT NOT NULL,          -- chat | completions
    model TEXT NOT NULL,
    request TEXT NOT NULL,           -- the JSON body sent (no credentials: those live in headers)
    texts TEXT,                      -- JSON list, one text per choice
    finish_reasons TEXT,
    prompt_tokens INTEGER DEFAULT 0,
    completion_tokens INTEGER DEFAULT 0,
    cost REAL DEFAULT 0,
    error TEXT,
    http_status INTEGER,
    attempts INTEGER DEFAULT 0,
    run_id TEXT,
    updated REAL NOT NULL
);
"""


def request_key(endpoint: str, body: dict[str, Any], sample: int = 0) -> str:
    """Hash of (endpoint, model, messages or prompt, parameters, sample index). Parameters that
    don't change the answer's distribution (stream, user) are left out."""
    material = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "user")}
    blob = json.dumps({"endpoint": endpoint, "body": material, "sample": sample}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Entry:
    key: str
    status: str
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    cost: float
    error: str | None
    http_status: int | None


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the event loop thread; the lock keeps TUI readers safe.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process kills, cheap
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, status, texts, finish_reasons, prompt_tokens, completion_tokens, cost, error, http_status "
                "FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Entry(row[0], row[1], json.loads(row[2] or "[]"), json.loads(row[3] or "[]"), row[4], row[5],
                     row[6], row[7], row[8])

    def put_ok(self, key: str, endpoint: str, model: str, request: dict, texts: list[str], finish_reasons: list[str],
               prompt_tokens: int, completion_tokens: int, cost: float, attempts: int, run_id: str) -> None:
        self._write(key, "ok", endpoint, model, request, texts, finish_reasons, prompt_tokens, completion_tokens,
                    cost, None, 200, attempts, run_id)

    def put_failed(self, key: str, endpoint: str, model: str, request: dict, error: str, http_status: int | None,
                   attempts: int, run_id: str) -> None:
        self._write(key, "failed", endpoint, model, request, [], [], 0, 0, 0.0, error, http_status, attempts, run_id)

    def _write(self, key, status, endpoint, model, request, texts, finish_reasons, prompt_tokens, completion_tokens,
               cost, error, http_status, attempts, run_id) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, status, endpoint, model, json.dumps(request, ensure_ascii=False), json.dumps(texts, ensure_ascii=False),
                 json.dumps(finish_reasons), prompt_tokens, completion_tokens, cost, error, http_status, attempts,
                 run_id, time.time()))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM answers GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def failed(self, run_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT key, model, request, error, http_status, attempts, run_id FROM answers WHERE status = 'failed'"
        args: tuple = ()
        if run_id:
            query += " AND run_id = ?"
            args = (run_id,)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [{"key": r[0], "model": r[1], "request": json.loads(r[2]), "error": r[3], "http_status": r[4],
                 "attempts": r[5], "run_id": r[6]} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
