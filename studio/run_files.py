"""Files of a run folder (generation or training), written so that a kill leaves them readable:
``status.json`` is replaced atomically and ``*.jsonl`` files are only appended to. Also where a
workspace keeps its training runs, and how a run is named on the command line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


TRAINING_RUNS_DIR = "runs"  # <workspace>/runs/<run-id>/


def training_runs_dir(ws) -> Path:
    return Path(ws.root) / TRAINING_RUNS_DIR


def find_run_folder(parent: Path, run_id: str, marker: str = "recipe.yaml") -> Path:
    """The run folder named ``run_id``, or the one run whose name contains it."""
    exact = parent / run_id
    if (exact / marker).is_file():
        return exact
    matches = [p for p in parent.iterdir() if run_id in p.name and (p / marker).is_file()] if parent.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"no run {run_id!r} (see `studio runs ls`)")
    raise ValueError(f"{run_id!r} matches {len(matches)} runs: {', '.join(p.name for p in matches[:5])}")


def pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class RunFiles:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        if not path.is_file():
            return {"status": "unknown"}
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {"status": "unknown"}
        if status.get("status") == "running" and not pid_alive(status.get("pid")):
            status["status"] = "interrupted"  # killed: its `resume` continues it
        return status

    def write_status(self, **status: Any) -> None:
        tmp = self.path / f"status.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(status, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.path / "status.json")

    def update_status(self, **changes: Any) -> dict[str, Any]:
        path = self.path / "status.json"
        status = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        status.update(changes)
        self.write_status(**status)
        return status

    def append(self, name: str, data: dict[str, Any]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")

    def read(self, name: str, start: int = 0) -> list[dict[str, Any]]:
        """Rows of a jsonl file from byte offset ``start`` (a tailing reader passes its last offset)."""
        return self.read_from(name, start)[0]

    def read_from(self, name: str, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        path = self.path / name
        if not path.is_file():
            return [], start
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
        # Only whole lines: the writer may be half-way through the last one.
        end = data.rfind(b"\n") + 1
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return rows, start + end
