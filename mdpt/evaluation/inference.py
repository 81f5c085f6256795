"""Calibrated comparisons of training seeds: tests, intervals, multiplicity and verdict words.

Pure functions over arrays. The unit of every comparison is the **training seed**: a policy's
score is the mean over its evaluation episodes, one number per seed (`seed_means`), and two
settings are compared through those numbers only. Episodes of one seed are not independent
replicates of the method (they share its weights), so counting them as such would make every
interval too narrow.

- **Tests** (`independent`, `paired`): exact permutation tests of the mean difference by
  `scipy.stats.permutation_test` (all relabellings while there are at most `EXACT_LIMIT`, else
  `MC_RESAMPLES` random ones with the +1 correction that keeps the p-value valid). `independent`
  permutes seeds between two sets of runs; `paired` flips the sign of each seed's difference, for
  numbers measured on the same seeds (guided vs plain sampling of one policy, own vs swapped
  guidance, a gap at two steps of one run). A permutation test is exact at any n: its false
  positive rate is at most alpha by construction.
- **Intervals** (`low`, `high`): Welch's t interval (independent) or the paired t interval: their
  coverage holds at small n for normal scores, where a percentile bootstrap over 3 seeds is the
  range of the seed means and covers the mean ~76% of the time. A zero-width interval (every seed
  alike) is reported as such, and never counts as evidence on its own (`Verdict`).
- **Multiplicity**: `holm` adjusts the p-values of the comparisons behind one verdict (Holm's
  step-down, which controls the family-wise error rate under any dependence).
- **Too few seeds**: with n seeds a permutation test cannot go below `min_p` (3 v 3: 0.1), so no
  verdict of a direction is possible; `verdict` then says "not enough seeds (n = 3; needs >= N)"
  with N from `seeds_needed` for the family's size.
- **A minimum effect** (`band`, in score points): a significant difference smaller than the band is
  "below the band", and a difference whose whole interval lies inside +-band is "equivalent".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from mdpt.errors import MDPTError

ALPHA = 0.05
CONFIDENCE = 0.95
BAND = 5.0  # normalized score points: smaller differences do not rank methods (the reports' band)
EXACT_LIMIT = 100_000  # relabellings enumerated exactly up to this many (10 v 10 seeds: 184,756 -> Monte Carlo)
MC_RESAMPLES = 20_000
TINY = 1e-9  # a standard deviation below TINY x the estimate is float noise: the seeds are alike


def seed_means(scores) -> np.ndarray:
    """(seeds, episodes) scores -> one number per seed; a 1-D array is taken as seed values already."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1 or x.size == 0:
        raise MDPTError(f"scores must be (seeds,) or (seeds, episodes) numbers; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise MDPTError("scores contain NaN or infinite values; check the evaluation that produced them")
    return x


@dataclass(frozen=True)
class Test:
    """One comparison of a - b over seeds."""

    estimate: float  # mean(a) - mean(b), or the mean of the per-seed differences (paired)
    low: float  # CONFIDENCE interval of the estimate (t; zero width when every seed is alike)
    high: float
    p: float  # two-sided permutation p-value, not adjusted
    n: tuple[int, int]  # seeds of a and of b (paired: the same n twice)
    paired: bool
    effect: float  # standardized: Hedges' g (independent) or d_z = mean / sd of the differences (paired); nan if sd 0
    min_p: float  # the smallest p-value this many seeds can give
    exact: bool  # every relabelling enumerated (else Monte Carlo)

    @property
    def method(self) -> str:
        kind = "sign-flip" if self.paired else "two-sample"
        how = "exact" if self.exact else "Monte Carlo"
        ci = "paired t" if self.paired else "Welch t"
        return f"{kind} permutation test ({how}), {ci} interval"

    def to_json(self) -> dict:
        return {**asdict(self), "n": list(self.n), "method": self.method}

    @classmethod
    def from_json(cls, d: dict) -> Test:
        return cls(**{k: (tuple(v) if k == "n" else v) for k, v in d.items() if k != "method"})


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _mean(d, axis=-1):
    return np.mean(d, axis=axis)


def permutation_p(data, statistic, permutation_type: str, count: int, seed: int = 0,
                  resamples: int = MC_RESAMPLES) -> tuple[float, bool]:
    """Two-sided p-value of `scipy.stats.permutation_test` (vectorized `statistic`), exact while the
    `count` of distinct relabellings is <= EXACT_LIMIT; (p, exact)."""
    exact = count <= EXACT_LIMIT
    res = sps.permutation_test(data, statistic, permutation_type=permutation_type, vectorized=True,
                               n_resamples=EXACT_LIMIT if exact else resamples, alternative="two-sided",
                               rng=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue)), exact


