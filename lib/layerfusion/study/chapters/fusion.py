"""Chapter 3: fuse embeddings of several frozen models (each at its validation-best layer) and ask when it helps.

Every combination of >= 2 models is fused with concatenation (and the other operators on pairs and on all models),
over several seeds; each fusion is compared with the validation-best single model (paired McNemar, Holm across the
dataset), with the same fusion squeezed to the single model's dimension (PCA fitted on train) and with the best model
concatenated with its own second-best layer. Complementarity diagnostics (Cohen's kappa, error overlap, linear CKA)
are computed on validation and set against the test gain. A greedy search over (model, layer) units closes the
chapter. A job an operator cannot take (``scalar_mix`` needs inputs of one width) is skipped and listed in
``skipped`` with the operator's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from layerfusion import diagnostics, fusion, stats
from layerfusion.data import SPLITS
from layerfusion.study.features import Study
from layerfusion.study.results import TableSet
from layerfusion.study.selection import greedy_units

SKIPPED_COLUMNS = ("dataset", "models", "operator", "reason")


@dataclass
class FusionAnalysis(TableSet):
    """Tables produced by ``analyse_fusion``."""

    runs: pd.DataFrame
    comparisons: pd.DataFrame
    controls: pd.DataFrame
    complementarity: pd.DataFrame
    stability: pd.DataFrame
    greedy: pd.DataFrame
    skipped: pd.DataFrame


def best_layers(summary: pd.DataFrame, dataset: str, pooling: str) -> dict[str, int]:
    """model -> validation-best layer, from the layer analysis summary."""
    rows = summary[(summary["dataset"] == dataset) & (summary["pooling"] == pooling)]
    return {r.model: int(r.best_layer) for r in rows.itertuples()}


class _Runner:
    """Fits one fusion on one dataset and remembers its predictions (seed 0 is used for paired tests)."""

    def __init__(self, study: Study, dataset: str, units: dict[str, dict[str, np.ndarray]]) -> None:
        self.study, self.dataset, self.units = study, dataset, units
        self.cfg = study.config.fusion
        self.y = {s: study.labels(dataset, s) for s in SPLITS}

    def fit(self, names: list[str], operator: str, seed: int,
            features: dict[str, list[np.ndarray]] | None = None) -> dict[str, Any]:
        Xs = features or {s: [self.units[n][s] for n in names] for s in SPLITS}
        clf = fusion.FusionClassifier(operator=operator, proj_dim=self.cfg.proj_dim, epochs=self.cfg.epochs,
                                      random_state=seed)
        clf.fit(Xs["train"], self.y["train"], Xs["validation"], self.y["validation"])
        val_pred, test_pred = clf.predict(Xs["validation"]), clf.predict(Xs["test"])
        return {"val_accuracy": stats.accuracy(self.y["validation"], val_pred),
                "test_accuracy": stats.accuracy(self.y["test"], test_pred),
                "test_macro_f1": stats.macro_f1(self.y["test"], test_pred),
                "val_pred": val_pred, "test_pred": test_pred}


def _combos(models: list[str], operator: str) -> list[tuple[str, ...]]:
    """Concatenation on every combination of >= 2 models; other operators on pairs and on all models."""
    all_combos = [c for k in range(2, len(models) + 1) for c in combinations(models, k)]
    if operator == "concat":
        return all_combos
    return [c for c in all_combos if len(c) == 2 or len(c) == len(models)]


def plan_jobs(models: list[str], operators: tuple[str, ...], widths: dict[str, int]
              ) -> tuple[list[tuple[tuple[str, ...], str]], list[dict[str, Any]]]:
    """The (models, operator) fusions to run, and those skipped because the operator cannot take the models' widths.

    Every model alone (concatenation of one input) comes first, then each operator's combinations. Each job is
    checked with its operator's ``check_dims`` before anything is trained; a refused job becomes a skipped row with
    the operator's reason instead of an error halfway through the chapter.
    """
    jobs, skipped = [], []
    for names, op in [((m,), "concat") for m in models] + [(c, op) for op in operators for c in _combos(models, op)]:
        try:
            fusion.OPERATORS[op].check_dims([widths[m] for m in names])
        except ValueError as err:
            skipped.append({"models": list(names), "operator": op, "reason": str(err)})
        else:
            jobs.append((names, op))
    return jobs, skipped


def _fuse_dataset(study: Study, dataset: str, summary: pd.DataFrame, per_layer: pd.DataFrame) -> dict[str, Any]:
    cfg = study.config
    seeds = list(cfg.fusion.seeds)
    layers = best_layers(summary, dataset, cfg.primary_pooling)
    models = [m for m in cfg.models if m in layers]
    units = {m: {s: study.layer_matrix(m, dataset, s, layers[m]) for s in SPLITS} for m in models}
    runner = _Runner(study, dataset, units)
    y_te = runner.y["test"]

    runs, preds = [], {}
    jobs, skipped = plan_jobs(models, cfg.fusion.operators, {m: units[m]["train"].shape[1] for m in models})
    for names, op in jobs:
        for seed in seeds:
            res = runner.fit(list(names), op, seed)
            preds[(names, op, seed)] = res
            runs.append({"dataset": dataset, "models": list(names), "k": len(names), "operator": op,
                         "seed": seed, "layers": [layers[m] for m in names],
                         **{k: v for k, v in res.items() if not k.endswith("_pred")}})
    runs_df = pd.DataFrame(runs)

    singles = runs_df[runs_df["k"] == 1].groupby(runs_df["models"].map(tuple))["val_accuracy"].mean()
    best_single = singles.idxmax()
    best_key = (best_single, "concat", seeds[0])
    comparisons = []
    grouped = runs_df[runs_df["k"] >= 2].groupby([runs_df["models"].map(tuple), "operator"], sort=False)
    single_test = runs_df[runs_df["models"].map(tuple) == best_single]["test_accuracy"]
    for (names, op), grp in grouped:
        fused = preds[(names, op, seeds[0])]["test_pred"]
        test = stats.mcnemar(y_te, fused, preds[best_key]["test_pred"])
        comparisons.append({
            "dataset": dataset, "models": list(names), "k": len(names), "operator": op,
            "best_single": best_single[0], "best_single_test_mean": float(single_test.mean()),
            "test_mean": float(grp["test_accuracy"].mean()), "test_std": float(grp["test_accuracy"].std(ddof=1))
            if len(grp) > 1 else float("nan"),
            "val_mean": float(grp["val_accuracy"].mean()),
            "gain": float(grp["test_accuracy"].mean() - single_test.mean()),
            "p_value": test.p_value,
        })
    comp_df = pd.DataFrame(comparisons)
    if len(comp_df):
        comp_df["p_holm"] = stats.holm(comp_df["p_value"].to_numpy())

    controls = _controls(study, dataset, runner, units, models, best_single[0], per_layer, seeds)
    compl = _complementarity(dataset, models, units, runner, preds, runs_df, seeds[0])
    return {"runs": runs_df, "comparisons": comp_df, "controls": controls, "complementarity": compl,
            "greedy": _greedy_units(study, dataset, per_layer),
            "skipped": pd.DataFrame([{"dataset": dataset, **row} for row in skipped], columns=SKIPPED_COLUMNS)}


def _controls(study: Study, dataset: str, runner: _Runner, units: dict, models: list[str], best: str,
              per_layer: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Fusions at the best single model's dimensionality, and the best model fused with its own second layer.

    The reduction is PCA fitted on train where train has enough rows for that many components, else a seeded
    Gaussian random projection (also fitted on train only); the row says which.
    """
    rows = []
    dim = units[best]["train"].shape[1]
    for k in range(2, len(models) + 1):
        for names in combinations(models, k):
            full = {s: [np.concatenate([units[n][s] for n in names], axis=1)] for s in SPLITS}
            method = "pca" if dim <= min(full["train"][0].shape) else "random"
            reduced = fusion.match_dimension(full["train"][0], [full["validation"][0], full["test"][0]], dim,
                                             method=method, random_state=study.config.seed)
            feats = {s: [x] for s, x in zip(SPLITS, reduced)}
            accs = [runner.fit(list(names), "concat", seed, features=feats)["test_accuracy"] for seed in seeds]
            rows.append({"dataset": dataset, "control": f"fusion reduced to best single's dimension ({method})",
                         "models": list(names), "dim": int(dim), "test_mean": float(np.mean(accs)),
                         "test_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan")})
    ranked = per_layer[(per_layer["dataset"] == dataset) & (per_layer["model"] == best)
                       & (per_layer["pooling"] == study.config.primary_pooling)]
    ranked = ranked.sort_values("val_accuracy", ascending=False)
    top2 = [int(x) for x in ranked["layer"].head(2)]
    feats = {s: [study.layer_matrix(best, dataset, s, layer) for layer in top2] for s in SPLITS}
    accs = [runner.fit([best, best], "concat", seed, features=feats)["test_accuracy"] for seed in seeds]
    rows.append({"dataset": dataset, "control": f"best model, layers {top2[0]}+{top2[-1]} concatenated",
                 "models": [best], "dim": int(sum(f.shape[1] for f in feats["train"])),
                 "test_mean": float(np.mean(accs)),
                 "test_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan")})
    return pd.DataFrame(rows)


