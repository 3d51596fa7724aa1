"""Known failure signs in a run's metrics, checked as each log line arrives.

Each rule fires once per run and metric, so a long run does not drown its log in repeats. The
watch is pure (no torch, no Textual): the run process emits its alerts as events and the Runs
screen can replay it over any run's history.
"""
from __future__ import annotations

import math
import statistics
from typing import Any

SPIKE_SIGMAS = 4.0
SPIKE_MIN_HISTORY = 5
COLLAPSE_LOSS = 1e-3
LOGP_FALL = 0.15  # relative fall of the chosen log-probs that counts as "falling"
TREND_WINDOW = 3

# Metric names the trl trainers log for rewards and KL.
REWARD_KEYS = ("reward", "rewards/margins", "rewards/mean", "margin")
KL_KEYS = ("kl", "objective/kl")


class AlertWatch:
    def __init__(self, kl_bound: float | None = None) -> None:
        # PPO's bound on objective/kl (config.kl_alert); rules for it: the `ppo-recipes` helper.
        self.kl_bound = kl_bound
        self.history: dict[str, list[float]] = {}
        self.fired: set[tuple[str, str]] = set()

    def feed(self, step: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        alerts = []
        for name, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            value = float(value)
            past = self.history.setdefault(name, [])
            alerts.extend(self._check(step, name, value, past))
            past.append(value)
        return alerts

    def _fire(self, rule: str, name: str, step: int, message: str) -> list[dict[str, Any]]:
        if (rule, name) in self.fired:
            return []
        self.fired.add((rule, name))
        return [{"rule": rule, "metric": name, "step": step, "message": message}]

    def _check(self, step: int, name: str, value: float, past: list[float]) -> list[dict[str, Any]]:
        if not math.isfinite(value):
            return self._fire("not_finite", name, step, f"{name} is {value} at step {step}: training diverged "
                              "(lower the learning rate or check the data)")
        out = []
        if name == "loss" and 0 <= value < COLLAPSE_LOSS and past and past[0] > 10 * COLLAPSE_LOSS:
            out += self._fire("loss_collapse", name, step, f"loss collapsed to {value:.2g} at step {step}: the "
                              "model may be memorising the data or the task is trivially separable")
        if name == "logps/chosen" and len(past) >= 2 * TREND_WINDOW:
            # Summed log-probs swing with answer length from batch to batch: compare averages.
            first = statistics.fmean(past[:TREND_WINDOW])
            recent = statistics.fmean(past[-(TREND_WINDOW - 1):] + [value])
            if recent < first - LOGP_FALL * abs(first):
                out += self._fire("chosen_logps_falling", name, step,
                                  f"chosen log-probs fell from {first:.2f} to {recent:.2f} (means of "
                                  f"{TREND_WINDOW} logs) by step {step}: the policy is pushing down both answers "
                                  "(likelihood displacement); consider a lower learning rate, a larger beta or "
                                  "an SFT term (rpo_alpha)")
        if (name in REWARD_KEYS or name in KL_KEYS) and len(past) >= SPIKE_MIN_HISTORY:
            # Rewards and KL drift steadily as training works; a spike is a jump between two logs
            # far larger than the jumps so far.
            jumps = [abs(b - a) for a, b in zip(past, past[1:])]
            typical = statistics.fmean(jumps)
            floor = max(1e-6, 0.05 * abs(statistics.fmean(past)))
            jump = value - past[-1]
            if abs(jump) > SPIKE_SIGMAS * max(typical, floor):
                what = "KL" if name in KL_KEYS else "reward"
                out += self._fire(f"{what.lower()}_spike", name, step,
                                  f"{what} spike: {name} jumped from {past[-1]:.3g} to {value:.3g} at step {step} "
                                  f"(typical jump {typical:.2g}); watch for reward hacking or a bad batch")
        return out


def replay(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts for a list of ``{"step", "values"}`` metric events (the Runs screen, old runs)."""
    watch = AlertWatch()
    alerts = []
    for event in history:
        alerts.extend(watch.feed(event.get("step", 0), event.get("values", {})))
    return alerts
