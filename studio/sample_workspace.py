"""The default workspace: what plain `studio` opens, and what every command uses, when the
current folder is not a workspace. It starts with every shipped sample dataset (``datasets/`` of
a checkout or of the wheel) imported, and later gets the samples that are new or changed; it is
never wiped, because a user's own datasets and runs live in it too."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from studio import resources
from studio.data.format_kit import DatasetFormat
from studio.data.workflows import default_name, import_file
from studio.plugins import get_host
from studio.store import StoreError, Workspace, file_sha256

DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".csv", ".parquet")


def sample_files() -> list[Path]:
    folder = resources.datasets_dir()
    if folder is None:
        return []
    # train/ holds the planted-signal sets the training recipes must learn, eval/ the benchmark
    # samples models are scored on: the embedded model pretrains on these samples, so it must
    # never see either (a base model that saw a test is contaminated).
    unseen = [d for d in (resources.training_sets_dir(), folder / "eval") if d is not None]
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)
                  and not any(p.is_relative_to(d) for d in unseen))


def studio_home() -> Path:
    return Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "studio")


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _holds(ws: Workspace, name: str, sha256: str) -> bool:
    try:
        return any((v.source or {}).get("sha256") == sha256 for v in ws.versions(name))
    except StoreError:
        return False


def ensure_sample_workspace(formats: dict[str, DatasetFormat], root: Path | None = None) -> Workspace:
    root = Path(root or studio_home() / "sample-workspace")
    files = sample_files()
    stamp = root / ".samples-fingerprint"
    fingerprint = _fingerprint(files)
    exists = (root / "studio.yaml").is_file()
    if exists and stamp.is_file() and stamp.read_text() == fingerprint:
        return Workspace(root)
    ws = Workspace(root) if exists else Workspace.init(root, name="sample workspace")
    for path in files:
        name = default_name(path)
        if _holds(ws, name, file_sha256(path)):
            continue
        try:
            import_file(ws, path, formats, name=name)
        except Exception:  # noqa: BLE001 - one odd sample must not keep the studio from opening
            continue
    stamp.write_text(fingerprint)
    return ws


def default_workspace(formats: dict[str, DatasetFormat] | None = None) -> Workspace:
    """The workspace of a command run outside any workspace: the sample workspace in the studio
    home, built on first use. ``formats`` defaults to every
    registered format plugin."""
    return ensure_sample_workspace(get_host().formats() if formats is None else formats)
