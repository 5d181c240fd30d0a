"""Metrics and paired statistics over test items: bootstrap intervals, McNemar and its power, Holm, mean ± std.

Everything takes plain label arrays and returns plain numbers or small named tuples, so the analysis code can report
every accuracy with its uncertainty, every comparison with a (multiplicity-corrected) p-value, and every test with
the smallest difference it could have detected (``mcnemar_mde``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest, chi2, norm
from scipy.stats import t as t_dist
from sklearn.metrics import accuracy_score, f1_score

from layerfusion import checks

Metric = str | Callable[[np.ndarray, np.ndarray], float]

_RESAMPLE_BLOCK = 4_000_000  # resampled items held in memory at once (indices of one block of resamples)


class CI(NamedTuple):
    """A point estimate with a percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


class Test(NamedTuple):
    """McNemar's test: statistic, p-value and the two discordant counts.

    ``n10``: items ``pred_a`` gets right and ``pred_b`` wrong; ``n01``: the reverse.
    """

    statistic: float
    p_value: float
    n01: int
    n10: int


class PairedDiff(NamedTuple):
    """Difference ``metric(a) - metric(b)`` on the same items, its bootstrap interval and two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float


def _encode(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Map labels of any type to codes 0..K-1 over the union of the arrays."""
    classes, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    return [codes[bounds[i]:bounds[i + 1]] for i in range(len(arrays))], len(classes)


def accuracy(y: Sequence | np.ndarray, pred: Sequence | np.ndarray) -> float:
    """Fraction of items where ``pred`` equals ``y`` (scikit-learn's ``accuracy_score``)."""
    y, pred = checks.paired(y=y, pred=pred)
    return float(accuracy_score(y, pred))


