"""The claims table: each claim of the paper judged from this run's result files by a written rule, with its test.

Every row has the columns ``COLUMNS``: the claim, its verdict, the decisive test, its statistic, the effect with its
95 % interval, the decisive p-value after correction, the minimum detectable effect (MDE), the evidence in words and
where the book shows it. One rule turns every claim's numbers into its verdict (``verdict``):

- "supported" or "partly supported" need at least one result significant after correction, in the claimed
  direction: "supported" when every part of the claim's own rule holds, "partly supported" otherwise;
- without one, "not supported" when the data exclude the claimed effect (its 95 % interval allows no effect in the
  claimed direction, or lies entirely within ± the MDE of zero), else "inconclusive", with the MDE saying how large
  an effect the study could have found.

Accuracy effects are in points (percentage points). The rules are written out so that a reader can disagree with a
rule rather than with a hidden judgement; the facts behind each rule (``layer_facts``, ...) are also what the
chapters' prose quotes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from layerfusion import stats

from layerfusion.study import fusion_stats

ALPHA = 0.05
POWER = 0.8
VERDICTS = ("supported", "partly supported", "not supported", "inconclusive")
COLUMNS = ("claim", "verdict", "test", "statistic", "effect", "effect_low", "effect_high", "p_value", "mde",
           "evidence", "where")
DISTINCT_OVERLAP = 0.05
"""Two datasets select distinct layers of a model when their bootstrap selection distributions share less than this
much probability mass."""
Loader = Callable[[str], pd.DataFrame]


# -- the shared rule and the row -----------------------------------------------------------------------------------

def excluded(low: float | None, high: float | None, mde: float | None, direction: int = 1) -> bool:
    """Whether an effect's 95 % interval ``[low, high]`` excludes the claimed effect: it allows no effect in the
    claimed ``direction`` (+1: the claim needs a positive effect, so ``high <= 0``; -1: a negative one, so
    ``low >= 0``), or it lies entirely within ``± mde`` of zero (every effect it allows is smaller than the smallest
    the study could detect)."""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return False
    opposite = high <= 0 if direction > 0 else low >= 0
    negligible = mde is not None and bool(np.isfinite(mde)) and -mde < low and high < mde
    return bool(opposite or negligible)


def verdict(significant: bool, complete: bool, low: float | None = None, high: float | None = None,
            mde: float | None = None, direction: int = 1) -> str:
    """The one verdict rule of every claim (see the module docstring).

    ``significant``: at least one result is significant after correction in the claimed direction; ``complete``:
    every part of the claim's own rule holds; ``low``, ``high``: the 95 % interval of the claim's effect;
    ``mde``: its minimum detectable effect, in the same units; ``direction``: the sign the claim needs.
    """
    return decide(significant, complete, excluded(low, high, mde, direction))


def decide(significant: bool, complete: bool, effect_excluded: bool) -> str:
    """The rule itself, for claims whose exclusion combines several intervals (``verdict`` computes it from one):
    supported (``complete``) or partly supported only with a result significant after correction; otherwise not
    supported when the data exclude the claimed effect, else inconclusive."""
    if significant:
        return "supported" if complete else "partly supported"
    return "not supported" if effect_excluded else "inconclusive"


def _number(value: Any) -> float | None:
    """A float for the table, None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _row(claim: str, verdict: str, evidence: str, where: str, *, test: str | None = None,
         statistic: float | None = None, effect: float | None = None, effect_low: float | None = None,
         effect_high: float | None = None, p_value: float | None = None, mde: float | None = None) -> dict[str, Any]:
    """One row of the claims table, with every column of ``COLUMNS`` (numbers as floats, missing ones as None)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"claim": claim, "verdict": verdict, "test": test, "statistic": _number(statistic),
            "effect": _number(effect), "effect_low": _number(effect_low), "effect_high": _number(effect_high),
            "p_value": _number(p_value), "mde": _number(mde), "evidence": evidence, "where": where}


def median_interval(values: Any, alpha: float = ALPHA, n_resamples: int = 9999,
                    random_state: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` and its percentile-bootstrap ``1 - alpha`` interval (scipy's ``bootstrap``); NaNs are
    dropped; NaN everywhere for no values, the value itself for one."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0]), float(v[0])
    ci = sps.bootstrap((v,), np.median, n_resamples=n_resamples, confidence_level=1 - alpha,
                       method="percentile", rng=np.random.default_rng(random_state)).confidence_interval
    return float(np.median(v)), float(ci.low), float(ci.high)


def _signed_rank(differences: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank statistic and two-sided p over paired differences; zero differences are split between
    the signs (``zero_method="zsplit"``: a cell with no difference counts against a difference); (NaN, 1) for
    fewer than two values."""
    d = differences[np.isfinite(differences)]
    if d.size < 2:
        return float("nan"), 1.0
    result = sps.wilcoxon(d, zero_method="zsplit")
    return float(result.statistic), float(result.pvalue)


