"""The report's statistics (harness/report/stats.py): known values, and coverage by simulation for every interval
the report shows, at the seed counts reports have (3, 5, 10).

Coverage: each check draws R experiments of n seeds from a known truth (fixed seed, vectorised) and counts how often
the interval holds the truth. An interval that covers exactly 95% gives a simulated coverage whose binomial standard
error is sqrt(0.95 · 0.05 / R): 0.0049 for R = 2000, 0.0034 for R = 4000. TOL is 3 of those standard errors, so
an interval of exactly 95% coverage fails a check only with probability about 0.1% (and, the seeds being fixed,
never intermittently), while one of 93% coverage (the t-interval on skewed accuracies, Wilson's at many rates)
fails at R = 4000.
"""

import math

import numpy as np
import pytest
from scipy import stats as sp

from seqbench.harness.report import stats as S

NS = (3, 5, 10)
R_T, R_BOUNDED = 4000, 2000  # the bounded-mean interval costs ~GAFFKE_DRAWS operations per experiment


def tolerance(r: int) -> float:
    return 3 * math.sqrt(0.95 * 0.05 / r)


def coverage(lo, hi, truth) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


# --- known values ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042),
                                          (1000, 1.962)], ids=lambda v: f"{v}")
def test_t_quantile_matches_the_tables(df, expected):
    assert S.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_mean_ci_on_known_numbers():
    mean, half, n = S.mean_ci([1, 2, 3])
    assert mean == 2 and n == 3
    assert half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)  # t_{0.975,2} · s/√n with s = 1: 2.484