def macro_f1(y: Sequence | np.ndarray, pred: Sequence | np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y`` or ``pred`` (scikit-learn's
    ``f1_score(average="macro")``)."""
    y, pred = checks.paired(y=y, pred=pred)
    return float(f1_score(y, pred, average="macro"))


def _macro_f1_weighted(y: np.ndarray, pred: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """Macro F1 for each row of ``weights`` (B, n): item i counted ``weights[b, i]`` times in resample b.

    Per class F1 = 2tp / (2tp + fp + fn); classes absent from both labels and predictions of a resample are left out,
    exactly as ``f1_score(average="macro")`` does on that resample (the tests check equality). Written out because
    it scores all resamples with three matrix products, where calling ``f1_score`` once per resample validates and
    re-encodes the labels every time: on a toy 400-item, 8-class interval of 1000 resamples that is about 90 times
    slower, and the study takes intervals for every layer, pooling, model and dataset.
    """
    correct = (y == pred).astype(np.float64)
    onehot_y = np.eye(k)[y]
    onehot_p = np.eye(k)[pred]
    tp = weights @ (onehot_y * correct[:, None])
    fn = weights @ (onehot_y * (1.0 - correct)[:, None])
    fp = weights @ (onehot_p * (1.0 - correct)[:, None])
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def bootstrap_indices(n: int, n_resamples: int, random_state: int) -> Iterator[np.ndarray]:
    """The engine's one bootstrap draw: ``n_resamples`` resamples of ``n`` items with replacement, yielded in blocks
    of (resamples, n) index arrays small enough to hold in memory; deterministic for a seed.

    ``bootstrap_ci``, ``paired_bootstrap`` and ``select.selection_frequencies`` all draw here. Why not
    ``scipy.stats.bootstrap``: these statistics are scored for many arrays on the same resample (both classifiers of
    a pair, every layer and C of a selection) and vectorised through resample counts (``resample_counts``), which
    scipy's API does not expose; the percentile interval itself is one ``np.quantile``.
    """
    checks.positive_int(n_resamples, "n_resamples")
    rng = np.random.default_rng(random_state)
    block = max(1, _RESAMPLE_BLOCK // n)
    for start in range(0, n_resamples, block):
        yield rng.integers(0, n, size=(min(block, n_resamples - start), n))


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n) float64 counts of how often each item was drawn in each resample of ``idx``."""
    flat = (np.arange(len(idx))[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


def _resample_scores(metric: Metric, y: np.ndarray, preds: list[np.ndarray], n_resamples: int,
                     random_state: int) -> tuple[list[float], np.ndarray]:
    """Point estimates and (n_resamples, len(preds)) bootstrap values of ``metric`` for each prediction array.

    All prediction arrays share the same resampled items, which makes the paired bootstrap paired.
    """
    checks.positive_int(n_resamples, "n_resamples")
    n = len(y)
    out = np.empty((n_resamples, len(preds)))
    if callable(metric):
        estimates = [float(metric(y, p)) for p in preds]
    elif metric == "accuracy":
        estimates = [accuracy(y, p) for p in preds]
    elif metric == "macro_f1":
        encoded, k = _encode(y, *preds)
        estimates = [macro_f1(y, p) for p in preds]
    else:
        raise ValueError(f"metric must be 'accuracy', 'macro_f1' or a callable(y_true, y_pred), got {metric!r}")
    start = 0
    for idx in bootstrap_indices(n, n_resamples, random_state):
        rows = slice(start, start + len(idx))
        start += len(idx)
        if callable(metric):
            for j, p in enumerate(preds):
                out[rows, j] = [metric(y[i], p[i]) for i in idx]
        elif metric == "accuracy":
            for j, p in enumerate(preds):
                out[rows, j] = (y == p)[idx].mean(axis=1)
        else:
            weights = resample_counts(idx, n)
            for j in range(len(preds)):
                out[rows, j] = _macro_f1_weighted(encoded[0], encoded[j + 1], k, weights)
    return estimates, out


def bootstrap_ci(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, metric: Metric = "accuracy",
                 n_resamples: int = 1000, alpha: float = 0.05, random_state: int = 0) -> CI:
    """Percentile-bootstrap ``1 - alpha`` interval of ``metric`` over test items; deterministic for a seed.

    ``metric`` is ``"accuracy"``, ``"macro_f1"`` (both vectorised) or any ``callable(y_true, y_pred) -> float``.
    """
    checks.significance(alpha)
    y, pred = checks.paired(y_true=y_true, y_pred=y_pred)
    (estimate,), boot = _resample_scores(metric, y, [pred], n_resamples, random_state)
    low, high = np.quantile(boot[:, 0], [alpha / 2, 1 - alpha / 2])
    return CI(float(estimate), float(low), float(high))


def paired_bootstrap(y_true: Sequence | np.ndarray, pred_a: Sequence | np.ndarray, pred_b: Sequence | np.ndarray,
                     metric: Metric = "accuracy", n_resamples: int = 1000, alpha: float = 0.05,
                     random_state: int = 0) -> PairedDiff:
    """Bootstrap the difference ``metric(a) - metric(b)`` on the same resampled items.

    The interval is the percentile interval of the bootstrap differences. The two-sided p-value is
    ``2 * min(P(diff <= 0), P(diff >= 0))`` with the add-one correction ``(count + 1) / (n_resamples + 1)``, capped
    at 1: the smallest level at which the percentile interval would exclude zero, never exactly 0.
    """
    checks.significance(alpha)
    y, a, b = checks.paired(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    (est_a, est_b), boot = _resample_scores(metric, y, [a, b], n_resamples, random_state)
    diff = boot[:, 0] - boot[:, 1]
    low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    below = (np.sum(diff <= 0) + 1) / (n_resamples + 1)
    above = (np.sum(diff >= 0) + 1) / (n_resamples + 1)
    return PairedDiff(float(est_a - est_b), float(low), float(high), float(min(1.0, 2 * min(below, above))))


def mcnemar(y_true: Sequence | np.ndarray, pred_a: Sequence | np.ndarray, pred_b: Sequence | np.ndarray,
            exact: bool | None = None) -> Test:
    """McNemar's test of equal accuracy for two classifiers on the same items.

    Exact two-sided binomial test on the discordant pairs when there are fewer than 25 of them (or ``exact=True``);
    otherwise the chi-squared statistic with continuity correction, ``(|n01 - n10| - 1)^2 / (n01 + n10)``, 1 d.o.f.
    The exact test's statistic is ``min(n01, n10)``. No discordant pairs: statistic 0, p-value 1.
    """
    y, a, b = checks.paired(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    right_a, right_b = a == y, b == y
    n10 = int(np.sum(right_a & ~right_b))
    n01 = int(np.sum(~right_a & right_b))
    n = n01 + n10
    if n == 0:
        return Test(0.0, 1.0, n01, n10)
    use_exact = n < 25 if exact is None else exact
    if use_exact:
        k = min(n01, n10)
        return Test(float(k), float(binomtest(k, n, 0.5).pvalue), n01, n10)
    stat = (abs(n01 - n10) - 1) ** 2 / n
    return Test(float(stat), float(chi2.sf(stat, df=1)), n01, n10)


def discordance(y: Sequence | np.ndarray, pred_a: Sequence | np.ndarray, pred_b: Sequence | np.ndarray) -> float:
    """Fraction of items exactly one of two classifiers gets right: McNemar's discordant-pair rate ``psi``.

    It sets the power of ``mcnemar`` (``mcnemar_power``, ``mcnemar_mde``): two classifiers that err on the same
    items leave few discordant pairs, and then a small accuracy difference is already detectable.
    """
    y, a, b = checks.paired(y=y, pred_a=pred_a, pred_b=pred_b)
    return float(np.mean((a == y) != (b == y)))


def _power_inputs(n: Any, psi: Any, alpha: Any, power: Any = 0.5) -> tuple[int, float, float, float]:
    n = checks.positive_int(n, "n")
    if isinstance(psi, bool) or not isinstance(psi, (int, float, np.floating)) or not 0.0 <= float(psi) <= 1.0:
        raise ValueError(f"discordance must be a rate in [0, 1] (fraction of items exactly one classifier gets "
                         f"right), got {psi!r}")
    return n, float(psi), checks.significance(alpha), checks.significance(power, "power")


def mcnemar_power(n: int, discordance: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the two-sided McNemar test at level ``alpha`` on ``n`` paired items, for an accuracy difference
    ``delta`` between two classifiers whose discordant-pair rate is ``discordance`` (``psi``).

    The normal approximation of Connor (1987):
    ``power = Phi((sqrt(n) abs(delta) - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2))``. A difference can never exceed the discordance (every discordant pair would favour one
    classifier), so ``|delta| > psi`` is an error; ``delta = 0`` or ``psi = 0`` gives no power beyond the size of
    the test's one tail (``alpha / 2``).
    """
    n, psi, alpha, _ = _power_inputs(n, discordance, alpha)
    delta = abs(float(delta))
    if delta > psi:
        raise ValueError(f"delta={delta!r} exceeds the discordance {psi!r}; an accuracy difference cannot be larger "
                         "than the share of items on which the classifiers disagree in correctness")
    if psi == 0.0 or psi - delta**2 <= 0.0:
        return float(alpha / 2) if delta == 0.0 else 1.0
    z = (np.sqrt(n) * delta - norm.ppf(1 - alpha / 2) * np.sqrt(psi)) / np.sqrt(psi - delta**2)
    return float(norm.cdf(z))


def mcnemar_mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable accuracy difference of the two-sided McNemar test on ``n`` paired items: the ``delta``
    found with probability ``power`` at level ``alpha`` when the discordant-pair rate is ``discordance``.

    Connor's (1987) sample-size equation ``n delta^2 = (z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2))^2``
    solved for ``delta``: ``delta = sqrt(psi) (s a + b sqrt(s^2 + b^2 - a^2)) / (s^2 + b^2)`` with ``s = sqrt(n)``,
    ``a = z_{1-alpha/2}``, ``b = z_power`` (the root with ``s delta >= a sqrt(psi)``), so
    ``mcnemar_power(n, psi, mcnemar_mde(n, psi)) == power``. NaN when nothing is detectable: no discordant pairs,
    too few items (``n <= a^2``), or a root above ``psi`` (even a difference as large as the discordance would be
    missed too often).
    """
    n, psi, alpha, power = _power_inputs(n, discordance, alpha, power)
    a, b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    if psi == 0.0 or n <= a**2:
        return float("nan")
    delta = np.sqrt(psi) * (np.sqrt(n) * a + b * np.sqrt(n + b**2 - a**2)) / (n + b**2)
    return float(delta) if delta <= psi else float("nan")


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order: monotone in the raw p-values and capped at 1.

    NaN entries stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"pvalues must be a non-empty 1-D array, got shape {p.shape}")
    valid = ~np.isnan(p)
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError("pvalues must lie in [0, 1]")
    out = np.full_like(p, np.nan)
    pv = p[valid]
    m = pv.size
    order = np.argsort(pv, kind="stable")
    scaled = (m - np.arange(m)) * pv[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out[valid] = res
    return out


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across seeds/resplits; the std is NaN for a single value."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("values is empty; pass at least one number")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def format_mean_std(values: Sequence[float] | np.ndarray, digits: int = 1, scale: float = 100.0) -> str:
    """``"mean ± std"`` of ``values * scale`` (percent by default); only the mean when there is one value."""
    mean, std = mean_std(values)
    if np.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


class Equivalence(NamedTuple):
    """Two one-sided tests (TOST) of ``|effect| < margin``: the TOST p-value (the larger of the two one-sided
    p-values), the ``1 - 2 alpha`` interval it is equivalent to, and whether that interval lies inside
    ``(-margin, margin)`` (equivalence shown at level ``alpha``)."""

    p_value: float
    low: float
    high: float
    equivalent: bool


def tost(estimate: float, se: float, margin: float, alpha: float = 0.05, dof: float | None = None) -> Equivalence:
    """Schuirmann's two one-sided tests for an effect ``estimate`` with standard error ``se`` against the
    equivalence margin ``±margin`` (same units), normal (``dof=None``) or t with ``dof`` degrees of freedom.

    ``p = max(P(T >= (estimate + margin)/se), P(T <= (estimate - margin)/se))`` under ``|effect| = margin``;
    equivalence at level ``alpha`` exactly when the ``1 - 2 alpha`` interval ``estimate ± q_{1-alpha} se`` lies
    inside ``(-margin, margin)``. NaN inputs give (NaN, NaN, NaN, False): no equivalence without a standard error.
    """
    checks.significance(alpha)
    if not margin > 0:
        raise ValueError(f"margin must be positive (the smallest effect of interest), got {margin!r}")
    if not (np.isfinite(estimate) and np.isfinite(se)) or se < 0:
        nan = float("nan")
        return Equivalence(nan, nan, nan, False)
    dist = norm if dof is None else t_dist(dof)
    if se == 0:
        inside = bool(-margin < estimate < margin)
        return Equivalence(0.0 if inside else 1.0, float(estimate), float(estimate), inside)
    p_low = float(dist.sf((estimate + margin) / se))   # H0: effect <= -margin
    p_high = float(dist.cdf((estimate - margin) / se))  # H0: effect >= +margin
    half = float(dist.ppf(1 - alpha)) * se
    low, high = float(estimate - half), float(estimate + half)
    return Equivalence(max(p_low, p_high), low, high, bool(-margin < low and high < margin))


class GroupedCorrelation(NamedTuple):
    """Spearman's rho within groups: the mean of the per-group coefficients, the per-group values (in order of
    first appearance), one-sided permutation p-values for a positive and for a negative mean, and the standard error
    of the mean rho from the permutation null (its spread under no association)."""

    rho: float
    per_group: dict
    p_greater: float
    p_less: float
    null_se: float
    n: int


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    r = rankdata(values, axis=-1)
    return r - r.mean(axis=-1, keepdims=True)


def within_group_spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                          groups: Sequence | np.ndarray, n_permutations: int = 10_000,
                          random_state: int = 0) -> GroupedCorrelation:
    """Association of ``x`` and ``y`` within groups, never between them (Simpson's paradox): Spearman's rho in
    each group (scipy's ``spearmanr``), averaged over groups with at least three items and variation in both.

    The null shuffles ``y`` within each group (exchangeable under no within-group association), so it is centred at
    zero whatever the groups' levels; the p-values count permuted means at least as extreme in each direction, with
    the add-one correction. Groups that cannot give a rho are left out; none left gives NaN everywhere.
    """
    from scipy.stats import spearmanr

    x, y, g = (np.asarray(a) for a in (x, y, groups))
    if not (x.shape == y.shape == g.shape) or x.ndim != 1:
        raise ValueError(f"x, y and groups must be 1-D of one length, got {x.shape}, {y.shape}, {g.shape}")
    checks.positive_int(n_permutations, "n_permutations")
    ok = np.isfinite(x.astype(float)) & np.isfinite(y.astype(float))
    per, blocks = {}, []
    for value in dict.fromkeys(g[ok].tolist()):
        sel = ok & (g == value)
        xs, ys = x[sel].astype(float), y[sel].astype(float)
        if xs.size < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue
        per[value] = float(spearmanr(xs, ys).statistic)
        blocks.append((_centred_ranks(xs), ys))
    if not per:
        nan = float("nan")
        return GroupedCorrelation(nan, per, nan, nan, nan, int(ok.sum()))
    rng = np.random.default_rng(random_state)
    null = np.zeros(n_permutations)
    for rx, ys in blocks:
        ry = _centred_ranks(rng.permuted(np.tile(ys, (n_permutations, 1)), axis=1))
        null += (ry @ rx) / np.sqrt((rx @ rx) * (ry * ry).sum(axis=1)) / len(blocks)
    observed = float(np.mean(list(per.values())))
    p_greater = float((np.sum(null >= observed - 1e-12) + 1) / (n_permutations + 1))
    p_less = float((np.sum(null <= observed + 1e-12) + 1) / (n_permutations + 1))
    return GroupedCorrelation(observed, per, p_greater, p_less, float(null.std(ddof=1)),
                              int(sum(rx.size for rx, _ in blocks)))
