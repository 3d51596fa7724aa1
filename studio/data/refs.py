"""Dataset references: a recipe or command names data either as a stored dataset
``NAME[@VERSION]`` or as a data file. A file is imported into the workspace on use, with lineage
to the file, so every run starts from a stored, content-addressed version."""
from __future__ import annotations

from pathlib import Path

from studio import resources

DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz", ".csv", ".parquet", ".pq")


def looks_like_file(ref: str) -> bool:
    name = ref.lower()
    return "/" in ref or "\\" in ref or name.endswith(DATA_SUFFIXES)


def resolve_data_path(ref: str, recipe_folder: Path) -> str:
    """The absolute path of a data file a recipe names, or ``ref`` unchanged (a stored dataset's
    name, or a file that is not there). A relative path is tried against the current folder, the
    recipe's folder, its parent (a workspace recipe in ``recipes/`` naming a file of the
    workspace) and last the studio's shipped files, so ``datasets/train/sft_chat.jsonl`` means
    the shipped training set from a checkout and from a wheel alike."""
    if not looks_like_file(ref):
        return ref
    for candidate in (Path(ref), recipe_folder / ref, recipe_folder.parent / ref, resources.shipped_file(ref)):
        if candidate is not None and candidate.is_file():
            return str(candidate.resolve())
    return ref


def stored_ref(ws, ref: str, formats) -> tuple[str, object | None]:
    """``(NAME@VERSION, import result or None)`` for a reference; a file is imported unless the
    dataset of its name already holds exactly that file as its head."""
    if not looks_like_file(ref):
        return ref, None
    from studio.data.workflows import default_name, import_file
    from studio.store import StoreError, file_sha256

    path = Path(ref)
    if not path.is_file():
        raise ValueError(f"{ref}: no such data file (and no stored dataset by that name)")
    name = default_name(path)
    try:
        head = ws.head(name)
    except StoreError:
        head = None
    if head is not None and (head.source or {}).get("sha256") == file_sha256(path):
        return f"{name}@{head.id}", None
    result = import_file(ws, path, formats, name=name)
    return f"{name}@{result.version.id}", result
