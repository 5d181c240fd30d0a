"""Tests for layerfusion.stats: metrics on hand examples, the vectorised bootstrap against a loop over scikit-learn,
McNemar against hand values and scipy, Holm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from layerfusion import stats


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 5, 400))  # class 4 only ever predicted
    return y, pred


def test_accuracy_and_macro_f1_hand_example():
    # class 0: tp 1, fn 1 -> F1 2/3; class 1: tp 2, fp 1 -> F1 4/5
    assert stats.accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == 0.75
    assert stats.macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_macro_f1_string_labels_and_missing_class():
    # a: 2/3; b (only ever right once, predicted three times): 2/4; c: 2/3
    y = np.array(["a", "a", "b", "c", "c"])
    pred = np.array(["a", "b", "b", "b", "c"])
    assert stats.macro_f1(y, pred) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert stats.macro_f1(y, y) == 1.0
    assert stats.macro_f1(["a", "a"], ["a", "d"]) == pytest.approx((2 / 3 + 0) / 2)  # d: predicted, never true


@pytest.mark.parametrize("bad", [dict(y=[0, 1], pred=[0]), dict(y=[], pred=[])])
def test_metric_input_checks(bad):
    with pytest.raises(ValueError, match="pred|y"):
        stats.accuracy(**bad)


def test_mismatched_lengths_name_the_argument():
    with pytest.raises(ValueError, match="pred_b"):
        stats.mcnemar([0, 1, 1], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_pred"):
        stats.bootstrap_ci([0, 1, 1], [0, 1])


def test_bootstrap_ci_deterministic_and_brackets_estimate(labels):
    y, pred = labels
    a = stats.bootstrap_ci(y, pred, random_state=1)
    b = stats.bootstrap_ci(y, pred, random_state=1)
    assert a == b
    # accuracy quantiles sit on a 1/400 grid, so compare seeds on the continuous macro F1
    assert stats.bootstrap_ci(y, pred, "macro_f1", random_state=1) != stats.bootstrap_ci(y, pred, "macro_f1",
                                                                                          random_state=2)
    assert a.low < a.estimate < a.high
    # binomial standard error of 0.7 on 400 items is 0.023: a 95% interval spans about 4 of them
    assert 0.06 < a.high - a.low < 0.12
    narrow = stats.bootstrap_ci(y, pred, alpha=0.5, random_state=1)
    assert a.low < narrow.low <= narrow.high < a.high


def test_bootstrap_vectorised_macro_f1_equals_loop_over_sklearn(labels):
    y, pred = labels
    fast = stats.bootstrap_ci(y, pred, metric="macro_f1", n_resamples=60, random_state=3)
    slow = stats.bootstrap_ci(y, pred, metric=lambda t, p: f1_score(t, p, average="macro"), n_resamples=60,
                              random_state=3)
    assert fast == pytest.approx(slow)
    assert fast.estimate == pytest.approx(f1_score(y, pred, average="macro"))


def test_bootstrap_rejects_unknown_metric_and_bad_alpha(labels):
    y, pred = labels
    with pytest.raises(ValueError, match="metric"):
        stats.bootstrap_ci(y, pred, metric="auc")
    with pytest.raises(ValueError, match="alpha"):
        stats.bootstrap_ci(y, pred, alpha=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_ci(y, pred, n_resamples=0)


def test_mcnemar_exact_hand_computed():
    # a right / b wrong on 8 items, the reverse on 2: n = 10 discordant, exact two-sided p = 2 * P(X <= 2 | 10, 1/2)
    y = np.zeros(30, dtype=int)
    a = np.zeros(30, dtype=int)
    b = np.zeros(30, dtype=int)
    b[:8] = 1
    a[8:10] = 1
    res = stats.mcnemar(y, a, b)
    assert (res.n10, res.n01) == (8, 2)
    assert res.statistic == 2
    assert res.p_value == pytest.approx(2 * (1 + 10 + 45) / 2 ** 10)
    assert res.p_value == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    assert stats.mcnemar(y, b, a).p_value == pytest.approx(res.p_value)


def test_mcnemar_chi2_with_continuity_correction():
    y = np.zeros(100, dtype=int)
    a = np.zeros(100, dtype=int)
    b = np.zeros(100, dtype=int)
    b[:30] = 1  # n10 = 30
    a[30:40] = 1  # n01 = 10
    res = stats.mcnemar(y, a, b)
    assert res.statistic == pytest.approx((20 - 1) ** 2 / 40)  # 9.025
    assert res.p_value == pytest.approx(0.002663, abs=1e-5)
    forced = stats.mcnemar(y, a, b, exact=True)
    assert forced.p_value == pytest.approx(binomtest(10, 40, 0.5).pvalue)


def test_mcnemar_no_discordant_pairs():
    y = [0, 1, 1]
    res = stats.mcnemar(y, [0, 1, 0], [0, 1, 0])
    assert (res.statistic, res.p_value, res.n01, res.n10) == (0.0, 1.0, 0, 0)


def test_paired_bootstrap_detects_difference_and_identity(labels):
    y, pred = labels
    better = y.copy()
    res = stats.paired_bootstrap(y, better, pred, n_resamples=500, random_state=0)
    assert res.delta == pytest.approx(1 - stats.accuracy(y, pred))
    assert 0 < res.low < res.delta < res.high
    assert res.p_value == pytest.approx(2 / 501)
    same = stats.paired_bootstrap(y, pred, pred, n_resamples=200)
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert stats.paired_bootstrap(y, better, pred, random_state=5) == stats.paired_bootstrap(y, better, pred,
                                                                                                random_state=5)


def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(stats.holm([0.2, np.nan, 0.01]), [0.2, np.nan, 0.02])
    with pytest.raises(ValueError, match="pvalues"):
        stats.holm([])
    with pytest.raises(ValueError, match="pvalues"):
        stats.holm([0.1, 1.2])


def test_mean_std_and_format():
    assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = stats.mean_std([0.5])
    assert mean == 0.5 and np.isnan(std)
    assert stats.format_mean_std([0.90, 0.92]) == "91.0 ± 1.4"
    assert stats.format_mean_std([0.9], digits=2) == "90.00"
    with pytest.raises(ValueError, match="values"):
        stats.mean_std([])


def test_discordance_counts_items_exactly_one_classifier_gets_right():
    y = np.array([0, 1, 1, 0, 1])
    a = np.array([0, 1, 0, 1, 1])  # right on 0, 1, 4
    b = np.array([0, 0, 1, 1, 1])  # right on 0, 2, 4
    assert stats.discordance(y, a, b) == pytest.approx(2 / 5)  # items 1 and 2
    assert stats.discordance(y, a, a) == 0.0


def test_mcnemar_mde_is_the_root_of_connors_equation():
    mde = stats.mcnemar_mde(872, 0.10)
    assert mde == pytest.approx(0.030, abs=0.0005)
    assert stats.mcnemar_power(872, 0.10, mde) == pytest.approx(0.8, abs=1e-9)
    for n, psi, power in ((500, 0.2, 0.9), (3554, 0.05, 0.8), (100, 0.5, 0.6), (50, 0.3, 0.3)):
        delta = stats.mcnemar_mde(n, psi, power=power)
        assert 0 < delta <= psi
        assert stats.mcnemar_power(n, psi, delta) == pytest.approx(power, abs=1e-9)
        assert n * delta**2 == pytest.approx((1.959964 * np.sqrt(psi) + stats.norm.ppf(power)
                                              * np.sqrt(psi - delta**2)) ** 2, rel=1e-5)
    # more items or fewer discordant pairs: a smaller detectable difference
    assert stats.mcnemar_mde(3554, 0.10) < stats.mcnemar_mde(872, 0.10) < stats.mcnemar_mde(872, 0.20)


def test_mcnemar_mde_is_nan_when_nothing_is_detectable():
    assert np.isnan(stats.mcnemar_mde(872, 0.0))
    assert np.isnan(stats.mcnemar_mde(3, 0.5))        # n <= z^2: no difference is ever significant
    assert np.isnan(stats.mcnemar_mde(20, 0.02))      # even delta = psi would be missed too often
    assert stats.mcnemar_power(20, 0.02, 0.02) < 0.8


def test_mcnemar_power_agrees_with_a_simulation_of_the_test():
    """Draw paired correctness with discordance psi and difference delta; count how often McNemar rejects."""
    rng = np.random.default_rng(0)
    n, psi = 872, 0.10
    delta = stats.mcnemar_mde(n, psi)
    reps = 1500
    counts = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=reps)
    y = np.zeros(n, dtype=int)
    rejected = 0
    for n10, n01, _ in counts:
        a = np.ones(n, dtype=int)   # a wrong everywhere, b right everywhere, then concordant items fixed below
        b = np.zeros(n, dtype=int)
        a[:n10], b[:n10] = 0, 1      # a right, b wrong
        a[n10 + n01:], b[n10 + n01:] = 0, 0  # both right
        rejected += stats.mcnemar(y, a, b).p_value < 0.05
    assert rejected / reps == pytest.approx(0.8, abs=0.05)
    # and at no difference the test keeps its level
    null = rng.multinomial(n, [psi / 2, psi / 2, 1 - psi], size=reps)
    false = sum(stats.mcnemar(y, np.r_[np.zeros(n10), np.ones(n01), np.zeros(n - n10 - n01)].astype(int),
                              np.r_[np.ones(n10), np.zeros(n01), np.zeros(n - n10 - n01)].astype(int)).p_value < 0.05
                for n10, n01, _ in null)
    assert false / reps < 0.07


@pytest.mark.parametrize("call,match", [
    (lambda: stats.mcnemar_power(100, 0.1, 0.2), "exceeds the discordance"),
    (lambda: stats.mcnemar_mde(0, 0.1), "n must be a positive integer"),
    (lambda: stats.mcnemar_mde(100, 1.5), "discordance must be a rate"),
    (lambda: stats.mcnemar_mde(100, 0.1, power=1.0), "power must lie strictly between 0 and 1"),
])
def test_power_input_checks(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_tost_is_the_interval_inclusion_rule_and_matches_two_scipy_one_sided_tests():
    from scipy.stats import norm, t

    eq = stats.tost(0.1, 0.2, 1.0, alpha=0.05)
    assert eq.equivalent and eq.low == pytest.approx(0.1 - norm.ppf(0.95) * 0.2)
    assert eq.p_value == pytest.approx(max(norm.sf((0.1 + 1) / 0.2), norm.cdf((0.1 - 1) / 0.2)))
    wide = stats.tost(0.1, 0.8, 1.0)
    assert not wide.equivalent and wide.p_value > 0.05       # inconclusive, not "no effect"
    assert not stats.tost(1.5, 0.1, 1.0).equivalent            # a real effect beyond the margin
    small_t = stats.tost(0.1, 0.2, 1.0, dof=4)
    assert small_t.p_value == pytest.approx(max(t.sf(5.5, 4), t.cdf(-4.5, 4))) and small_t.p_value > eq.p_value
    assert stats.tost(0.3, 0.0, 1.0).equivalent and not stats.tost(np.nan, 0.1, 1.0).equivalent
    # equivalence at level alpha exactly when the 1 - 2 alpha interval lies inside the margin
    for est, se in ((0.5, 0.3), (0.2, 0.45), (-0.6, 0.2)):
        e = stats.tost(est, se, 1.0, alpha=0.05)
        assert e.equivalent == (e.p_value < 0.05) == (-1 < e.low and e.high < 1)
    with pytest.raises(ValueError, match="margin must be positive"):
        stats.tost(0.1, 0.1, 0.0)


def test_within_group_spearman_is_centred_within_groups_and_matches_scipy_per_group():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b", "c"], 8)
    x = rng.random(24)
    y = -x + rng.normal(0, 0.2, 24) + np.repeat([0.0, 5.0, 10.0], 8)
    r = stats.within_group_spearman(x, y, groups, n_permutations=2000)
    for g in "abc":
        assert r.per_group[g] == pytest.approx(spearmanr(x[groups == g], y[groups == g]).statistic)
    assert r.rho == pytest.approx(np.mean(list(r.per_group.values()))) and r.rho < -0.5
    assert r.p_less < 0.01 and r.p_greater > 0.99 and r.n == 24
    # between-group levels alone (x and y both rise with the group, nothing within): pooled rho is large,
    # the within-group test sees no association in either direction
    rng = np.random.default_rng(5)   # a draw where the null is not rejected by chance (5 % of draws are)
    x2 = np.repeat([0.0, 1.0, 2.0], 30) + rng.random(90)
    y2 = np.repeat([0.0, 1.0, 2.0], 30) + rng.random(90)
    g2 = np.repeat(["a", "b", "c"], 30)
    assert spearmanr(x2, y2).statistic > 0.7
    r2 = stats.within_group_spearman(x2, y2, g2, n_permutations=2000)
    assert abs(r2.rho) < 0.25 and r2.p_less > 0.05 and r2.p_greater > 0.05
    assert r2.null_se == pytest.approx(1 / np.sqrt(29) / np.sqrt(3), rel=0.15)   # the null's spread, centred at 0
    assert np.isnan(stats.within_group_spearman([1.0, 2.0], [1.0, 2.0], ["a", "a"]).rho)


def _exact_mcnemar_by_hand(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value from its definition: twice the smaller binomial(n, 1/2) tail, capped at 1."""
    import math

    n, k = n01 + n10, min(n01, n10)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.mark.parametrize("seed", range(8))
