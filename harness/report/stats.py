"""The report's statistics: intervals over seeds that hold their stated level with 3, 5 or 10 seeds, exact tests of
two models against each other, and Holm's step-down control of the whole family of those tests.

Every function is deterministic (Monte-Carlo parts draw from fixed seeds), so a report built twice is the same. The
interval functions also take a 2-D array (one simulated experiment per row) where the tests need to simulate their
coverage: `bounded_mean_bounds`, `t_bounds`, `sign_flip_pvalues`.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

#: the level of every interval and the threshold of every verdict (after Holm's adjustment)
LEVEL = 0.95
ALPHA = 1 - LEVEL
#: Dirichlet weights drawn (fixed seed) for the bounded-mean interval: the Monte-Carlo error of its 97.5% quantile is
#: about 0.002 of the value range, far inside the interval's slack (simulated coverage 0.99 and more)
GAFFKE_DRAWS, GAFFKE_SEED = 10_000, 0
#: the sign-flip test enumerates all 2^n sign assignments up to this many pairs; above, it draws FLIP_DRAWS at random
EXACT_PAIRS, FLIP_DRAWS, FLIP_SEED = 16, 2 ** 16, 0
#: the log-rank test enumerates every split of the seeds into the two groups up to this many; above, it draws as many
LOGRANK_SPLITS, LOGRANK_SEED = 50_000, 0
#: rows of simulated samples handled at once by the bounded-mean interval (memory: rows x GAFFKE_DRAWS floats)
_CHUNK = 256


def values(values) -> np.ndarray:
    """The non-null numbers in `values`, as float64."""
    return pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce").dropna().to_numpy(dtype="float64")


# --- Student t ------------------------------------------------------------------------------------------------------
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom."""
    return float(stats.t.ppf(p, df))


def t_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% Student-t interval of the mean of each row of `x` (R, n), n >= 2: (low, high), each (R,)."""
    n = x.shape[-1]
    half = t_quantile((1 + LEVEL) / 2, n - 1) * x.std(axis=-1, ddof=1) / math.sqrt(n)
    return x.mean(axis=-1) - half, x.mean(axis=-1) + half


def mean_ci(values_) -> tuple[float, float, int]:
    """(mean, half-width of the 95% Student-t interval, n) over the non-null values; the half-width is NaN if n < 2.
    For throughput, whose seeds vary little and symmetrically."""
    v = values(values_)
    n = len(v)
    if n < 2:
        return (float(v[0]) if n else math.nan), math.nan, n
    lo, hi = t_bounds(v[None])
    return float(v.mean()), float(hi[0] - v.mean()), n


def geo_ci(values_) -> tuple[float, float, int]:
    """(geometric mean, multiplicative half-width f, n) over the non-null values: the 95% t-interval of the mean log
    value, so the interval is [g / f, g · f], above zero like the values; f is NaN if n < 2. Losses sit on log axes:
    an additive interval would reach below zero. It assumes the log values are roughly normal over seeds (exact
    then); a mix of solved and unsolved seeds, orders of magnitude apart, is not. A value <= 0 has no log: all NaN
    then (n still counts it)."""
    v = values(values_)
    n = len(v)
    if n == 0 or (v <= 0).any():
        return math.nan, math.nan, n
    mean, half, _ = mean_ci(np.log(v))
    return math.exp(mean), math.exp(half), n


# --- means of bounded values ----------------------------------------------------------------------------------------
@functools.cache
def _spacings(n: int) -> np.ndarray:
    """(GAFFKE_DRAWS, n + 1) weights: the spacings of n sorted uniforms on [0, 1], i.e. Dirichlet(1, ..., 1); float32
    (7 digits, far finer than the Monte-Carlo error) halves the cost of the simulations that check the interval."""
    return np.random.default_rng(GAFFKE_SEED).dirichlet(np.ones(n + 1), GAFFKE_DRAWS).astype("float32")


def _gaffke_upper(x: np.ndarray, alpha: float) -> np.ndarray:
    """A 1 - alpha upper bound on the mean of a variable in [0, 1] from each row of samples `x` (R, n): the 1 - alpha
    quantile, over uniform spacings D, of sum_i D_i x_(i) with the sorted sample closed by the bound x_(n+1) = 1
    (Gaffke 2005; Learned-Miller & Thomas 2019). For 0/1 values it is the Clopper–Pearson bound."""
    closed = np.concatenate([np.sort(x, axis=-1), np.ones((len(x), 1))], axis=-1)  # (R, n + 1)
    weights = _spacings(x.shape[-1]).T  # (n + 1, draws)
    k = math.ceil((1 - alpha) * (GAFFKE_DRAWS - 1))  # the quantile's order statistic, rounded up (conservative)
    closed = closed.astype("float32")
    parts = [np.partition(closed[i:i + _CHUNK] @ weights, k, axis=-1)[:, k] for i in range(0, len(x), _CHUNK)]
    return np.minimum(np.concatenate(parts).astype("float64"), 1.0)


def bounded_mean_bounds(x: np.ndarray, low: float = 0.0, high: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of the mean of a variable known to lie in [low, high], from each row of samples `x` (R, n):
    the bound above from the values, the bound below from their reflection, each at 2.5%. Nonparametric: it holds its
    level for every distribution on [low, high] (point masses at the bounds included), so it stays inside them
    without clipping; the price is width with few seeds."""
    scaled = (np.asarray(x, dtype="float64") - low) / (high - low)
    upper = _gaffke_upper(scaled, ALPHA / 2)
    lower = 1 - _gaffke_upper(1 - scaled, ALPHA / 2)
    return low + (high - low) * lower, low + (high - low) * upper


