"""Reading benchmark JSONL files (plain or gzipped), with errors that name the file, line and field."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from studio.evaluation.base import EvalDataError

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline=None) as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalDataError(path, number, None, f"not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise EvalDataError(path, number, None, f"expected a JSON object, found {type(row).__name__}")
                yield number, row
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise EvalDataError(path, None, None, f"can't read the file: {exc}") from None


def text_field(path: Path, number: int, row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        found = "missing" if name not in row else f"a {type(value).__name__}"
        raise EvalDataError(path, number, name, f"expected a string, found {found}")
    return value


def data_file(path: str | Path, what: str, prefer: str) -> Path:
    """The file a task reads: ``path`` itself, or the one JSONL file in a folder whose name holds ``prefer``."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise EvalDataError(path, None, None, f"no such file or folder ({what})")
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    preferred = [p for p in candidates if prefer in p.name.lower()]
    chosen = preferred or candidates
    if len(chosen) != 1:
        names = ", ".join(p.name for p in chosen) or "none"
        raise EvalDataError(path, None, None, f"expected one {what} file in this folder, found: {names}")
    return chosen[0]
