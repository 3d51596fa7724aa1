"""How much of a tuned model's training data overlaps each benchmark it is evaluated on.

When a model under evaluation is a training run of the studio, its training dataset (the version
the run's pinned recipe names) is matched against each task's data files by the registered
``decontaminate`` curation op: the same n-gram index and matching rules as curation, run as a dry
run (nothing is written). The report gives, per model and task, the share of benchmark items that
share an n-gram with some training row, and how many training rows do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.events import Emit, ignore

DECONTAM_OP = "decontaminate"


def run_folder_of(location: str | None) -> Path | None:
    """The studio run folder a model was trained in, if it is one (``<run>/final``, ``<run>/model``)."""
    if not location:
        return None
    folder = Path(location)
    for candidate in (folder, folder.parent):
        if (candidate / "recipe.yaml").is_file() and (candidate / "status.json").is_file():
            return candidate
    return None


def training_data(ws, location: str | None, scratch: Path, formats) -> tuple[str, Path] | None:
    """(dataset reference, Arrow file) of the training data of the run a model comes from: the
    stored version it names, or the data file it trained on read into a scratch workspace (so
    nothing is added to the user's workspace)."""
    import json

    import yaml

    from studio.data.refs import looks_like_file
    from studio.store import StoreError, Workspace

    run = run_folder_of(location)
    if run is None:
        return None
    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {}
    ref = str(recipe.get("dataset") or "")
    status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    if looks_like_file(ref):
        if not Path(ref).is_file():
            return None
        from studio.data.workflows import import_file

        store = Workspace.init(scratch / run.name)
        version = import_file(store, Path(ref), formats, name="train").version
        return ref, store.version_dir("train", version.id) / "data.arrow"
    name, _, version_id = ref.partition("@")
    store = Workspace(Path(status["workspace"])) if status.get("workspace") else ws
    try:
        path = store.version_dir(name, version_id or None) / "data.arrow"
    except (StoreError, OSError):
        return None
    return (ref, path) if path.is_file() else None


def _share(found: int, total: int) -> float | None:
    return round(found / total, 4) if total else None


def training_overlap(ws, models: list[Any], tasks: list[tuple[str, Any, Any]], host, emit: Emit = ignore,
                     n: int = 13) -> dict[str, Any]:
    """label -> {"dataset", "rows", "tasks": {task: {items, items_overlapping, share, rows_overlapping}}}
    for every model that is a studio training run; tasks are (name, evaluator, config)."""
    import tempfile

    out: dict[str, Any] = {}
    op = host.items("curation_op").get(DECONTAM_OP)
    with tempfile.TemporaryDirectory(prefix="studio-overlap-") as scratch:
        for model in models:
            found = _model_overlap(ws, model, tasks, host, op, Path(scratch), emit, n)
            if found is not None:
                out[model.label] = found
    return out


def _model_overlap(ws, model, tasks, host, op, scratch: Path, emit: Emit, n: int) -> dict[str, Any] | None:
    data = training_data(ws, getattr(model, "location", None), scratch, host.formats())
    if data is None:
        return None
    ref, path = data
    if op is None:
        return {"dataset": ref, "note": f"the {DECONTAM_OP} op is not loaded: overlap not checked"}
    from studio.config_schema import validate
    from studio.curation.op_base import OpContext, OpInput

    rows = OpInput(path)
    entry: dict[str, Any] = {"dataset": ref, "rows": len(rows), "n": n, "tasks": {}}
    for key, evaluator, config in tasks:
        files = [str(Path(f).resolve()) for f in evaluator.data_files(config)]
        if not files:
            continue
        settings = validate(op.config_model, {"benchmarks": files, "n": n}, what=f"overlap of {key}")
        ctx = OpContext(num_proc=1, workspace=ws)
        try:
            result = op.run(rows, settings, ctx)
        except (ValueError, OSError) as exc:
            entry["tasks"][key] = {"note": f"not checked: {exc}"}
            continue
        finally:
            ctx.close()
        benchmarks = result.report.get("benchmarks", [])
        items = sum(b.get("items", 0) for b in benchmarks)
        leaked = sum(b.get("items_leaked", 0) for b in benchmarks)
        entry["tasks"][key] = {"items": items, "items_overlapping": leaked, "share": _share(leaked, items),
                               "rows_overlapping": len(result.removals)}
        emit({"event": "overlap", "model": model.label, "task": key, "share": _share(leaked, items)})
    return entry
