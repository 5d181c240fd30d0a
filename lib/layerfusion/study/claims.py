"""The claims table: each claim of the paper judged from this run's result files, with the numbers behind it.

A verdict is one of ``supported``, ``partly supported``, ``not supported`` or ``inconclusive``; the rules are written
out below so a reader can disagree with a rule rather than with a hidden judgement.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from layerfusion.study import fusion_stats

ALPHA = 0.05
Loader = Callable[[str], pd.DataFrame]


def _row(claim: str, verdict: str, evidence: str, where: str) -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "evidence": evidence, "where": where}


def layer_facts(summary: pd.DataFrame, pooling: str, alpha: float = ALPHA) -> dict[str, Any]:
    """The numbers behind claim 1, for the verdict and for the layer chapter's prose alike.

    Over the model x dataset cells of ``pooling``: how many there are, in how many the validation-best layer is not
    the last, in how many it beats the last significantly (Holm p < ``alpha`` and a positive difference), the median
    relative depth of the best layer, and per model how far that depth moves across datasets.
    """
    df = summary[summary["pooling"] == pooling]
    significant = (df["p_best_vs_last_holm"] < alpha) & (df["delta_best_minus_last"] > 0)
    depth_range = df.groupby("model")["best_rel_depth"].agg(lambda s: float(s.max() - s.min()))
    return {
        "n_cells": int(len(df)),
        "n_not_last": int((~df["best_is_last"]).sum()),
        "n_significant": int(significant.sum()),
        "median_best_rel_depth": float(df["best_rel_depth"].median()),
        "max_depth_range_across_datasets": float(depth_range.max()) if len(depth_range) else float("nan"),
        "n_models": int(depth_range.size),
        "n_models_depth_varies": int((depth_range > 0.1).sum()),
    }


def layer_claim(summary: pd.DataFrame, pooling: str) -> dict[str, str]:
    """Claim 1: the best layer depends on the dataset and is often not the last."""
    facts = layer_facts(summary, pooling)
    n, not_last, n_sig = facts["n_cells"], facts["n_not_last"], facts["n_significant"]
    varies = facts["n_models_depth_varies"]
    if not_last >= n / 2 and n_sig > 0 and varies > 0:
        verdict = "supported"
    elif not_last >= n / 2:
        verdict = "partly supported" if varies > 0 else "inconclusive"
    else:
        verdict = "not supported"
    evidence = (f"best layer (chosen on validation) is not the last in {not_last}/{n} model×dataset cells; "
                f"significantly better than the last in {n_sig}/{n} (McNemar, Holm p<{ALPHA}); "
                f"median relative depth of the best layer {facts['median_best_rel_depth']:.2f}; "
                f"the best depth moves by >0.1 across datasets for {varies}/{facts['n_models']} models")
    return _row("The most useful layer depends on the dataset and is often not the last", verdict, evidence,
                "Chapter 'Which layer?': layer curves, heatmap, best-vs-last table")


# -- claims 2 and 3: the fusion chapter's tests (``layerfusion.study.fusion_stats``) ----------------------------------
# ``_stand_in_verdict``, ``_stand_in_excluded`` and ``_stand_in_row`` stand in for the shared verdict rule and row
# builder of the claims framework, with the same behaviour and row shape; replace them by those when both are merged.

def _stand_in_excluded(low: float, high: float, mde: float, sign: int = 1) -> bool:
    """Whether the data exclude a claimed effect (claimed sign ``sign``): its 95 % interval lies entirely on the
    opposite side of zero, or within +-MDE of zero. False when the interval is not defined."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    lo, hi = sorted((low * sign, high * sign))
    return bool(hi < 0 or (np.isfinite(mde) and -mde <= lo and hi <= mde))


def _stand_in_verdict(significant: bool, complete: bool, excluded: bool) -> str:
    """The shared rule: supported (``complete``) or partly supported only with a result significant after
    correction; otherwise not supported when the data exclude the effect, else inconclusive."""
    if significant:
        return "supported" if complete else "partly supported"
    return "not supported" if excluded else "inconclusive"