def test_mcnemar_matches_independent_references(seed):
    """Exact: scipy's binomtest on n10 of n (the other count than the one stats.mcnemar uses) and the binomial
    tail summed by hand; chi-squared: the continuity-corrected statistic and its survival function via erfc."""
    import math

    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(10, 400))
    y = rng.integers(0, 3, n_items)
    a = np.where(rng.random(n_items) < rng.uniform(0.5, 0.9), y, (y + 1) % 3)
    b = np.where(rng.random(n_items) < rng.uniform(0.5, 0.9), y, (y + 2) % 3)
    n10 = int(np.sum((a == y) & (b != y)))
    n01 = int(np.sum((a != y) & (b == y)))
    exact = stats.mcnemar(y, a, b, exact=True)
    assert (exact.n01, exact.n10) == (n01, n10)
    if n01 + n10:
        assert exact.p_value == pytest.approx(binomtest(n10, n01 + n10, 0.5).pvalue, rel=1e-9)
        assert exact.p_value == pytest.approx(_exact_mcnemar_by_hand(n01, n10), rel=1e-9)
        chi = stats.mcnemar(y, a, b, exact=False)
        stat = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
        assert chi.statistic == pytest.approx(stat, rel=1e-12)
        assert chi.p_value == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-9)


def _holm_by_closed_testing(p: list[float]) -> list[float]:
    """Holm's adjusted p-values from the closed testing principle with Bonferroni local tests: H_i's adjusted
    p-value is the largest, over every set S of hypotheses holding i, of min(1, |S| * min_{j in S} p_j)."""
    import itertools

    m = len(p)
    out = []
    for i in range(m):
        others = [j for j in range(m) if j != i]
        worst = 0.0
        for size in range(m):
            for rest in itertools.combinations(others, size):
                members = (i, *rest)
                worst = max(worst, min(1.0, len(members) * min(p[j] for j in members)))
        out.append(worst)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_holm_matches_closed_testing_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 8))
    p = rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 2)
    if m > 2:
        p[1] = p[0]  # ties
    np.testing.assert_allclose(stats.holm(p), _holm_by_closed_testing(list(p)), rtol=1e-12)
