"""Checking and running recipes of every kind, alone or as the steps of a pipeline: the one
place `studio run`, `studio recipes validate` and the terminal app share.

A run reports through ``emit(event)`` and stops early when ``cancelled()`` turns true; a
training run is its own process (``studio.training.runs``) whose events are passed on as they
are written. Each step's :class:`StepOutcome` says what a later step's ``previous`` takes: the
model a training step made, or the dataset version a curation or generation step wrote.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from studio.events import Emit, ignore
from studio.recipes import RecipeError, load_recipe
from studio.recipes.catalog import find_recipe, header
from studio.recipes.evaluate import EvalRecipe
from studio.recipes.kinds import kind_of_recipe
from studio.recipes.pipeline import PREVIOUS, STEP_PREFIX, PipelineRecipe, made_kind, reference

Never: Callable[[], bool] = lambda: False


@dataclass
class StepOutcome:
    kind: str
    status: str  # completed | failed | stopped | cancelled | checks_failed | started | checked
    result: Any = None  # the service's own result: PipelineResult, RunSummary, TrainRun, an evaluation summary, a plan
    model: str | None = None  # what a later step's `model: previous` takes
    dataset: str | None = None  # what a later step's `dataset: previous` takes
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "started", "checked")


# --- checking --------------------------------------------------------------------------------


def recipe_problems(path: Path, host=None) -> list[str]:
    """Everything wrong with a recipe file that can be found without data or a run: its header
    line, its schema and the schemas of the plugins it names (pipelines: every step's recipe)."""
    path = Path(path)
    command, _ = header(path)
    problems = [] if command.startswith("studio ") else [
        f"{path.name}: the first comment line should give the `studio ...` command that runs it"]
    try:
        recipe = load_recipe(path)
        if isinstance(recipe, PipelineRecipe):
            for number, step in enumerate(recipe.steps):
                problems += [f"{path.name} step {number}: {p}" for p in _step_problems(path, step, host)]
        else:
            problems += schema_problems(kind_of_recipe(recipe), recipe, host)
    except (ValueError, KeyError) as exc:
        problems.append(f"{path.name}: {exc}")
    return problems


def _step_problems(pipeline: Path, step, host) -> list[str]:
    """A pipeline step's recipe as the step runs it: with its ``set:`` applied (references to
    earlier steps as a check sees them)."""
    try:
        recipe = load_recipe(step_path(pipeline, step.recipe), _with_references(step.set, [], {}, check=True))
    except (ValueError, KeyError) as exc:
        return [str(exc)]
    if isinstance(recipe, PipelineRecipe):
        return [p for p in recipe_problems(step_path(pipeline, step.recipe), host) if "first comment line" not in p]
    try:
        return schema_problems(kind_of_recipe(recipe), recipe, host)
    except (ValueError, KeyError) as exc:
        return [str(exc)]


def schema_problems(kind: str, recipe: BaseModel, host=None) -> list[str]:
    """The plugin-side checks of one recipe: the op, generator or back-end it names exists and its
    options validate. Raises ValueError for the first structural problem."""
    host = host or _host()
    if kind == "curate":
        from studio.curation.pipeline import resolve_steps

        resolve_steps(recipe, host.items("curation_op"))
        return []
    if kind == "generate":
        from studio.generation.runner import resolve

        resolve(None, recipe, host)
        return []
    if kind == "evaluate":
        from studio.evaluation.runner import model_labels, plan_tasks

        plan_tasks(recipe, host)
        model_labels(recipe)
        return []
    problems = []
    if recipe.eval:
        from studio.evaluation.runner import plan_tasks
        from studio.recipes.evaluate import EvalRecipe

        try:
            plan_tasks(EvalRecipe(tasks=recipe.eval), host, "eval")
        except ValueError as exc:
            problems.append(str(exc))
    from studio.training.adapters import adapter_problems
    from studio.training.preflight import backend_config, find_backend

    backend, _ = find_backend(recipe.backend, host)
    config = backend_config(backend, recipe)
    problems += [p for p in adapter_problems(recipe.adapter, tuple(backend.adapter_methods), backend.name)
                 if "QLoRA" not in p]  # a QLoRA recipe is valid; it needs a GPU to run
    return problems + backend.check(recipe, config)


def _host():
    from studio.plugins import get_host

    return get_host()


# --- running one recipe ----------------------------------------------------------------------


def run_recipe(ws, recipe: BaseModel, *, emit: Emit = ignore, cancelled: Callable[[], bool] = Never,
               check: bool = False, detach: bool = False, host=None) -> StepOutcome:
    """Run (or, with ``check``, only check) one curation, generation, training or evaluation recipe."""
    kind = kind_of_recipe(recipe)
    host = host or _host()
    if kind == "curate":
        return _curate(ws, recipe, emit, cancelled, check, host)
    if kind == "generate":
        return _generate(ws, recipe, emit, cancelled, check, host)
    if kind == "train":
        return _train(ws, recipe, emit, cancelled, check, detach, host)
    if kind == "evaluate":
        return _evaluate(ws, recipe, emit, cancelled, check, host)
    raise RecipeError("a pipeline runs through run_pipeline")


def _curate(ws, recipe, emit, cancelled, check, host) -> StepOutcome:
    from studio.curation.engines import run_curation
    from studio.curation.pipeline import resolve_steps

    ops = host.items("curation_op")
    if check:
        resolve_steps(recipe, ops)
        return StepOutcome("curate", "checked", result={"dataset": recipe.dataset, "steps": len(recipe.steps)})
    result = run_curation(ws, recipe, ops, emit=emit, cancelled=cancelled)
    written = result.outputs.get("train") or result.version or next(iter(result.outputs.values()), None)
    dataset = f"{written.dataset}@{written.id}" if written is not None else None
    return StepOutcome("curate", "completed", result, dataset=dataset)


def _generate(ws, recipe, emit, cancelled, check, host) -> StepOutcome:
    from studio.generation.runner import run_generation

    summary = run_generation(ws, recipe, emit=emit, cancelled=cancelled, estimate_only=check, host=host)
    status = "checked" if check else summary.status
    dataset = f"{summary.output}@{summary.version}" if summary.version else None
    return StepOutcome("generate", status, summary, dataset=dataset, reason=summary.reason)


def _evaluate(ws, recipe, emit, cancelled, check, host) -> StepOutcome:
    from studio.evaluation.runner import check_evaluation, run_evaluation

    if check:
        return StepOutcome("evaluate", "checked", check_evaluation(ws, recipe, host))
    summary = run_evaluation(ws, recipe, emit=emit, cancelled=cancelled, host=host)
    return StepOutcome("evaluate", summary["status"], summary, reason=summary.get("reason") or "")


def _check_eval_tasks(recipe, host) -> dict[str, int]:
    """A training recipe's `eval:` tasks, checked (options, data) before anything trains."""
    if not recipe.eval:
        return {}
    from studio.evaluation.runner import load_items, plan_tasks

    planned = plan_tasks(EvalRecipe(tasks=recipe.eval), host, "eval")
    load_items(planned, None)
    return {task.key: len(task.items) for task in planned}


def _train(ws, recipe, emit, cancelled, check, detach, host) -> StepOutcome:
    from studio.training import runs
    from studio.training.preflight import preflight

    eval_items = _check_eval_tasks(recipe, host)
    if check:
        checked = preflight(ws, recipe, host)
        plan = {"backend": recipe.backend, "model": recipe.model, "dataset": checked.source["ref"],
                "train_records": len(checked.train), "eval_records": len(checked.eval),
                "max_steps": recipe.training.max_steps, "adapter": recipe.adapter.method,
                "config": checked.config.model_dump(), "warnings": checked.warnings}
        if eval_items:
            plan["eval"] = eval_items
        return StepOutcome("train", "checked", plan)
    run = runs.prepare_run(ws, recipe, host)
    process = runs.start(run)
    emit({"event": "run_started", "run_id": run.run_id, "pid": process.pid, "run_dir": str(run.path)})
    if detach:
        return StepOutcome("train", "started", run, model=str(run.path))
    for event in runs.follow(run, process, cancelled=cancelled):
        emit(event)
    status = run.status()
    state = status.get("status", "failed")
    if state == "completed" and not status.get("checks_passed", True):
        state = "checks_failed"
    return StepOutcome("train", state, run, model=str(run.path), reason=status.get("reason") or "")


# --- pipelines -------------------------------------------------------------------------------


def step_path(pipeline: Path, ref: str, ws=None) -> Path:
    """A step's recipe: a file beside the pipeline, any path, or a shipped or workspace recipe."""
    local = Path(pipeline).parent / ref
    return local if local.is_file() else find_recipe(ref, ws)


def _made(outcomes: list[StepOutcome], ids: dict[str, int], ref: str, what: str, key: str) -> str:
    """What ``ref`` (``previous`` or a step id) names for ``key``: that step's model or dataset."""
    if ref == PREVIOUS:
        outcome, which = (outcomes[-1] if outcomes else None), "a step before it"
    else:
        number = ids.get(ref)
        outcome = outcomes[number] if number is not None and number < len(outcomes) else None
        which = f"step {ref!r} (run before this one)"
    made = getattr(outcome, what) if outcome is not None else None
    if made is None:
        shown = PREVIOUS if ref == PREVIOUS else f"{STEP_PREFIX}{ref}"
        raise RecipeError(f"`{key}: {shown}` needs {which} that made a {what}")
    return made


def _with_references(overrides: dict[str, Any], outcomes: list[StepOutcome], ids: dict[str, int],
                     check: bool) -> list[str]:
    """A step's ``set:`` as ``key=value`` overrides, with ``previous`` / ``step:<id>`` on model and
    dataset keys replaced by what that step made. A check runs nothing: a top-level ``model`` or
    dataset key keeps the recipe's own value, a nested one (``config.reward_model``) keeps the
    reference (the back-end's check sees a model named), and ``models`` takes them on trust."""
    pairs = []
    for key, value in overrides.items():
        kind = made_kind(key)
        if kind == "models" and isinstance(value, list):
            # An evaluation step: `models: [embedded, previous]` compares the base with what was trained.
            value = [ref if reference(ref) is None else PREVIOUS if check
                     else _made(outcomes, ids, reference(ref), "model", key) for ref in value]
        elif kind and reference(value) is not None:
            if check:
                if "." not in key:
                    continue  # nothing has run to start from: check the step with its own value
            else:
                value = _made(outcomes, ids, reference(value), kind, key)
        pairs.append(f"{key}={value}" if isinstance(value, str) else f"{key}={_json(value)}")
    return pairs


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def run_pipeline(ws, path: Path, overrides: list[str] | None = None, *, emit: Emit = ignore,
                 cancelled: Callable[[], bool] = Never, check: bool = False, host=None) -> list[StepOutcome]:
    """Run a pipeline's steps in order, each starting from what the one before made where it
    says ``previous`` (or what an earlier step made where it says ``step:<id>``); stops at the
    first step that does not complete. ``overrides`` apply to the last step (`studio run
    quickstart training.max_steps=10`)."""
    pipeline = load_recipe(path, kind="pipeline")
    ids = {step.id: number for number, step in enumerate(pipeline.steps) if step.id is not None}
    outcomes: list[StepOutcome] = []
    for number, step in enumerate(pipeline.steps):
        if cancelled():
            break
        recipe_file = step_path(path, step.recipe, ws)
        pairs = _with_references(step.set, outcomes, ids, check)
        if number == len(pipeline.steps) - 1:
            pairs += list(overrides or [])
        recipe = load_recipe(recipe_file, pairs)
        if isinstance(recipe, EvalRecipe) and PREVIOUS in recipe.models and not check:
            recipe = recipe.model_copy(update={"models": [
                _made(outcomes, ids, PREVIOUS, "model", "models") if ref == PREVIOUS else ref
                for ref in recipe.models]})
        emit({"event": "pipeline_step", "step": number, "steps": len(pipeline.steps), "recipe": str(recipe_file),
              "recipe_kind": kind_of_recipe(recipe)})
        outcome = run_recipe(ws, recipe, emit=emit, cancelled=cancelled, check=check, host=host)
        outcomes.append(outcome)
        if not outcome.ok:
            break
    return outcomes