def _pts(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}"


# -- claim 1: layers -----------------------------------------------------------------------------------------------

def dataset_dependence(frequencies: pd.DataFrame, threshold: float = DISTINCT_OVERLAP) -> pd.DataFrame:
    """For each model and pair of its datasets, the overlap of their bootstrap selection distributions.

    ``frequencies`` has ``model, dataset, layer, frequency`` (how often each layer was chosen over bootstrap
    resamples of the selection items; one pooling and protocol). The overlap is ``sum over layers of min(f_a, f_b)``,
    the probability mass both distributions share: 1 when they are the same, 0 when no layer is ever chosen on both.
    A pair is ``distinct`` when the overlap is below ``threshold``: then the datasets' best layers differ by more than
    the luck of the selection split. Columns: ``model, dataset_a, dataset_b, overlap, distinct``.
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


def layer_facts(summary: pd.DataFrame, pooling: str, frequencies: pd.DataFrame | None = None,
                alpha: float = ALPHA) -> dict[str, Any]:
    """The numbers behind claim 1, for the verdict and for the layer chapter's prose alike.

    Over the model x dataset cells of ``pooling``: how many there are; in how many the selected layer is not the
    last; in how many it beats the last significantly (McNemar, Holm across the cells, ``p < alpha`` and a positive
    difference) or loses significantly; the paired test-accuracy difference selected − last across cells (median in
    points with its bootstrap interval, Wilcoxon signed-rank statistic and p); the median observed discordance
    between the two layers and the median minimum detectable difference of a cell's McNemar test (points; cells
    where the last layer is selected have no discordance and no MDE); the median relative depth of the selected
    layer; and, from the bootstrap selection ``frequencies``, per model whether two datasets select distinct layers
    (``dataset_dependence``).
    """
    df = summary[summary["pooling"] == pooling]
    delta = df["delta_best_minus_last"].to_numpy(dtype=np.float64)
    p_holm = df["p_best_vs_last_holm"].to_numpy(dtype=np.float64)
    median, low, high = median_interval(delta * 100, alpha)
    statistic, p_across = _signed_rank(delta)
    mde = df["mde_best_last"].to_numpy(dtype=np.float64) if "mde_best_last" in df else np.full(len(df), np.nan)
    discordance = (df["discordance_best_last"].to_numpy(dtype=np.float64) if "discordance_best_last" in df
                   else np.full(len(df), np.nan))
    moved = ~df["best_is_last"].to_numpy(dtype=bool)
    dependence = dataset_dependence(_selection_rows(df, frequencies, pooling))
    depth_range = df.groupby("model")["best_rel_depth"].agg(lambda s: float(s.max() - s.min()))
    return {
        "n_cells": int(len(df)),
        "n_not_last": int(moved.sum()),
        "n_significant": int(((p_holm < alpha) & (delta > 0)).sum()),
        "n_significantly_worse": int(((p_holm < alpha) & (delta < 0)).sum()),
        "min_p_holm": float(np.nanmin(p_holm)) if len(df) else float("nan"),
        "median_difference": median, "difference_low": low, "difference_high": high,
        "wilcoxon_statistic": statistic, "wilcoxon_p": p_across,
        "median_discordance": float(np.nanmedian(discordance[moved])) if np.isfinite(discordance[moved]).any()
        else float("nan"),
        "median_mde": float(np.nanmedian(mde[moved]) * 100) if np.isfinite(mde[moved]).any() else float("nan"),
        "median_best_rel_depth": float(df["best_rel_depth"].median()),
        "max_depth_range_across_datasets": float(depth_range.max()) if len(depth_range) else float("nan"),
        "n_models": int(df["model"].nunique()),
        "n_models_dataset_dependent": int(dependence.loc[dependence["distinct"], "model"].nunique()),
        "n_dataset_pairs": int(len(dependence)),
        "n_distinct_pairs": int(dependence["distinct"].sum()),
    }


def layer_claim(summary: pd.DataFrame, pooling: str, frequencies: pd.DataFrame | None = None,
                alpha: float = ALPHA) -> dict[str, Any]:
    """Claim 1: the best layer depends on the dataset and is often not the last.

    Significant results: the across-cells Wilcoxon test of selected − last (p < ``alpha`` with a positive median),
    and cells where the selected layer beats the last after Holm. Supported when both exist and, for at least one
    model, two datasets select distinct layers beyond selection noise (``dataset_dependence``); partly supported
    with either significant result alone. The effect is the median difference across cells (points) with its
    bootstrap interval; its MDE is the median, over the cells where the selected layer is not the last, of the
    smallest difference that cell's McNemar test detects (the resolution of one comparison): when the interval of
    the typical difference lies within it, the gains are below what this study could see in any cell.
    """
    f = layer_facts(summary, pooling, frequencies, alpha)
    across = f["wilcoxon_p"] < alpha and f["median_difference"] > 0
    any_cell = f["n_significant"] > 0
    judged = verdict(across or any_cell, across and any_cell and f["n_models_dataset_dependent"] > 0,
                     f["difference_low"], f["difference_high"], f["median_mde"])
    evidence = (f"selected layer − last layer on test, median over {f['n_cells']} model×dataset cells "
                f"{_pts(f['median_difference'])} points [{_pts(f['difference_low'])}, {_pts(f['difference_high'])}], "
                f"Wilcoxon p = {f['wilcoxon_p']:.2g}; the selected layer is not the last in {f['n_not_last']}/"
                f"{f['n_cells']} cells and significantly better than the last in {f['n_significant']}/{f['n_cells']} "
                f"(McNemar, Holm p<{alpha}; median detectable difference {f['median_mde']:.1f} points at a median "
                f"discordance of {f['median_discordance']:.2f}); two datasets select distinct layers beyond selection "
                f"noise for {f['n_models_dataset_dependent']}/{f['n_models']} models ({f['n_distinct_pairs']}/"
                f"{f['n_dataset_pairs']} dataset pairs share <{DISTINCT_OVERLAP:.0%} of their bootstrap selections)")
    return _row("The most useful layer depends on the dataset and is often not the last", judged, evidence,
                "Chapter 'Which layer?': best-vs-last table, selection-stability figure",
                test=f"Wilcoxon signed-rank, selected − last layer over {f['n_cells']} cells (+ McNemar per cell, "
                     "Holm)", statistic=f["wilcoxon_statistic"], effect=f["median_difference"],
                effect_low=f["difference_low"], effect_high=f["difference_high"], p_value=f["wilcoxon_p"],
                mde=f["median_mde"])


# -- claims 2 and 3: the fusion chapter's tests (``layerfusion.study.fusion_stats``) ----------------------------------
def _test_row(claim: str, verdict: str, test: pd.Series, scale: float, evidence: str, where: str) -> dict[str, Any]:
    """A claims-table row from the decisive test (a row of a ``fusion_stats`` test table; its effect, interval and
    MDE times ``scale``, e.g. 100 for accuracy points); those tests have no separate statistic, so the effect is
    repeated there."""
    def num(key: str, factor: float = 1.0) -> float | None:
        value = test.get(key, np.nan)
        return float(value) * factor if value is not None and np.isfinite(value) else None
    return _row(claim, verdict, evidence, where, test=str(test["test"]), statistic=num("effect", scale),
                effect=num("effect", scale), effect_low=num("low", scale), effect_high=num("high", scale),
                p_value=num("p_holm"), mde=num("mde", scale))


def _significant(tests: pd.DataFrame) -> pd.Series:
    return (tests["p_holm"] < ALPHA) & (np.sign(tests["effect"]) == tests["claimed_sign"])


def _decisive(tests: pd.DataFrame, default: int) -> pd.Series:
    """The family's most significant test, or row ``default`` when none is significant."""
    sig = tests[_significant(tests)]
    return sig.loc[sig["p_holm"].idxmin()] if len(sig) else tests.iloc[default]