def _stand_in_row(claim: str, verdict: str, test: pd.Series, scale: float, evidence: str,
                  where: str) -> dict[str, Any]:
    """A claims-table row from the decisive test (a row of a ``fusion_stats`` test table; effect times ``scale``)."""
    def num(key: str, factor: float = 1.0) -> float | None:
        value = test.get(key, np.nan)
        return float(value) * factor if value is not None and np.isfinite(value) else None
    return {"claim": claim, "verdict": verdict, "test": str(test["test"]), "statistic": num("effect", scale),
            "effect": num("effect", scale), "effect_low": num("low", scale), "effect_high": num("high", scale),
            "p_value": num("p_holm"), "mde": num("mde", scale), "evidence": evidence, "where": where}


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
    excluded = _stand_in_excluded(compl["low"], compl["high"], compl["mde"], -1) or (len(gains) > 0 and all(
        _stand_in_excluded(r.low, r.high, r.mde, 1) for r in gains.itertuples()))
    verdict = _stand_in_verdict(wins or predicts, wins and predicts, excluded)
    decisive = _decisive(tests, len(tests) - 1)
    per_dataset = "; ".join(f"{r.dataset} {r.effect * 100:+.2f} [{r.low * 100:+.2f}, {r.high * 100:+.2f}]"
                            f" (Holm p = {r.p_holm:.2g})" for r in gains.itertuples())
    evidence = (f"fusion chosen on validation minus the validation-best single model, test accuracy points: "
                f"{per_dataset or 'n/a'}; Spearman rho(kappa on validation, concatenation gain) over {int(compl['n'])} "
                f"pairs = {compl['effect']:.2f} [{compl['low']:.2f}, {compl['high']:.2f}] (Holm p = "
                f"{compl['p_holm']:.2g}, MDE {compl['mde']:.2f})")
    scale = 1.0 if decisive["test"] == compl["test"] else 100.0
    return _stand_in_row("Fusing frozen models' embeddings helps when the models are complementary", verdict, decisive,
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
    verdict = _stand_in_verdict(bool(sig.any()), bool(sig.all()) and beyond_ensemble,
                                _stand_in_excluded(seed["low"], seed["high"], seed["mde"], 1))
    pts = lambda value: f"{value * 100:.2f}" if np.isfinite(value) else "n/a"  # noqa: E731
    evidence = (f"std over seeds of the concatenations, 2 → ≥3 models: {pts(seed['k2'])} → {pts(seed['k3plus'])} "
                f"points (narrowing {pts(seed['effect'])} [{pts(seed['low'])}, {pts(seed['high'])}], Holm p = "
                f"{seed['p_holm']:.2g}); ensemble of the single-model classifiers: {pts(ens['k2'])} → "
                f"{pts(ens['k3plus'])} (p = {ens['p_value']:.2g}); concatenation minus ensemble narrowing "
                f"{pts(contrast['effect'])} [{pts(contrast['low'])}, {pts(contrast['high'])}]; std across "
                f"combinations at equal m: narrowing {pts(equal_m['effect'])} points "
                f"(Holm p = {equal_m['p_holm']:.2g})")
    return _stand_in_row("Fusing three or more models makes results more stable", verdict, _decisive(family, 0), 100.0,
                         evidence, "Chapter 'Fusion': stability figure, stability tests table")


def overhead_claim(scaling: pd.DataFrame) -> dict[str, str]:
    """Claim 4: memory and time grow with the number of models and layers used."""
    layers = scaling[scaling["vary"] == "layers"].sort_values("value")
    models = scaling[scaling["vary"] == "models"].sort_values("value")
    parts, grows = [], []
    for name, df in (("layers kept", layers), ("models fused", models)):
        if len(df) >= 2:
            slope = np.polyfit(df["value"].astype(float), df["seconds"].astype(float), 1)[0]
            ratio = df["seconds"].iloc[-1] / df["seconds"].iloc[0]
            grows.append(slope > 0)
            parts.append(f"time vs {name}: ×{ratio:.2f} from {df['value'].iloc[0]} to {df['value'].iloc[-1]}")
    verdict = "supported" if grows and all(grows) else ("inconclusive" if not grows else "not supported")
    return _row("Memory and inference time grow with the number of models and layers", verdict,
                "; ".join(parts) or "no overhead measurements", "Chapter 'Overhead': scaling curves and Pareto plot")


def selection_claim(layer_greedy: pd.DataFrame, summary: pd.DataFrame, unit_greedy: pd.DataFrame,
                    comparisons: pd.DataFrame, pooling: str) -> dict[str, str]:
    """Future work named by the authors: automating layer selection (here: greedy search on validation)."""
    chosen = layer_greedy.dropna(subset=["chosen_test_accuracy"])
    base = summary[summary["pooling"] == pooling].set_index(["model", "dataset"])["best_test_accuracy"]
    deltas = [row.chosen_test_accuracy - base.get((row.model, row.dataset), np.nan) for row in chosen.itertuples()]
    units = unit_greedy.dropna(subset=["chosen_test_accuracy"]).set_index("dataset")["chosen_test_accuracy"]
    single = comparisons.groupby("dataset")["best_single_test_mean"].first()
    unit_delta = (units - single.reindex(units.index)).dropna()
    verdict = "supported" if len(unit_delta) and (unit_delta >= 0).mean() >= 0.5 else "inconclusive"
    evidence = (f"greedy multi-layer selection within a model: median test change vs the single best layer "
                f"{np.nanmedian(deltas) * 100:+.2f} points over {len(deltas)} cells; greedy (model, layer) search: "
                f"test change vs the best single model {', '.join(f'{d}: {v * 100:+.2f}' for d, v in unit_delta.items())}")
    return _row("Layer (and model) selection can be automated without touching test", verdict, evidence,
                "Chapters 'Which layer?' and 'Fusion': greedy tables")


def evaluate(load: Loader, pooling: str) -> pd.DataFrame:
    """Build the claims table from a loader of results tables (e.g. ``report.Run.load``); ``pooling`` is the
    profile's primary pooling, the one the layer and fusion chapters selected with."""
    rows = [
        layer_claim(load("layers_summary"), pooling),
        fusion_claim(load("fusion_comparisons"), load("fusion_complementarity")),
        stability_claim(load("fusion_stability")),
        overhead_claim(load("overhead_scaling")),
        selection_claim(load("layers_greedy"), load("layers_summary"), load("fusion_greedy"),
                        load("fusion_comparisons"), pooling),
    ]
    return pd.DataFrame(rows)