def test_mean_ci_skips_nulls_and_gives_no_interval_for_one_seed():
    mean, half, n = S.mean_ci([0.5, None, float("nan")])
    assert (mean, n) == (0.5, 1) and math.isnan(half)
    mean, half, n = S.mean_ci([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_geometric_mean_interval_is_multiplicative_and_above_zero():
    gmean, factor, n = S.geo_ci([1e-4, 1e-2])
    assert n == 2 and gmean == pytest.approx(1e-3)
    half = 12.7062 * math.log(100) / math.sqrt(2) / math.sqrt(2)  # t_{0.975,1} · sd(log x) / √n, sd = ln(100)/√2
    assert factor == pytest.approx(math.exp(half), rel=1e-4)
    assert S.mean_ci([1e-4, 1e-2])[0] - S.mean_ci([1e-4, 1e-2])[1] < 0  # an additive t-interval reaches below zero
    assert math.isnan(S.geo_ci([0.5])[1]) and math.isnan(S.geo_ci([0.5, 0.0])[0])


def test_the_bounded_interval_of_zeros_and_ones_is_clopper_pearson():
    # for 0/1 values Gaffke's bound is the exact binomial one: 3 of 3 solved gives [0.025^(1/3), 1]
    mean, lo, hi, n = S.proportion_ci([1.0, 1.0, 1.0])
    assert (mean, hi, n) == (1.0, 1.0, 3) and lo == pytest.approx(0.025 ** (1 / 3), abs=0.01)
    mean, lo, hi, _ = S.proportion_ci([0.0, 1.0, 1.0, 0.0, 1.0])
    _, cp_lo, cp_hi = S.clopper_pearson(3, 5)
    assert (lo, hi) == pytest.approx((cp_lo, cp_hi), abs=0.01)


def test_accuracy_interval_is_inside_0_1_holds_the_mean_and_is_deterministic():
    for values in ([0.0, 0.0, 1.0], [0.6, 0.7, 0.8], [0.99, 1.0, 1.0, 0.97], [0.01, 0.0, 0.02]):
        mean, lo, hi, _ = S.proportion_ci(values)
        assert 0 <= lo <= mean <= hi <= 1, values
        assert S.proportion_ci(values) == (mean, lo, hi, len(values))  # fixed seed: the same report twice
    assert math.isnan(S.proportion_ci([0.5])[1])
    wide, narrow = S.proportion_ci([0.6, 0.7, 0.8]), S.proportion_ci([0.6, 0.7, 0.8] * 4)
    assert narrow[2] - narrow[1] < wide[2] - wide[1]  # more seeds, a narrower interval


def test_clopper_pearson_matches_the_beta_quantiles():
    rate, lo, hi = S.clopper_pearson(3, 4)
    assert rate == 0.75
    assert lo == pytest.approx(sp.beta.ppf(0.025, 3, 2)) and hi == pytest.approx(sp.beta.ppf(0.975, 4, 1))
    assert S.clopper_pearson(0, 3)[1] == 0 and S.clopper_pearson(3, 3)[2] == 1
    assert math.isnan(S.clopper_pearson(0, 0)[0])


def test_paired_effects_pair_the_seeds():
    base = np.array([1.0, 5.0, 9.0, 13.0])  # seeds differ a lot, the models little
    ratio, factor, n = S.paired_ratio(base * 2, base)
    assert (n, ratio) == (4, pytest.approx(2.0)) and factor == pytest.approx(1.0)  # the same ratio on every seed
    acc = np.array([0.2, 0.5, 0.8, 0.9])
    diff, lo, hi, n = S.paired_difference(acc, acc - [0.1, 0.2, 0.1, 0.2])
    assert n == 4 and diff == pytest.approx(0.15) and -1 <= lo < 0.15 < hi <= 1
    assert math.isnan(S.paired_difference([0.5], [0.4])[1])


# --- coverage -------------------------------------------------------------------------------------------------------
def accuracy_cases(rng, r, n):
    """name -> (accuracies (r, n), true mean): normal-ish, near 0, and most seeds solving (a mass at 1.0)."""
    solved = rng.random((r, n)) < 0.7
    return {"beta(20,10)": (rng.beta(20, 10, (r, n)), 20 / 30),
            "beta(1,30)": (rng.beta(1, 30, (r, n)), 1 / 31),
            "70% at 1.0, else beta(6,4)": (np.where(solved, 1.0, rng.beta(6, 4, (r, n))), 0.7 + 0.3 * 0.6)}


@pytest.mark.parametrize("n", NS)
def test_accuracy_interval_covers_95_percent_and_stays_in_0_1(n):
    rng = np.random.default_rng(100 + n)
    for name, (x, truth) in accuracy_cases(rng, R_BOUNDED, n).items():
        lo, hi = S.bounded_mean_bounds(x)
        assert coverage(lo, hi, truth) >= 0.95 - tolerance(R_BOUNDED), name
        assert (lo >= 0).all() and (hi <= 1).all() and (lo <= x.mean(1)).all() and (x.mean(1) <= hi).all(), name


@pytest.mark.parametrize("n", NS)
def test_the_t_interval_on_accuracies_does_not_hold_near_a_bound(n):
    """Why accuracies do not get a t-interval: skewed near 0 (or 1) it covers too little, and it leaves [0, 1]."""
    x, truth = accuracy_cases(np.random.default_rng(200 + n), R_T, n)["beta(1,30)"]
    lo, hi = S.t_bounds(x)
    assert coverage(lo, hi, truth) < 0.95 - tolerance(R_T) and (lo < 0).any()


@pytest.mark.parametrize("n", NS)
def test_paired_accuracy_difference_covers_95_percent(n):
    rng = np.random.default_rng(300 + n)
    seed = rng.beta(20, 10, (R_BOUNDED, n))  # the seed's difficulty, shared by both models
    normal = (np.clip(seed + 0.05 + rng.normal(0, 0.05, seed.shape), 0, 1), seed)
    a = np.where(rng.random(seed.shape) < 0.98, 1.0, rng.beta(6, 4, seed.shape))  # near the bound, skewed
    b = np.where(rng.random(seed.shape) < 0.8, 1.0, rng.beta(6, 4, seed.shape))
    big = rng.beta(20, 10, 200_000)
    truths = [float(np.mean(np.clip(big + 0.05 + rng.normal(0, 0.05, big.shape), 0, 1) - big)),
              (0.98 + 0.02 * 0.6) - (0.8 + 0.2 * 0.6)]
    for (x, y), truth in zip([normal, (a, b)], truths):
        lo, hi = S.bounded_mean_bounds(x - y, -1, 1)
        assert coverage(lo, hi, truth) >= 0.95 - tolerance(R_BOUNDED)
        assert (lo >= -1).all() and (hi <= 1).all()


@pytest.mark.parametrize("n", NS)
def test_log_loss_intervals_cover_95_percent(n):
    """The geometric mean's t-interval (summary) and the paired loss ratio's (comparisons), on log-normal losses:
    the truths are exp(E log loss) and exp(E log A/B)."""
    rng = np.random.default_rng(400 + n)
    log_loss = rng.normal(-3.0, 1.0, (R_T, n))
    lo, hi = S.t_bounds(log_loss)
    assert coverage(lo, hi, -3.0) >= 0.95 - tolerance(R_T)
    seed = rng.normal(-3.0, 1.5, (R_T, n))  # seeds differ more than the models
    log_ratio = (seed - 0.2 + rng.normal(0, 0.4, seed.shape)) - (seed + rng.normal(0, 0.4, seed.shape))
    lo, hi = S.t_bounds(log_ratio)
    assert coverage(lo, hi, -0.2) >= 0.95 - tolerance(R_T)
    ratio, factor, _ = S.paired_ratio(np.exp(log_ratio[0]), np.ones(n))  # the same interval, as the table gives it
    assert (math.log(ratio / factor), math.log(ratio * factor)) == pytest.approx((lo[0], hi[0]))


@pytest.mark.parametrize("n", NS)
def test_solve_rate_interval_covers_95_percent_at_every_rate(n):
    """Exactly, not by simulation: the coverage at rate p is the binomial probability of the counts whose interval
    holds p. Wilson's interval, the report's earlier choice, falls below 95% at many rates."""
    rates = np.linspace(0.01, 0.99, 99)
    k = np.arange(n + 1)
    for method, holds in (("exact", True), ("wilson", False)):
        ci = [sp.binomtest(int(j), n).proportion_ci(0.95, method) for j in k]
        lo, hi = np.array([c.low for c in ci]), np.array([c.high for c in ci])
        inside = (lo[None] <= rates[:, None]) & (rates[:, None] <= hi[None])
        cover = (sp.binom.pmf(k[None], n, rates[:, None]) * inside).sum(axis=1)
        assert (cover.min() >= 0.95) == holds, method
    assert S.clopper_pearson(2, n)[1:] == pytest.approx(tuple(sp.binomtest(2, n).proportion_ci(0.95, "exact")))


# --- tests and their multiplicity -----------------------------------------------------------------------------------
def test_sign_flip_p_values_on_known_differences():
    assert S.sign_flip_p([1.0, 2.0, 3.0]) == 0.25  # all positive: 2 of the 8 sign assignments are as extreme
    assert S.sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 64)
    assert S.sign_flip_p([1.0, -1.0, 2.0, -2.0]) == 1.0 and math.isnan(S.sign_flip_p([]))
    assert [S.smallest_sign_flip_p(n) for n in (3, 5, 6)] == [0.25, 0.0625, 0.03125]


@pytest.mark.parametrize("n", NS)
def test_sign_flip_test_holds_its_level_and_finds_a_large_difference(n):
    rng = np.random.default_rng(500 + n)
    seed = rng.normal(0, 3, (R_T, n))
    null = (seed + rng.normal(0, 1, seed.shape)) - (seed + rng.normal(0, 1, seed.shape))
    assert np.mean(S.sign_flip_pvalues(null) < 0.05) <= 0.05 + tolerance(R_T)
    shifted = S.sign_flip_pvalues(null + 3.0)
    assert np.mean(shifted < 0.05) > (0.9 if n == 10 else -1)  # 3 or 5 pairs can never reach 0.05
    assert shifted.min() == pytest.approx(S.smallest_sign_flip_p(n))


def test_fisher_smallest_p_values():
    assert S.smallest_fisher_p(3, 3) == pytest.approx(0.1) and S.smallest_fisher_p(5, 5) < 0.01
    assert S.fisher_p(3, 3, 0, 3) == pytest.approx(0.1) and S.fisher_p(2, 3, 2, 3) == 1.0


def test_logrank_statistic_matches_scipy_and_its_p_value_is_exact():
    steps_a, solved_a = [100, 200, 300, 1000], [True, True, True, False]
    steps_b, solved_b = [150, 1000, 1000, 1000], [True, False, False, False]
    p, z = S.logrank_p(steps_a, solved_a, steps_b, solved_b)
    if hasattr(sp, "logrank"):  # scipy >= 1.11
        a = sp.CensoredData(uncensored=[100, 200, 300], right=[1000])
        b = sp.CensoredData(uncensored=[150], right=[1000, 1000, 1000])
        assert abs(z) == pytest.approx(sp.logrank(a, b).statistic)
    assert z > 0 and 0 < p <= 1
    # every A solved before any B: 2 of the 20 splits of 3 + 3 seeds are this extreme (chi-squared would say 0.025)
    p, _ = S.logrank_p([1, 2, 3], [True] * 3, [10, 10, 10], [False] * 3)
    assert p == pytest.approx(0.1) == S.smallest_logrank_p(3, 3)
    assert math.isnan(S.logrank_p([10, 10], [False] * 2, [10], [False])[0])  # nobody solved


def test_logrank_permutation_test_holds_its_level():
    rng = np.random.default_rng(600)
    rejections = 0
    for _ in range(400):  # 5 + 5 seeds: 252 splits each
        steps = np.minimum(rng.exponential(500, 10).round() + 1, 1000)
        p, _ = S.logrank_p(steps[:5], steps[:5] < 1000, steps[5:], steps[5:] < 1000)
        rejections += p < 0.05
    assert rejections / 400 <= 0.05 + tolerance(400)


def test_holm_adjusts_step_down_and_ignores_missing_p_values():
    adjusted = S.holm([0.01, 0.04, 0.03, math.nan, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 of m = 4: × 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    assert adjusted[[4, 0, 2, 1]] == pytest.approx([0.02, 0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert (S.holm([0.5, 0.9]) == [1.0, 1.0]).all() and len(S.holm([])) == 0