def fusion_claim(comparisons: pd.DataFrame, complementarity: pd.DataFrame) -> dict[str, Any]:
    """Claim 2: fusing frozen models helps when they are complementary.

    The family (``fusion_stats.claim2_tests``, Holm together): per dataset, the fusion chosen on validation against
    the validation-best single model (paired over test items, every seed); and Spearman's rho between a pair's
    Cohen's kappa on validation (the primary diagnostic: agreement beyond chance of the two models' predictions) and
    the pair's concatenation gain on test, over every pair of every dataset (p from permuting within datasets).
    Supported when a chosen fusion wins significantly and rho is significantly negative (the less two models agree,
    the more fusing them gains); partly supported when one of the two holds; otherwise not supported when the data
    exclude either part (every chosen fusion's gain, or rho, on the wrong side of zero or within +-MDE), else
    inconclusive. The row shows the most significant test, else the complementarity test.
    """
    tests = fusion_stats.claim2_tests(comparisons, complementarity)
    gains, compl = tests.iloc[:-1], tests.iloc[-1]
    sig = _significant(tests)
    wins, predicts = bool(sig.iloc[:-1].any()), bool(sig.iloc[-1])
    ruled_out = excluded(compl["low"], compl["high"], compl["mde"], -1) or (len(gains) > 0 and all(
        excluded(r.low, r.high, r.mde, 1) for r in gains.itertuples()))
    judged = decide(wins or predicts, wins and predicts, ruled_out)
    decisive = _decisive(tests, len(tests) - 1)
    per_dataset = "; ".join(f"{r.dataset} {r.effect * 100:+.2f} [{r.low * 100:+.2f}, {r.high * 100:+.2f}]"
                            f" (Holm p = {r.p_holm:.2g})" for r in gains.itertuples())
    evidence = (f"fusion chosen on validation minus the validation-best single model, test accuracy points: "
                f"{per_dataset or 'n/a'}; Spearman rho(kappa on validation, concatenation gain) over {int(compl['n'])} "
                f"pairs = {compl['effect']:.2f} [{compl['low']:.2f}, {compl['high']:.2f}] (Holm p = "
                f"{compl['p_holm']:.2g}, MDE {compl['mde']:.2f})")
    scale = 1.0 if decisive["test"] == compl["test"] else 100.0
    return _test_row("Fusing frozen models' embeddings helps when the models are complementary", judged, decisive,
                     scale, evidence, "Chapter 'Fusion': claim-2 tests table, complementarity figure and table")


