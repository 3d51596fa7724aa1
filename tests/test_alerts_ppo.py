"""The PPO alert rules on hand-made metric series: each fires on its failure sign, once per rule
and metric, with a message that says what to do, and stays quiet on a healthy run."""
from __future__ import annotations

import math

from studio.training.alerts import AlertWatch, replay


def feed_series(watch: AlertWatch, rows: list[dict[str, float]]) -> list[dict]:
    alerts = []
    for step, values in enumerate(rows, start=1):
        alerts += watch.feed(step, values)
    return alerts


def rules(alerts: list[dict]) -> list[str]:
    return [a["rule"] for a in alerts]


def healthy(step: int) -> dict[str, float]:
    """A PPO run that learns: score up, KL small, ratio near 1, value loss falling, length steady."""
    return {"objective/scores": -1.0 + 0.1 * step, "objective/kl": 0.05 * step, "val/ratio": 1.0 + 0.01 * (-1) ** step,
            "loss/value": 2.0 / step, "val/response_length": 10.0 + (step % 2)}


def test_a_healthy_ppo_run_raises_no_alert():
    watch = AlertWatch(kl_bound=10.0)
    assert feed_series(watch, [healthy(s) for s in range(1, 21)]) == []


def test_kl_past_the_bound_fires_once_and_says_what_to_do():
    watch = AlertWatch(kl_bound=2.0)
    rows = [{"objective/kl": v} for v in (0.5, 1.0, 1.5, 2.5, 3.0, 4.0)]
    alerts = feed_series(watch, rows)
    assert rules(alerts) == ["kl_bound"]
    assert alerts[0]["step"] == 4 and alerts[0]["metric"] == "objective/kl"
    assert "kl_coef" in alerts[0]["message"]
    # Without a bound (a trl back-end's run) the same series raises nothing of the kind.
    assert "kl_bound" not in rules(feed_series(AlertWatch(), rows))


def test_the_ratio_drifting_from_one_fires_after_a_few_logs_not_one():
    watch = AlertWatch()
    one_odd = [{"val/ratio": v} for v in (1.0, 1.4, 1.0, 0.7, 1.01, 1.3, 0.99)]
    assert feed_series(watch, one_odd) == []
    alerts = feed_series(watch, [{"val/ratio": v} for v in (1.3, 1.4, 1.5, 1.6, 0.5)])
    assert rules(alerts) == ["ratio_drift"]
    assert alerts[0]["step"] == 3  # the third log outside the band in a row
    assert "learning rate" in alerts[0]["message"]


def test_a_sustained_value_loss_rise_fires_but_a_lone_spike_does_not():
    spike = [1.0, 0.8, 0.6, 0.5, 40.0, 0.45, 0.4, 0.4]
    assert feed_series(AlertWatch(), [{"loss/value": v} for v in spike]) == []
    rising = [1.0, 0.8, 0.6, 0.5, 0.5, 8.0, 9.0, 12.0, 30.0]
    alerts = feed_series(AlertWatch(), [{"loss/value": v} for v in rising])
    assert rules(alerts) == ["value_loss_diverging"]
    assert alerts[0]["step"] == 8  # three logs above ten times the lowest level
    assert "vf_coef" in alerts[0]["message"]


def test_a_value_loss_that_is_not_finite_is_a_value_divergence():
    alerts = feed_series(AlertWatch(), [{"loss/value": 0.5}, {"loss/value": math.inf}, {"loss/value": math.nan}])
    assert rules(alerts) == ["value_loss_diverging"]
    assert "vf_coef" in alerts[0]["message"]


def test_length_climbing_while_the_score_stays_flat_fires():
    flat = [{"objective/scores": 0.5 + 0.05 * (-1) ** s, "val/response_length": 8.0 + 2 * s} for s in range(10)]
    alerts = feed_series(AlertWatch(), flat)
    assert rules(alerts) == ["length_without_reward"]
    assert alerts[0]["metric"] == "val/response_length"
    assert "length" in alerts[0]["message"] and "reward" in alerts[0]["message"]


def test_length_climbing_with_the_score_is_learning_not_an_alert():
    rising = [{"objective/scores": 0.1 * s, "val/response_length": 8.0 + 2 * s} for s in range(10)]
    assert feed_series(AlertWatch(), rising) == []


def test_replay_takes_the_kl_bound():
    history = [{"step": s, "values": {"objective/kl": 0.5 * s}} for s in range(1, 8)]
    assert "kl_bound" in rules(replay(history, kl_bound=2.0))
    assert "kl_bound" not in rules(replay(history))
