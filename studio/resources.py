"""Where the files the studio ships live: its recipes, sample datasets and training sets.

A checkout (an editable install, or the repository on ``sys.path``) keeps them in the top-level
``recipes/`` and ``datasets/`` folders beside ``studio/``. A wheel carries the same folders, with
the same layout, under ``studio/shipped/`` (see setup.py). Both layouts have one root holding
``recipes/`` and ``datasets/``, which is also what the shipped recipes' relative data paths
(``datasets/train/...``) are written against.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped_root() -> Path | None:
    """The folder holding the shipped ``recipes/`` and ``datasets/``, or None when neither exists."""
    installed = PACKAGE / "shipped"
    if installed.is_dir():
        return installed
    # Only a source tree counts: beside an installed package sits site-packages, whose `datasets`
    # folder is the Hugging Face library.
    checkout = PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and any((checkout / n).is_dir() for n in ("recipes", "datasets")):
        return checkout
    return None


def _folder(*parts: str) -> Path | None:
    root = shipped_root()
    folder = root.joinpath(*parts) if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def recipes_dir() -> Path | None:
    """The shipped YAML recipes (``recipes/``)."""
    return _folder("recipes")


def datasets_dir() -> Path | None:
    """The sample datasets, each with its ``.md`` card (``datasets/``; training sets in ``train/``)."""
    return _folder("datasets")


def training_sets_dir() -> Path | None:
    """The planted-signal training sets the training recipes learn from (``datasets/train/``)."""
    return _folder("datasets", "train")


def shipped_file(relative: str | Path) -> Path | None:
    """A file named relative to the shipped root (``datasets/train/sft_chat.jsonl``), if it exists."""
    root = shipped_root()
    if root is None or Path(relative).is_absolute():
        return None
    path = root / relative
    return path if path.is_file() else None
