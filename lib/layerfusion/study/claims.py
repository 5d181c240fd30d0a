"""The claims table: each claim of the paper judged from this run's result files, with the numbers behind it.

A verdict is one of ``supported``, ``partly supported``, ``not supported`` or ``inconclusive``; the rules are written
out below so a reader can disagree with a rule rather than with a hidden judgement.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

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


def fusion_claim(comparisons: pd.DataFrame, complementarity: pd.DataFrame) -> dict[str, str]:
    """Claim 2: fusing frozen models helps when they are complementary."""
    concat = comparisons[comparisons["operator"] == "concat"]
    sig = concat[(concat["p_holm"] < ALPHA) & (concat["gain"] > 0)]
    n_ds = concat["dataset"].nunique()
    ds_sig = sorted(sig["dataset"].unique())
    rho, p = np.nan, np.nan
    if len(complementarity) > 2 and complementarity["kappa"].nunique() > 1:
        from scipy.stats import spearmanr

        rho, p = spearmanr(complementarity["kappa"], complementarity["gain_over_better"])
    predicts = bool(np.isfinite(p) and p < ALPHA and rho < 0)
    if ds_sig and predicts:
        verdict = "supported"
    elif ds_sig:
        verdict = "partly supported"
    elif (concat["gain"] > 0).mean() > 0.5:
        verdict = "inconclusive"
    else:
        verdict = "not supported"
    evidence = (f"a concatenation beats the validation-best single model significantly on {len(ds_sig)}/{n_ds} "
                f"datasets ({', '.join(ds_sig) or 'none'}); {len(sig)}/{len(concat)} concatenations significant; "
                f"median gain {concat['gain'].median() * 100:+.2f} points; Spearman(κ, gain) over "
                f"{len(complementarity)} pairs = {rho:.2f} (p = {p:.2g})")
    return _row("Fusing frozen models' embeddings helps when the models are complementary", verdict, evidence,
                "Chapter 'Fusion': gains plot, complementarity scatter and correlation table")


def stability_claim(stability: pd.DataFrame) -> dict[str, str]:
    """Claim 3: three or more models make performance more stable.

    Two readings of "stable", both reported: the spread over seeds of one combination, and the spread across the
    combinations of k models (how much the result depends on which models are picked; only sizes k with at least
    two combinations count, since one combination has no spread). Supported when both narrow
    from 2 to >=3 models on every dataset, partly supported when either narrows on at least half, else not.
    """
    rows = []
    for dataset, g in stability.groupby("dataset", sort=False):
        many = g["k"] >= 3
        rows.append((dataset, g.loc[g["k"] == 2, "seed_std_mean"].mean(), g.loc[many, "seed_std_mean"].mean(),
                     g.loc[g["k"] == 2, "range"].mean() if "range" in g else np.nan,
                     g.loc[many & (g.get("n_combos", 2) >= 2), "range"].mean() if "range" in g else np.nan))
    seed = [(d, a, b) for d, a, b, _, _ in rows if np.isfinite(a) and np.isfinite(b)]
    combo = [(d, a, b) for d, _, _, a, b in rows if np.isfinite(a) and np.isfinite(b)]
    seed_narrower = sum(b < a for _, a, b in seed)
    combo_narrower = sum(b < a for _, a, b in combo)
    if not seed and not combo:
        verdict = "inconclusive"
    elif seed_narrower == len(seed) and combo_narrower == len(combo):
        verdict = "supported"
    elif (seed and seed_narrower >= len(seed) / 2) or (combo and combo_narrower >= len(combo) / 2):
        verdict = "partly supported"
    else:
        verdict = "not supported"
    seed_detail = "; ".join(f"{d}: {a * 100:.2f} → {b * 100:.2f}" for d, a, b in seed)
    combo_detail = "; ".join(f"{d}: {a * 100:.2f} → {b * 100:.2f}" for d, a, b in combo)
    evidence = (f"std over seeds, 2 → ≥3 models (points): {seed_detail or 'n/a'} (narrower on {seed_narrower}/"
                f"{len(seed)}); best − worst combination, 2 → ≥3 models (points): {combo_detail or 'n/a'} (narrower "
                f"on {combo_narrower}/{len(combo)}); descriptive: few seeds and combinations, no test")
    return _row("Fusing three or more models makes results more stable", verdict, evidence,
                "Chapter 'Fusion': stability plot and table")


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
