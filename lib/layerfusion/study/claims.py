"""The claims table: each claim of the paper judged from this run's result files by a test written down before it
was run, and one verdict rule (``verdicts.judge``).

Every row has the columns ``COLUMNS``: the claim, its verdict, the decisive test, its unit, the claimed direction,
the null hypothesis, the correction family, the statistic, the effect with its ``1 - alpha`` interval, the one-sided
p-values (claimed and opposite direction, after correction), the minimum detectable effect at the profile's power
(MDE, one-sided at Holm's worst-case level over the family), the TOST p-value against the profile's equivalence
margin, the evidence in words and where the book shows it. Levels and margins come from the profile
(``verdicts.Levels.of(config)``: ``power.alpha``, ``power.power``, the ``claims`` block); nothing is fixed here.

The tests, as registered (effects in accuracy points unless said):

1. **Layers** (``layer_claim``): unit = dataset (the models of a dataset share its test items, so they are not
   independent): per dataset the mean over models of selected − last layer on test, its standard error bounded by
   the mean of the cells' McNemar standard errors (valid for any correlation between models on shared items);
   primary = the mean over datasets (independent test sets), one-sided z, claimed > 0, null = no difference;
   "depends on the dataset" = Cochran's Q heterogeneity of the per-dataset differences; family = {primary, Q}
   (Holm); where the effect lives = per-dataset one-sided tests, Holm over datasets, and the per-cell McNemar tests.
2. **Complementarity** (``fusion_claim``; tests in ``fusion_stats``): primary = mean within-dataset Spearman
   rho(kappa, gain), claimed < 0 (lower kappa = more complementary = larger gain), null = gains shuffled within
   datasets; with per dataset the chosen fusion vs the best single model and vs its own ensemble (paired over test
   items); family = claim 2 (Holm). Wins and losses of every fusion are counted beside it.
3. **Stability** (``stability_claim``): primary = spread across combinations at an equal number m of
   combinations, claimed > 0 (narrower with three or more models), null = within-group deviations re-split;
   optimiser noise (std over seeds) is a secondary, the ensemble a control.
4. **Overhead** (``overhead_claim``): least-squares slopes of the overhead chapter's scaling curves, claimed > 0,
   Holm over curves; no equivalence margin exists for a slope, so it is never "not supported".

The automated layer search (the authors' future work, not a claim) is reported descriptively beside the table
(``beyond_the_paper``), not judged.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from layerfusion import stats
from layerfusion.study import fusion_stats
from layerfusion.study.chapters.overhead import gpu_layer_sweep
from layerfusion.study.verdicts import VERDICTS, Levels, judge, one_sided

COLUMNS = ("claim", "verdict", "test", "unit", "direction", "null", "family", "statistic", "effect", "effect_low",
           "effect_high", "p_value", "p_opposite", "mde", "power", "tost_p", "margin", "evidence", "where")
DISTINCT_OVERLAP = 0.05
"""Two datasets select distinct layers of a model (descriptive, no error control) when their bootstrap selection
distributions share less than this much probability mass."""
Loader = Callable[[str], pd.DataFrame]


# -- the row ---------------------------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """A float for the table, None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _row(claim: str, verdict: str, evidence: str, where: str, *, test: str | None = None, unit: str | None = None,
         direction: str | None = None, null: str | None = None, family: str | None = None,
         statistic: float | None = None, effect: float | None = None, effect_low: float | None = None,
         effect_high: float | None = None, p_value: float | None = None, p_opposite: float | None = None,
         mde: float | None = None, power: float | None = None, tost_p: float | None = None,
         margin: float | None = None) -> dict[str, Any]:
    """One row of the claims table, with every column of ``COLUMNS`` (numbers as floats, missing ones as None)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"claim": claim, "verdict": verdict, "test": test, "unit": unit, "direction": direction, "null": null,
            "family": family, "statistic": _number(statistic), "effect": _number(effect),
            "effect_low": _number(effect_low), "effect_high": _number(effect_high), "p_value": _number(p_value),
            "p_opposite": _number(p_opposite), "mde": _number(mde), "power": _number(power),
            "tost_p": _number(tost_p),
            "margin": _number(margin), "evidence": evidence, "where": where}


def power_at(margin: float, mde: float, levels: Levels, n_tests: int = 1) -> float:
    """The power of a one-sided test at Holm's first-step level (``alpha / n_tests``) to detect an effect the size
    of the equivalence ``margin``, from its MDE at the profile's power (``mde = (z_{1-a} + z_power) se``): the
    chance this study had of finding the smallest effect the profile calls relevant."""
    if not (np.isfinite(margin) and np.isfinite(mde)) or mde <= 0:
        return float("nan")
    z_a = float(sps.norm.ppf(1 - levels.alpha / max(1, n_tests)))
    se = mde / levels.mde_factor(n_tests)
    return float(sps.norm.cdf(margin / se - z_a))


def _pts(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2g}"


# -- claim 1: layers -------------------------------------------------------------------------------------------------

def dataset_dependence(frequencies: pd.DataFrame, threshold: float = DISTINCT_OVERLAP) -> pd.DataFrame:
    """For each model and pair of its datasets, the overlap of their bootstrap selection distributions
    (descriptive: no error control; the claim's test of dataset dependence is ``dataset_effects``' Q).

    ``frequencies`` has ``model, dataset, layer, frequency`` (how often each layer was chosen over bootstrap
    resamples of the selection items; one pooling and protocol). The overlap is ``sum over layers of min(f_a, f_b)``:
    1 when the distributions are the same, 0 when no layer is ever chosen on both. Columns: ``model, dataset_a,
    dataset_b, overlap, distinct`` (overlap below ``threshold``).
    """
    rows = []
    for model, grp in frequencies.groupby("model", sort=False):
        table = grp.pivot_table(index="dataset", columns="layer", values="frequency", fill_value=0.0, sort=False)
        names = list(table.index)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                overlap = float(np.minimum(table.loc[a], table.loc[b]).sum())
                rows.append({"model": model, "dataset_a": a, "dataset_b": b, "overlap": overlap,
                             "distinct": overlap < threshold})
    return pd.DataFrame(rows, columns=["model", "dataset_a", "dataset_b", "overlap", "distinct"])


def _selection_rows(summary: pd.DataFrame, frequencies: pd.DataFrame | None, pooling: str) -> pd.DataFrame:
    """The bootstrap frequencies of ``pooling`` under the protocol the summary selected with."""
    if frequencies is None or frequencies.empty:
        return pd.DataFrame(columns=["model", "dataset", "layer", "frequency"])
    rows = frequencies[frequencies["pooling"] == pooling]
    if "protocol" in summary and "protocol" in rows:
        rows = rows[rows["protocol"].isin(summary["protocol"].unique())]
    return rows


def cell_se(delta: np.ndarray, discordance: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Standard error of a paired accuracy difference ``delta`` on ``n`` items with discordant-pair rate
    ``discordance``: ``sqrt((psi - delta^2) / n)`` (the variance of the per-item difference, as McNemar's z uses);
    0 where the two classifiers never disagree (the selected layer is the last)."""
    var = np.clip(np.asarray(discordance, float) - np.asarray(delta, float) ** 2, 0.0, None)
    return np.sqrt(np.nan_to_num(var) / np.asarray(n, float))


