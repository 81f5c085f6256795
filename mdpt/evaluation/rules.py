"""The paper's three findings as decision rules over per-seed arrays, each calibrated (`inference`).

Every rule takes numbers per training seed, runs one test per comparison behind the finding,
Holm-adjusts the family together and returns a `Finding`: its word, the verdict of every
comparison, and the size of the family. The words:

- finding 1, stage (`stage_rule`): the gap guided-minus-control of one run at its last evaluation
  against the same run's gap at its first (paired by seed: gap_i(last) - gap_i(first)), one test per
  (algorithm, control) curve. A stage effect is a *significant change of the gap*, not a gap whose
  interval starts or stops excluding 0 (a difference in significance is not a significant
  difference). "supported" when some change is decided (either direction) outside the band.
- finding 1, algorithm (`algorithm_rule`): one algorithm's per-seed gap (or gap change) against
  another's, independent runs, one test per (control, step). "supported" when some pair differs.
- finding 2 (`gfdt_rule`): guidance-first minus joint per setting, independent runs. "supported"
  when some setting is decided higher and none lower; "contradicted" the other way; "mixed".
- finding 3 (`spread_rule`, `episode_spread_rule`): own vs swapped guidance on the same policy
  seeds. The seed spread (IQR over seeds per cell) is tested by flipping own/swapped per seed across
  every cell at once (the policy seed is the unit: cells of one seed are not independent); the
  authors' measure, each seed's variance over episodes per checkpoint, by a sign-flip test of each
  seed's median log variance ratio over checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mdpt.errors import MDPTError
from mdpt.evaluation import inference as inf


@dataclass(frozen=True)
class Finding:
    word: str
    verdicts: dict[str, inf.Verdict]

    @property
    def comparisons(self) -> int:
        return len(self.verdicts)

    def decided(self) -> dict[str, inf.Verdict]:
        return {k: v for k, v in self.verdicts.items() if v.decided}

    def to_json(self) -> dict:
        return {"word": self.word, "comparisons": self.comparisons,
                "verdicts": {k: v.to_json() for k, v in self.verdicts.items()}}


def _family(tests: dict[str, inf.Test], band: float, alpha: float) -> dict[str, inf.Verdict]:
    keys = list(tests)
    return dict(zip(keys, inf.family([tests[k] for k in keys], alpha, band), strict=True))


def stage_rule(curves: dict[str, tuple], band: float = inf.BAND, alpha: float = inf.ALPHA,
               resamples: int = inf.MC_RESAMPLES) -> Finding:
    """`curves`: label -> (gap at the first evaluation, gap at the last), each per seed (n,)."""
    tests = {k: inf.paired(last, first, resamples=resamples) for k, (first, last) in curves.items()}
    verdicts = _family(tests, band, alpha)
    return Finding(inf.summary_word(list(verdicts.values()), claimed=None), verdicts)


def algorithm_rule(contrasts: dict[str, tuple], band: float = inf.BAND, alpha: float = inf.ALPHA,
                   resamples: int = inf.MC_RESAMPLES) -> Finding:
    """`contrasts`: label -> (one algorithm's per-seed gaps, another's), independent runs."""
    tests = {k: inf.independent(a, b, resamples=resamples) for k, (a, b) in contrasts.items()}
    verdicts = _family(tests, band, alpha)
    return Finding(inf.summary_word(list(verdicts.values()), claimed=None), verdicts)


def gfdt_rule(settings: dict[str, tuple], band: float = inf.BAND, alpha: float = inf.ALPHA,
              resamples: int = inf.MC_RESAMPLES, claimed: str | None = "higher") -> Finding:
    """`settings`: label -> (guidance-first per-seed scores, joint per-seed scores), independent runs; also any
    arm against a reference (`claimed`: the sense of the difference arm - reference the claim expects)."""
    tests = {k: inf.independent(gf, joint, resamples=resamples) for k, (gf, joint) in settings.items()}
    verdicts = _family(tests, band, alpha)
    return Finding(inf.summary_word(list(verdicts.values()), claimed=claimed), verdicts)


# ----------------------------------------------------------------------------- spreads
def _cells(own, swapped) -> tuple[np.ndarray, np.ndarray]:
    o, s = np.asarray(own, np.float64), np.asarray(swapped, np.float64)
    if o.shape != s.shape or o.ndim < 2 or o.shape[0] == 0:
        raise MDPTError(f"own and swapped scores must have one shape (cells, seeds[, episodes]); got {o.shape}, {s.shape}")
    if not (np.all(np.isfinite(o)) and np.all(np.isfinite(s))):
        raise MDPTError("spread scores contain NaN or infinite values")
    return o, s


def _iqr(x, axis=-1):
    q25, q75 = np.percentile(x, [25.0, 75.0], axis=axis)
    return q75 - q25


def seed_iqr_measures(own, swapped) -> dict:
    """The seed spread, own -> swapped, over cells (one cell: a policy at one step with one kind of
    swap; `own`, `swapped`: (cells, seeds) per-seed mean scores of the same policy seeds).

    Returns the median over cells of the IQR difference in points (the tested statistic: defined
    when a cell's seeds all score alike), the median relative change over the cells whose own IQR is
    not 0, and the summed relative change (the earlier reports' measure, kept for comparison)."""
    o, s = _cells(own, swapped)
    io, is_ = _iqr(o), _iqr(s)
    rel = [(b - a) / a for a, b in zip(io, is_, strict=True) if a > 0]
    return {"points": float(np.median(is_ - io)), "relative_median": float(np.median(rel)) if rel else math.nan,
            "relative_sum": float((is_.sum() - io.sum()) / io.sum()) if io.sum() > 0 else math.nan,
            "cells": int(o.shape[0]), "cells_with_spread": len(rel)}


def spread_test(own, swapped, confidence: float = inf.CONFIDENCE, seed: int = 0,
                resamples: int = inf.MC_RESAMPLES) -> inf.Test:
    """Median over cells of (IQR swapped - IQR own) over seeds, in points. p: own and swapped flipped
    per seed across every cell at once (exact for <= 16 seeds); interval: BCa bootstrap of the seeds,
    each drawn seed carrying all its cells (percentile where BCa is undefined)."""
    o, s = _cells(own, swapped)
    n = o.shape[1]
    if n < 2:
        raise MDPTError(f"a seed spread needs >= 2 seeds; got {n}")
    codes = np.arange(1, n + 1, dtype=np.float64)

    def flipped(x, axis=-1):  # x: (..., n) signed codes; a negative code swaps that seed's own and swapped
        flip = np.moveaxis(x, axis, -1) < 0
        shape = (o.shape[0],) + (1,) * (flip.ndim - 1) + (n,)
        oo, ss = o.reshape(shape), s.reshape(shape)
        return np.median(_iqr(np.where(flip, oo, ss)) - _iqr(np.where(flip, ss, oo)), axis=0)

    def resampled(x, axis=-1):  # x: (..., n) codes drawn with replacement: the seeds of a bootstrap sample
        idx = np.moveaxis(x, axis, -1).astype(int) - 1
        return np.median(_iqr(s[:, idx]) - _iqr(o[:, idx]), axis=0)

    est = float(flipped(codes))
    if np.array_equal(o, s):
        p, exact = 1.0, True
    else:
        p, exact = inf.permutation_p((codes,), flipped, "samples", 2**n, seed, resamples)
    low, high = _bootstrap_ci(codes, resampled, est, confidence, seed)
    return inf.Test(est, low, high, p, (n, n), True, math.nan, inf.min_p_paired(n), exact)


def _bootstrap_ci(codes, statistic, est: float, confidence: float, seed: int) -> tuple[float, float]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa on a degenerate distribution warns and returns NaN: handled below
        for method in ("BCa", "percentile"):
            res = sps.bootstrap((codes,), statistic, vectorized=True, method=method, n_resamples=2000,
                                confidence_level=confidence, rng=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if math.isfinite(low) and math.isfinite(high):
                return low, high
    return est, est


def _episode_variances(own, swapped) -> tuple[np.ndarray, np.ndarray]:
    """(cells, seeds) variances over episodes of own and swapped scores; `own`, `swapped`: per cell a
    (seeds, episodes >= 2) array (cells may differ in their episode count)."""
    if len(own) != len(swapped) or not len(own):
        raise MDPTError("episode spreads need own and swapped scores of the same cells")
    vo, vs = [], []
    for o, s in zip(own, swapped, strict=True):
        o, s = _cells(o, s)
        if o.ndim != 2 or o.shape[1] < 2:
            raise MDPTError(f"episode spreads need (seeds, episodes >= 2) scores per cell; got {o.shape}")
        vo.append(o.var(axis=1, ddof=1))
        vs.append(s.var(axis=1, ddof=1))
    if len({len(v) for v in vo}) > 1:
        raise MDPTError("episode spreads need the same seeds in every cell")
    return np.stack(vo), np.stack(vs)


def episode_spread_change(own, swapped) -> dict:
    """The authors' measure: each seed's variance over evaluation episodes at each checkpoint, own ->
    swapped guidance (per cell a (seeds, episodes) array). Per seed, the median over cells of the
    relative change; reported for seed 0 (their scripts evaluate one training seed) and as the median
    over seeds."""
    vo, vs = _episode_variances(own, swapped)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(vo > 0, (vs - vo) / np.where(vo > 0, vo, 1.0), np.nan)
    finite = np.isfinite(rel)
    per_seed = [float(np.median(rel[finite[:, i], i])) if finite[:, i].any() else math.nan for i in range(rel.shape[1])]
    ok = [x for x in per_seed if math.isfinite(x)]
    return {"seed0": per_seed[0], "median_over_seeds": float(np.median(ok)) if ok else math.nan,
            "per_seed": per_seed, "cells": int(vo.shape[0])}


def episode_spread_test(own, swapped, seed: int = 0, resamples: int = inf.MC_RESAMPLES) -> inf.Test:
    """Sign-flip test over seeds of each seed's median (over checkpoints) log variance ratio
    swapped / own: under the null the ratio is as likely above 1 as below."""
    vo, vs = _episode_variances(own, swapped)
    ok = (vo > 0) & (vs > 0)
    if not np.all(ok.any(axis=0)):
        raise MDPTError("every seed needs a checkpoint with episode variance on both sides")
    logs = np.where(ok, np.log(np.where(ok, vs, 1.0) / np.where(ok, vo, 1.0)), np.nan)
    return inf.paired_differences(np.nanmedian(logs, axis=0), seed=seed, resamples=resamples)


def spread_rule(own, swapped, band: float = 0.0, alpha: float = inf.ALPHA,
                resamples: int = inf.MC_RESAMPLES) -> Finding:
    """Finding 3 on the seed spread: "supported" when the IQR over seeds is significantly smaller with
    the swapped guidance (one test over every cell: no family to adjust)."""
    test = spread_test(own, swapped, resamples=resamples)
    v = inf.verdict(test, test.p, 1, alpha, band)
    return Finding(inf.summary_word([v], claimed="lower"), {"seed IQR, swapped - own": v})