def _complementarity(dataset: str, models: list[str], units: dict, runner: _Runner, preds: dict,
                     runs_df: pd.DataFrame, seed: int, max_items: int = 1000) -> pd.DataFrame:
    """Per model pair: kappa, error overlap and CKA on validation, beside the concatenation's test gain."""
    y_val = runner.y["validation"]
    test_mean = runs_df.groupby([runs_df["models"].map(tuple), "operator"])["test_accuracy"].mean()
    rows = []
    for a, b in combinations(models, 2):
        pa, pb = preds[((a,), "concat", seed)]["val_pred"], preds[((b,), "concat", seed)]["val_pred"]
        overlap = diagnostics.error_overlap(y_val, pa, pb)
        n = min(max_items, len(y_val))
        cka = diagnostics.linear_cka(units[a]["validation"][:n], units[b]["validation"][:n])
        better = max(test_mean[((a,), "concat")], test_mean[((b,), "concat")])
        rows.append({"dataset": dataset, "model_a": a, "model_b": b,
                     "kappa": diagnostics.cohen_kappa(pa, pb), "cka": float(cka),
                     **{f"overlap_{k}": float(v) for k, v in overlap.items()},
                     "gain_over_better": float(test_mean[((a, b), "concat")] - better)})
    return pd.DataFrame(rows)


