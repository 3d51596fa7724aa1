"""The embedded workspace `studio` opens when the current folder is not a workspace: every
sample in the repository's ``datasets/`` folder, imported once into a cache folder and rebuilt
when the samples change."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from studio.data.format_kit import DatasetFormat
from studio.data.workflows import default_name, import_file
from studio.store import Workspace

DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".csv", ".parquet")


def samples_dir() -> Path | None:
    here = Path(__file__).resolve().parent.parent / "datasets"
    return here if here.is_dir() else None


def sample_files() -> list[Path]:
    folder = samples_dir()
    if folder is None:
        return []
    # train/ holds the planted-signal sets the training recipes must learn: the embedded model
    # pretrains on these samples, so it must never see them.
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)
                  and "train" not in p.relative_to(folder).parts[:-1])


def studio_home() -> Path:
    return Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "studio")


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def ensure_sample_workspace(formats: dict[str, DatasetFormat], root: Path | None = None) -> Workspace:
    root = Path(root or studio_home() / "sample-workspace")
    files = sample_files()
    stamp = root / ".samples-fingerprint"
    fingerprint = _fingerprint(files)
    if (root / "studio.yaml").is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        return Workspace(root)
    if root.exists():
        shutil.rmtree(root)
    ws = Workspace.init(root, name="sample workspace")
    for path in files:
        try:
            import_file(ws, path, formats, name=default_name(path))
        except Exception:  # noqa: BLE001 - one odd sample must not keep the studio from opening
            continue
    stamp.write_text(fingerprint)
    return ws
