"""Aggregates and tests, with standard errors computed the way lm-evaluation-harness 0.4.x reports them.

* ``mean_with_stderr``: lm-eval's ``mean_stderr`` is the sample standard deviation (n - 1) over sqrt(n).
* ``pooled_stderr``: lm-eval's group standard error (``pooled_sample_stderr``), which pools the
  subtasks' variances with weights n_i - 1 (MMLU's groups, weighted by subject size).
* ``pass_at_k``: the unbiased estimator of Chen et al. (2021), 1 - C(n - c, k) / C(n, k).
* ``mcnemar`` (binary per-item metrics) and ``paired_bootstrap`` (any per-item metric) for base
  against tuned on the same items.
"""
from __future__ import annotations

import math
import random
from typing import Sequence


def sample_stddev(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1))


def mean_with_stderr(values: Sequence[float]) -> dict:
    n = len(values)
    value = sum(values) / n if n else float("nan")
    stderr = sample_stddev(values) / math.sqrt(n) if n > 1 else float("nan")
    return {"value": value, "stderr": stderr, "n": n}


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's pooled standard error of a size-weighted group mean (``pooled_sample_stderr``)."""
    total = sum(sizes)
    if total - len(sizes) <= 0:
        return float("nan")
    pooled_var = sum((n - 1) * (se ** 2) * n for n, se in zip(sizes, stderrs)) / (total - len(sizes))
    return math.sqrt(pooled_var / total)


def weighted_group(parts: Sequence[dict]) -> dict:
    """A group's score: subtask means weighted by their item counts, with the pooled stderr."""
    sizes = [p["n"] for p in parts]
    total = sum(sizes)
    value = sum(p["value"] * p["n"] for p in parts) / total if total else float("nan")
    return {"value": value, "stderr": pooled_stderr([p["stderr"] for p in parts], sizes), "n": total}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn from n (c of them correct) passes."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mcnemar(base: Sequence[float], tuned: Sequence[float]) -> dict:
    """Exact two-sided McNemar test on paired 0/1 outcomes: counts of items that flipped each way."""
    gained = sum(1 for a, b in zip(base, tuned) if a < 0.5 <= b)
    lost = sum(1 for a, b in zip(base, tuned) if b < 0.5 <= a)
    n = gained + lost
    if n == 0:
        p = 1.0
    else:
        k = min(gained, lost)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        p = min(1.0, 2 * tail)
    return {"test": "mcnemar", "gained": gained, "lost": lost, "p_value": p}


def paired_bootstrap(base: Sequence[float], tuned: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Two-sided paired bootstrap on the mean difference (tuned - base), with a 95% interval."""
    diffs = [b - a for a, b in zip(base, tuned)]
    n = len(diffs)
    if n == 0:
        return {"test": "paired_bootstrap", "p_value": 1.0, "ci95": [0.0, 0.0]}
    rng = random.Random(seed)
    mean = sum(diffs) / n
    means = []
    for _ in range(resamples):
        means.append(sum(diffs[rng.randrange(n)] for _ in range(n)) / n)
    means.sort()
    below = sum(1 for m in means if m <= 0) / resamples
    above = sum(1 for m in means if m >= 0) / resamples
    p = min(1.0, 2 * min(below, above)) if mean != 0 else 1.0
    return {"test": "paired_bootstrap", "p_value": p,
            "ci95": [means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]]}


def paired_test(base: Sequence[float], tuned: Sequence[float]) -> dict:
    """McNemar for 0/1 metrics, the paired bootstrap for anything else."""
    binary = all(v in (0, 1, 0.0, 1.0) for v in list(base) + list(tuned))
    return mcnemar(base, tuned) if binary else paired_bootstrap(base, tuned)