def stability_claim(stability: pd.DataFrame) -> dict[str, Any]:
    """Claim 3: three or more models make performance more stable.

    The family (``fusion_stats.stability_tests``, Holm together), on the concatenations: the std over seeds of one
    combination, two models against three or more (permutation within datasets), and the std across combinations at
    an equal number of combinations (so that fewer triples than pairs cannot make the spread smaller by
    construction). Supported when both narrow significantly and the seed std narrows more than it does for an
    ensemble of the same single-model classifiers (the control: averaging more models narrows the spread without any
    fusion; its difference's 95 % interval must lie above zero); partly supported when at least one narrows
    significantly; otherwise not supported when the seed-std narrowing is excluded, else inconclusive.
    """
    tests = fusion_stats.stability_tests(stability)
    family = tests[tests["family"] == "claim 3"]
    seed, equal_m = family.iloc[0], family.iloc[1]
    ens, contrast = tests.iloc[2], tests.iloc[4]
    sig = _significant(family)
    beyond_ensemble = bool(np.isfinite(contrast["low"]) and contrast["low"] > 0)
    judged = verdict(bool(sig.any()), bool(sig.all()) and beyond_ensemble, seed["low"], seed["high"], seed["mde"], 1)
    pts = lambda value: f"{value * 100:.2f}" if np.isfinite(value) else "n/a"  # noqa: E731
    evidence = (f"std over seeds of the concatenations, 2 → ≥3 models: {pts(seed['k2'])} → {pts(seed['k3plus'])} "
                f"points (narrowing {pts(seed['effect'])} [{pts(seed['low'])}, {pts(seed['high'])}], Holm p = "
                f"{seed['p_holm']:.2g}); ensemble of the single-model classifiers: {pts(ens['k2'])} → "
                f"{pts(ens['k3plus'])} (p = {ens['p_value']:.2g}); concatenation minus ensemble narrowing "
                f"{pts(contrast['effect'])} [{pts(contrast['low'])}, {pts(contrast['high'])}]; std across "
                f"combinations at equal m: narrowing {pts(equal_m['effect'])} points "
                f"(Holm p = {equal_m['p_holm']:.2g})")
    return _test_row("Fusing three or more models makes results more stable", judged, _decisive(family, 0), 100.0,
                     evidence, "Chapter 'Fusion': stability figure, stability tests table")


