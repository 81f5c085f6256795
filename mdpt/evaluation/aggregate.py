"""Scores aggregated across tasks the way rliable reports them (Agarwal et al., "Deep RL at the Edge of
the Statistical Precipice", 2021), through the `rliable` package itself: the interquartile mean of all
runs x tasks, the mean and the median of the per-task means, and the optimality gap of a (runs, tasks)
score matrix with stratified-bootstrap intervals (runs
resampled within each task), the probability that one method improves on another (Mann-Whitney's
P(X > Y) averaged over tasks), and score distributions (performance profiles: the share of runs x tasks
above each threshold).

Pure functions over arrays. Every bootstrap takes a fixed random state, so the same inputs give the same
intervals (rliable's `create_performance_profile` takes none: profiles here call its
`get_interval_estimates` with one). Intervals are rliable's percentile intervals of `reps` stratified
resamples; with a handful of runs per task they are as narrow as the runs allow, which is why the
verdicts rest on the permutation tests of `inference.py`, not on these.
"""

from __future__ import annotations

import warnings

import numpy as np

from mdpt.errors import MDPTError

METRICS = ("iqm", "mean", "median", "optimality_gap")
REPS = 2000  # rliable's default for profiles; its 50,000 for point metrics change the bounds by < 0.1 points here
CONFIDENCE = 0.95


def _matrix(scores, name: str) -> np.ndarray:
    x = np.asarray(scores, np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise MDPTError(f"{name}: scores must be a (runs, tasks) matrix; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise MDPTError(f"{name}: scores contain NaN or infinite values")
    return x


def _estimates(score_dict: dict, func, reps: int, seed: int) -> tuple[dict, dict]:
    from rliable import library

    # rliable's StratifiedBootstrap draws its runs from numpy's global generator whatever random_state says
    # (library.py, update_indices): seeded here and given back as it was, so that the intervals are reproducible
    # and a caller's global state is untouched
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch's notice that RandomState gives way to Generator
            warnings.simplefilter("ignore", FutureWarning)
            return library.get_interval_estimates(score_dict, func, reps=reps, confidence_interval_size=CONFIDENCE,
                                                  random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)


def interval_estimates(scores: dict[str, np.ndarray], reps: int = REPS, seed: int = 0,
                       gamma: float = 100.0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """method -> metric -> (estimate, low, high) for each (runs, tasks) matrix; `gamma`: the optimality gap's
    target (100: a normalized expert)."""
    from rliable import metrics

    def func(x):
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_optimality_gap(x, gamma)])

    checked = {k: _matrix(v, k) for k, v in scores.items()}
    point, interval = _estimates(checked, func, reps, seed)
    return {k: {m: (float(point[k][i]), float(interval[k][0][i]), float(interval[k][1][i]))
                for i, m in enumerate(METRICS)} for k in checked}


def improvement(x, y, reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), low, high): the probability that a run of method X scores above a run of Y on the same task,
    averaged over tasks, with its stratified-bootstrap interval (X and Y resampled independently)."""
    from rliable import metrics

    a, b = _matrix(x, "X"), _matrix(y, "Y")
    if a.shape[1] != b.shape[1]:
        raise MDPTError(f"X and Y must cover the same tasks; got {a.shape[1]} and {b.shape[1]}")
    point, interval = _estimates({"p": [a, b]}, metrics.probability_of_improvement, reps, seed)
    low, high = np.ravel(interval["p"])
    return float(point["p"]), float(low), float(high)


def profiles(scores: dict[str, np.ndarray], taus, reps: int = REPS, seed: int = 0) -> dict[str, np.ndarray]:
    """method -> (3, len(taus)): the share of runs x tasks scoring above each tau, and its interval's bounds."""
    from rliable import library

    taus = np.asarray(taus, np.float64)
    checked = {k: _matrix(v, k) for k, v in scores.items()}
    point, interval = _estimates(checked, lambda x: library.score_distributions(x, taus), reps, seed)
    return {k: np.vstack([point[k], interval[k][0], interval[k][1]]) for k in checked}
