import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdpt.errors import MDPTError
from mdpt.evaluation import stats


# ----------------------------------------------------------------------------- hand computations
def test_iqm_of_one_to_eight_by_hand():
    # n = 8, int(0.25 * 8) = 2 cut each side: mean(3, 4, 5, 6) = 4.5
    assert stats.iqm(np.arange(1, 9)) == 4.5
    # order and layout do not matter: the values are pooled
    assert stats.iqm(np.array([[8, 1, 7, 2], [3, 6, 4, 5]])) == 4.5


def test_iqm_trims_like_scipy_with_uneven_counts():
    # n = 10: int(2.5) = 2 cut each side -> mean of sorted[2:8]
    x = np.array([10.0, 0, 1, 2, 3, 4, 5, 6, 7, 100])
    assert stats.iqm(x) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))
    # n = 3: nothing is cut
    assert stats.iqm([1.0, 2.0, 9.0]) == 4.0
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in range(1, 30):
        v = rng.standard_cauchy(n)
        assert stats.iqm(v) == pytest.approx(scipy_stats.trim_mean(v, 0.25))


def test_iqr_by_hand():
    # linear interpolation: q25 at position 0.25 * 7 = 1.75 -> 2.75; q75 at 5.25 -> 6.25
    assert stats.iqr(np.arange(1, 9)) == pytest.approx(3.5)
    assert stats.iqr([5.0, 5.0, 5.0]) == 0.0
    # q25 at 0.75 -> 0.75 * 10 = 7.5 ; q75 at 2.25 -> 20 + 0.25 * 10 = 22.5
    assert stats.iqr([0.0, 10.0, 20.0, 30.0]) == pytest.approx(15.0)


def test_summarize_hand_values():
    x = np.arange(1, 9, dtype=float).reshape(2, 4)  # 2 seeds x 4 episodes
    s = stats.summarize(x, n_boot=200)
    assert s["n"] == 8 and s["n_seeds"] == 2 and s["n_episodes"] == 4
    assert s["mean"] == 4.5 and s["median"] == 4.5 and s["iqm"] == 4.5
    assert s["iqr"] == pytest.approx(3.5)
    assert s["q25"] == pytest.approx(2.75) and s["q75"] == pytest.approx(6.25)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 9), ddof=1))
    assert s["seed_std"] == pytest.approx(np.std([2.5, 6.5], ddof=1))
    assert s["min"] == 1 and s["max"] == 8
    assert s["ci_method"] == "seeds" and s["ci_level"] == 0.95
    # seed bootstrap with 2 seeds: the mean can only be 2.5, 4.5 or 6.5
    assert s["mean_ci_low"] == pytest.approx(2.5) and s["mean_ci_high"] == pytest.approx(6.5)


def test_bootstrap_ci_of_constant_is_degenerate():
    x = np.full((4, 10), 37.5)
    for method in ("seeds", "episodes", "hierarchical"):
        for statistic in ("mean", "iqm", "median"):
            lo, hi = stats.bootstrap_ci(x, statistic, n_boot=300, resample=method)
            assert lo == hi == 37.5


def test_one_seed_auto_falls_back_to_episodes():
    x = np.arange(20.0)[None, :]
    s = stats.summarize(x, n_boot=500)
    assert s["ci_method"] == "episodes" and s["seed_std"] == 0.0
    assert s["mean_ci_low"] < s["mean"] < s["mean_ci_high"]
    # 1-D input means one seed
    assert stats.summarize(np.arange(20.0), n_boot=500) == s


def test_seed_bootstrap_keeps_rows_together():
    # within each seed all episodes are equal, so resampling episodes changes nothing
    x = np.repeat(np.array([[0.0], [10.0]]), 5, axis=1)
    lo, hi = stats.bootstrap_ci(x, "mean", n_boot=500, resample="episodes")
    assert lo == hi == 5.0
    lo, hi = stats.bootstrap_ci(x, "mean", n_boot=500, resample="seeds")
    assert (lo, hi) == (0.0, 10.0)
    reps = stats.bootstrap_distribution(x, "mean", n_boot=500, resample="seeds")
    assert set(np.unique(reps)) <= {0.0, 5.0, 10.0}


def test_bootstrap_is_deterministic_in_seed():
    x = np.random.default_rng(0).normal(size=(5, 7))
    a = stats.bootstrap_ci(x, "iqm", n_boot=400, seed=11)
    b = stats.bootstrap_ci(x, "iqm", n_boot=400, seed=11)
    c = stats.bootstrap_ci(x, "iqm", n_boot=400, seed=12)
    assert a == b and a != c
    assert stats.summarize(x, n_boot=300, seed=5) == stats.summarize(x, n_boot=300, seed=5)


def test_chunked_bootstrap_matches_small_problem_shape():
    x = np.random.default_rng(1).normal(size=(3, 4))
    reps = stats.bootstrap_distribution(x, "mean", n_boot=1234, seed=0)
    assert reps.shape == (1234,) and np.all(np.isfinite(reps))


