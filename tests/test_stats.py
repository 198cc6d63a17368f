"""Paired statistics against independently computed values."""

import pytest

from herobench.stats import binom_two_sided, paired


def test_binomial_two_sided_by_hand():
    # n = 4: P(0) = P(4) = 1/16, P(1) = P(3) = 4/16; k = 0 -> 2/16; k = 1 -> 10/16
    assert binom_two_sided(0, 4) == pytest.approx(2 / 16)
    assert binom_two_sided(1, 4) == pytest.approx(10 / 16)
    assert binom_two_sided(2, 4) == 1.0
    assert binom_two_sided(0, 0) == 1.0
    # 18 vs 0 discordant (the audit's DDPO seed 0): 2 / 2^18
    assert binom_two_sided(18, 18) == pytest.approx(2 / 2**18)


def test_binomial_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in (1, 5, 12, 31, 60):
        for k in range(n + 1):
            assert binom_two_sided(k, n) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_paired_counts_and_mcnemar():
    a = [True, True, False, False, False, True]
    b = [True, False, True, True, False, True]
    r = paired(a, b)
    assert (r.gained, r.lost, r.n) == (2, 1, 6)
    assert r.success_a == 0.5 and r.success_b == pytest.approx(4 / 6)
    assert r.p == pytest.approx(1.0)  # 2 vs 1 of 3: P(X <= 1) * 2 = 2 * 4/8 -> capped at 1
    with pytest.raises(ValueError):
        paired([True], [True, False])


def test_iqm_and_probability_of_improvement_by_hand():
    from herobench.stats import iqm, prob_improvement

    assert iqm([0.1, 0.2, 0.3]) == pytest.approx(0.2)  # n < 4: nothing cut
    assert iqm([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]) == pytest.approx(3.5)  # 2 cut each end: mean(2..5)
    # task 1: x = [3, 1], y = [2] -> (1 + 0) / 2; task 2: x = [1], y = [1, 0] -> (0.5 + 1) / 2
    assert prob_improvement([[3, 1], [1]], [[2], [1, 0]]) == pytest.approx((0.5 + 0.75) / 2)


def test_iqm_matches_scipy_trim_mean():
    scipy_stats = pytest.importorskip("scipy.stats")
    from herobench.stats import iqm

    x = [0.3, 0.9, 0.1, 0.5, 0.45, 0.7, 0.2, 0.05, 0.66, 0.31, 0.12]
    assert iqm(x) == pytest.approx(float(scipy_stats.trim_mean(x, 0.25)))


def test_stratified_bootstrap_interval_contains_the_estimate_and_is_seeded():
    from herobench.stats import iqm, stratified_bootstrap_ci

    runs = [[0.40, 0.45, 0.50], [0.10, 0.20, 0.15]]

    def stat(x):
        return iqm([s for task in x for s in task])

    lo, hi = stratified_bootstrap_ci(stat, [runs], reps=500, seed=1)
    assert lo <= stat(runs) <= hi and hi - lo > 0
    assert (lo, hi) == stratified_bootstrap_ci(stat, [runs], reps=500, seed=1)
    # a task with one run cannot vary: the interval of its mean is a point
    assert stratified_bootstrap_ci(stat, [[[0.3]]], reps=50) == (0.3, 0.3)


def test_binomial_two_sided_stays_finite_beyond_1023_trials():
    # 2.0 ** 1100 overflows a float: the tail is summed in log space
    assert binom_two_sided(550, 1100) == 1.0
    assert 0 < binom_two_sided(480, 1100) < 1e-4


def test_mcnemar_power_by_hand_and_by_simulation():
    import random

    from herobench.stats import mcnemar_power

    # n = 5, only gains at rate 1: all 5 images gained, p = 2·0.5^5 = 0.0625 > 0.05 -> never significant
    assert mcnemar_power(5, 1.0, 0.0) == 0.0
    # n = 6, gain 1: p = 2·0.5^6 = 0.03125 -> always significant
    assert mcnemar_power(6, 1.0, 0.0) == pytest.approx(1.0)
    assert mcnemar_power(100, 0.0, 0.0) == 0.0
    # against a simulation of the same model (gain 0.15, loss 0.05, 128 images)
    rng, hits, reps = random.Random(0), 0, 4000
    for _ in range(reps):
        u = [rng.random() for _ in range(128)]
        g, lo = sum(x < 0.15 for x in u), sum(0.15 <= x < 0.20 for x in u)
        hits += binom_two_sided(g, g + lo) < 0.05
    assert mcnemar_power(128, 0.15, 0.05) == pytest.approx(hits / reps, abs=0.025)
    with pytest.raises(ValueError):
        mcnemar_power(10, 0.7, 0.5)