def t_interval(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, low, high, sd) of values `d` (>= 2) with the one-sample t interval: a paired difference or
    one setting's seed means. Zero width when every value is alike (to float noise)."""
    n = len(d)
    est, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= TINY * max(1.0, abs(est)):  # float noise of identical values: a zero-width interval
        sd = 0.0
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n) if sd > 0 else 0.0
    return est, est - half, est + half, sd


def welch_interval(x: np.ndarray, y: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean(x) - mean(y), low, high, pooled sd) with Welch's t interval (>= 2 values a side). Zero width
    when every value is alike (to float noise)."""
    est = float(x.mean() - y.mean())
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    if se <= TINY * max(1.0, abs(est)):  # float noise of identical seeds: a zero-width interval
        return est, est, est, 0.0
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return est, est - half, est + half, pooled


def independent(a, b, confidence: float = CONFIDENCE, seed: int = 0, resamples: int = MC_RESAMPLES) -> Test:
    """a - b for two sets of runs with their own seeds (e.g. guidance-first vs joint)."""
    x, y = seed_means(a), seed_means(b)
    if len(x) < 2 or len(y) < 2:
        raise MDPTError(f"a comparison needs >= 2 seeds on each side; got {len(x)} and {len(y)}")
    est, low, high, pooled = welch_interval(x, y, confidence)
    n = len(x) + len(y)
    g = est / pooled * (1 - 3 / (4 * n - 9)) if pooled > 0 else math.nan
    if np.ptp(np.concatenate([x, y])) == 0:  # every value alike: nothing can be told apart
        p, exact = 1.0, True
    else:
        p, exact = permutation_p((x, y), _mean_diff, "independent", math.comb(n, len(x)), seed, resamples)
    return Test(est, low, high, p, (len(x), len(y)), False, float(g), min_p_independent(len(x), len(y)), exact)


def paired(a, b, confidence: float = CONFIDENCE, seed: int = 0, resamples: int = MC_RESAMPLES) -> Test:
    """a - b measured on the same seeds (row i of a and of b belong to seed i)."""
    x, y = seed_means(a), seed_means(b)
    if len(x) != len(y):
        raise MDPTError(f"a paired comparison needs the same seeds on both sides; got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise MDPTError(f"a comparison needs >= 2 seeds; got {len(x)}")
    return paired_differences(x - y, confidence, seed, resamples)


def paired_differences(d, confidence: float = CONFIDENCE, seed: int = 0, resamples: int = MC_RESAMPLES) -> Test:
    """The mean of per-seed differences `d` against 0 (sign flips)."""
    d = seed_means(d)
    n = len(d)
    if n < 2:
        raise MDPTError(f"a comparison needs >= 2 seeds; got {n}")
    est, low, high, sd = t_interval(d, confidence)
    if np.all(d == 0):
        p, exact = 1.0, True
    else:  # one sample with permutation_type "samples": scipy flips the sign of each difference
        p, exact = permutation_p((d,), _mean, "samples", 2**n, seed, resamples)
    dz = est / sd if sd > 0 else math.nan
    return Test(est, low, high, p, (n, n), True, dz, min_p_paired(n), exact)


def min_p_independent(n_a: int, n_b: int) -> float:
    """The smallest two-sided permutation p-value of n_a v n_b seeds (every a above every b)."""
    total = math.comb(n_a + n_b, n_a)
    return min(1.0, (2 if n_a == n_b else 1) / total)


def min_p_paired(n: int) -> float:
    """The smallest two-sided sign-flip p-value of n paired seeds."""
    return min(1.0, 2 / 2**n)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def seeds_needed(comparisons: int = 1, paired_design: bool = False, alpha: float = ALPHA) -> int:
    """Seeds per side at which the smallest possible p-value, adjusted for `comparisons` (Holm's
    first step multiplies by their count), is <= alpha."""
    for n in range(2, 64):
        p = min_p_paired(n) if paired_design else min_p_independent(n, n)
        if p * max(1, comparisons) <= alpha:
            return n
    raise MDPTError(f"no seed count up to 63 decides {comparisons} comparisons at alpha {alpha}")


@dataclass(frozen=True)
class Verdict:
    """The word a report may use for one comparison, with everything it rests on."""

    word: str  # higher | lower | below the band | equivalent | inconclusive | not enough seeds
    test: Test
    p_adjusted: float
    comparisons: int  # the family the p-value was adjusted for
    needs: int | None = None  # seeds per side a decision needs (word == "not enough seeds")

    @property
    def decided(self) -> bool:
        """A direction the data supports (higher or lower, outside the band)."""
        return self.word in ("higher", "lower")

    def sentence(self, digits: int = 1) -> str:
        t = self.test
        n = f"n = {t.n[0]}" if t.paired else f"n = {t.n[0]} v {t.n[1]}"
        if self.word == "not enough seeds":
            return (f"not enough seeds ({n}; needs >= {self.needs} per side for {self.comparisons} "
                    f"comparison{'s' if self.comparisons > 1 else ''})")
        width = " (zero width: every seed alike)" if t.low == t.high else ""
        return (f"{self.word}: {t.estimate:+.{digits}f} [{t.low:+.{digits}f}, {t.high:+.{digits}f}]{width}, "
                f"p = {self.p_adjusted:.3g} (Holm, {self.comparisons} comparison{'s' if self.comparisons > 1 else ''}),"
                f" effect {_fmt_effect(t.effect)}, {n}")

    def to_json(self) -> dict:
        return {"word": self.word, "test": self.test.to_json(), "p_adjusted": self.p_adjusted,
                "comparisons": self.comparisons, "needs": self.needs}

    @classmethod
    def from_json(cls, d: dict) -> Verdict:
        return cls(d["word"], Test.from_json(d["test"]), d["p_adjusted"], d["comparisons"], d.get("needs"))


def _fmt_effect(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.2f} sd"


def verdict(test: Test, p_adjusted: float, comparisons: int = 1, alpha: float = ALPHA, band: float = BAND) -> Verdict:
    """One comparison's word. Order: too few seeds to reach alpha after adjustment -> "not enough
    seeds"; significant and at least `band` -> "higher"/"lower"; significant but smaller ->
    "below the band"; the whole interval inside +-band (and not zero width) -> "equivalent";
    else "inconclusive"."""
    if test.min_p * max(1, comparisons) > alpha:
        return Verdict("not enough seeds", test, p_adjusted, comparisons,
                       seeds_needed(comparisons, test.paired, alpha))
    if p_adjusted <= alpha:
        if abs(test.estimate) >= band:
            return Verdict("higher" if test.estimate > 0 else "lower", test, p_adjusted, comparisons)
        return Verdict("below the band", test, p_adjusted, comparisons)
    if test.high > test.low and -band < test.low and test.high < band:
        return Verdict("equivalent", test, p_adjusted, comparisons)
    return Verdict("inconclusive", test, p_adjusted, comparisons)


def family(tests: list[Test], alpha: float = ALPHA, band: float = BAND) -> list[Verdict]:
    """Verdicts of the comparisons behind one finding, their p-values Holm-adjusted together."""
    adjusted = holm([t.p for t in tests])
    return [verdict(t, float(p), len(tests), alpha, band) for t, p in zip(tests, adjusted, strict=True)]


def summary_word(verdicts: list[Verdict], claimed: str | None = "higher") -> str:
    """A finding's word from its family: supported (some direction decided in the `claimed` sense,
    "higher" or "lower", and none against it), contradicted, mixed, not enough seeds (no comparison
    could decide), or not shown. `claimed` None: the claim is a difference in either direction, so any
    decided comparison supports it."""
    if not verdicts:
        return "not tested"
    decided = [v for v in verdicts if v.decided]
    if claimed is None:
        if decided:
            return "supported"
    else:
        with_claim = [v for v in decided if v.word == claimed]
        against = [v for v in decided if v.word != claimed]
        if with_claim and against:
            return "mixed"
        if with_claim:
            return "supported"
        if against:
            return "contradicted"
    if all(v.word == "not enough seeds" for v in verdicts):
        n = max(v.test.n[0] for v in verdicts)
        return f"not enough seeds (n = {n}; needs >= {verdicts[0].needs})"
    return "not shown"
