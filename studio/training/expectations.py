"""A recipe's learning checks (``expect:``), evaluated over the run's logged metrics.

Series are read from the events log with one value per step (a resumed run logs the steps
between its last checkpoint and the kill twice; the later value wins). ``falls_by``/``rises_by``
compare the mean of the first and last fifth of the series, so one noisy log line decides nothing.
"""
from __future__ import annotations

from statistics import fmean
from typing import Any

from studio.recipes.train import Expectation


def series(history: list[dict[str, Any]], metric: str) -> list[float]:
    by_step: dict[int, float] = {}
    for event in history:
        value = event.get("values", {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            by_step[int(event.get("step", 0))] = float(value)
    return [by_step[s] for s in sorted(by_step)]


def ends(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 5)
    return fmean(values[:k]), fmean(values[-k:])


def check(expectation: Expectation, history: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    name = expectation.metric
    values = series(history, name)
    result: dict[str, Any] = {"metric": name, "passed": True, "details": []}

    def fail(text: str) -> None:
        result["passed"] = False
        result["details"].append(text)

    if expectation.falls_by is not None or expectation.rises_by is not None:
        if len(values) < 2:
            fail(f"{name}: logged {len(values)} time(s); a trend needs two or more")
        else:
            first, last = ends(values)
            result.update(first=first, last=last)
            if expectation.falls_by is not None and not last <= first * (1 - expectation.falls_by):
                fail(f"{name} went {first:.4g} -> {last:.4g}; expected a fall of {expectation.falls_by:.0%}")
            if expectation.rises_by is not None and not last >= first + expectation.rises_by:
                fail(f"{name} went {first:.4g} -> {last:.4g}; expected a rise of {expectation.rises_by:g}")
    if expectation.above is not None or expectation.below is not None:
        value = final.get(name, values[-1] if values else None)
        result["value"] = value
        if not isinstance(value, (int, float)):
            fail(f"{name}: no final value")
        else:
            if expectation.above is not None and not value > expectation.above:
                fail(f"{name} = {value:.4g}; expected above {expectation.above:g}")
            if expectation.below is not None and not value < expectation.below:
                fail(f"{name} = {value:.4g}; expected below {expectation.below:g}")
    return result


def check_all(expectations: list[Expectation], history: list[dict[str, Any]], final: dict[str, Any]) -> list[dict[str, Any]]:
    return [check(e, history, final) for e in expectations]
