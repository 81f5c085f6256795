"""Statistics of evaluation scores across training seeds and evaluation episodes.

Scores come as an array of shape ``(seeds, episodes)``: row ``s`` holds the per-episode
normalized scores of the policy trained with seed ``s``. Point estimates pool all ``seeds x
episodes`` values (as rliable pools runs x tasks):

- ``iqm``: interquartile mean, the mean of the middle 50% after sorting, trimming
  ``int(0.25 * n)`` values from each end (``scipy.stats.trim_mean(x, 0.25)``, as in rliable).
- ``iqr``: ``percentile(75) - percentile(25)`` with linear interpolation (numpy's default).

The intervals of `summarize` (the run reports of `mdpt report`) are percentile-bootstrap
intervals; the reproduction's comparisons use t intervals over seeds (`mean_ci`, `diff_ci`) and
the tests of `inference.py`, because a percentile bootstrap of a few seed means is their range
(it covers the mean ~76% of the time with 3 seeds). A bootstrap sample is drawn per
*stratum* (one ``(seeds, episodes)`` array; several strata, e.g. the cells of a transfer
matrix, are resampled independently and pooled, as in rliable's ``StratifiedBootstrap`` where
the strata are tasks). Within a stratum, ``resample`` says what is drawn with replacement:

- ``"seeds"`` (the default whenever a stratum has >= 2 seeds, via ``"auto"``): whole rows, i.e.
  training runs, keeping each run's episodes together. This is the cluster bootstrap: training
  seeds are the independent units, and a run's episode noise is already part of the spread of
  its row, so it is not counted twice. With few seeds the interval is too narrow (it is close
  to the range of the seeds' values), so these intervals describe runs and decide nothing.
- ``"episodes"``: episodes within each seed (the seed structure is kept, seeds are not
  resampled). This ignores seed-to-seed variation and gives narrower intervals; ``"auto"``
  uses it only for a stratum with a single seed, where nothing else can be resampled.
- ``"hierarchical"``: seeds, then episodes within each drawn seed (conservative: counts the
  episode noise twice).

Every random draw comes from ``numpy.random.default_rng(seed)``: the same inputs and seed give
the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from mdpt.errors import MDPTError
from mdpt.evaluation import inference
from mdpt.evaluation.inference import seed_means

RESAMPLE = ("auto", "seeds", "episodes", "hierarchical")
STATISTICS = ("mean", "median", "iqm", "iqr", "std")
DEFAULT_BOOT = 5000
DEFAULT_CONFIDENCE = 0.95

Statistic = str | Callable[[np.ndarray], np.ndarray]


def _as_scores(scores, what: str = "scores") -> np.ndarray:
    """Validate and return a float64 array of shape (seeds, episodes); 1-D means one seed."""
    try:
        x = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise MDPTError(f"{what} must be a rectangular array of numbers (seeds x episodes)") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise MDPTError(f"{what} must have shape (seeds, episodes); got shape {x.shape}")
    if x.size == 0:
        raise MDPTError(f"{what} is empty; there is nothing to summarize")
    if not np.all(np.isfinite(x)):
        raise MDPTError(f"{what} contains NaN or infinite values; check the evaluation that produced them")
    return x


# ----------------------------------------------------------------------------- point statistics
# Each takes an array and reduces over the last axis (batched use in the bootstrap) or over all
# values (axis=None, the default for user calls).


def _flat(x, axis):
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return x.reshape(-1)
    return np.moveaxis(x, axis, -1)


def trimmed_mean(x, proportion: float = 0.25, axis: int | None = None) -> np.ndarray | float:
    """Mean after cutting ``int(proportion * n)`` sorted values from each end (scipy's trim_mean)."""
    if not 0 <= proportion < 0.5:
        raise ValueError("proportion must be in [0, 0.5)")
    v = np.sort(_flat(x, axis), axis=-1)
    n = v.shape[-1]
    if n == 0:
        raise ValueError("trimmed mean of an empty array")
    cut = int(proportion * n)
    out = v[..., cut : n - cut].mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def iqm(x, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of the values (25% trimmed each side)."""
    return trimmed_mean(x, 0.25, axis)


def iqr(x, axis: int | None = None) -> np.ndarray | float:
    """Interquartile range ``percentile(x, 75) - percentile(x, 25)`` (linear interpolation)."""
    v = _flat(x, axis)
    q25, q75 = np.percentile(v, [25.0, 75.0], axis=-1)
    out = q75 - q25
    return float(out) if np.ndim(out) == 0 else out


def _stat_fn(statistic: Statistic) -> Callable[[np.ndarray], np.ndarray]:
    """A function reducing a (B, n) array over its last axis to (B,)."""
    if callable(statistic):
        return statistic
    table = {
        "mean": lambda v: v.mean(axis=-1),
        "median": lambda v: np.median(v, axis=-1),
        "iqm": lambda v: iqm(v, axis=-1),
        "iqr": lambda v: iqr(v, axis=-1),
        "std": lambda v: v.std(axis=-1, ddof=1) if v.shape[-1] > 1 else np.zeros(v.shape[:-1]),
    }
    if statistic not in table:
        raise ValueError(f"unknown statistic {statistic!r}; use one of {STATISTICS} or a callable")
    return table[statistic]


# ----------------------------------------------------------------------------- bootstrap


def _resolve(resample: str, n_seeds: int) -> str:
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; use one of {RESAMPLE}")
    if resample == "auto":
        return "seeds" if n_seeds >= 2 else "episodes"
    return resample


def _draw(x: np.ndarray, n_boot: int, rng: np.random.Generator, method: str) -> np.ndarray:
    """Bootstrap samples of one stratum, shape (n_boot, seeds * episodes)."""
    s, e = x.shape
    if method == "seeds":
        rows = rng.integers(0, s, size=(n_boot, s))
        out = x[rows]
    elif method == "episodes":
        cols = rng.integers(0, e, size=(n_boot, s, e))
        out = x[np.arange(s)[None, :, None], cols]
    else:  # hierarchical
        rows = rng.integers(0, s, size=(n_boot, s))
        cols = rng.integers(0, e, size=(n_boot, s, e))
        out = x[rows[:, :, None], cols]
    return out.reshape(n_boot, s * e)


def bootstrap_distribution(
    scores,
    statistic: Statistic = "mean",
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    resample: str = "auto",
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``statistic`` over the pooled values.

    ``scores`` is one ``(seeds, episodes)`` array or a list of them (strata resampled
    independently, then pooled; see the module docstring). A callable ``statistic`` receives an
    array ``(n_boot, n_values)`` and must reduce its last axis.
    """
    strata = _strata(scores)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    fn = _stat_fn(statistic)
    rng = np.random.default_rng(seed)
    # Chunk the replicates so memory stays bounded for large score arrays.
    n_values = sum(x.size for x in strata)
    chunk = max(1, min(n_boot, 4_000_000 // max(1, n_values)))
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        pooled = np.concatenate([_draw(x, b, rng, _resolve(resample, x.shape[0])) for x in strata], axis=1)
        out[start : start + b] = np.asarray(fn(pooled), dtype=np.float64)
    return out


def bootstrap_ci(
    scores,
    statistic: Statistic = "mean",
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    resample: str = "auto",
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` of ``statistic``."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    reps = bootstrap_distribution(scores, statistic, n_boot, seed, resample)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(reps, [alpha, 100.0 - alpha])
    return float(lo), float(hi)


def _strata(scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray) or not _is_list_of_arrays(scores):
        return [_as_scores(scores)]
    strata = [_as_scores(x, f"scores[{i}]") for i, x in enumerate(scores)]
    if not strata:
        raise MDPTError("scores is empty; there is nothing to summarize")
    return strata


def _is_list_of_arrays(obj) -> bool:
    """True for a sequence whose items are themselves 2-D (a list of (seeds, episodes) strata)."""
    if not isinstance(obj, Sequence) or isinstance(obj, str) or len(obj) == 0:
        return False
    try:
        return all(np.ndim(item) == 2 for item in obj)
    except ValueError:  # ragged nested lists
        return False


# ----------------------------------------------------------------------------- summaries


def summarize(
    scores,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    resample: str = "auto",
) -> dict:
    """Point estimates and bootstrap CIs of a ``(seeds, episodes)`` score array (or list of strata).

    Returns a JSON-ready dict: ``n`` (values), ``n_seeds``, ``n_episodes`` (``None`` for ragged
    strata), ``mean``, ``median``, ``iqm``, ``iqr``, ``q25``, ``q75``, ``std`` (all values,
    ddof=1), ``seed_std`` (std of the per-seed means, ddof=1; 0 with one seed), ``min``, ``max``,
    ``mean_ci_low``/``mean_ci_high``, ``iqm_ci_low``/``iqm_ci_high``, ``ci_level``,
    ``ci_method`` (the resolved resampling unit) and ``n_boot``.
    """
    strata = _strata(scores)
    flat = np.concatenate([x.reshape(-1) for x in strata])
    seed_means = np.concatenate([x.mean(axis=1) for x in strata])
    q25, q75 = np.percentile(flat, [25.0, 75.0])
    mean_lo, mean_hi = bootstrap_ci(strata, "mean", confidence, n_boot, seed, resample)
    iqm_lo, iqm_hi = bootstrap_ci(strata, "iqm", confidence, n_boot, seed, resample)
    methods = sorted({_resolve(resample, x.shape[0]) for x in strata})
    episodes = {x.shape[1] for x in strata}
    return {
        "n": int(flat.size),
        "n_seeds": int(sum(x.shape[0] for x in strata)),
        "n_episodes": int(episodes.pop()) if len(episodes) == 1 else None,
        "mean": float(flat.mean()),
        "median": float(np.median(flat)),
        "iqm": iqm(flat),
        "iqr": float(q75 - q25),
        "q25": float(q25),
        "q75": float(q75),
        "std": float(flat.std(ddof=1)) if flat.size > 1 else 0.0,
        "seed_std": float(seed_means.std(ddof=1)) if seed_means.size > 1 else 0.0,
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean_ci_low": mean_lo,
        "mean_ci_high": mean_hi,
        "iqm_ci_low": iqm_lo,
        "iqm_ci_high": iqm_hi,
        "ci_level": float(confidence),
        "ci_method": "+".join(methods),
        "n_boot": int(n_boot),
    }


def relative_change(a, b, statistic: Statistic = "iqr") -> float:
    """``(stat(b) - stat(a)) / stat(a)`` over all values of each; negative means b is smaller.

    When ``stat(a) == 0`` the change is 0.0 if ``stat(b) == 0`` too, else ``+/-inf``.
    """
    fn = _stat_fn(statistic)
    sa = float(fn(_as_scores(a, "a").reshape(1, -1))[0])
    sb = float(fn(_as_scores(b, "b").reshape(1, -1))[0])
    if sa == 0.0:
        return 0.0 if sb == 0.0 else math.copysign(math.inf, sb)
    return (sb - sa) / abs(sa)


def relative_iqr_change(a, b) -> float:
    """``(IQR(b) - IQR(a)) / IQR(a)``: -0.86 means b's interquartile range is 86% smaller."""
    return relative_change(a, b, "iqr")


# ----------------------------------------------------------------------------- seed-level comparisons
# The reproduction's intervals (`mdpt reproduce`): each setting's scores (seeds, episodes) reduced to its
# per-seed means, t intervals over seeds (Welch or paired for differences), 95%; the tests are inference.py's.

def mean_ci(scores, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """Mean of per-seed means and its t interval over seeds (zero width with one seed or seeds alike):
    a percentile bootstrap over 3 seeds is their range and covers the mean ~76% of the time."""
    m = seed_means(scores)
    if len(m) < 2:
        return float(m.mean()), float(m.mean()), float(m.mean())
    return inference.t_interval(m, confidence)[:3]


def diff_ci(a, b, paired: bool = False, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """mean(a) - mean(b) over seeds with its Welch t interval, or the paired t interval when a and b are the
    same seeds (`evaluation.inference`); with one seed a side, the difference and a zero-width interval."""
    ma, mb = seed_means(a), seed_means(b)
    if min(len(ma), len(mb)) < 2:
        d = float(ma.mean() - mb.mean())
        return d, d, d
    if paired:
        return inference.t_interval(ma - mb, confidence)[:3]
    return inference.welch_interval(ma, mb, confidence)[:3]
