"""Two training runs side by side: what differs in their recipes and how their metrics compare.

Pure (no Textual, no torch): the Runs screen and ``studio runs compare A B`` both call
:func:`compare_runs` with two :class:`~studio.training.runs.TrainRun` objects (anything with
``run_id``, ``recipe()``, ``metrics()``, ``metric_history()`` and ``status()`` will do).

* ``config_diff``: the keys whose values differ between the two resolved recipes, each recipe
  flattened to dotted keys (``training.learning_rate``, ``config.beta``, ``expect[0].metric``).
* ``metrics``: every numeric metric of either run: the last logged value of each metric,
  overridden by the run's final metrics (``metrics.json`` "final") where it has them, with
  ``delta = b - a`` when both are numbers.
* ``checks``: the learning checks of both runs by metric (passed True/False, None when a run
  has no such check or has not finished).
"""
from __future__ import annotations

import math
from typing import Any

# Metrics listed first (the ones people compare runs on), then the rest alphabetically.
KEY_METRICS = ("loss", "eval_loss", "train_loss", "rewards/margins", "rewards/accuracies", "reward", "kl",
               "eval_rewards/margins", "eval_rewards/accuracies", "eval_accuracy")
MISSING = None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}``; a list of mappings (the learning checks) by
    index (``expect[0].metric``); other lists and scalars are leaves. Empty mappings vanish."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and any(isinstance(item, dict) for item in data):
        for index, item in enumerate(data):
            out.update(flatten(item, f"{prefix}[{index}]"))
    else:
        out[prefix] = data
    return out


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The dotted keys whose values differ (a key only one side has shows None on the other)."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    return [{"key": key, "a": flat_a.get(key, MISSING), "b": flat_b.get(key, MISSING)}
            for key in keys if flat_a.get(key, MISSING) != flat_b.get(key, MISSING)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def last_logged(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of every metric in a run's metrics/eval events (a later step wins)."""
    out: dict[str, Any] = {}
    steps: dict[str, int] = {}
    for event in history:
        step = int(event.get("step") or 0)
        for name, value in (event.get("values") or {}).items():
            if name == "epoch":
                continue
            if step >= steps.get(name, -1):
                out[name], steps[name] = value, step
    return out


def final_metrics(run) -> dict[str, Any]:
    """Last logged values, overridden by ``metrics.json`` "final" where the run has it."""
    values = last_logged(run.metric_history())
    final = (run.metrics() or {}).get("final") or {}
    values.update({k: v for k, v in final.items() if k != "epoch"})
    return values


def _metric_order(names: set[str]) -> list[str]:
    first = [n for n in KEY_METRICS if n in names]
    return first + sorted(n for n in names if n not in KEY_METRICS)


def metrics_side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in _metric_order(set(a) | set(b)):
        va, vb = a.get(name), b.get(name)
        na, nb = _number(va), _number(vb)
        if any(v is not None and n is None and not isinstance(v, str) for v, n in ((va, na), (vb, nb))):
            continue  # not a metric (a flag or a nested value)
        delta = nb - na if na is not None and nb is not None and math.isfinite(na) and math.isfinite(nb) else None
        rows.append({"name": name, "a": va, "b": vb, "delta": delta})
    return rows


def checks_side_by_side(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_a = {c.get("metric"): c for c in a or []}
    by_b = {c.get("metric"): c for c in b or []}
    rows = []
    for metric in list(by_a) + [m for m in by_b if m not in by_a]:
        ca, cb = by_a.get(metric), by_b.get(metric)
        rows.append({"metric": metric,
                     "a": None if ca is None else bool(ca.get("passed")),
                     "b": None if cb is None else bool(cb.get("passed")),
                     "a_details": list((ca or {}).get("details") or []),
                     "b_details": list((cb or {}).get("details") or [])})
    return rows


def compare_runs(run_a, run_b) -> dict[str, Any]:
    """``{"a", "b", "status", "config_diff", "metrics", "checks"}`` for two runs.

    Raises ValueError when a run's recipe cannot be read."""
    recipe_a = run_a.recipe().model_dump(mode="json")
    recipe_b = run_b.recipe().model_dump(mode="json")
    summary_a, summary_b = run_a.metrics() or {}, run_b.metrics() or {}
    return {
        "a": run_a.run_id,
        "b": run_b.run_id,
        "status": {"a": run_a.status().get("status"), "b": run_b.status().get("status")},
        "config_diff": config_diff(recipe_a, recipe_b),
        "metrics": metrics_side_by_side(final_metrics(run_a), final_metrics(run_b)),
        "checks": checks_side_by_side(summary_a.get("checks") or [], summary_b.get("checks") or []),
    }
