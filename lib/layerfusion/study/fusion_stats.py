"""The tests behind the fusion claims (claims 2 and 3), shared by the fusion chapter's tables, the claims table and
the robustness chapter, so that the prose, the verdict and its recomputation quote one computation.

- ``paired_gain``: a fusion against a single model on the same test items, every seed used: per item, the share of
  seeds the fusion gets right minus the share the single model gets right; the mean of that difference is the gain
  in accuracy over seeds, tested with a one-sample t-test over items (with one seed this is McNemar's z-test).
- ``claim2_tests``: per dataset the fusion chosen on validation against the validation-best single model, and the
  complementarity test (``complementarity_test``: Spearman's rho between a pair's Cohen's kappa on validation and its
  concatenation gain on test, over every pair of every dataset), Holm-corrected as one family.
- ``stability_tests``: the spread of test accuracy with two models against three or more, read two ways: over seeds
  of one combination (``seed_spread_test``) and across combinations at an equal number of combinations
  (``combination_spread_test``), for the concatenations and for an ensemble of the single-model classifiers (the
  control that shows what averaging more models gives without fusion), and the difference between the two
  (``ensemble_contrast``).

Every test reports its effect with the sign the claim predicts, a 95 % interval where one is defined, the p-value
and a minimum detectable effect (MDE: ``(z(1 - alpha/2) + z(power))`` times the standard error from the bootstrap
or from the permutation null, the normal approximation). Resampling is stratified by dataset (datasets differ in
difficulty, so only within-dataset structure is tested) and seeded by ``SEED``, so a table is reproducible; it is
written here because scipy's ``permutation_test`` and ``bootstrap`` resample one unstratified pool.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata, spearmanr, ttest_1samp

from layerfusion import stats
from layerfusion.models import combo_label

ALPHA = 0.05
POWER = 0.80
N_PERMUTATIONS = 10_000
N_BOOTSTRAP = 2_000
SEED = 0
MAX_SUBSETS = 500
"""At most this many m-subsets of pairs enter one equal-m spread (all of them with four or five models)."""

DIAGNOSTICS = {"kappa": -1, "overlap_jaccard": -1, "cka": -1, "overlap_oracle_accuracy": 1}
"""Complementarity diagnostics (columns of the fusion chapter's ``complementarity`` table) and the sign of their
correlation with the fusion gain that "complementary models gain more" predicts; ``kappa`` is the primary one."""
PRIMARY_DIAGNOSTIC = "kappa"

TEST_COLUMNS = ("family", "test", "method", "n", "effect", "low", "high", "p_value", "p_holm", "mde", "claimed_sign")


class Gain(NamedTuple):
    """Mean accuracy gain over seeds on the same items, its 95 % t-interval, p-value and MDE (fractions)."""

    gain: float
    low: float
    high: float
    p_value: float
    mde: float


def _z(alpha: float = ALPHA, power: float = POWER) -> float:
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def _p_two_sided(observed: float, null: np.ndarray) -> float:
    """Permutation p-value with the add-one correction, never 0."""
    null = null[np.isfinite(null)]
    return float((np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (null.size + 1))


def paired_gain(y: np.ndarray, fused: np.ndarray, single: np.ndarray, alpha: float = ALPHA) -> Gain:
    """Gain of ``fused`` over ``single`` predictions, each (seeds, n) or (n,), on the same test items ``y``."""
    y = np.asarray(y)
    diff = (np.atleast_2d(fused) == y).mean(axis=0) - (np.atleast_2d(single) == y).mean(axis=0)
    gain = float(diff.mean())
    if np.ptp(diff) == 0:
        return Gain(gain, gain, gain, 1.0 if gain == 0 else 0.0, 0.0)
    result = ttest_1samp(diff, 0.0)
    ci = result.confidence_interval(1 - alpha)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return Gain(gain, float(ci.low), float(ci.high), float(result.pvalue), _z(alpha) * se)


def _within(strata: np.ndarray, n: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
    """(n, N) index rows that permute (or, with ``replace``, resample) items only within their stratum."""
    out = np.tile(np.arange(strata.size), (n, 1))
    for value in pd.unique(strata):
        idx = np.flatnonzero(strata == value)
        if replace:
            out[:, idx] = idx[rng.integers(0, idx.size, size=(n, idx.size))]
        else:
            out[:, idx] = idx[rng.permuted(np.tile(np.arange(idx.size), (n, 1)), axis=1)]
    return out


def _result(effect: float, low: float, high: float, p: float, mde: float, n: int, **extra: Any) -> dict[str, Any]:
    return {"n": int(n), "effect": float(effect), "low": float(low), "high": float(high), "p_value": float(p),
            "mde": float(mde), **extra}


def _empty(n: int, **extra: Any) -> dict[str, Any]:
    nan = float("nan")
    return _result(nan, nan, nan, nan, nan, n, **extra)


# -- claim 2: complementarity and the validation-chosen fusions ---------------------------------------------------

def complementarity_test(compl: pd.DataFrame, diagnostic: str = PRIMARY_DIAGNOSTIC,
                         n_permutations: int = N_PERMUTATIONS, n_bootstrap: int = N_BOOTSTRAP,
                         seed: int = SEED) -> dict[str, Any]:
    """Spearman's rho between ``diagnostic`` and ``gain_over_better`` over every pair of every dataset.

    The p-value permutes the gains within each dataset (so a difference between datasets is not read as an effect
    of complementarity); the 95 % interval resamples pairs within each dataset. Pairs of one dataset share models,
    so the pairs are not independent draws; the permutation null keeps that structure. Fewer than four pairs, or a
    constant column, give NaN.
    """
    df = compl.dropna(subset=[diagnostic, "gain_over_better"])
    extra = {"diagnostic": diagnostic, "claimed_sign": DIAGNOSTICS.get(diagnostic, -1),
             "n_datasets": int(df["dataset"].nunique()) if "dataset" in df else 1}
    if len(df) < 4 or df[diagnostic].nunique() < 2 or df["gain_over_better"].nunique() < 2:
        return _empty(len(df), **extra)
    strata = df["dataset"].to_numpy() if "dataset" in df else np.zeros(len(df))
    x, g = df[diagnostic].to_numpy(float), df["gain_over_better"].to_numpy(float)
    rho = float(spearmanr(x, g).statistic)
    rng = np.random.default_rng(seed)
    rx, rg = rankdata(x) - (len(x) + 1) / 2, rankdata(g) - (len(g) + 1) / 2
    null = (rg[_within(strata, n_permutations, rng, replace=False)] @ rx) / np.sqrt((rx @ rx) * (rg @ rg))
    idx = _within(strata, n_bootstrap, rng, replace=True)
    bx, bg = rankdata(x[idx], axis=1), rankdata(g[idx], axis=1)
    bx, bg = bx - bx.mean(axis=1, keepdims=True), bg - bg.mean(axis=1, keepdims=True)
    denom = np.sqrt((bx * bx).sum(axis=1) * (bg * bg).sum(axis=1))
    boot = np.divide((bx * bg).sum(axis=1), denom, out=np.full(len(denom), np.nan), where=denom > 0)
    low, high = np.nanquantile(boot, [ALPHA / 2, 1 - ALPHA / 2])
    return _result(rho, low, high, _p_two_sided(rho, null), _z() * float(np.nanstd(boot, ddof=1)), len(df), **extra)


def complementarity_correlation(compl: pd.DataFrame) -> pd.DataFrame:
    """``complementarity_test`` for every diagnostic in ``DIAGNOSTICS`` found in ``compl`` (kappa first: primary)."""
    rows = [{"diagnostic": col, "primary": col == PRIMARY_DIAGNOSTIC, **complementarity_test(compl, col)}
            for col in DIAGNOSTICS if col in compl]
    return pd.DataFrame(rows)


def chosen_fusions(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the fusion with the best mean validation accuracy among ``comparisons`` (any operator in it),
    with its test gain over the validation-best single model (interval, p and MDE from ``paired_gain``)."""
    if comparisons.empty:
        return comparisons.copy()
    picked = comparisons.loc[comparisons.groupby("dataset", sort=False)["val_mean"].idxmax()]
    return picked.reset_index(drop=True)


def claim2_tests(comparisons: pd.DataFrame, compl: pd.DataFrame) -> pd.DataFrame:
    """The family of claim 2, Holm-corrected together: per dataset, the validation-chosen fusion against the
    validation-best single model (effect: gain in accuracy), and the complementarity test (effect: rho)."""
    rows = []
    for r in chosen_fusions(comparisons).itertuples():
        rows.append({"family": "claim 2", "test": f"{r.dataset}: chosen fusion vs best single",
                     "method": f"{combo_label(r.models)} · {r.operator}", "dataset": r.dataset,
                     **_result(r.gain, r.gain_low, r.gain_high, r.p_value, r.gain_mde, r.n_test, claimed_sign=1)})
    compl_test = complementarity_test(compl)
    rows.append({"family": "claim 2", "test": f"Spearman rho({PRIMARY_DIAGNOSTIC}, gain), all pairs",
                 "method": "concatenation of pairs", "dataset": "all", **compl_test})
    return _with_holm(pd.DataFrame(rows))


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    table["p_holm"] = np.nan
    family = table["family"].str.startswith("claim") & table["p_value"].notna()
    if family.any():
        table.loc[family, "p_holm"] = stats.holm(table.loc[family, "p_value"].to_numpy())
    return table[[c for c in TEST_COLUMNS if c in table] + [c for c in table if c not in TEST_COLUMNS]]


# -- claim 3: stability -------------------------------------------------------------------------------------------

def _combos(stability: pd.DataFrame, method: str) -> pd.DataFrame:
    df = stability[(stability["method"] == method) & (stability["k"] >= 2)]
    return df.assign(many=df["k"] >= 3).reset_index(drop=True)


def _narrowing(v: np.ndarray, many: np.ndarray) -> np.ndarray:
    """Per row of ``v`` (B, N): mean over two-model combinations minus mean over >= 3 (``many`` marks those)."""
    few = ~many
    return (np.where(few, v, 0).sum(axis=-1) / few.sum(axis=-1)) - (np.where(many, v, 0).sum(axis=-1)
                                                                     / many.sum(axis=-1))


def _spread_test(values: np.ndarray, many: np.ndarray, strata: np.ndarray, n: int, **extra: Any) -> dict[str, Any]:
    """Narrowing of ``values`` from two to >= 3 models: permutation p (values moved between the groups within
    each dataset) and a stratified bootstrap interval (combinations resampled within dataset x group; not defined,
    NaN, when a dataset has a single combination in a group, as with three models)."""
    ok = np.isfinite(values)
    values, many, strata = values[ok], many[ok], strata[ok]
    if not (many.any() and (~many).any()):
        return _empty(int(ok.sum()), **extra)
    rng = np.random.default_rng(SEED)
    observed = float(_narrowing(values, many))
    null = _narrowing(values[_within(strata, n, rng, replace=False)], many)
    groups = np.array([f"{s}|{m}" for s, m in zip(strata, many)])
    if pd.Series(groups).value_counts().min() < 2:  # a group of one combination has no spread to resample
        nan = float("nan")
        return _result(observed, nan, nan, _p_two_sided(observed, null), nan, int(values.size), **extra)
    boot = _narrowing(values[_within(groups, N_BOOTSTRAP, rng, replace=True)], many)
    low, high = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2])
    return _result(observed, low, high, _p_two_sided(observed, null), _z() * float(np.std(boot, ddof=1)),
                   int(values.size), **extra)