def test_mean_ci_coverage_on_normal_samples():
    """Percentile bootstrap of the mean over 30 iid seeds covers the truth close to 95% of the time."""
    rng = np.random.default_rng(2024)
    covered = 0
    trials = 300
    for t in range(trials):
        x = rng.normal(loc=50.0, scale=10.0, size=(30, 4))
        lo, hi = stats.bootstrap_ci(x, "mean", n_boot=800, seed=t)
        covered += lo <= 50.0 <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_ci_narrows_with_more_data():
    rng = np.random.default_rng(7)
    small = rng.normal(size=(4, 5))
    large = rng.normal(size=(40, 50))
    w_small = np.diff(stats.bootstrap_ci(small, n_boot=1000))[0]
    w_large = np.diff(stats.bootstrap_ci(large, n_boot=1000))[0]
    assert w_large < w_small / 4


def test_stratified_bootstrap_over_cells():
    a = np.full((2, 3), 1.0)
    b = np.full((3, 5), 3.0)  # ragged strata are allowed
    s = stats.summarize([a, b], n_boot=200)
    assert s["n"] == 21 and s["n_seeds"] == 5 and s["n_episodes"] is None
    # each stratum is constant, so every pooled replicate is the same
    assert s["mean_ci_low"] == s["mean_ci_high"] == pytest.approx((6 * 1 + 15 * 3) / 21)


def test_relative_iqr_change():
    a = np.arange(1, 9, dtype=float)  # IQR 3.5
    b = a * 0.14  # IQR 0.49: 86% smaller
    assert stats.relative_iqr_change(a, b) == pytest.approx(-0.86)
    assert stats.relative_iqr_change(b, a) == pytest.approx(3.5 / 0.49 - 1)
    assert stats.relative_iqr_change([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert stats.relative_iqr_change([1.0, 1.0], [1.0, 3.0]) == math.inf
    assert stats.relative_change([1.0, 3.0], [1.0, 5.0], "std") == pytest.approx(1.0)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(MDPTError, match="NaN"):
        stats.summarize([[1.0, float("nan")]])
    with pytest.raises(MDPTError, match="empty"):
        stats.summarize(np.zeros((0, 3)))
    with pytest.raises(MDPTError, match="shape"):
        stats.summarize(np.zeros((2, 2, 2)))
    with pytest.raises(MDPTError, match="rectangular"):
        stats.summarize([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError):
        stats.bootstrap_ci([[1.0]], resample="runs")
    with pytest.raises(ValueError):
        stats.bootstrap_ci([[1.0]], "mode")


# ----------------------------------------------------------------------------- properties
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
score_arrays = st.tuples(st.integers(1, 5), st.integers(1, 8)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=finite)
)


@settings(max_examples=60, deadline=None)
@given(score_arrays)
def test_iqm_between_min_and_max_and_quartiles(x):
    m = stats.iqm(x)
    tol = 1e-9 * (1 + np.abs(x).max())
    assert x.min() - tol <= m <= x.max() + tol
    assert stats.iqr(x) >= 0


@settings(max_examples=60, deadline=None)
@given(score_arrays, st.randoms(use_true_random=False))
def test_iqm_and_iqr_invariant_to_permutation(x, rnd):
    flat = list(x.reshape(-1))
    rnd.shuffle(flat)
    y = np.array(flat).reshape(x.shape[::-1])
    assert stats.iqm(y) == pytest.approx(stats.iqm(x), rel=1e-12, abs=1e-9)
    assert stats.iqr(y) == pytest.approx(stats.iqr(x), rel=1e-12, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(score_arrays, st.floats(0.1, 10), st.floats(-100, 100))
def test_iqm_is_affine_equivariant(x, scale, shift):
    assert stats.iqm(scale * x + shift) == pytest.approx(scale * stats.iqm(x) + shift, rel=1e-9, abs=1e-6)
    assert stats.iqr(scale * x + shift) == pytest.approx(scale * stats.iqr(x), rel=1e-9, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(score_arrays, st.sampled_from(stats.RESAMPLE), st.sampled_from(["mean", "iqm", "median"]))
def test_ci_is_ordered_and_within_range(x, resample, statistic):
    lo, hi = stats.bootstrap_ci(x, statistic, n_boot=100, resample=resample)
    tol = 1e-9 * (1 + np.abs(x).max())
    assert x.min() - tol <= lo <= hi <= x.max() + tol


@settings(max_examples=30, deadline=None)
@given(score_arrays)
def test_summary_is_consistent(x):
    s = stats.summarize(x, n_boot=100)
    tol = 1e-9 * (1 + np.abs(x).max())
    assert s["min"] - tol <= s["q25"] <= s["median"] + tol <= s["q75"] + 2 * tol <= s["max"] + 3 * tol
    assert s["min"] - tol <= s["iqm"] <= s["max"] + tol
    assert s["n"] == x.size
