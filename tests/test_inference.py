"""The statistics behind every verdict do what they claim, shown by simulation.

Each verdict rule is run on data simulated under the null (no effect) and must claim an effect in
at most 5% of draws (plus the simulation's own error: REPS draws give a standard error of about
1.1 points at 5%); under a planted effect of 2 seed standard deviations with 10 v 10 seeds it must
find it. The same harness flags the old rules (a percentile bootstrap over 3 seeds; a stage change
counted as a change of significance), which is what shows it can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mdpt.errors import MDPTError
from mdpt.evaluation import inference as inf
from mdpt.evaluation import rules

REPS = 400
FPR_LIMIT = 0.05 + 2 * math.sqrt(0.05 * 0.95 / REPS)  # 5% plus two simulation standard errors
FAST = 1000  # Monte Carlo permutations inside simulations (the p-value stays valid: +1 correction)


def claims(finding: rules.Finding) -> bool:
    return finding.word in ("supported", "contradicted", "mixed")


# ----------------------------------------------------------------------------- the building blocks
def test_permutation_p_values_are_exact_and_bounded_by_the_design():
    t = inf.independent([10, 11, 12], [1, 2, 3])
    assert t.exact and t.p == pytest.approx(0.1) and t.min_p == pytest.approx(0.1)  # 2 / C(6, 3)
    t = inf.independent(np.arange(4) + 10.0, np.arange(4.0))
    assert t.p == pytest.approx(2 / 70)
    t = inf.paired([5, 6, 7, 8, 9], [1, 1, 1, 1, 1])
    assert t.p == pytest.approx(2 / 32) and t.min_p == pytest.approx(2 / 32)


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4 x 0.01, max(3 x 0.03, .04), max(2 x 0.04, .09), max(0.5, .09)
    np.testing.assert_allclose(inf.holm(p), [0.04, 0.09, 0.09, 0.5])
    assert inf.holm([]).size == 0


def test_seeds_needed_follows_from_the_smallest_p_value():
    assert inf.seeds_needed(1) == 4  # 3 v 3 can reach 0.1 only; 4 v 4: 2/70 = 0.029
    assert inf.seeds_needed(4) == 5
    assert inf.seeds_needed(1, paired_design=True) == 6  # 2 / 2^6 = 0.031
    for m in (1, 4, 14, 28):
        n = inf.seeds_needed(m)
        assert inf.min_p_independent(n, n) * m <= 0.05 < inf.min_p_independent(n - 1, n - 1) * m


def test_three_seeds_give_not_enough_seeds_instead_of_a_direction():
    t = inf.independent([30.0, 31.0, 32.0], [1.0, 2.0, 3.0])  # as separated as 3 v 3 can be
    v = inf.verdict(t, t.p)
    assert v.word == "not enough seeds" and not v.decided
    assert "not enough seeds (n = 3 v 3; needs >= 4" in v.sentence()
    f = rules.gfdt_rule({"hopper dql": ([30.0, 31, 32], [1.0, 2, 3])})
    assert f.word.startswith("not enough seeds (n = 3; needs >= 4")


def test_a_zero_width_interval_is_not_an_effect():
    """Every seed alike on both sides (standing policies, +0.3 [+0.3, +0.3]): the seeds are perfectly
    separated, so the permutation p is small, but a difference inside the band is never a direction;
    and one side's seeds alike with the other's spread is no evidence by itself."""
    t = inf.independent([69.3] * 5, [69.0] * 5)
    assert t.low == t.high == pytest.approx(0.3)
    v = inf.verdict(t, t.p)
    assert v.word == "below the band" and not v.decided and "zero width" in v.sentence()
    t = inf.independent([69.3] * 5, [60.0, 75.0, 69.0, 72.0, 66.0])
    assert not inf.verdict(t, t.p).decided


def test_bad_input_is_one_line():
    with pytest.raises(MDPTError, match="NaN"):
        inf.independent([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(MDPTError, match=">= 2 seeds"):
        inf.independent([1.0], [1.0, 2.0])
    with pytest.raises(MDPTError, match="same seeds"):
        inf.paired([1.0, 2.0], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("n", [3, 5])
def test_t_intervals_cover_at_their_level_where_a_percentile_bootstrap_does_not(n):
    rng = np.random.default_rng(n)
    welch = paired = boot = 0
    for _ in range(REPS):
        a, b = rng.normal(10.0, 3.0, n), rng.normal(0.0, 6.0, n)
        t = inf.independent(a, b, resamples=FAST)
        welch += t.low <= 10.0 <= t.high
        d = rng.normal(2.0, 4.0, n)
        tp = inf.paired_differences(d, resamples=FAST)
        paired += tp.low <= 2.0 <= tp.high
        reps = a[rng.integers(0, n, (2000, n))].mean(1) - b[rng.integers(0, n, (2000, n))].mean(1)
        lo, hi = np.percentile(reps, [2.5, 97.5])  # the old diff_ci
        boot += lo <= 10.0 <= hi
    assert welch / REPS >= 0.95 - 2 * math.sqrt(0.05 * 0.95 / REPS)
    assert paired / REPS >= 0.95 - 2 * math.sqrt(0.05 * 0.95 / REPS)
    assert boot / REPS < 0.90  # the harness sees the old interval's under-coverage


# ----------------------------------------------------------------------------- each rule under the null
@pytest.mark.parametrize("band", [inf.BAND, 0.0])
def test_gfdt_rule_false_positive_rate(band):
    rng = np.random.default_rng(11)
    hits = sum(claims(rules.gfdt_rule({f"s{k}": (rng.normal(50, 8, 10), rng.normal(50, 8, 10)) for k in range(4)},
                                      band=band, resamples=FAST)) for _ in range(REPS))
    assert hits / REPS <= FPR_LIMIT


@pytest.mark.parametrize("curves", [5, 14])
def test_stage_rule_false_positive_rate(curves):
    """No stage effect: each curve's gap has the same distribution at the first and last evaluation
    (the seeds' gaps correlate over training, as one run's do)."""
    rng = np.random.default_rng(curves)
    hits = old = 0
    reps = REPS if curves < 10 else REPS // 2
    for _ in range(reps):
        data = {}
        for k in range(curves):
            base = rng.normal(3.0, 6.0, 10)
            data[f"c{k}"] = (base + rng.normal(0, 4.0, 10), base + rng.normal(0, 4.0, 10))
        hits += claims(rules.stage_rule(data, band=0.0, resamples=FAST))
        old += any(_old_stage_changed(first, last, rng) for first, last in data.values())
    assert hits / reps <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)
    assert old / reps > 0.2  # the old rule (a change of significance) claims a stage effect far more often


def _old_stage_changed(first, last, rng) -> bool:
    def excludes_zero(x):
        reps = x[rng.integers(0, len(x), (500, len(x)))].mean(1)
        lo, hi = np.percentile(reps, [2.5, 97.5])
        return lo > 0 or hi < 0
    return excludes_zero(first) != excludes_zero(last)


def test_algorithm_rule_false_positive_rate():
    rng = np.random.default_rng(5)
    reps = REPS // 2
    hits = sum(claims(rules.algorithm_rule({f"c{k}": (rng.normal(0, 7, 10), rng.normal(0, 7, 10)) for k in range(6)},
                                           band=0.0, resamples=FAST)) for _ in range(reps))
    assert hits / reps <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)


def test_spread_rule_false_positive_rate():
    """Own and swapped guidance exchangeable on each seed, cells of one seed correlated (one policy)."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(REPS // 2):
        seed_effect = rng.normal(0, 10, 10)
        own = 50 + seed_effect + rng.normal(0, 4, (6, 10))
        swapped = 50 + seed_effect + rng.normal(0, 4, (6, 10))
        hits += claims(rules.spread_rule(own, swapped, resamples=FAST))
    assert hits / (REPS // 2) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / (REPS // 2))


def test_episode_spread_test_false_positive_rate():
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(REPS):
        own, swapped = list(rng.normal(50, 10, (4, 10, 10))), list(rng.normal(50, 10, (4, 10, 10)))
        hits += rules.episode_spread_test(own, swapped, resamples=FAST).p <= 0.05
    assert hits / REPS <= FPR_LIMIT


# ----------------------------------------------------------------------------- each rule finds a planted effect
def test_gfdt_rule_finds_two_seed_sds_with_ten_seeds():
    rng = np.random.default_rng(21)
    found = 0
    for _ in range(REPS // 4):
        settings = {f"s{k}": (rng.normal(50, 5, 10), rng.normal(50, 5, 10)) for k in range(3)}
        settings["planted"] = (rng.normal(60, 5, 10), rng.normal(50, 5, 10))  # +2 SD = +10 points
        f = rules.gfdt_rule(settings, resamples=FAST)
        found += f.word == "supported" and f.verdicts["planted"].word == "higher"
    assert found / (REPS // 4) >= 0.9


def test_a_family_claimed_lower_is_supported_by_a_drop_and_contradicted_by_a_rise():
    rng = np.random.default_rng(23)
    drop = {"eta 0 - joint": (rng.normal(40, 5, 10), rng.normal(60, 5, 10))}
    assert rules.gfdt_rule(drop, resamples=FAST, claimed="lower").word == "supported"
    assert rules.gfdt_rule(drop, resamples=FAST).word == "contradicted"  # the default claim: higher
    rise = {"eta 0 - joint": (rng.normal(60, 5, 10), rng.normal(40, 5, 10))}
    assert rules.gfdt_rule(rise, resamples=FAST, claimed="lower").word == "contradicted"


def test_stage_rule_finds_a_planted_change():
    rng = np.random.default_rng(22)
    found = 0
    for _ in range(REPS // 4):
        data = {f"c{k}": (rng.normal(0, 5, 10), rng.normal(0, 5, 10)) for k in range(4)}
        data["planted"] = (rng.normal(-20, 5, 10), rng.normal(0, 5, 10))  # the gap moves by 2 SD of a change
        f = rules.stage_rule(data, resamples=FAST)
        found += f.word == "supported" and f.verdicts["planted"].decided
    assert found / (REPS // 4) >= 0.9


def test_algorithm_rule_finds_a_planted_difference():
    rng = np.random.default_rng(23)
    found = sum(rules.algorithm_rule({"c": (rng.normal(12, 6, 10), rng.normal(0, 6, 10))},
                                     resamples=FAST).word == "supported" for _ in range(REPS // 4))
    assert found / (REPS // 4) >= 0.9


def test_spread_rule_finds_a_shrinking_spread():
    rng = np.random.default_rng(24)
    found = 0
    for _ in range(REPS // 8):
        seed_effect = rng.normal(0, 10, 10)
        own = 50 + seed_effect + rng.normal(0, 2, (6, 10))
        swapped = 50 + 0.2 * seed_effect + rng.normal(0, 2, (6, 10))  # the swapped guidance evens the seeds out
        found += rules.spread_rule(own, swapped, resamples=FAST).word == "supported"
    assert found / (REPS // 8) >= 0.75  # IQRs of 10 seeds are noisy: 86% measured at this effect


def test_spread_measures_side_by_side():
    own = np.array([[10.0, 20, 30, 40], [50, 50, 50, 50]])
    swapped = np.array([[20.0, 22, 24, 26], [40, 50, 60, 70]])
    m = rules.seed_iqr_measures(own, swapped)
    assert m["cells"] == 2 and m["cells_with_spread"] == 1  # the second cell's own seeds all score 50
    assert m["relative_median"] == pytest.approx((3.0 - 15.0) / 15.0)
    assert m["points"] == pytest.approx(np.median([3.0 - 15.0, 15.0 - 0.0]))
    e = rules.episode_spread_change([own.T, own.T[:, :3]], [swapped.T, swapped.T[:, :3]])  # 4 seeds, 2 cells
    assert e["cells"] == 2 and e["seed0"] == pytest.approx(np.median([
        (np.var(swapped[:, 0], ddof=1) - np.var(own[:, 0], ddof=1)) / np.var(own[:, 0], ddof=1),
        (np.var(swapped[:3, 0], ddof=1) - np.var(own[:3, 0], ddof=1)) / np.var(own[:3, 0], ddof=1)]))