def seed_spread_test(stability: pd.DataFrame, method: str = "concatenation",
                     n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Mean std over seeds of the two-model combinations minus that of the >= 3-model ones (positive: narrower
    with more models), over every combination of every dataset."""
    df = _combos(stability, method)
    return _spread_test(df["test_seed_std"].to_numpy(float), df["many"].to_numpy(), df["dataset"].to_numpy(),
                        n_permutations, claimed_sign=1, k2=float(df.loc[~df["many"], "test_seed_std"].mean()),
                        k3plus=float(df.loc[df["many"], "test_seed_std"].mean()))


def ensemble_contrast(stability: pd.DataFrame, n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """How much more the concatenations' seed spread narrows than the ensemble's, over the same combinations
    (positive: fusion narrows it more than averaging the single models' probabilities does)."""
    keys = ["dataset", "combo", "k"]
    both = _combos(stability, "concatenation").merge(_combos(stability, "ensemble")[keys + ["test_seed_std"]],
                                                     on=keys, suffixes=("", "_ensemble"))
    diff = (both["test_seed_std"] - both["test_seed_std_ensemble"]).to_numpy(float)
    return _spread_test(diff, both["many"].to_numpy(), both["dataset"].to_numpy(), n_permutations, claimed_sign=1)


def _subset_sd(values: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Mean over ``subsets`` (rows of column indices) of the std of ``values[..., subset]``."""
    return values[..., subsets].std(axis=-1, ddof=1).mean(axis=-1)


def combination_spread_test(stability: pd.DataFrame, method: str = "concatenation",
                            n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Spread across combinations at an equal number of combinations: for each dataset and each size k >= 3 with
    m >= 2 combinations, the std of their mean test accuracies against the mean std over every m-subset of the
    pairs (a std over fewer items is not smaller by construction this way). Effect: the mean over (dataset, k) of
    pairs' minus k's std (positive: narrower). Null: each group's deviations from its own mean, rescaled to unit
    degrees of freedom, are pooled and re-split at random; no bootstrap interval (too few combinations)."""
    df = _combos(stability, method)
    entries = []
    for _, g in df.groupby("dataset", sort=False):
        pairs = g.loc[g["k"] == 2, "test_mean"].to_numpy(float)
        for k, grp in g[g["k"] >= 3].groupby("k"):
            vals = grp["test_mean"].to_numpy(float)
            if 2 <= vals.size <= pairs.size:
                subsets = np.array(list(combinations(range(pairs.size), vals.size))[:MAX_SUBSETS])
                entries.append((pairs, vals, subsets))
    if not entries:
        return _empty(0, claimed_sign=1)
    rng = np.random.default_rng(SEED)
    observed, null = 0.0, np.zeros(n_permutations)
    for pairs, vals, subsets in entries:
        observed += float(_subset_sd(pairs, subsets) - vals.std(ddof=1)) / len(entries)
        pooled = np.concatenate([(x - x.mean()) * np.sqrt(x.size / (x.size - 1)) for x in (vals, pairs)])
        drawn = rng.permuted(np.tile(pooled, (n_permutations, 1)), axis=1)
        null += (_subset_sd(drawn[:, vals.size:], subsets) - drawn[:, :vals.size].std(axis=1, ddof=1)) / len(entries)
    nan = float("nan")
    return _result(observed, nan, nan, _p_two_sided(observed, null), _z() * float(null.std(ddof=1)),
                   sum(p.size + v.size for p, v, _ in entries), claimed_sign=1)


def stability_tests(stability: pd.DataFrame, n_permutations: int = N_PERMUTATIONS) -> pd.DataFrame:
    """Claim 3's family (the concatenations' seed spread and equal-m combination spread, Holm-corrected together)
    and its controls (the same for the ensemble, and the concatenation-minus-ensemble narrowing), effects in
    accuracy (fractions; positive = narrower with three or more models)."""
    rows = [
        {"family": "claim 3", "test": "std over seeds, 2 vs >=3 models", "method": "concatenation",
         **seed_spread_test(stability, "concatenation", n_permutations)},
        {"family": "claim 3", "test": "std across combinations, equal m",
         "method": "concatenation", **combination_spread_test(stability, "concatenation", n_permutations)},
        {"family": "control", "test": "std over seeds, 2 vs >=3 models", "method": "ensemble",
         **seed_spread_test(stability, "ensemble", n_permutations)},
        {"family": "control", "test": "std across combinations, equal m", "method": "ensemble",
         **combination_spread_test(stability, "ensemble", n_permutations)},
        {"family": "control", "test": "seed-std narrowing, fusion minus ensemble",
         "method": "concatenation - ensemble", **ensemble_contrast(stability, n_permutations)},
    ]
    return _with_holm(pd.DataFrame(rows))