def _greedy_units(study: Study, dataset: str, per_layer: pd.DataFrame) -> pd.DataFrame:
    """Greedy forward search over (model, layer) units on validation, dimension as cost; test once at the end."""
    cfg = study.config
    rows = per_layer[(per_layer["dataset"] == dataset) & (per_layer["pooling"] == cfg.primary_pooling)]
    candidates, top = {}, cfg.fusion.greedy.top_layers
    for model in cfg.models:
        best = rows[rows["model"] == model].sort_values("val_accuracy", ascending=False).head(top)
        candidates.update({f"{model}@{int(layer)}": (model, int(layer)) for layer in best["layer"]})
    frame = greedy_units(study, dataset, candidates, cfg.fusion.greedy, cost_in_dims=True)
    frame.insert(0, "dataset", dataset)
    frame["units"] = frame["units"].map(list)
    return frame


def stability(runs: pd.DataFrame) -> pd.DataFrame:
    """Spread of test accuracy against the number of models fused (concatenation): across seeds and across combos."""
    concat = runs[runs["operator"] == "concat"].copy()
    concat["combo"] = concat["models"].map(lambda m: "+".join(m))
    per_combo = concat.groupby(["dataset", "k", "combo"])["test_accuracy"].agg(["mean", "std"]).reset_index()
    out = per_combo.groupby(["dataset", "k"]).agg(
        n_combos=("combo", "count"), seed_std_mean=("std", "mean"),
        across_combo_std=("mean", lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")),
        worst=("mean", "min"), best=("mean", "max"), mean=("mean", "mean")).reset_index()
    out["range"] = out["best"] - out["worst"]
    return out


def complementarity_correlation(compl: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each diagnostic with the pair's fusion gain, across pairs x datasets."""
    rows = []
    for col in ("kappa", "cka", "overlap_jaccard", "overlap_oracle_accuracy"):
        if col in compl and compl[col].nunique() > 1 and len(compl) > 2:
            rho, p = spearmanr(compl[col], compl["gain_over_better"])
            rows.append({"diagnostic": col, "spearman_vs_gain": float(rho), "p_value": float(p), "n_pairs": len(compl)})
    return pd.DataFrame(rows)


def analyse_fusion(study: Study, summary: pd.DataFrame, per_layer: pd.DataFrame) -> FusionAnalysis:
    """Run the fusion chapter for every dataset of the profile."""
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in
                                            ("runs", "comparisons", "controls", "complementarity", "greedy",
                                             "skipped")}
    for dataset in study.config.datasets:
        res = _fuse_dataset(study, dataset, summary, per_layer)
        for key in parts:
            parts[key].append(res[key])
    tables = {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}
    return FusionAnalysis(stability=stability(tables["runs"]), **tables)


def summary_table(comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per dataset: the best fusion chosen on validation, beside the best single model, with its Holm p."""
    rows = []
    for dataset, grp in comparisons.groupby("dataset", sort=False):
        best = grp.loc[grp["val_mean"].idxmax()]
        rows.append({"dataset": dataset, "best single (val)": best["best_single"],
                     "single test": round(best["best_single_test_mean"], 4),
                     "fusion chosen on val": "+".join(best["models"]) + f" · {best['operator']}",
                     "fusion test (mean ± std)": f"{best['test_mean']:.4f} ± {best['test_std']:.4f}",
                     "gain": round(best["gain"], 4), "p (Holm)": f"{best['p_holm']:.2g}",
                     "significant": bool(best["p_holm"] < alpha and best["gain"] > 0)})
    return pd.DataFrame(rows)


def headline(fused: FusionAnalysis, alpha: float = 0.05) -> dict[str, Any]:
    """Counts the prose quotes: significant gains, datasets with a winning fusion, spread against k."""
    comp = fused.comparisons
    sig = comp[(comp["p_holm"] < alpha) & (comp["gain"] > 0)]
    stab = fused.stability
    k_min, k_max = int(stab["k"].min()), int(stab["k"].max())
    narrowing = [ds for ds, g in stab.groupby("dataset")
                 if g.loc[g["k"] == k_max, "seed_std_mean"].mean() < g.loc[g["k"] == k_min, "seed_std_mean"].mean()]
    return {
        "n_fusions": int(len(comp)),
        "n_significant_gains": int(len(sig)),
        "datasets_with_significant_gain": sorted(sig["dataset"].unique().tolist()),
        "n_datasets": int(comp["dataset"].nunique()),
        "datasets_where_seed_spread_narrows": sorted(narrowing),
        "n_skipped": int(len(fused.skipped)),
    }