def bounded_mean_ci(values_, low: float = 0.0, high: float = 1.0) -> tuple[float, float, float, int]:
    """(mean, low, high, n) over the non-null values, which lie in [low, high]: `bounded_mean_bounds`; no interval
    (NaN) for n < 2."""
    v = values(values_)
    n = len(v)
    if n < 2:
        return (float(v[0]) if n else math.nan), math.nan, math.nan, n
    lo, hi = bounded_mean_bounds(v[None], low, high)
    return float(v.mean()), float(lo[0]), float(hi[0]), n


def proportion_ci(values_) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of per-seed proportions (accuracies) in [0, 1]: `bounded_mean_ci`."""
    return bounded_mean_ci(values_, 0.0, 1.0)


def clopper_pearson(k: int, n: int) -> tuple[float, float, float]:
    """(k / n, low, high): the exact (Clopper–Pearson) 95% interval of a binomial proportion; NaN for n = 0. Wilson's
    interval covers 95% only on average over the true rate: at 3 to 20 runs it covers less for about 40% of rates
    (down to 83%)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=LEVEL, method="exact")
    return k / n, float(ci.low), float(ci.high)


# --- paired effects -------------------------------------------------------------------------------------------------
def paired_ratio(a, b) -> tuple[float, float, int]:
    """(geometric mean of a / b, its multiplicative 95% half-width f, n) over paired positive values (losses): the
    t-interval of the mean log ratio (`geo_ci` of the ratios); f is NaN below 2 pairs."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return geo_ci(a / b) if len(a) else (math.nan, math.nan, 0)


def paired_difference(a, b) -> tuple[float, float, float, int]:
    """(mean of a - b, low, high, n) over paired proportions (accuracies, so a - b lies in [-1, 1]): the bounded-mean
    interval on [-1, 1]; no interval (NaN) below 2 pairs."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return bounded_mean_ci(a - b, -1.0, 1.0)


# --- tests ----------------------------------------------------------------------------------------------------------
@functools.cache
def _signs(n: int) -> np.ndarray:
    """(2^n, n) every assignment of signs to n pairs, or FLIP_DRAWS random ones (fixed seed) above EXACT_PAIRS."""
    if n <= EXACT_PAIRS:
        return 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype("float64")
    return np.random.default_rng(FLIP_SEED).choice([-1.0, 1.0], size=(FLIP_DRAWS, n))


