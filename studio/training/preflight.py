"""Everything checked before a run starts: the back-end exists, its config validates, the
adapter is possible here, and the data has the shape the back-end trains on. The run process
calls the same function, so it trains on exactly the split that was checked."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from studio.records import Record
from studio.recipes.train import TrainRecipe


@dataclass
class Checked:
    backend: Any
    config: BaseModel
    train: list[Record]
    eval: list[Record]
    source: dict[str, Any]
    eval_source: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    model: str = ""  # the model reference with a run id pinned to its run folder


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
    model, model_issues = check_model(ws, recipe, backend, config)
    problems += model_issues + reward_model_problems(ws, config)
    formats = host.formats()
    if recipe.format_options:
        from studio.data.format_options import configure_formats

        formats, _ = configure_formats(formats, recipe.format_options)  # FormatOptionError is a ValueError
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
    return Checked(backend, config, train, evaluation, loaded.source, eval_source, warnings, model)


def reward_model_problems(ws, config: BaseModel) -> list[str]:
    """A back-end's ``config.reward_model`` (GRPO, RLOO, PPO) must name a reward model that is
    there before the run starts; a pipeline's not-yet-made reference is left to the pipeline."""
    from studio.models.loading import ModelNotFound
    from studio.recipes.pipeline import PREVIOUS, STEP_PREFIX
    from studio.training.reward_refs import resolve_reward_model

    ref = getattr(config, "reward_model", None)
    if not isinstance(ref, str) or ref == PREVIOUS or ref.startswith(STEP_PREFIX):
        return []
    try:
        resolve_reward_model(ref, Path(ws.root) / "runs" / "-")
    except ModelNotFound as exc:
        return [f"config.reward_model: {exc}"]
    return []


def check_model(ws, recipe: TrainRecipe, backend, config: BaseModel) -> tuple[str, list[str]]:
    """The model reference pinned (a run id becomes its folder) and what keeps it from training
    here: nothing behind the reference, or no chat template where the back-end renders records
    through one. Reads only JSON files; a hub id is asked for when the run loads it."""
    from studio.models.inspect import chat_template_of
    from studio.models.loading import ModelNotFound, embedded_size, resolve_model_ref

    if embedded_size(recipe.model) is not None:
        return recipe.model, []  # built by the studio, with its chat template
    try:
        location = resolve_model_ref(recipe.model, build=False, workspace=ws)
    except ModelNotFound as exc:
        return recipe.model, [f"model: {exc}"]
    folder = Path(location)
    if not folder.is_dir():
        return recipe.model, []
    if backend.needs_chat_template(config) and chat_template_of(folder) is None:
        hint = (" or set config.chat_template (chatml, or a Jinja template)"
                if "chat_template" in backend.config_model.model_fields else "")
        return location, [f"model: {recipe.model} has no chat template, and back-end {backend.name!r} renders "
                          f"every record through one; use a model that has one{hint}"]
    return location if not Path(recipe.model).expanduser().is_dir() else recipe.model, []