# -- claim 4: overhead ---------------------------------------------------------------------------------------------

OVERHEAD_SLOPES = (("layers", "seconds", "time vs layers kept", "s per layer"),
                   ("layers", "peak_bytes", "memory vs layers kept", "bytes per layer"),
                   ("models", "seconds", "time vs models fused", "s per model"))
"""The scaling curves claim 4 regresses: (``vary``, measured column, name, slope unit)."""


def overhead_facts(scaling: pd.DataFrame, alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """One least-squares slope per curve of ``OVERHEAD_SLOPES`` found in the overhead chapter's scaling table (at
    least three points, two distinct settings): slope, its ``1 - alpha`` interval (t distribution, n - 2 degrees
    of freedom), t statistic, p (scipy's ``linregress``), Holm across the slopes, and the smallest slope the
    regression detects with ``power`` (``(t_{1-alpha/2} + t_power) * stderr``)."""
    rows = []
    for vary, column, name, unit in OVERHEAD_SLOPES:
        if column not in scaling:
            continue
        df = scaling.loc[scaling["vary"] == vary, ["value", column]].dropna().astype(float)
        if len(df) < 3 or df["value"].nunique() < 2:
            continue
        if df[column].nunique() < 2:
            slope, stderr, p = 0.0, 0.0, 1.0
        else:
            fit = sps.linregress(df["value"], df[column])
            slope, stderr, p = float(fit.slope), float(fit.stderr), float(fit.pvalue)
        dof = len(df) - 2
        half = sps.t.ppf(1 - alpha / 2, dof) * stderr
        rows.append({"curve": name, "unit": unit, "n_points": len(df), "slope": slope, "slope_low": slope - half,
                     "slope_high": slope + half, "t": slope / stderr if stderr > 0 else float("nan"),
                     "p_value": p, "mde": (sps.t.ppf(1 - alpha / 2, dof) + sps.t.ppf(power, dof)) * stderr})
    out = pd.DataFrame(rows, columns=["curve", "unit", "n_points", "slope", "slope_low", "slope_high", "t", "p_value",
                                      "mde"])
    out["p_holm"] = stats.holm(out["p_value"].to_numpy()) if len(out) else []
    return out


def overhead_claim(scaling: pd.DataFrame, alpha: float = ALPHA, power: float = POWER) -> dict[str, Any]:
    """Claim 4: memory and time grow with the number of models and layers used.

    A slope per scaling curve (``overhead_facts``), Holm across them. Supported when every slope is positive and
    significant, partly supported when some are. The decisive test is the weakest slope (largest Holm p): its
    interval and MDE judge the claim when none is significant.
    """
    facts = overhead_facts(scaling, alpha, power)
    claim, where = ("Memory and inference time grow with the number of models and layers",
                    "Chapter 'Overhead': scaling curves")
    if facts.empty:
        return _row(claim, "inconclusive", "no scaling curve with three or more points", where)
    up = (facts["p_holm"] < alpha) & (facts["slope"] > 0)
    weakest = facts.loc[facts["p_holm"].idxmax()]
    judged = verdict(bool(up.any()), bool(up.all()), weakest["slope_low"], weakest["slope_high"], weakest["mde"])
    evidence = "; ".join(f"{r.curve}: slope {r.slope:.3g} {r.unit} [{r.slope_low:.3g}, {r.slope_high:.3g}], "
                         f"Holm p = {r.p_holm:.2g} ({r.n_points} points)" for r in facts.itertuples())
    return _row(claim, judged, evidence, where,
                test=f"least-squares slope, {weakest['curve']} ({weakest['unit']}); Holm over {len(facts)} curves",
                statistic=weakest["t"], effect=weakest["slope"], effect_low=weakest["slope_low"],
                effect_high=weakest["slope_high"], p_value=weakest["p_holm"], mde=weakest["mde"])


# -- claim 5: automated selection ----------------------------------------------------------------------------------

def greedy_comparisons(greedy: pd.DataFrame, keys: list[str], alpha: float = ALPHA,
                       power: float = POWER) -> pd.DataFrame:
    """Per greedy search (its last row, grouped by ``keys``): test accuracy of the chosen set minus the best single
    unit it started from (points), McNemar p (Holm across the searches), the discordance between the two and the
    test's MDE (points)."""
    last = greedy.dropna(subset=["chosen_test_accuracy"]).groupby(keys, sort=False).tail(1)
    out = last[keys].copy()
    out["n_units"] = last["units"].map(len).to_numpy()
    out["gain"] = (last["chosen_test_accuracy"] - last["single_test_accuracy"]).to_numpy() * 100
    out["p_value"] = last["p_vs_single"].to_numpy(dtype=np.float64)
    out["p_holm"] = stats.holm(out["p_value"].to_numpy()) if len(out) else []
    out["discordance"] = last["discordance_vs_single"].to_numpy(dtype=np.float64)
    out["mde"] = [stats.mcnemar_mde(int(n), psi, alpha, power) * 100 if psi > 0 else float("nan")
                  for n, psi in zip(last["n_test"], out["discordance"])]
    return out.reset_index(drop=True)


def selection_claim(unit_greedy: pd.DataFrame, layer_greedy: pd.DataFrame, alpha: float = ALPHA,
                    power: float = POWER) -> dict[str, Any]:
    """Future work named by the authors: automating the choice of layers and models without touching test.

    Decisive: the greedy (model, layer) search of the fusion chapter against the validation-best single unit it
    starts from, on test, McNemar per dataset with Holm across datasets. Supported when the search wins
    significantly on at least half of the datasets and loses significantly on none, partly supported when it wins
    on at least one. The effect is the median gain over datasets (points); the within-model layer search of the
    layer chapter is reported beside it.
    """
    units = greedy_comparisons(unit_greedy, ["dataset"], alpha, power)
    layers = greedy_comparisons(layer_greedy, ["model", "dataset"], alpha, power)
    wins = int(((units["p_holm"] < alpha) & (units["gain"] > 0)).sum())
    losses = int(((units["p_holm"] < alpha) & (units["gain"] < 0)).sum())
    median, low, high = median_interval(units["gain"], alpha)
    mde = float(np.nanmedian(units["mde"])) if np.isfinite(units["mde"]).any() else float("nan")
    judged = verdict(wins > 0, wins >= len(units) / 2 and losses == 0, low, high, mde)
    layer_wins = int(((layers["p_holm"] < alpha) & (layers["gain"] > 0)).sum())
    evidence = (f"greedy (model, layer) search vs the validation-best single unit on test: "
                + ", ".join(f"{r.dataset} {_pts(r.gain)} (Holm p = {r.p_holm:.2g}, {r.n_units} units)"
                            for r in units.itertuples())
                + f"; significantly better on {wins}/{len(units)} datasets, worse on {losses}; median gain "
                  f"{_pts(median)} points [{_pts(low)}, {_pts(high)}]; greedy layers within a model vs its best "
                  f"single layer: median {_pts(float(np.median(layers['gain'])) if len(layers) else np.nan)} points, "
                  f"significantly better in {layer_wins}/{len(layers)} cells (Holm)")
    best = units.loc[units["p_holm"].idxmin()] if len(units) else None
    return _row("Layer (and model) selection can be automated without touching test", judged, evidence,
                "Chapters 'Which layer?' and 'Fusion': greedy tables",
                test=f"McNemar per dataset, greedy set vs best single unit, Holm over {len(units)} datasets",
                statistic=None, effect=median, effect_low=low, effect_high=high,
                p_value=None if best is None else best["p_holm"], mde=mde)


# -- the table -----------------------------------------------------------------------------------------------------

def evaluate(load: Loader, pooling: str, alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """Build the claims table (columns ``COLUMNS``) from a loader of results tables (e.g. ``report.Run.load``);
    ``pooling`` is the profile's primary pooling, the one the layer and fusion chapters selected with."""
    rows = [
        layer_claim(load("layers_summary"), pooling, load("layers_selection"), alpha),
        fusion_claim(load("fusion_comparisons"), load("fusion_complementarity")),
        stability_claim(load("fusion_stability")),
        overhead_claim(load("overhead_scaling"), alpha, power),
        selection_claim(load("fusion_greedy"), load("layers_greedy"), alpha, power),
    ]
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))