def dataset_effects(summary: pd.DataFrame, pooling: str, levels: Levels) -> pd.DataFrame:
    """Per dataset (the unit of claim 1): models, the mean over models of selected − last test accuracy (points),
    its standard error (the mean of the cells' standard errors: the largest the mean's can be, whatever the
    correlation of models scored on the same items), one-sided p-values (claimed > 0 and opposite, normal),
    Holm over datasets in each direction, the models whose selected layer is significantly better than the last
    (per-cell McNemar, the layer chapter's Holm across cells) and the MDE (points, one-sided at ``alpha / D``)."""
    df = summary[summary["pooling"] == pooling].copy()
    cols = ["dataset", "n_models", "difference", "se", "p_value", "p_opposite", "p_holm", "p_opposite_holm", "mde",
            "models_better", "models_worse"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    delta = df["delta_best_minus_last"].to_numpy(float)
    psi = (df["discordance_best_last"].to_numpy(float) if "discordance_best_last" in df
           else np.full(len(df), np.nan))
    df["se"] = cell_se(delta, np.where(df["best_is_last"], 0.0, psi), df["n_test"].to_numpy(float))
    df["better"] = (df["p_best_vs_last_holm"] < levels.alpha) & (df["delta_best_minus_last"] > 0)
    df["worse"] = (df["p_best_vs_last_holm"] < levels.alpha) & (df["delta_best_minus_last"] < 0)
    rows = []
    for dataset, g in df.groupby("dataset", sort=False):
        d, se = float(g["delta_best_minus_last"].mean()) * 100, float(g["se"].mean()) * 100
        if se > 0:
            z = d / se
            p, p_opp = float(sps.norm.sf(z)), float(sps.norm.cdf(z))
        else:
            p, p_opp = (0.0, 1.0) if d > 0 else (1.0, 0.0) if d < 0 else (1.0, 1.0)
        rows.append({"dataset": dataset, "n_models": len(g), "difference": d, "se": se, "p_value": p,
                     "p_opposite": p_opp, "models_better": ", ".join(g.loc[g["better"], "model"]) or "none",
                     "models_worse": ", ".join(g.loc[g["worse"], "model"]) or "none"})
    out = pd.DataFrame(rows)
    out["p_holm"] = stats.holm(out["p_value"].to_numpy())
    out["p_opposite_holm"] = stats.holm(out["p_opposite"].to_numpy())
    out["mde"] = levels.mde_factor(len(out)) * out["se"]
    return out[cols]


def layer_facts(summary: pd.DataFrame, pooling: str, levels: Levels,
                frequencies: pd.DataFrame | None = None) -> dict[str, Any]:
    """The numbers behind claim 1, for the verdict and for the layer chapter's prose alike.

    Per cell (model x dataset of ``pooling``): how many, in how many the selected layer is not the last, and in how
    many it beats (or loses to) the last significantly (McNemar, Holm across cells, ``alpha`` from ``levels``).
    Per dataset (``dataset_effects``) and across datasets: the mean difference (points) with its ``1 - alpha``
    interval and standard error (datasets are independent: ``sqrt(sum se_d^2) / D``), its one-sided p-values,
    Cochran's Q for heterogeneity across datasets (chi-squared, D - 1 d.o.f.), Holm over the two, the MDE, the TOST
    against the margin, and the datasets where the effect is significant. The bootstrap selection overlap
    (``dataset_dependence``) is descriptive.
    """
    df = summary[summary["pooling"] == pooling]
    per = dataset_effects(summary, pooling, levels)
    delta = df["delta_best_minus_last"].to_numpy(dtype=np.float64)
    p_holm = df["p_best_vs_last_holm"].to_numpy(dtype=np.float64)
    moved = ~df["best_is_last"].to_numpy(dtype=bool)
    n_d = len(per)
    effect = float(per["difference"].mean()) if n_d else float("nan")
    se = float(np.sqrt((per["se"] ** 2).sum()) / n_d) if n_d else float("nan")
    if n_d and se > 0:
        p, p_opp = float(sps.norm.sf(effect / se)), float(sps.norm.cdf(effect / se))
    else:
        p, p_opp = float("nan"), float("nan")
    ok = per[per["se"] > 0]
    if len(ok) >= 2:
        w = 1 / ok["se"] ** 2
        pooled = float((w * ok["difference"]).sum() / w.sum())
        q = float((w * (ok["difference"] - pooled) ** 2).sum())
        p_q = float(sps.chi2.sf(q, len(ok) - 1))
    else:
        q, p_q = float("nan"), float("nan")
    holm = stats.holm([p, p_q]) if np.isfinite([p, p_q]).any() else np.array([np.nan, np.nan])
    p_opp_holm = stats.holm([p_opp, p_q])[0] if np.isfinite(p_opp) else float("nan")
    half = levels.z_two_sided() * se
    eq = stats.tost(effect, se, levels.margin_points, levels.alpha)
    dependence = dataset_dependence(_selection_rows(df, frequencies, pooling))
    depth_range = df.groupby("model")["best_rel_depth"].agg(lambda s: float(s.max() - s.min()))
    return {
        "n_cells": int(len(df)), "n_datasets": n_d, "n_not_last": int(moved.sum()),
        "n_significant": int(((p_holm < levels.alpha) & (delta > 0)).sum()),
        "n_significantly_worse": int(((p_holm < levels.alpha) & (delta < 0)).sum()),
        "min_p_holm": float(np.nanmin(p_holm)) if len(df) else float("nan"),
        "mean_difference": effect, "difference_low": effect - half, "difference_high": effect + half,
        "difference_se": se, "p_value": p, "p_holm": float(holm[0]), "p_opposite_holm": float(p_opp_holm),
        "heterogeneity_q": q, "heterogeneity_p_holm": float(holm[1]),
        "mde": levels.mde_factor(2) * se if np.isfinite(se) else float("nan"),
        "tost_p": eq.p_value, "equivalent": eq.equivalent,
        "datasets_better": ", ".join(per.loc[per["p_holm"] < levels.alpha, "dataset"]) or "none",
        "datasets_worse": ", ".join(per.loc[per["p_opposite_holm"] < levels.alpha, "dataset"]) or "none",
        "per_dataset": "; ".join(f"{r.dataset} {r.difference:+.2f} (SE {r.se:.2f}, Holm p {r.p_holm:.2g}; better "
                                 f"than last: {r.models_better})" for r in per.itertuples()),
        "median_best_rel_depth": float(df["best_rel_depth"].median()) if len(df) else float("nan"),
        "max_depth_range_across_datasets": float(depth_range.max()) if len(depth_range) else float("nan"),
        "n_models": int(df["model"].nunique()),
        "n_models_dataset_dependent": int(dependence.loc[dependence["distinct"], "model"].nunique()),
        "n_dataset_pairs": int(len(dependence)), "n_distinct_pairs": int(dependence["distinct"].sum()),
    }


def layer_claim(summary: pd.DataFrame, pooling: str, levels: Levels,
                frequencies: pd.DataFrame | None = None) -> dict[str, Any]:
    """Claim 1: intermediate layers beat the last, and how much depends on the dataset.

    Required tests (family of two, Holm): the mean over datasets of the model-averaged selected − last difference
    (one-sided, claimed > 0) and Cochran's Q across datasets. Supported when both are significant; partly supported
    with one; contradicted when the mean is significantly negative and nothing is significant in the claimed
    direction; not supported when the TOST puts the mean within ``±margin_points``; else inconclusive.
    """
    f = layer_facts(summary, pooling, levels, frequencies)
    a = levels.alpha
    judged = judge([f["p_holm"] < a, f["heterogeneity_p_holm"] < a], [f["p_opposite_holm"] < a], f["equivalent"])
    evidence = (f"selected − last layer on test, dataset as the unit (mean over models; SE bounded for models "
                f"sharing test items): {f['per_dataset']}; mean over {f['n_datasets']} datasets "
                f"{_pts(f['mean_difference'])} points [{_pts(f['difference_low'])}, {_pts(f['difference_high'])}], "
                f"one-sided Holm p = {_p(f['p_holm'])}; heterogeneity across datasets Q = {f['heterogeneity_q']:.2f}, "
                f"Holm p = {_p(f['heterogeneity_p_holm'])}; significant in: {f['datasets_better']} (worse in: "
                f"{f['datasets_worse']}); per cell the selected layer is not the last in {f['n_not_last']}/"
                f"{f['n_cells']} and significantly better than the last in {f['n_significant']}/{f['n_cells']} "
                f"(McNemar, Holm across cells); TOST ±{levels.margin_points:g} points p = {_p(f['tost_p'])}")
    return _row("Intermediate layers beat the last one, by an amount that depends on the dataset", judged, evidence,
                "Chapter 'Which layer?': best-vs-last table, per-dataset table, selection-stability figure",
                test=f"mean over {f['n_datasets']} datasets of the model-averaged selected − last difference (z, "
                     "conservative SE) + Cochran's Q", unit="dataset (test items within; points)",
                direction="> 0 (selected layer better)", null="no difference between selected and last layer",
                family="claim 1: {mean difference, Q}, Holm", statistic=f["heterogeneity_q"],
                effect=f["mean_difference"], effect_low=f["difference_low"], effect_high=f["difference_high"],
                p_value=f["p_holm"], p_opposite=f["p_opposite_holm"], mde=f["mde"],
                power=power_at(levels.margin_points, f["mde"], levels, 2), tost_p=f["tost_p"],
                margin=levels.margin_points)


# -- claims 2 and 3: the fusion chapter's tests (``layerfusion.study.fusion_stats``) ----------------------------------

def _significant(tests: pd.DataFrame, levels: Levels, column: str = "p_holm") -> pd.Series:
    return tests[column] < levels.alpha


def _test_row(claim: str, verdict: str, test: pd.Series, evidence: str, where: str, *, null: str,
              family: str, levels: Levels, n_family: int) -> dict[str, Any]:
    """A claims-table row from the decisive test (a row of a ``fusion_stats`` table); accuracy effects, intervals,
    MDE and margin shown in points (x100), rho as it is."""
    scale = 1.0 if test["unit"] == "rho" else 100.0

    def num(key: str, factor: float = 1.0) -> float | None:
        value = test.get(key, np.nan)
        return float(value) * factor if value is not None and np.isfinite(value) else None
    return _row(claim, verdict, evidence, where, test=str(test["test"]),
                unit=f"{test['unit'] if test['unit'] == 'rho' else 'points'}",
                direction="> 0" if test["claimed_sign"] > 0 else "< 0", null=null, family=family,
                statistic=num("effect", scale), effect=num("effect", scale), effect_low=num("low", scale),
                effect_high=num("high", scale), p_value=num("p_holm"), p_opposite=num("p_opposite_holm"),
                mde=num("mde", scale), power=power_at(float(test["margin"]), float(test["mde"]), levels, n_family),
                tost_p=num("tost_p"), margin=num("margin", scale))


def fusion_claim(comparisons: pd.DataFrame, complementarity: pd.DataFrame, levels: Levels) -> dict[str, Any]:
    """Claim 2: fusing frozen models helps when they are complementary.

    The family (``fusion_stats.claim2_tests``, Holm together in each direction): the within-dataset rho(kappa, gain)
    (primary, claimed < 0), and per dataset the validation-chosen fusion against the validation-best single model
    and against the ensemble of its own single models (claimed > 0). Supported when the primary and at least one
    chosen fusion's gain over the best single are significant in the claimed direction and no test of the family is
    significant in the opposite one; partly supported when one of the two is; contradicted when only opposite
    results are significant; not supported when the primary's TOST puts rho within ``±rho_margin``; else
    inconclusive. Every fusion's wins and losses (Holm within dataset) are counted in the evidence.
    """
    tests = fusion_stats.claim2_tests(comparisons, complementarity, levels)
    primary = tests.iloc[0]
    vs_single = tests[tests["test"].str.endswith("vs best single")]
    vs_ens = tests[tests["test"].str.endswith("vs its ensemble")]
    sig, opp = _significant(tests, levels), _significant(tests, levels, "p_opposite_holm")
    judged = judge([bool(sig.iloc[0]), bool(sig[vs_single.index].any())], [bool(opp.any())],
                   bool(primary["equivalent"]))
    wl = fusion_stats.wins_and_losses(comparisons, levels)
    wl = wl[wl["operator"] == "all"] if len(wl) else wl
    per_dataset = "; ".join(f"{r.dataset} {r.effect * 100:+.2f} [{r.low * 100:+.2f}, {r.high * 100:+.2f}] "
                            f"(Holm p = {_p(r.p_holm)}, opposite {_p(r.p_opposite_holm)})"
                            for r in vs_single.itertuples())
    ensemble = "; ".join(f"{r.dataset} {r.effect * 100:+.2f} (Holm p = {_p(r.p_holm)}, opposite "
                         f"{_p(r.p_opposite_holm)})" for r in vs_ens.itertuples())
    evidence = (f"within-dataset Spearman rho(kappa on validation, concatenation gain on test) "
                f"{primary['effect']:+.2f} [{primary['low']:+.2f}, {primary['high']:+.2f}] over {int(primary['n'])} "
                f"pairs (per dataset: {primary.get('per_dataset') or 'n/a'}; claimed < 0, Holm p = "
                f"{_p(primary['p_holm'])}, opposite {_p(primary['p_opposite_holm'])}; TOST ±{levels.rho_margin:g} "
                f"p = {_p(primary['tost_p'])}); chosen fusion − best single model, points: {per_dataset or 'n/a'}; "
                f"chosen fusion − its ensemble: {ensemble or 'n/a'}; all fusions vs the best single model (Holm "
                f"within dataset): " + ("; ".join(f"{r.dataset} {r.better} better, {r.worse} worse of {r.fusions}"
                                                  for r in wl.itertuples()) or "n/a"))
    return _test_row("Fusing frozen models' embeddings helps when the models are complementary", judged, primary,
                     evidence, "Chapter 'Fusion': claim-2 tests, wins and losses, complementarity figure and table",
                     null="no within-dataset association of kappa and gain (gains shuffled within datasets)",
                     family=f"claim 2 ({len(tests)} tests, Holm each direction)", levels=levels,
                     n_family=len(tests))


def stability_claim(stability: pd.DataFrame, levels: Levels) -> dict[str, Any]:
    """Claim 3: three or more models make performance more stable.

    Primary (``fusion_stats.stability_tests``): the concatenations' spread across combinations at an equal number m
    of combinations, claimed > 0 (narrower). Supported when significant in the claimed direction; contradicted when
    significant in the opposite one; not supported only when its TOST puts the narrowing within
    ``±spread_margin`` points; else inconclusive. Optimiser noise (std over seeds) is reported as a secondary and
    the ensemble of the same single-model classifiers as the control, neither changes the verdict.
    """
    tests = fusion_stats.stability_tests(stability, levels)
    primary, seed, ens_m, ens, contrast = (tests.iloc[i] for i in range(5))
    a = levels.alpha
    judged = judge([bool(primary["p_holm"] < a)], [bool(primary["p_opposite_holm"] < a)], bool(primary["equivalent"]))
    pts = lambda value: f"{value * 100:.2f}" if np.isfinite(value) else "n/a"  # noqa: E731
    evidence = (f"std across combinations at equal m, pairs minus >= 3 models: narrowing {pts(primary['effect'])} "
                f"points [{pts(primary['low'])}, {pts(primary['high'])}] (per dataset: "
                f"{primary.get('per_dataset') or 'n/a'}; one-sided p = {_p(primary['p_holm'])}, opposite "
                f"{_p(primary['p_opposite_holm'])}; TOST ±{levels.spread_margin:g} p = {_p(primary['tost_p'])}); "
                f"ensemble of the same single models: narrowing {pts(ens_m['effect'])} (p = {_p(ens_m['p_value'])}); "
                f"secondary, optimiser noise (std over seeds): {pts(seed['k2'])} → {pts(seed['k3plus'])} points "
                f"(narrowing {pts(seed['effect'])} [{pts(seed['low'])}, {pts(seed['high'])}], p = "
                f"{_p(seed['p_value'])}); ensemble {pts(ens['k2'])} → {pts(ens['k3plus'])}; concatenation minus "
                f"ensemble seed narrowing {pts(contrast['effect'])} [{pts(contrast['low'])}, {pts(contrast['high'])}]")
    return _test_row("Fusing three or more models makes results more stable", judged, primary, evidence,
                     "Chapter 'Fusion': stability figure, stability tests table",
                     null="the spread of k >= 3 and of pairs' equal-m subsets come from one distribution",
                     family="claim 3 (primary only)", levels=levels, n_family=1)


# -- claim 4: overhead ---------------------------------------------------------------------------------------------

OVERHEAD_CLAIM = "Memory and inference time grow with the number of models and layers"
MEASURED_CLAIMS = frozenset({OVERHEAD_CLAIM})
"""Claims whose evidence is a measurement of the machine and the moment (times, memory): their rows cannot reproduce
from one run to the next, so the ci profile shows them marked (``report.mark_rows``) for the nbval comparison."""

OVERHEAD_SLOPES = (("layers", "seconds_all", "time vs layers kept", "s per layer"),
                   ("layers", "peak_bytes", "memory vs layers kept", "bytes per layer"))
"""The CPU scaling curves claim 4 regresses: (``vary``, measured column, name, slope unit). ``seconds_all`` holds
every timed repeat of a setting (each repeat is a point); ``peak_bytes`` is the fresh-process peak of a setting."""

GPU_SLOPES = (("seconds", "GPU time vs layers kept", "s per layer"),
              ("peak_bytes", "GPU memory vs layers kept", "bytes per layer"))
"""The curves of the paper's-scale GPU table (``overhead_gpu``, one per backbone) claim 4 regresses."""


def _slope(x: np.ndarray, y: np.ndarray, name: str, unit: str, alpha: float, power: float) -> dict[str, Any]:
    """Least-squares slope of ``y`` on ``x`` with its two-sided ``1 - alpha`` interval (t, n - 2 degrees of
    freedom), the one-sided p for "grows" (scipy's ``linregress`` with ``alternative="greater"``) and the smallest
    slope the regression detects with ``power`` at the one-sided level."""
    dof = len(x) - 2
    if np.unique(y).size < 2:
        slope, stderr, p = 0.0, 0.0, 1.0
    else:
        fit = sps.linregress(x, y, alternative="greater")
        slope, stderr, p = float(fit.slope), float(fit.stderr), float(fit.pvalue)
    half = sps.t.ppf(1 - alpha / 2, dof) * stderr
    return {"curve": name, "unit": unit, "n_points": len(x), "slope": slope, "slope_low": slope - half,
            "slope_high": slope + half, "t": slope / stderr if stderr > 0 else float("nan"), "p_value": p,
            "mde": (sps.t.ppf(1 - alpha, dof) + sps.t.ppf(power, dof)) * stderr}


def overhead_facts(scaling: pd.DataFrame, alpha: float, power: float,
                   gpu_sweep: pd.DataFrame | None = None) -> pd.DataFrame:
    """One least-squares slope per curve: the CPU curves of ``OVERHEAD_SLOPES`` found in the overhead chapter's
    scaling table (every timed repeat a point; the memory of each setting measured in a fresh process) and, when
    ``gpu_sweep`` (the layers-kept sweep of the paper's-scale GPU table, ``chapters.overhead.gpu_layer_sweep``) is
    given, ``GPU_SLOPES`` per backbone. A curve needs three points and two settings. Holm across all the slopes, one
    family, one-sided (claimed direction: grows)."""
    rows = []
    for vary, column, name, unit in OVERHEAD_SLOPES:
        if column not in scaling:
            continue
        df = scaling.loc[scaling["vary"] == vary, ["value", column]].dropna()
        if column == "seconds_all":  # every repeat of a setting is a point
            df = df.explode(column)
        df = df.astype(float)
        if len(df) >= 3 and df["value"].nunique() >= 2:
            rows.append(_slope(df["value"].to_numpy(), df[column].to_numpy(), name, unit, alpha, power))
    if gpu_sweep is not None and len(gpu_sweep):
        for model, grp in gpu_sweep.groupby("model", sort=True):
            for column, name, unit in GPU_SLOPES:
                df = grp[["layers_kept", column]].dropna().astype(float)
                if len(df) >= 3 and df["layers_kept"].nunique() >= 2:
                    rows.append(_slope(df["layers_kept"].to_numpy(), df[column].to_numpy(), f"{name}, {model}",
                                       unit, alpha, power))
    out = pd.DataFrame(rows, columns=["curve", "unit", "n_points", "slope", "slope_low", "slope_high", "t", "p_value",
                                      "mde"])
    out["p_holm"] = stats.holm(out["p_value"].to_numpy()) if len(out) else []
    return out


def models_cost(models: pd.DataFrame | None) -> str:
    """What fusing more models costs, as accounting rather than a test (each added model's extraction and the fusion
    head are extra work by construction): per dataset, the added model's cost and the head's, seconds per 1,000 texts
    with their intervals, from the overhead chapter's ``overhead_models`` table."""
    if models is None or not len(models):
        return ""
    parts = []
    for r in models[models["k"] > 1].itertuples():
        parts.append(f"{r.dataset}: +{r.added_model} {r.added_per_1k:.3g} s/1k texts "
                     f"[{r.added_per_1k_low:.3g}, {r.added_per_1k_high:.3g}], fusion head {r.head_per_1k:.3g} s/1k")
    return "; ".join(parts)


def overhead_claim(scaling: pd.DataFrame, alpha: float, power: float, gpu_sweep: pd.DataFrame | None = None,
                   models: pd.DataFrame | None = None) -> dict[str, Any]:
    """Claim 4: memory and time grow with the number of models and layers used.

    Registered test: for the layers kept (at a fixed forward pass: extraction stops at the deepest layer, so only
    keeping more layers varies), a least-squares slope of time and of peak memory per curve (``overhead_facts``: on
    the CPU every timed repeat a point, memory per fresh process; on the GPU per backbone of the paper's scale when
    its table is committed), one-sided > 0, Holm over all curves. Supported when every slope is significantly
    positive, partly supported when some are, contradicted when only negative slopes are significant; no
    equivalence margin exists for a slope, so never "not supported". The row shows the weakest slope (largest Holm
    p). The models-fused part is accounting, not a test (``models_cost``): it is in the evidence.
    """
    facts = overhead_facts(scaling, alpha, power, gpu_sweep)
    claim, where = OVERHEAD_CLAIM, "Chapter 'Overhead': scaling curves, cost of each added model, the GPU table"
    accounting = models_cost(models)
    registered = {"test": "least-squares slope per curve of the layers kept; Holm over the curves",
                  "unit": "timed repeat or measured setting", "direction": "> 0 (grows)", "null": "slope <= 0"}
    if facts.empty:
        return _row(claim, "inconclusive", "no scaling curve with three or more points"
                    + (f"; models fused: {accounting}" if accounting else ""), where,
                    family="claim 4: no curve measured", **registered)
    up = (facts["p_holm"] < alpha) & (facts["slope"] > 0)
    down = (stats.holm(1.0 - facts["p_value"].to_numpy()) < alpha) & (facts["slope"] < 0)  # p of "shrinks"
    weakest = facts.loc[facts["p_holm"].idxmax()]
    judged = judge(list(up), list(down), False)
    evidence = "; ".join(f"{r.curve}: slope {r.slope:.3g} {r.unit} [{r.slope_low:.3g}, {r.slope_high:.3g}], "
                         f"Holm p = {r.p_holm:.2g} ({r.n_points} points)" for r in facts.itertuples())
    if accounting:
        evidence += f". Models fused (accounting): {accounting}"
    return _row(claim, judged, evidence, where,
                test=f"least-squares slope, {weakest['curve']} ({weakest['unit']}); Holm over {len(facts)} curves",
                unit=f"timed repeat or measured setting ({weakest['unit']})", direction="> 0 (grows)",
                null="slope <= 0", family=f"claim 4: {len(facts)} curves, Holm (one-sided)",
                statistic=weakest["t"], effect=weakest["slope"], effect_low=weakest["slope_low"],
                effect_high=weakest["slope_high"], p_value=weakest["p_holm"], mde=weakest["mde"])


# -- beyond the paper: automated layer selection (descriptive) ------------------------------------------------------

def greedy_comparisons(greedy: pd.DataFrame, keys: list[str], levels: Levels) -> pd.DataFrame:
    """Per greedy search (its last row, grouped by ``keys``): test accuracy of the chosen set minus the best single
    unit it started from (points) with its ``1 - alpha`` Wald interval over test items (standard error
    ``sqrt((psi - d^2) / n)`` from the discordance ``psi``), McNemar p (Holm across the searches), the discordance
    and the test's MDE (points)."""
    last = greedy.dropna(subset=["chosen_test_accuracy"]).groupby(keys, sort=False).tail(1)
    out = last[keys].copy()
    out["units"] = last["units"].map(lambda u: ", ".join(map(str, u))).to_numpy()
    out["n_units"] = last["units"].map(len).to_numpy()
    gain = (last["chosen_test_accuracy"] - last["single_test_accuracy"]).to_numpy(float)
    psi = last["discordance_vs_single"].to_numpy(dtype=np.float64)
    se = cell_se(gain, psi, last["n_test"].to_numpy(float))
    out["gain"] = gain * 100
    out["low"], out["high"] = (gain - levels.z_two_sided() * se) * 100, (gain + levels.z_two_sided() * se) * 100
    out["p_value"] = last["p_vs_single"].to_numpy(dtype=np.float64)
    out["p_holm"] = stats.holm(out["p_value"].to_numpy()) if len(out) else []
    out["discordance"] = psi
    out["mde"] = [stats.mcnemar_mde(int(n), p, levels.alpha, levels.power) * 100 if p > 0 else float("nan")
                  for n, p in zip(last["n_test"], psi)]
    return out.reset_index(drop=True)


def _unit_models(units: str) -> frozenset[str]:
    return frozenset(u.strip().split("@")[0] for u in units.split(",") if u.strip())


def beyond_the_paper(unit_greedy: pd.DataFrame, layer_greedy: pd.DataFrame, comparisons: pd.DataFrame,
                     levels: Levels) -> pd.DataFrame:
    """The authors' future work (automated layer selection), reported descriptively and not judged: the greedy
    (model, layer) search of the fusion chapter per dataset and the greedy layer search within each model of the
    layer chapter, each against the validation-best single unit it starts from (``greedy_comparisons``: gain with
    its interval over test items, McNemar Holm p). ``same_as_claim2`` marks a dataset whose greedy set uses the
    same models as claim 2's chosen fusion: its gain is not separate evidence (no double counting)."""
    chosen = fusion_stats.chosen_fusions(comparisons) if len(comparisons) else comparisons
    claim2 = {r.dataset: frozenset(r.models) for r in chosen.itertuples()} if len(chosen) else {}
    units = greedy_comparisons(unit_greedy, ["dataset"], levels).assign(search="models and layers", model="all")
    units["same_as_claim2"] = [len(_unit_models(u)) > 1 and _unit_models(u) == claim2.get(d, frozenset())
                               for d, u in zip(units["dataset"], units["units"])]
    layers = greedy_comparisons(layer_greedy, ["model", "dataset"], levels).assign(search="layers within a model",
                                                                                    same_as_claim2=False)
    cols = ["search", "dataset", "model", "units", "n_units", "gain", "low", "high", "p_holm", "mde",
            "same_as_claim2"]
    return pd.concat([units[cols], layers[cols]], ignore_index=True)


# -- the table -----------------------------------------------------------------------------------------------------

def _optional(load: Loader, name: str, then: Callable[[pd.DataFrame], pd.DataFrame] | None = None
              ) -> pd.DataFrame | None:
    """The table ``name`` (passed through ``then``), or None when no chapter wrote it (results of older runs; a
    loader over a dict of tables raises KeyError)."""
    try:
        frame = load(name)
    except (FileNotFoundError, KeyError):
        return None
    return then(frame) if then is not None else frame


def evaluate(load: Loader, pooling: str, levels: Levels) -> pd.DataFrame:
    """Build the claims table (columns ``COLUMNS``) from a loader of results tables (e.g. ``report.Run.load``);
    ``pooling`` is the profile's primary pooling, the one the layer and fusion chapters selected with; ``levels``
    the profile's (``Levels.of(config)``)."""
    rows = [
        layer_claim(load("layers_summary"), pooling, levels, load("layers_selection")),
        fusion_claim(load("fusion_comparisons"), load("fusion_complementarity"), levels),
        stability_claim(load("fusion_stability"), levels),
        overhead_claim(load("overhead_scaling"), levels.alpha, levels.power, _optional(load, "overhead_gpu", gpu_layer_sweep),
                       _optional(load, "overhead_models")),
    ]
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))

