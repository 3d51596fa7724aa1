"""Per-item metrics from the summed log-probabilities of the choices, as lm-eval 0.4.13 computes them.

* ``acc``: 1 when the choice with the highest log-probability is the right one (the first one wins
  a tie, like ``numpy.argmax``);
* ``acc_norm``: the same after dividing each log-probability by the choice's length in characters
  (the choice itself, without the leading space);
* TruthfulQA MC2: the probability mass on the true answers, after normalising the choices'
  probabilities to sum to one. The studio shifts by the largest log-probability before
  exponentiating (the same number, but it cannot underflow to 0/0 where lm-eval would give NaN).
"""
from __future__ import annotations

import math
from typing import Sequence


def argmax(values: Sequence[float]) -> int:
    best = 0
    for i, value in enumerate(values):
        if value != value:  # NaN wins, as in numpy
            return i
        if value > values[best]:
            best = i
    return best


def per_char(logprob: float, choice: str) -> float:
    if choice:
        return logprob / len(choice)
    return -math.inf if logprob < 0 else (math.inf if logprob > 0 else math.nan)


def choice_metrics(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> tuple[int, dict[str, float]]:
    """(prediction, {"acc", "acc_norm"})."""
    pred = argmax(logprobs)
    pred_norm = argmax([per_char(lp, c) for lp, c in zip(logprobs, choices)])
    return pred, {"acc": float(pred == gold), "acc_norm": float(pred_norm == gold)}


def true_mass(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """TruthfulQA MC2: the normalised probability of the choices labelled 1."""
    top = max(logprobs)
    if top == -math.inf:
        return math.nan
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return sum(w for w, label in zip(weights, labels) if label == 1) / total
