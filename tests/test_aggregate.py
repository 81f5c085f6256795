"""evaluation/aggregate.py: rliable's aggregates across tasks, reproducible, checked against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mdpt.errors import MDPTError
from mdpt.evaluation import aggregate as ag


def test_point_estimates_are_the_definitions_and_the_intervals_hold_them():
    x = np.random.default_rng(0).normal(60, 15, (9, 3))
    est = ag.interval_estimates({"m": x}, reps=300)["m"]
    assert est["iqm"][0] == pytest.approx(stats.trim_mean(x, 0.25, axis=None))
    assert est["mean"][0] == pytest.approx(x.mean()) and est["median"][0] == pytest.approx(np.median(x.mean(0)))
    assert est["optimality_gap"][0] == pytest.approx(np.mean(np.maximum(100 - x, 0)))
    assert all(lo <= e <= hi and lo < hi for e, lo, hi in est.values())


def test_the_same_inputs_and_seed_give_the_same_intervals():
    x = {"a": np.random.default_rng(1).normal(50, 10, (5, 2))}
    assert ag.interval_estimates(x, reps=200, seed=3) == ag.interval_estimates(x, reps=200, seed=3)
    assert ag.interval_estimates(x, reps=200, seed=3) != ag.interval_estimates(x, reps=200, seed=4)
    np.random.seed(7)
    before = np.random.random()
    np.random.seed(7)
    ag.interval_estimates(x, reps=50)
    assert np.random.random() == before  # the global generator, which rliable draws from, is given back


def test_probability_of_improvement():
    rng = np.random.default_rng(2)
    low, high = rng.normal(10, 1, (6, 2)), rng.normal(90, 1, (6, 2))
    assert ag.improvement(high, low, reps=200)[0] == 1.0 and ag.improvement(low, high, reps=200)[0] == 0.0
    assert ag.improvement(low, low.copy(), reps=200)[0] == 0.5
    p, lo, hi = ag.improvement(rng.normal(55, 10, (9, 3)), rng.normal(50, 10, (9, 3)), reps=300)
    assert lo <= p <= hi
    with pytest.raises(MDPTError, match="same tasks"):
        ag.improvement(low, rng.normal(0, 1, (6, 3)))


def test_profiles_fall_from_one_to_zero():
    x = np.random.default_rng(3).uniform(0, 100, (8, 3))
    prof = ag.profiles({"m": x}, [-1, 25, 50, 75, 101], reps=200)["m"]
    assert prof.shape == (3, 5) and prof[0, 0] == 1.0 and prof[0, -1] == 0.0
    assert np.all(np.diff(prof[0]) <= 0) and np.all(prof[1] <= prof[0]) and np.all(prof[0] <= prof[2])


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 3)), np.array([[1.0, np.nan]])])
def test_scores_that_are_not_a_finite_matrix_are_one_line(bad):
    with pytest.raises(MDPTError, match="scores"):
        ag.interval_estimates({"m": bad})


def test_the_iqm_interval_covers_the_truth_about_as_often_as_it_says():
    """Normal scores (the IQM of a symmetric distribution is its mean), 10 runs x 3 tasks: rliable's stratified
    percentile interval covers the true value in about 95% of draws (slightly fewer: percentile intervals of
    small samples are a little narrow)."""
    rng = np.random.default_rng(4)
    reps, hits = 120, 0
    for _ in range(reps):
        lo, hi = ag.interval_estimates({"m": rng.normal(50, 10, (10, 3))}, reps=400,
                                       seed=int(rng.integers(1 << 30)))["m"]["iqm"][1:]
        hits += lo <= 50 <= hi
    assert 0.85 <= hits / reps <= 0.99
