"""Everything checked before a run starts: the back-end exists, its config validates, the
adapter is possible here, and the data has the shape the back-end trains on. The run process
calls the same function, so it trains on exactly the split that was checked."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from studio.records import Record
from studio.training.recipe import TrainRecipe


@dataclass
class Checked:
    backend: Any
    config: BaseModel
    train: list[Record]
    eval: list[Record]
    source: dict[str, Any]
    eval_source: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def find_backend(name: str, host=None):
    if host is None:
        from studio.plugins import get_host

        host = get_host()
    backends = dict(host.items("backend"))
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none installed"
        raise ValueError(f"backend: no tuning back-end {name!r} (installed: {known})")
    return backends[name], host


def backend_config(backend, recipe: TrainRecipe) -> BaseModel:
    from studio.config_schema import validate

    try:
        return validate(backend.config_model, recipe.config)
    except ValueError as exc:
        raise ValueError(f"config: {exc}") from None


def preflight(ws, recipe: TrainRecipe, host=None) -> Checked:
    from studio.training.adapters import adapter_problems
    from studio.training.data import check_records, load_records, split_eval

    backend, host = find_backend(recipe.backend, host)
    config = backend_config(backend, recipe)
    problems = adapter_problems(recipe.adapter, tuple(backend.adapter_methods), backend.name)
    problems += backend.check(recipe, config)
    formats = host.formats()
    try:
        loaded = load_records(recipe.dataset, ws, formats, recipe.limit)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ValueError(f"dataset: {exc}") from None
    warnings = list(loaded.warnings)
    eval_source = None
    if recipe.eval_dataset:
        try:
            held = load_records(recipe.eval_dataset, ws, formats)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise ValueError(f"eval_dataset: {exc}") from None
        train, evaluation, eval_source = loaded.records, held.records, held.source
        warnings += held.warnings
    else:
        train, evaluation = split_eval(loaded.records, recipe.eval_fraction, recipe.seed)
    kind = backend.data_kind
    problems += check_records(train, kind, f"dataset {loaded.source['ref']}")
    if evaluation:
        problems += check_records(evaluation, kind, f"eval data of {eval_source['ref'] if eval_source else 'the split'}")
    if problems:
        raise ValueError("the run cannot start:\n  " + "\n  ".join(problems))
    return Checked(backend, config, train, evaluation, loaded.source, eval_source, warnings)
