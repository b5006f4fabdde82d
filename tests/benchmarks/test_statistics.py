"""The statistics module against references: statsmodels' Wilson interval and exact McNemar test,
scipy's binomial test and bootstrap, and a simulation of the paired test's power."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from avisc_lib.benchmarks import statistics as S


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (3, 20), (127, 150), (847, 1000), (1, 1)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(k, n, level):
    low, high = proportion_confint(k, n, alpha=1 - level, method="wilson")
    got = S.wilson(k, n, level)
    assert got.value == k / n
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize("k,n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_refuses_impossible_counts(k, n):
    with pytest.raises(ValueError, match="successes"):
        S.wilson(k, n)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (5, 0), (7, 3), (12, 12), (40, 25), (3, 31), (200, 170)])
def test_exact_mcnemar_matches_statsmodels_and_scipy(b, c):
    expected = sm_mcnemar([[50, b], [c, 50]], exact=True).pvalue
    assert S.mcnemar(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    if b + c:
        assert S.mcnemar(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_bootstrap_of_a_mean_agrees_with_scipy_and_wilson():
    rng = np.random.default_rng(1)
    data = rng.random(600) < 0.8
    ours = S.bootstrap(S.accuracy, data, resamples=4000, seed=3)
    theirs = stats.bootstrap((data.astype(float),), np.mean, method="percentile", n_resamples=4000, random_state=5)
    width = ours.high - ours.low
    assert ours.value == pytest.approx(data.mean())
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.1 * width)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.1 * width)
    w = S.wilson(int(data.sum()), data.size)
    assert (ours.low, ours.high) == pytest.approx((w.low, w.high), abs=0.1 * width)


def test_bootstrap_is_seeded_and_takes_any_vectorised_statistic():
    units = np.random.default_rng(0).normal(size=(300, 2))

    def ratio(sample):  # [R, n, 2] -> [R]
        return sample[..., 0].mean(-1) - sample[..., 1].mean(-1)

    first, again = S.bootstrap(ratio, units, seed=7), S.bootstrap(ratio, units, seed=7)
    assert first == again
    assert first.low < first.value < first.high
    assert S.bootstrap(ratio, units, seed=8) != first


def test_paired_comparison_matches_a_paired_scipy_bootstrap_and_counts_discordant_pairs():
    rng = np.random.default_rng(2)
    baseline = rng.random(800) < 0.7
    method = baseline.copy()
    flip = rng.choice(800, 80, replace=False)
    method[flip[:55]] = True
    method[flip[55:]] = False
    got = S.compare(method, baseline, resamples=4000)
    assert got.difference.value == pytest.approx(method.mean() - baseline.mean())
    assert got.only_method == int((method & ~baseline).sum())
    assert got.only_baseline == int((baseline & ~method).sum())
    assert got.p_value == pytest.approx(sm_mcnemar([[0, got.only_method], [got.only_baseline, 0]], exact=True).pvalue)
    ref = stats.bootstrap(
        (method.astype(float), baseline.astype(float)),
        lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
        paired=True,
        method="percentile",
        n_resamples=4000,
        random_state=0,
    ).confidence_interval
    width = got.difference.high - got.difference.low
    assert got.difference.low == pytest.approx(ref.low, abs=0.1 * width)
    assert got.difference.high == pytest.approx(ref.high, abs=0.1 * width)


def test_identical_methods_are_not_distinguishable_and_a_large_gain_is():
    rng = np.random.default_rng(3)
    base = rng.random(500) < 0.6
    same = S.compare(base, base)
    assert same.difference.value == 0 and not same.distinguishable and same.p_value == 1.0
    better = base | (rng.random(500) < 0.5)
    gain = S.compare(better, base)
    assert gain.distinguishable and gain.p_value < 1e-6
    assert gain.scaled(100).verdict().endswith(", distinguishable") and gain.cell().endswith(" *")
    assert same.scaled(100).verdict() == "+0.0 [+0.0, +0.0], not distinguishable"
    assert same.cell() == "+0.0 [+0.0, +0.0]"


def test_compare_refuses_unpaired_units():
    with pytest.raises(ValueError, match="paired units"):
        S.compare([True, False], [True])


def test_a_statistic_other_than_accuracy_has_no_mcnemar_test():
    a, b = np.ones((50, 2)), np.zeros((50, 2))
    got = S.compare(a, b, statistic=lambda s: s.sum(-1).mean(-1))
    assert got.p_value is None and got.difference.value == 2.0


def test_detectable_difference_solves_connors_sample_size():
    for n, d in [(150, 0.1), (600, 0.1), (3000, 0.05), (40, 0.3)]:
        delta = S.detectable_difference(n, d)
        z_a, z_b = 1.959963984540054, 0.8416212335729143
        needed = (z_a * math.sqrt(d) + z_b * math.sqrt(d - delta**2)) ** 2 / delta**2
        assert needed == pytest.approx(n, rel=1e-6)
    assert S.detectable_difference(600, 0.1) > S.detectable_difference(3000, 0.1)
    assert S.detectable_difference(5, 0.01) == math.inf


def test_detectable_difference_has_about_80_percent_power_in_simulation():
    n, d = 600, 0.12
    delta = S.detectable_difference(n, d)
    rng = np.random.default_rng(0)
    p10, p01 = (d + delta) / 2, (d - delta) / 2
    cells = rng.multinomial(n, [p10, p01, 1 - d], size=3000)
    rejected = [S.mcnemar(int(b), int(c)) < 0.05 for b, c, _ in cells]
    assert np.mean(rejected) == pytest.approx(0.8, abs=0.05)


def test_formatting_and_seed_spread():
    assert S.Interval(0.847, 0.801, 0.886).scaled(100).format() == "84.7 [80.1, 88.6]"
    assert S.Interval(0.007, -0.02, 0.034).scaled(100).format(sign=True) == "+0.7 [-2.0, +3.4]"
    spread = S.seed_spread([84.0, 85.0, 86.0])
    assert (spread.mean, spread.std, spread.seeds) == (85.0, 1.0, 3)
    assert spread.format() == "85.0 ± 1.0 (3 seeds)"
    with pytest.raises(ValueError):
        S.seed_spread([])