def sign_flip_pvalues(d: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the paired sign-flip permutation test, one per row of differences `d` (R, n): the
    fraction of sign assignments whose |sum| is at least the observed one. Exact (all 2^n assignments) up to
    EXACT_PAIRS pairs: under "A and B are exchangeable within a seed" every assignment is equally likely."""
    d = np.atleast_2d(np.asarray(d, dtype="float64"))
    signs = _signs(d.shape[-1])
    observed = np.abs(d.sum(axis=-1))
    tolerance = 1e-9 * np.abs(d).sum(axis=-1)  # sums equal up to rounding count as equal
    at_least = (np.abs(d @ signs.T) >= (observed - tolerance)[:, None]).sum(axis=-1)
    if d.shape[-1] > EXACT_PAIRS:  # random assignments: the observed one counts too
        return (at_least + 1) / (len(signs) + 1)
    return at_least / len(signs)


def sign_flip_p(differences) -> float:
    """The sign-flip test's two-sided p-value for paired differences (NaN without pairs)."""
    d = values(differences)
    return float(sign_flip_pvalues(d[None])[0]) if len(d) else math.nan


def smallest_sign_flip_p(pairs: int) -> float:
    """The smallest p-value the sign-flip test can give with `pairs` pairs: 2 / 2^n (0.25 for 3, 0.0625 for 5)."""
    return min(1.0, 2 / 2 ** pairs) if pairs <= EXACT_PAIRS else 1 / (FLIP_DRAWS + 1)


def fisher_p(solved_a: int, n_a: int, solved_b: int, n_b: int) -> float:
    """Fisher's exact two-sided p-value for solve rates solved_a / n_a against solved_b / n_b; NaN without runs."""
    if n_a == 0 or n_b == 0:
        return math.nan
    return float(stats.fisher_exact([[solved_a, n_a - solved_a], [solved_b, n_b - solved_b]]).pvalue)


def smallest_fisher_p(n_a: int, n_b: int) -> float:
    """The smallest p-value Fisher's test can give with n_a and n_b runs (one group all solved, the other none)."""
    return fisher_p(n_a, n_a, 0, n_b)


def _logrank_z(steps: np.ndarray, solved: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The log-rank statistic (O - E) / sqrt(V) of group A for each row of `groups` (P, N) of 0/1 memberships:
    positive where A solves earlier than the pooled seeds."""
    times = np.unique(steps[solved])
    at_risk = (steps[:, None] >= times).astype("float64")  # (N, K)
    events = ((steps[:, None] == times) & solved[:, None]).astype("float64")
    n, d = at_risk.sum(axis=0), events.sum(axis=0)
    n_a, o_a = groups @ at_risk, groups @ events  # (P, K)
    expected = n_a * d / n
    variance = n_a * (n - n_a) * d * (n - d) / (n ** 2 * np.maximum(n - 1, 1))
    v = variance.sum(axis=-1)
    return np.divide((o_a - expected).sum(axis=-1), np.sqrt(v), out=np.zeros(len(groups)), where=v > 0)


def logrank_p(steps_a, solved_a, steps_b, solved_b) -> tuple[float, float]:
    """(two-sided p, z) of the log-rank test on censored steps to solve, with its exact permutation null: every
    split of the pooled seeds into groups of the two sizes (LOGRANK_SPLITS random ones, fixed seed, above that
    many). The chi-squared p that scipy.stats.logrank gives is too small with a few seeds per group (3 against 3
    can reach p < 0.05, where only 20 splits exist). z > 0: A solves earlier. NaN without seeds or solves."""
    steps = np.concatenate([np.asarray(steps_a, "float64"), np.asarray(steps_b, "float64")])
    solved = np.concatenate([np.asarray(solved_a, bool), np.asarray(solved_b, bool)])
    k, total = len(steps_a), len(steps)
    if k == 0 or k == total or not solved.any():
        return math.nan, math.nan
    observed = _logrank_z(steps, solved, (np.arange(total) < k)[None].astype("float64"))[0]
    if math.comb(total, k) <= LOGRANK_SPLITS:
        groups = np.zeros((math.comb(total, k), total))
        for row, members in enumerate(itertools.combinations(range(total), k)):
            groups[row, list(members)] = 1
        extra = 0
    else:
        rng = np.random.default_rng(LOGRANK_SEED)
        groups = (rng.random((LOGRANK_SPLITS, total)).argsort(axis=-1) < k).astype("float64")
        extra = 1
    z = _logrank_z(steps, solved, groups)
    at_least = (np.abs(z) >= abs(observed) - 1e-9).sum()
    return float((at_least + extra) / (len(groups) + extra)), float(observed)


def smallest_logrank_p(n_a: int, n_b: int) -> float:
    """The smallest p-value the permutation log-rank test can give with n_a and n_b seeds: every A solves before
    every B (and, for equal groups, its mirror image) is 1 or 2 of the C(n_a + n_b, n_a) splits."""
    if n_a == 0 or n_b == 0:
        return 1.0
    splits = math.comb(n_a + n_b, n_a)
    if splits > LOGRANK_SPLITS:
        return 1 / (LOGRANK_SPLITS + 1)
    return min(1.0, (2 if n_a == n_b else 1) / splits)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stay NaN and do not count): the i-th smallest of m
    becomes max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < 0.05 keeps the chance of
    any false claim in the family below 5%."""
    p = np.asarray(pvalues, dtype="float64")
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out
