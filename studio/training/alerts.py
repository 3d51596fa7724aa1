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

# PPO (studio_train_ppo) metric names and the bounds its rules use.
PPO_KL = "objective/kl"
PPO_RATIO = "val/ratio"
PPO_VALUE_LOSS = "loss/value"
PPO_LENGTH = "val/response_length"
PPO_SCORE = "objective/scores"
RATIO_BAND = (0.8, 1.25)  # the mean new/old probability ratio of an update stays near 1 when steps are small
RATIO_PATIENCE = 3  # consecutive logs outside the band (one odd batch is not drift)
VALUE_RISE = 10.0  # the value loss this many times its lowest (smoothed) level, for TREND_WINDOW logs
LENGTH_RISE = 1.5  # responses this many times longer than at the start ...
LENGTH_MIN_TOKENS = 2.0  # ... and at least this many tokens longer
SCORE_FLAT = 0.25  # ... while the score gained less than this share of its range so far


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
        if PPO_LENGTH in metrics:
            alerts.extend(self._length_without_reward(step))
        return alerts

    def _fire(self, rule: str, name: str, step: int, message: str) -> list[dict[str, Any]]:
        if (rule, name) in self.fired:
            return []
        self.fired.add((rule, name))
        return [{"rule": rule, "metric": name, "step": step, "message": message}]

    def _check(self, step: int, name: str, value: float, past: list[float]) -> list[dict[str, Any]]:
        if not math.isfinite(value) and name == PPO_VALUE_LOSS:
            return self._fire("value_loss_diverging", name, step, f"{name} is {value} at step {step}: the value "
                              "model diverged; lower the learning rate or config.vf_coef, or turn on "
                              "config.normalize_reward / reward_clip")
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
        return out + self._ppo(step, name, value, past)

    def _ppo(self, step: int, name: str, value: float, past: list[float]) -> list[dict[str, Any]]:
        """The PPO back-end's rules (its metric names; the KL bound is config.kl_alert)."""
        out = []
        if name == PPO_KL and self.kl_bound is not None and value > self.kl_bound:
            out += self._fire("kl_bound", name, step,
                              f"{name} = {value:.3g} at step {step}, past the bound {self.kl_bound:g} "
                              "(config.kl_alert): the policy is running away from the reference; raise "
                              "config.kl_coef (or turn on adaptive_kl) or lower the learning rate")
        if name == PPO_RATIO and len(past) >= RATIO_PATIENCE - 1:
            recent = past[len(past) - (RATIO_PATIENCE - 1):] + [value]
            low, high = RATIO_BAND
            if all(not low <= r <= high for r in recent):
                out += self._fire("ratio_drift", name, step,
                                  f"{name} stayed outside [{low:g}, {high:g}] for {RATIO_PATIENCE} logs (now "
                                  f"{value:.3g} at step {step}): the updates move the policy too far from the one "
                                  "that sampled; lower the learning rate, num_ppo_epochs or cliprange, or use "
                                  "more mini-batches")
        if name == PPO_VALUE_LOSS and len(past) >= 2 * TREND_WINDOW - 1:
            out += self._value_rise(step, name, value, past)
        return out

    def _value_rise(self, step: int, name: str, value: float, past: list[float]) -> list[dict[str, Any]]:
        """The value loss is diverging: each of the last TREND_WINDOW logs is VALUE_RISE times
        the lowest mean of TREND_WINDOW consecutive logs before them (a lone spike is not enough)."""
        recent = past[len(past) - (TREND_WINDOW - 1):] + [value]
        before = past[:len(past) - (TREND_WINDOW - 1)]
        lowest = min(statistics.fmean(before[i:i + TREND_WINDOW]) for i in range(len(before) - TREND_WINDOW + 1))
        if lowest <= 0 or not all(v > VALUE_RISE * lowest for v in recent):
            return []
        return self._fire("value_loss_diverging", name, step,
                          f"{name} rose from {lowest:.3g} to {value:.3g} by step {step} and stays there: the "
                          "value model is diverging; lower the learning rate or config.vf_coef / "
                          "cliprange_value, or turn on config.normalize_reward / reward_clip")

    def _length_without_reward(self, step: int) -> list[dict[str, Any]]:
        """Responses grow while the score does not: the policy found length, not the reward."""
        lengths = self.history.get(PPO_LENGTH, [])
        scores = [s for s in self.history.get(PPO_SCORE, []) if math.isfinite(s)]
        if len(lengths) < 2 * TREND_WINDOW or len(scores) < 2 * TREND_WINDOW:
            return []
        first_len, last_len = statistics.fmean(lengths[:TREND_WINDOW]), statistics.fmean(lengths[-TREND_WINDOW:])
        first_score = statistics.fmean(scores[:TREND_WINDOW])
        last_score = statistics.fmean(scores[-TREND_WINDOW:])
        longer = last_len >= LENGTH_RISE * first_len and last_len - first_len >= LENGTH_MIN_TOKENS
        flat = last_score - first_score <= SCORE_FLAT * (max(scores) - min(scores))
        if not (longer and flat):
            return []
        return self._fire("length_without_reward", PPO_LENGTH, step,
                          f"responses grew from {first_len:.3g} to {last_len:.3g} tokens by step {step} while "
                          f"{PPO_SCORE} went {first_score:.3g} -> {last_score:.3g}: the policy is learning length, "
                          "not the reward; check the reward for a length bias, raise config.missing_eos_penalty "
                          "or lower response_length")


def replay(history: list[dict[str, Any]], kl_bound: float | None = None) -> list[dict[str, Any]]:
    """Alerts for a list of ``{"step", "values"}`` metric events (the Runs screen, old runs)."""
    watch = AlertWatch(kl_bound=kl_bound)
    alerts = []
    for event in history:
        alerts.extend(watch.feed(event.get("step", 0), event.get("values", {})))
    return alerts
