"""The tests behind the fusion claims (claims 2 and 3), shared by the fusion chapter's tables, the claims table and
the robustness chapter, so that the prose, the verdict and its recomputation quote one computation. Every level
(``alpha``, ``power``) and equivalence margin comes from the profile through ``verdicts.Levels``.

Written down before they are run (claim, unit, direction, null, family):

- **Claim 2, complementarity** (primary; ``complementarity_test``): unit = a model pair within a dataset; statistic =
  the mean over datasets of Spearman's rho(Cohen's kappa of the pair's two single models on validation, the pair's
  concatenation gain over its better member on test); claimed direction negative (lower kappa = the models disagree
  more = more complementary = larger gain); null = gains shuffled within each dataset (centred at zero); one-sided
  p in each direction; family = claim 2 (Holm). Per-dataset rhos are reported beside it.
- **Claim 2, chosen fusion vs best single** (``claim2_tests``): unit = test item (paired, seeds averaged); per
  dataset the fusion chosen on validation minus the validation-best single model; claimed positive; null = equal
  accuracy (one-sample t over items); family = claim 2.
- **Claim 2, chosen fusion vs its ensemble** (control in the family): the same fusion minus the ensemble of its own
  single-model classifiers (probabilities averaged), per dataset; claimed positive (fusion adds beyond averaging).
- **Claim 3, spread across combinations at equal m** (primary; ``combination_spread_test``): unit = a combination
  of models within a dataset; statistic = mean over (dataset, k >= 3) of [mean std over m-subsets of the pairs minus
  std of the k-model combinations]; claimed positive (narrower with more models); null = within-group deviations
  pooled and re-split; family = claim 3. Optimiser noise (``seed_spread_test``, std over seeds) is a secondary,
  outside the family; the ensemble of the same single models is the control.

Every test reports its effect with the sign the claim predicts, a ``1 - alpha`` interval, one-sided p-values in the
claimed and the opposite direction, a minimum detectable effect (``Levels.mde_factor`` standard errors: one-sided,
Holm's worst-case level over the family) and a TOST against the profile's margin. Resampling is stratified by
dataset and seeded by ``SEED``, so a table is reproducible; it is written here because scipy's
``permutation_test`` and ``bootstrap`` resample one unstratified pool.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import norm, ttest_1samp

from layerfusion import stats
from layerfusion.models import combo_label
from layerfusion.study.verdicts import Levels, one_sided

N_PERMUTATIONS = 10_000
N_BOOTSTRAP = 2_000
SEED = 0
MAX_SUBSETS = 500
"""At most this many m-subsets of pairs enter one equal-m spread (all of them with four or five models)."""

DIAGNOSTICS = {"kappa": -1, "overlap_jaccard": -1, "cka": -1, "overlap_oracle_accuracy": 1}
"""Complementarity diagnostics (columns of the fusion chapter's ``complementarity`` table) and the sign of their
correlation with the fusion gain that "complementary models gain more" predicts; ``kappa`` is the primary one."""
PRIMARY_DIAGNOSTIC = "kappa"

TEST_COLUMNS = ("family", "test", "method", "dataset", "unit", "n", "effect", "low", "high", "se", "p_value",
                "p_opposite", "p_holm", "p_opposite_holm", "mde", "claimed_sign", "margin", "tost_p", "equivalent")


class Gain(NamedTuple):
    """Mean accuracy gain over seeds on the same items, its ``1 - alpha`` t-interval, two-sided p-value, MDE and
    standard error (fractions)."""

    gain: float
    low: float
    high: float
    p_value: float
    mde: float
    se: float


def paired_gain(y: np.ndarray, fused: np.ndarray, single: np.ndarray, levels: Levels) -> Gain:
    """Gain of ``fused`` over ``single`` predictions, each (seeds, n) or (n,), on the same test items ``y``: per
    item the share of seeds right minus the other's share, tested with a one-sample t-test over items (with one
    seed this is McNemar's z-test)."""
    y = np.asarray(y)
    diff = (np.atleast_2d(fused) == y).mean(axis=0) - (np.atleast_2d(single) == y).mean(axis=0)
    gain = float(diff.mean())
    if np.ptp(diff) == 0:
        return Gain(gain, gain, gain, 1.0 if gain == 0 else 0.0, 0.0, 0.0)
    result = ttest_1samp(diff, 0.0)
    ci = result.confidence_interval(1 - levels.alpha)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return Gain(gain, float(ci.low), float(ci.high), float(result.pvalue), levels.mde_factor() * se, se)


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


def _tail_p(observed: float, null: np.ndarray) -> tuple[float, float]:
    """One-sided permutation p-values (greater, less) with the add-one correction, never 0."""
    null = null[np.isfinite(null)]
    greater = (np.sum(null >= observed - 1e-12) + 1) / (null.size + 1)
    less = (np.sum(null <= observed + 1e-12) + 1) / (null.size + 1)
    return float(greater), float(less)


def _result(effect: float, low: float, high: float, se: float, p_claimed: float, p_opposite: float, n: int,
            claimed_sign: int, margin: float, levels: Levels, n_family: int = 1, **extra: Any) -> dict[str, Any]:
    """A test row: effect, interval, one-sided p-values, MDE (one-sided at Holm's worst-case level over
    ``n_family`` tests) and the TOST against ``margin`` (same units as the effect)."""
    eq = stats.tost(effect, se, margin, levels.alpha)
    return {"n": int(n), "effect": float(effect), "low": float(low), "high": float(high), "se": float(se),
            "p_value": float(p_claimed), "p_opposite": float(p_opposite),
            "mde": levels.mde_factor(n_family) * float(se) if np.isfinite(se) else float("nan"),
            "claimed_sign": int(claimed_sign), "margin": float(margin), "tost_p": eq.p_value,
            "equivalent": eq.equivalent, **extra}


def _empty(n: int, claimed_sign: int, margin: float, levels: Levels, **extra: Any) -> dict[str, Any]:
    nan = float("nan")
    return _result(nan, nan, nan, nan, nan, nan, n, claimed_sign, margin, levels, **extra)


# -- claim 2: complementarity and the validation-chosen fusions ---------------------------------------------------

def complementarity_test(compl: pd.DataFrame, levels: Levels, diagnostic: str = PRIMARY_DIAGNOSTIC,
                         n_permutations: int = N_PERMUTATIONS, seed: int = SEED) -> dict[str, Any]:
    """Spearman's rho between ``diagnostic`` and ``gain_over_better`` within each dataset, averaged over datasets
    (``stats.within_group_spearman``: the null shuffles gains within datasets, so it is centred at zero and a
    difference between datasets is never read as complementarity).

    Effect: the mean within-dataset rho; ``per_dataset``: each dataset's rho; p-values one-sided in the direction
    ``DIAGNOSTICS`` gives the diagnostic and in the opposite one; standard error: the permutation null's standard
    deviation, which gives the interval (normal approximation, clipped to [-1, 1]), the MDE and the TOST against
    ``levels.rho_margin``. Pairs of one dataset share models; the within-dataset permutation keeps that structure.
    """
    sign = DIAGNOSTICS.get(diagnostic, -1)
    df = compl.dropna(subset=[diagnostic, "gain_over_better"]) if diagnostic in compl else compl.iloc[:0]
    groups = df["dataset"].to_numpy() if "dataset" in df else np.zeros(len(df))
    extra = {"diagnostic": diagnostic, "n_datasets": int(pd.Series(groups).nunique())}
    if len(df) < 3:
        return _empty(len(df), sign, levels.rho_margin, levels, per_dataset="", **extra)
    r = stats.within_group_spearman(df[diagnostic].to_numpy(float), df["gain_over_better"].to_numpy(float), groups,
                                    n_permutations, seed)
    per = "; ".join(f"{k} {v:+.2f}" for k, v in r.per_group.items())
    if not np.isfinite(r.rho):
        return _empty(r.n, sign, levels.rho_margin, levels, per_dataset=per, **extra)
    p_claimed, p_opposite = (r.p_less, r.p_greater) if sign < 0 else (r.p_greater, r.p_less)
    half = levels.z_two_sided() * r.null_se
    return _result(r.rho, max(-1.0, r.rho - half), min(1.0, r.rho + half), r.null_se, p_claimed, p_opposite, r.n,
                   sign, levels.rho_margin, levels, per_dataset=per, **{**extra, "n_datasets": len(r.per_group)})


def complementarity_correlation(compl: pd.DataFrame, levels: Levels) -> pd.DataFrame:
    """``complementarity_test`` for every diagnostic in ``DIAGNOSTICS`` found in ``compl`` (kappa first: primary)."""
    rows = [{"diagnostic": col, "primary": col == PRIMARY_DIAGNOSTIC, **complementarity_test(compl, levels, col)}
            for col in DIAGNOSTICS if col in compl]
    return pd.DataFrame(rows)


def chosen_fusions(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the fusion with the best mean validation accuracy among ``comparisons`` (any operator in it),
    with its test gain over the validation-best single model (interval, p and MDE from ``paired_gain``)."""
    if comparisons.empty:
        return comparisons.copy()
    picked = comparisons.loc[comparisons.groupby("dataset", sort=False)["val_mean"].idxmax()]
    return picked.reset_index(drop=True)


def _gain_row(effect: float, se: float, p_two: float, n: int, levels: Levels, n_family: int) -> dict[str, Any]:
    """A claim-2 accuracy row (claimed positive) from a paired gain's effect, standard error and two-sided p."""
    p_claimed, p_opposite = one_sided(effect, p_two, 1)
    half = levels.z_two_sided() * se if np.isfinite(se) else float("nan")
    return _result(effect, effect - half, effect + half, se, p_claimed, p_opposite, n, 1, levels.margin_points / 100,
                   levels, n_family)


def wins_and_losses(comparisons: pd.DataFrame, levels: Levels) -> pd.DataFrame:
    """Per dataset and operator: fusions significantly better and significantly worse than the validation-best
    single model (Holm over every fusion of the dataset, the chapter's ``p_holm``; ``alpha`` from ``levels``), and
    how many were tested; a final ``all`` row per dataset. Losses are shown beside wins."""
    if comparisons.empty:
        return pd.DataFrame(columns=["dataset", "operator", "fusions", "better", "worse", "neither"])
    sig = comparisons["p_holm"] < levels.alpha
    df = comparisons.assign(better=sig & (comparisons["gain"] > 0), worse=sig & (comparisons["gain"] < 0))
    rows = []
    for dataset, grp in df.groupby("dataset", sort=False):
        for op, g in [*grp.groupby("operator", sort=False), ("all", grp)]:
            rows.append({"dataset": dataset, "operator": op, "fusions": len(g), "better": int(g["better"].sum()),
                         "worse": int(g["worse"].sum()),
                         "neither": int(len(g) - g["better"].sum() - g["worse"].sum())})
    return pd.DataFrame(rows)


def claim2_tests(comparisons: pd.DataFrame, compl: pd.DataFrame, levels: Levels) -> pd.DataFrame:
    """The family of claim 2, Holm-corrected together (each direction): the complementarity test (primary; effect
    rho), and per dataset the validation-chosen fusion against the validation-best single model and against the
    ensemble of its own single-model classifiers (effects: accuracy gain, fractions). A comparisons table without
    the ensemble columns (older results) leaves the ensemble rows out."""
    chosen = chosen_fusions(comparisons)
    has_ensemble = "ensemble_gain" in chosen and chosen["ensemble_gain"].notna().any()
    n_family = 1 + len(chosen) * (2 if has_ensemble else 1)
    rows = [{"family": "claim 2", "test": f"within-dataset Spearman rho({PRIMARY_DIAGNOSTIC}, gain)",
             "method": "concatenation of pairs", "dataset": "all", "unit": "rho", "primary": True,
             **complementarity_test(compl, levels)}]
    rows[0]["mde"] = levels.mde_factor(n_family) * rows[0]["se"]
    for r in chosen.itertuples():
        label = f"{combo_label(r.models)} · {r.operator}"
        se = getattr(r, "gain_se", float("nan"))
        rows.append({"family": "claim 2", "test": f"{r.dataset}: chosen fusion vs best single", "method": label,
                     "dataset": r.dataset, "unit": "accuracy", "primary": False,
                     **_gain_row(r.gain, se, r.p_value, r.n_test, levels, n_family)})
        if has_ensemble and np.isfinite(getattr(r, "ensemble_gain", np.nan)):
            rows.append({"family": "claim 2", "test": f"{r.dataset}: chosen fusion vs its ensemble",
                         "method": label, "dataset": r.dataset, "unit": "accuracy", "primary": False,
                         **_gain_row(r.ensemble_gain, r.ensemble_se, r.ensemble_p, r.n_test, levels, n_family)})
    return _with_holm(pd.DataFrame(rows))


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """Holm within each family whose name starts with 'claim', separately for each direction."""
    table["p_holm"], table["p_opposite_holm"] = np.nan, np.nan
    for family in table["family"].unique():
        rows = (table["family"] == family) & table["p_value"].notna()
        if str(family).startswith("claim") and rows.any():
            table.loc[rows, "p_holm"] = stats.holm(table.loc[rows, "p_value"].to_numpy())
            table.loc[rows, "p_opposite_holm"] = stats.holm(table.loc[rows, "p_opposite"].to_numpy())
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


def _spread_test(values: np.ndarray, many: np.ndarray, strata: np.ndarray, n: int, levels: Levels,
                 **extra: Any) -> dict[str, Any]:
    """Narrowing of ``values`` from two to >= 3 models (claimed positive): one-sided permutation p-values (values
    moved between the groups within each dataset) and a stratified bootstrap interval and standard error
    (combinations resampled within dataset x group; NaN when a dataset has a single combination in a group, as
    with three models). The TOST uses ``levels.spread_margin`` (points, so /100 here)."""
    ok = np.isfinite(values)
    values, many, strata = values[ok], many[ok], strata[ok]
    margin = levels.spread_margin / 100
    if not (many.any() and (~many).any()):
        return _empty(int(ok.sum()), 1, margin, levels, **extra)
    rng = np.random.default_rng(SEED)
    observed = float(_narrowing(values, many))
    p_greater, p_less = _tail_p(observed, _narrowing(values[_within(strata, n, rng, replace=False)], many))
    groups = np.array([f"{s}|{m}" for s, m in zip(strata, many)])
    if pd.Series(groups).value_counts().min() < 2:  # a group of one combination has no spread to resample
        nan = float("nan")
        return _result(observed, nan, nan, nan, p_greater, p_less, int(values.size), 1, margin, levels, **extra)
    boot = _narrowing(values[_within(groups, N_BOOTSTRAP, rng, replace=True)], many)
    low, high = np.quantile(boot, [levels.alpha / 2, 1 - levels.alpha / 2])
    return _result(observed, low, high, float(np.std(boot, ddof=1)), p_greater, p_less, int(values.size), 1, margin,
                   levels, **extra)


def seed_spread_test(stability: pd.DataFrame, levels: Levels, method: str = "concatenation",
                     n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Optimiser noise: mean std over seeds of the two-model combinations minus that of the >= 3-model ones
    (positive: narrower with more models), over every combination of every dataset."""
    df = _combos(stability, method)
    return _spread_test(df["test_seed_std"].to_numpy(float), df["many"].to_numpy(), df["dataset"].to_numpy(),
                        n_permutations, levels, k2=float(df.loc[~df["many"], "test_seed_std"].mean()),
                        k3plus=float(df.loc[df["many"], "test_seed_std"].mean()))


def ensemble_contrast(stability: pd.DataFrame, levels: Levels, n_permutations: int = N_PERMUTATIONS
                      ) -> dict[str, Any]:
    """How much more the concatenations' seed spread narrows than the ensemble's, over the same combinations
    (positive: fusion narrows it more than averaging the single models' probabilities does)."""
    keys = ["dataset", "combo", "k"]
    both = _combos(stability, "concatenation").merge(_combos(stability, "ensemble")[keys + ["test_seed_std"]],
                                                     on=keys, suffixes=("", "_ensemble"))
    diff = (both["test_seed_std"] - both["test_seed_std_ensemble"]).to_numpy(float)
    return _spread_test(diff, both["many"].to_numpy(), both["dataset"].to_numpy(), n_permutations, levels)


def _subset_sd(values: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Mean over ``subsets`` (rows of column indices) of the std of ``values[..., subset]``."""
    return values[..., subsets].std(axis=-1, ddof=1).mean(axis=-1)


def combination_spread_test(stability: pd.DataFrame, levels: Levels, method: str = "concatenation",
                            n_permutations: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Spread across combinations at an equal number of combinations (claim 3's primary test): for each dataset
    and each size k >= 3 with m >= 2 combinations, the std of their mean test accuracies against the mean std over
    every m-subset of the pairs (a std over fewer items is not smaller by construction this way). Effect: the mean
    over (dataset, k) of pairs' minus k's std (positive: narrower); ``per_dataset`` gives each dataset's mean.
    Null: each group's deviations from its own mean, rescaled to unit degrees of freedom, are pooled and re-split
    at random; one-sided p-values both ways; the null's standard deviation is the standard error (interval: normal
    approximation; no bootstrap, too few combinations)."""
    df = _combos(stability, method)
    entries = []
    for dataset, g in df.groupby("dataset", sort=False):
        pairs = g.loc[g["k"] == 2, "test_mean"].to_numpy(float)
        for k, grp in g[g["k"] >= 3].groupby("k"):
            vals = grp["test_mean"].to_numpy(float)
            if 2 <= vals.size <= pairs.size:
                subsets = np.array(list(combinations(range(pairs.size), vals.size))[:MAX_SUBSETS])
                entries.append((dataset, pairs, vals, subsets))
    margin = levels.spread_margin / 100
    if not entries:
        return _empty(0, 1, margin, levels, per_dataset="")
    rng = np.random.default_rng(SEED)
    observed, null, per = 0.0, np.zeros(n_permutations), {}
    for dataset, pairs, vals, subsets in entries:
        effect = float(_subset_sd(pairs, subsets) - vals.std(ddof=1))
        observed += effect / len(entries)
        per.setdefault(dataset, []).append(effect)
        pooled = np.concatenate([(x - x.mean()) * np.sqrt(x.size / (x.size - 1)) for x in (vals, pairs)])
        drawn = rng.permuted(np.tile(pooled, (n_permutations, 1)), axis=1)
        null += (_subset_sd(drawn[:, vals.size:], subsets) - drawn[:, :vals.size].std(axis=1, ddof=1)) / len(entries)
    p_greater, p_less = _tail_p(observed, null)
    se = float(null.std(ddof=1))
    half = levels.z_two_sided() * se
    text = "; ".join(f"{d} {np.mean(v) * 100:+.2f}" for d, v in per.items())
    return _result(observed, observed - half, observed + half, se, p_greater, p_less,
                   sum(p.size + v.size for _, p, v, _ in entries), 1, margin, levels, per_dataset=text,
                   n_datasets_narrower=int(sum(np.mean(v) > 0 for v in per.values())), n_datasets=len(per))


def stability_tests(stability: pd.DataFrame, levels: Levels, n_permutations: int = N_PERMUTATIONS) -> pd.DataFrame:
    """Claim 3's family (its primary: the concatenations' spread across combinations at equal m), its secondary
    (optimiser noise: std over seeds; reported, outside the family) and its controls (the same for the ensemble of
    the single-model classifiers, and the concatenation-minus-ensemble seed narrowing), effects in accuracy
    (fractions; positive = narrower with three or more models)."""
    rows = [
        {"family": "claim 3", "test": "std across combinations, equal m", "method": "concatenation",
         "unit": "accuracy", "primary": True,
         **combination_spread_test(stability, levels, "concatenation", n_permutations)},
        {"family": "secondary", "test": "std over seeds, 2 vs >=3 models", "method": "concatenation",
         "unit": "accuracy", "primary": False, **seed_spread_test(stability, levels, "concatenation", n_permutations)},
        {"family": "control", "test": "std across combinations, equal m", "method": "ensemble", "unit": "accuracy",
         "primary": False, **combination_spread_test(stability, levels, "ensemble", n_permutations)},
        {"family": "control", "test": "std over seeds, 2 vs >=3 models", "method": "ensemble", "unit": "accuracy",
         "primary": False, **seed_spread_test(stability, levels, "ensemble", n_permutations)},
        {"family": "control", "test": "seed-std narrowing, fusion minus ensemble", "unit": "accuracy",
         "method": "concatenation - ensemble", "primary": False,
         **ensemble_contrast(stability, levels, n_permutations)},
    ]
    return _with_holm(pd.DataFrame(rows))
