"""Aggregates and paired tests of the evaluation, checked against hand-computed values."""
import math
import random

import pytest

from studio.evaluation.stats import (
    mcnemar, mean_with_stderr, paired_bootstrap, paired_test, pass_at_k, pooled_stderr, weighted_group,
)


def test_mean_stderr_uses_the_sample_deviation():
    out = mean_with_stderr([1, 0, 1, 1])
    assert out["value"] == 0.75 and out["n"] == 4
    # sample variance: ((.25^2)*3 + .75^2) / 3 = 0.25  ->  stderr = 0.5 / 2
    assert out["stderr"] == pytest.approx(0.25)


def test_one_item_has_no_stderr():
    assert math.isnan(mean_with_stderr([1.0])["stderr"])


def test_pooled_stderr_matches_the_stderr_of_the_concatenated_items():
    rng = random.Random(3)
    parts = [[float(rng.random() < p) for _ in range(n)] for p, n in ((0.3, 40), (0.7, 25), (0.5, 60))]
    stats = [mean_with_stderr(p) for p in parts]
    group = weighted_group(stats)
    flat = mean_with_stderr([v for p in parts for v in p])
    assert group["value"] == pytest.approx(flat["value"])
    assert group["n"] == 125
    # lm-eval's pooled formula approximates the concatenated stderr (it ignores the between-group term)
    assert group["stderr"] == pytest.approx(flat["stderr"], rel=0.1)
    assert pooled_stderr([s["stderr"] for s in stats], [40, 25, 60]) == group["stderr"]


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(4, 1, 4) == 1.0


def test_mcnemar_counts_flips_and_gives_an_exact_p_value():
    base = [0] * 10 + [1] * 5
    tuned = [1] * 10 + [1] * 5
    out = mcnemar(base, tuned)
    assert (out["gained"], out["lost"]) == (10, 0)
    assert out["p_value"] == pytest.approx(2 / 2 ** 10)
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    assert mcnemar([0, 1, 0, 1], [1, 0, 1, 0])["p_value"] == pytest.approx(1.0)


def test_paired_bootstrap_sees_a_consistent_shift_and_not_noise():
    rng = random.Random(0)
    base = [rng.gauss(2.0, 0.2) for _ in range(40)]
    shifted = [b - 0.3 + rng.gauss(0, 0.05) for b in base]
    assert paired_bootstrap(base, shifted)["p_value"] < 0.01
    assert paired_bootstrap(base, list(base))["p_value"] == 1.0


def test_paired_test_picks_mcnemar_for_binary_metrics():
    assert paired_test([0, 1, 1], [1, 1, 1])["test"] == "mcnemar"
    assert paired_test([0.2, 1.5], [0.1, 1.0])["test"] == "paired_bootstrap"
