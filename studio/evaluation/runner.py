"""Running an evaluation recipe: every model on every task, into one report folder.

Everything that can fail without scoring fails first: each task's options are validated by its
evaluator's config model, each model is resolved and asked whether it can do what the tasks use (an
endpoint gives no log-likelihoods), and every task's items are read. Then each model scores each
task's items that the cache (:mod:`studio.evaluation.cache`) does not hold yet, in chunks, each
chunk cached as it completes: a killed evaluation loses at most one chunk and a re-run scores only
what is missing. The first model is the base; every other model is compared with it task by task
(:func:`studio.evaluation.reports.compare_samples`), and tasks with metrics of their own over two
models' answers (judged verdicts, reward win rates) get them through ``Evaluator.pairwise``.

Events (``emit``): ``started``, ``model_loaded``, ``task_started``, ``progress`` (``model``,
``task``, ``done``, ``total`` items), ``task_done`` (with the task's metrics), ``finished``.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from studio.config_schema import validate
from studio.evaluation import reports
from studio.evaluation.base import EvalContext, EvalStopped, Evaluator, config_digest
from studio.evaluation.cache import item_hash, open_cache
from studio.evaluation.models import ENDPOINT_PREFIX, EvalModel, open_model
from studio.evaluation.overlap import training_overlap
from studio.events import Emit, event_name, ignore
from studio.recipes.evaluate import EvalRecipe
from studio.recipes.pipeline import PREVIOUS

# Items per scoring call: big enough for length batching and shared few-shot prefixes to pay,
# small enough that a kill loses little.
CHUNK_ITEMS = 64
# What a task may ask of the model under evaluation (the others, "judge" and "reward", are run-wide).
MODEL_USES = ("loglikelihood", "generate", "chat")
Never: Callable[[], bool] = lambda: False


@dataclass
class PlannedTask:
    key: str  # the task's name in the report (the evaluator's name; numbered when listed twice)
    evaluator: Evaluator
    config: BaseModel
    digest: str
    items: list[dict[str, Any]] = field(default_factory=list)
    # Rows the evaluator could not read (file, line, field, message); the good ones still count.
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.evaluator.name


def _host(host):
    if host is not None:
        return host
    from studio.plugins import get_host

    return get_host()


def plan_tasks(recipe: EvalRecipe, host=None, field_name: str = "tasks") -> list[PlannedTask]:
    """Each task entry's evaluator and validated options; errors name the entry (``tasks.N``, or
    ``eval.N`` in a training recipe) and the field."""
    evaluators = _host(host).items("evaluator")
    names = [entry.task for entry in recipe.tasks]
    planned = []
    for index, entry in enumerate(recipe.tasks):
        where = f"{field_name}.{index} ({entry.task})"
        evaluator = evaluators.get(entry.task)
        if evaluator is None:
            close = difflib.get_close_matches(entry.task, list(evaluators), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(evaluators)) or "none registered"
            raise ValueError(f"{field_name}.{index}: unknown task {entry.task!r} ({hint}registered: {known}; "
                             f"`studio eval tasks` describes them)")
        config = validate(evaluator.config_model, entry.options(), what=where)
        key = entry.task if names.count(entry.task) == 1 else f"{entry.task}.{index}"
        planned.append(PlannedTask(key, evaluator, config, _cache_digest(recipe, evaluator, config)))
    return planned


def _cache_digest(recipe: EvalRecipe, evaluator: Evaluator, config) -> str:
    """The options a cached sample depends on: the task's own, plus the judge or reward model a
    task consults (another judge's grades must not be reused)."""
    digest = config_digest(config)
    consulted = {use: value for use, value in (("judge", getattr(recipe, "judge", None)),
                                               ("reward", getattr(recipe, "reward_model", None)))
                 if use in evaluator.uses and value}
    if not consulted:
        return digest
    text = json.dumps(consulted, sort_keys=True, default=str)
    return hashlib.sha256(f"{digest}|{text}".encode()).hexdigest()[:16]


def _default_label(ref: str) -> str:
    if ref.startswith(ENDPOINT_PREFIX):
        spec = ref[len(ENDPOINT_PREFIX):]
        return spec.partition("#")[2] or spec.rstrip("/").rsplit("/", 1)[-1] or "endpoint"
    path = Path(ref)
    if path.name in ("final", "model") and path.parent.name:
        return path.parent.name
    return path.name or ref


def model_labels(recipe: EvalRecipe) -> list[str]:
    """Display names: the recipe's ``labels``, else short forms of the references, made unique."""
    if recipe.labels is not None:
        if len(recipe.labels) != len(recipe.models):
            raise ValueError(f"labels: {len(recipe.labels)} label(s) for {len(recipe.models)} model(s)")
        if len(set(recipe.labels)) != len(recipe.labels):
            raise ValueError("labels: every model needs its own label")
        return list(recipe.labels)
    labels: list[str] = []
    for ref in recipe.models:
        label, number = _default_label(ref), 2
        while label in labels:
            label = f"{_default_label(ref)}-{number}"
            number += 1
        labels.append(label)
    return labels


def _check_uses(model: EvalModel, planned: list[PlannedTask]) -> None:
    for task in planned:
        for use in task.evaluator.uses:
            if use in MODEL_USES and not model.supports(use):
                what = {"loglikelihood": "log-likelihoods"}.get(use, use)
                kind = f"{'an' if model.kind[0] in 'aeiou' else 'a'} {model.kind} model"
                raise ValueError(f"model {model.label!r} ({model.ref}) cannot run {task.key}: it needs {what}, "
                                 f"which {kind} does not give (an endpoint runs generative and judged tasks only)")


def open_models(ws, recipe: EvalRecipe, labels: list[str], planned: list[PlannedTask]) -> list[EvalModel]:
    models = []
    for ref, label in zip(recipe.models, labels):
        if ref == PREVIOUS:
            raise ValueError("`previous` names the model a pipeline's training step made: run this recipe as a "
                             "step of a pipeline after a training step")
        model = open_model(ref, label, workspace=ws, trust_remote_code=recipe.trust_remote_code,
                           device=recipe.device)
        _check_uses(model, planned)
        models.append(model)
    return models


def load_items(planned: list[PlannedTask], limit: int | None) -> None:
    for task in planned:
        items = task.evaluator.load(task.config)
        seen: set[str] = set()
        for number, item in enumerate(items):
            if "id" not in item:
                raise ValueError(f"{task.key}: item {number} has no 'id' (an evaluator must give every item one)")
            key = str(item["id"])
            if key in seen:
                raise ValueError(f"{task.key}: item id {key!r} appears twice; results are cached by item id")
            seen.add(key)
        task.items = items[:limit] if limit else items
        task.rejected = [{"file": e.path, "line": e.line, "field": e.field, "message": str(e)}
                         for e in getattr(task.evaluator, "skipped", None) or []]


def run_options(recipe: EvalRecipe) -> dict[str, Any]:
    """The run-wide settings a task reads from ``EvalContext.options``."""
    return {"allow_code_execution": recipe.allow_code_execution, "judge": recipe.judge, "budget": recipe.budget,
            "reward_model": recipe.reward_model, "seed": recipe.seed, "limit": recipe.limit,
            "trust_remote_code": recipe.trust_remote_code, "device": recipe.device}


def _sha256(path: Path) -> str:
    from studio.store import file_sha256

    return file_sha256(path)


def resolved_config(report_id: str, recipe: EvalRecipe, models: list[EvalModel],
                    planned: list[PlannedTask]) -> dict[str, Any]:
    """What config.yaml pins: the recipe, each model's exact weights and each data file's bytes."""
    model_rows = []
    for model in models:
        row = model.describe()
        provider = getattr(model, "provider", None)
        row["location"] = getattr(model, "location", None) or getattr(provider, "base_url", None)
        model_rows.append(row)
    tasks = []
    for task in planned:
        files = task.evaluator.data_files(task.config)
        tasks.append({"task": task.key, "evaluator": task.name, "options": task.config.model_dump(mode="json"),
                      "digest": task.digest, "items": len(task.items), "uses": list(task.evaluator.uses),
                      "primary_metric": task.evaluator.primary_metric,
                      "lower_is_better": list(task.evaluator.lower_is_better),
                      "data": [{"path": str(Path(f).resolve()), "sha256": _sha256(Path(f))} for f in files]})
    return {"id": report_id, "recipe": recipe.model_dump(mode="json"), "models": model_rows, "tasks": tasks}


class _Recorder:
    """Passes events on and keeps them in the report's events.jsonl (item-level progress only in
    memory: the chunk-level progress is what the file needs)."""

    def __init__(self, report: reports.EvalReport | None, emit: Emit):
        self.report = report
        self.emit = emit

    def __call__(self, event: dict[str, Any], keep: bool = True) -> None:
        if keep and self.report is not None:
            self.report.append("events.jsonl", {"t": round(time.time(), 3), **event})
        self.emit(event)


def _chunk_emit(record: _Recorder, label: str, task: str, before: int, size: int, total: int) -> Emit:
    """An evaluator's progress inside a chunk (in its own units: requests, generations) as items
    of the whole task; its other events (warnings) pass on as they are."""

    def emit(event: dict[str, Any]) -> None:
        if event_name(event) == "progress":
            fraction = event.get("done", 0) / event["total"] if event.get("total") else 0.0
            record({"event": "progress", "model": label, "task": task, "total": total,
                    "done": before + min(size, int(size * fraction))}, keep=False)
        else:
            record({**event, "model": label, "task": task})

    return emit


def score_task(ws, model: EvalModel, task: PlannedTask, cache, record: _Recorder, cancelled: Callable[[], bool],
               recipe: EvalRecipe, chunk_items: int, options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """All of a task's samples for one model, scoring only the items the cache lacks; returns
    (samples in item order, items newly scored). ``options`` is one dict for the whole run, so
    what a task keeps there (a judge's spending against the budget) spans its chunks and tasks."""
    hashes = {str(item["id"]): item_hash(item) for item in task.items}
    ids = list(hashes)
    have = cache.get_many(model.fingerprint, task.name, task.digest, hashes)
    todo = [item for item in task.items if str(item["id"]) not in have]
    total = len(ids)
    done = total - len(todo)
    record({"event": "task_started", "model": model.label, "task": task.key, "total": total, "cached": done})
    record({"event": "progress", "model": model.label, "task": task.key, "done": done, "total": total})
    for lo in range(0, len(todo), chunk_items):
        if cancelled():
            raise EvalStopped("cancelled")
        chunk = todo[lo:lo + chunk_items]
        ctx = EvalContext(model=model, config=task.config,
                          emit=_chunk_emit(record, model.label, task.key, done, len(chunk), total),
                          cancelled=cancelled, batch_size=recipe.batch_size, workspace=ws, options=options,
                          task=task.name)
        out = task.evaluator.score(ctx, chunk)
        if len(out) != len(chunk):
            raise RuntimeError(f"{task.name}: score returned {len(out)} samples for {len(chunk)} items")
        samples = []
        for item, sample in zip(chunk, out):
            sample = {**sample, "id": item["id"]} if "id" not in sample else sample
            if str(sample["id"]) != str(item["id"]):
                raise RuntimeError(f"{task.name}: score returned samples out of order ({sample['id']!r} for "
                                   f"item {item['id']!r})")
            # Through JSON, as the cache gives them back: a fresh and a cached run aggregate the same values.
            samples.append(json.loads(json.dumps(sample, ensure_ascii=False, default=str)))
        cache.put_many(model.fingerprint, task.name, task.digest, samples, [hashes[str(i["id"])] for i in chunk])
        have.update((str(s["id"]), s) for s in samples)
        done += len(chunk)
        record({"event": "progress", "model": model.label, "task": task.key, "done": done, "total": total})
    return [have[i] for i in ids], len(todo)


def check_evaluation(ws, recipe: EvalRecipe, host=None) -> dict[str, Any]:
    """Everything checked without scoring: tasks and options, models resolved (not loaded), items
    read. ``previous`` models (a pipeline's training step) are taken on trust."""
    from studio.models.loading import resolve_model_ref

    planned = plan_tasks(recipe, host)
    labels = model_labels(recipe)
    models = []
    for ref, label in zip(recipe.models, labels):
        if ref == PREVIOUS:
            models.append({"label": label, "ref": ref, "location": "the model the step before makes"})
            continue
        if ref.startswith(ENDPOINT_PREFIX):
            model = open_model(ref, label, workspace=ws)
            _check_uses(model, planned)
            location = model.provider.base_url
        else:
            location = resolve_model_ref(ref, build=False, workspace=ws)
        models.append({"label": label, "ref": ref, "location": location})
    load_items(planned, recipe.limit)
    tasks = [{"task": t.key, "items": len(t.items), "options": t.config.model_dump(mode="json")} for t in planned]
    return {"models": models, "tasks": tasks,
            "limit": recipe.limit, "batch_size": recipe.batch_size}


def score_into_cache(ws, recipe: EvalRecipe, *, emit: Emit = ignore, cancelled: Callable[[], bool] = Never,
                     host=None, chunk_items: int = CHUNK_ITEMS) -> dict[str, dict[str, Any]]:
    """Score the recipe's models into the cache only, writing no report: a training run scores its
    base model before it trains, and its report after training finds those scores there.
    Returns task -> label -> metrics."""
    planned = plan_tasks(recipe, host)
    models = open_models(ws, recipe, model_labels(recipe), planned)
    load_items(planned, recipe.limit)
    record = _Recorder(None, emit)
    options = run_options(recipe)
    out: dict[str, dict[str, Any]] = {}
    with open_cache(ws) as cache:
        for model in models:
            for task in planned:
                got, _ = score_task(ws, model, task, cache, record, cancelled, recipe, chunk_items, options)
                out.setdefault(task.key, {})[model.label] = task.evaluator.aggregate(got, task.config)
            model.close()
    return out


def run_evaluation(ws, recipe: EvalRecipe, *, emit: Emit = ignore, cancelled: Callable[[], bool] = Never,
                   host=None, chunk_items: int = CHUNK_ITEMS) -> dict[str, Any]:
    """Run every model on every task into a new report folder; returns the report's summary
    (``id``, ``status``, ``path``, ``tasks``, ``comparisons``, ... and ``scored``: items newly
    scored per model and task)."""
    host = _host(host)
    planned = plan_tasks(recipe, host)
    labels = model_labels(recipe)
    models = open_models(ws, recipe, labels, planned)
    load_items(planned, recipe.limit)
    report = reports.create_report(ws, reports.new_report_id(ws, recipe.name, [t.key for t in planned], labels))
    record = _Recorder(report, emit)
    started = time.time()
    report.write_config(resolved_config(report.run_id, recipe, models, planned))
    report.write_status(status="running", started=started, pid=os.getpid())
    record({"event": "started", "id": report.run_id, "path": str(report.path), "models": labels,
            "tasks": [t.key for t in planned]})
    for task in planned:
        for reject in task.rejected:
            record({"event": "item_rejected", "task": task.key, **reject})
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label in labels}
    metrics: dict[str, dict[str, Any]] = {t.key: {} for t in planned}
    scored: dict[str, dict[str, int]] = {label: {} for label in labels}
    status, reason = "completed", ""
    options = run_options(recipe)
    cache = open_cache(ws)
    try:
        for model in models:
            record({"event": "model_loaded", "model": model.label, "ref": model.ref, "kind": model.kind,
                    "fingerprint": model.fingerprint})
            for task in planned:
                got, new = score_task(ws, model, task, cache, record, cancelled, recipe, chunk_items, options)
                samples[model.label][task.key] = got
                scored[model.label][task.key] = new
                values = task.evaluator.aggregate(got, task.config)
                metrics[task.key][model.label] = values
                report.write_samples(model.label, task.key, got)
                record({"event": "task_done", "model": model.label, "task": task.key,
                        "metrics": reports.plain_json(values), "scored": new, "cached": len(got) - new})
            model.close()  # its weights go; a pairwise metric that needs them loads them again
        pairwise = _pairwise(ws, recipe, models, planned, samples, cancelled, record, options)
    except EvalStopped:
        status, reason, pairwise = "stopped", "cancelled; what was scored is cached, a re-run continues", {}
    except KeyboardInterrupt:
        report.update_status(status="stopped", reason="interrupted; what was scored is cached", ended=time.time())
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        report.update_status(status="failed", reason=message, ended=time.time())
        record({"event": "error", "message": message})
        raise
    finally:
        cache.close()
    comparisons = _comparisons(labels, planned, samples, metrics)
    overlap = training_overlap(ws, models, [(t.key, t.evaluator, t.config) for t in planned], host,
                               emit=record) if status == "completed" else {}
    result = {"id": report.run_id, "status": status, "models": [{**m.describe(), "label": m.label} for m in models],
              "tasks": metrics, "comparisons": comparisons, "pairwise": pairwise, "overlap": overlap,
              "rejected": {t.key: t.rejected for t in planned if t.rejected}}
    report.write_metrics(result)
    report.update_status(status=status, reason=reason or None, ended=time.time(),
                         seconds=round(time.time() - started, 2))
    record({"event": "finished", "id": report.run_id, "status": status})
    return {**reports.plain_json(result), "path": str(report.path), "reason": reason, "scored": scored}


def _pairwise(ws, recipe, models, planned, samples, cancelled, record, options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = models[0]
    for model in models[1:]:
        for task in planned:
            if cancelled():
                raise EvalStopped("cancelled")
            ctx = EvalContext(model=model, config=task.config, emit=_chunk_emit(record, model.label, task.key, 0, 0, 0),
                              cancelled=cancelled, batch_size=recipe.batch_size, workspace=ws,
                              options=options, task=task.name)
            result = task.evaluator.pairwise(ctx, samples[base.label][task.key], samples[model.label][task.key],
                                             base, model)
            if result is not None:
                out.setdefault(task.key, {})[model.label] = result
                record({"event": "pairwise_done", "task": task.key, "base": base.label, "tuned": model.label})
    return out


def _comparisons(labels, planned, samples, metrics) -> list[dict[str, Any]]:
    out = []
    base = labels[0]
    for label in labels[1:]:
        for task in planned:
            if task.key not in samples[base] or task.key not in samples[label]:
                continue  # stopped before this pair was scored
            out += reports.compare_samples(task.key, base, label, samples[base][task.key], samples[label][task.key],
                                           metrics[task.key][base], metrics[task.key][label],
                                           task.evaluator.lower_is_better, task.evaluator.primary_metric)
    return out
