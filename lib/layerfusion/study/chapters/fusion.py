"""Chapter 3: fuse embeddings of several frozen models (each at its validation-best layer) and ask when it helps.

Every combination of >= 2 models is fused with concatenation (and the other operators on pairs and on all models),
over the profile's seeds. Each fusion is compared with the validation-best single model on the same test items with
every seed (``fusion_stats.paired_gain``; Holm within the dataset for the figure), with the same fusion squeezed to
the single model's dimension (PCA fitted on train where train has enough rows per component, else a random
projection; the same reduction applied to the best single model shows what the reduction alone costs) and with the
best model concatenated with its own second-best layer. An ensemble of the single-model classifiers (their predicted probabilities averaged, same seed, no new fit)
stands beside every concatenation, so that what averaging more models does to the spread is seen apart from fusion.
Complementarity diagnostics (Cohen's kappa, error overlap, linear CKA) are computed on validation and set against
the test gain. A greedy search over (model, layer) units closes the chapter. A job an operator cannot take
(``scalar_mix`` needs inputs of one width) is skipped and listed in ``skipped`` with the operator's reason.

The claims' tests on these tables live in ``layerfusion.study.fusion_stats``; the robustness chapter reruns
``analyse_fusion`` on perturbed features with concatenation only and without the controls (``extras=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from layerfusion import diagnostics, fusion, stats
from layerfusion.data import SPLITS
from layerfusion.progress import progress_bar
from layerfusion.study import fusion_stats
from layerfusion.study.features import Study
from layerfusion.study.results import TableSet
from layerfusion.study.selection import greedy_units
from layerfusion.study.verdicts import Levels

SKIPPED_COLUMNS = ("dataset", "models", "operator", "reason")
FIT_THREADS = 1
"""Threads per fit. The chapter runs hundreds of small fits (1,000 texts, a linear head); a second thread does not
pay for its synchronisation at that size, and on a shared 2-core machine two threads made a fit several times
slower than one. One thread also makes the fits independent of the machine's core count."""
METHODS = ("single", "concatenation", "ensemble")
"""How a combination is classified in the ``stability`` table: one model alone, its concatenation (a
``FusionClassifier``), or the ensemble of its single-model classifiers (probabilities averaged)."""


@dataclass
class FusionAnalysis(TableSet):
    """Tables produced by ``analyse_fusion``."""

    runs: pd.DataFrame
    ensembles: pd.DataFrame
    comparisons: pd.DataFrame
    stability: pd.DataFrame
    controls: pd.DataFrame
    complementarity: pd.DataFrame
    greedy: pd.DataFrame
    skipped: pd.DataFrame


def best_layers(summary: pd.DataFrame, dataset: str, pooling: str) -> dict[str, int]:
    """model -> validation-best layer, from the layer analysis summary."""
    rows = summary[(summary["dataset"] == dataset) & (summary["pooling"] == pooling)]
    return {r.model: int(r.best_layer) for r in rows.itertuples()}


class _Runner:
    """Fits one fusion on one dataset and returns its scores, predictions and (for single models) probabilities."""

    def __init__(self, study: Study, dataset: str, units: dict[str, dict[str, np.ndarray]]) -> None:
        self.study, self.dataset, self.units = study, dataset, units
        self.cfg = study.config.fusion
        self.y = {s: study.labels(dataset, s) for s in SPLITS}

    def fit(self, names: list[str], operator: str, seed: int,
            features: dict[str, list[np.ndarray]] | None = None) -> dict[str, Any]:
        Xs = features or {s: [self.units[n][s] for n in names] for s in SPLITS}
        clf = self.study.fits.fit(
            fusion.FusionClassifier(operator=operator, proj_dim=self.cfg.proj_dim, epochs=self.cfg.epochs,
                                    random_state=seed),
            Xs["train"], self.y["train"], Xs["validation"], self.y["validation"])
        out = {"classes": clf.classes_}
        for split in ("validation", "test"):
            proba = clf.predict_proba(Xs[split])
            out[f"{split}_proba"], out[f"{split}_pred"] = proba, clf.classes_[proba.argmax(axis=1)]
        return {**self.scores(out["validation_pred"], out["test_pred"]), **out}

    def scores(self, val_pred: np.ndarray, test_pred: np.ndarray) -> dict[str, float]:
        return {"val_accuracy": stats.accuracy(self.y["validation"], val_pred),
                "test_accuracy": stats.accuracy(self.y["test"], test_pred),
                "test_macro_f1": stats.macro_f1(self.y["test"], test_pred)}


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


def _row(dataset: str, names: tuple[str, ...], op: str, seed: int, layers: dict[str, int],
         res: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "models": list(names), "k": len(names), "operator": op, "seed": seed,
            "layers": [layers[m] for m in names], "val_accuracy": res["val_accuracy"],
            "test_accuracy": res["test_accuracy"], "test_macro_f1": res["test_macro_f1"]}


def _ensembles(dataset: str, runner: _Runner, models: list[str], preds: dict, seeds: list[int],
               layers: dict[str, int]) -> pd.DataFrame:
    """Every combination of >= 2 models as an ensemble of its single-model classifiers of the same seed: their
    predicted probabilities averaged (the single fits are reused; nothing is trained)."""
    rows = []
    for names in (c for k in range(2, len(models) + 1) for c in combinations(models, k)):
        for seed in seeds:
            members = [preds[((m,), "concat", seed)] for m in names]
            classes = members[0]["classes"]
            val, test = (classes[np.mean([r[f"{s}_proba"] for r in members], axis=0).argmax(axis=1)]
                         for s in ("validation", "test"))
            rows.append(_row(dataset, names, "ensemble", seed, layers, runner.scores(val, test)))
    return pd.DataFrame(rows)


def _ensemble_pred(preds: dict, names: tuple[str, ...], seed: int) -> np.ndarray:
    """Test predictions of the ensemble of ``names``' single-model classifiers of ``seed`` (probabilities
    averaged), as in ``_ensembles``."""
    members = [preds[((m,), "concat", seed)] for m in names]
    return members[0]["classes"][np.mean([r["test_proba"] for r in members], axis=0).argmax(axis=1)]


def _comparisons(dataset: str, runs: pd.DataFrame, preds: dict, y_test: np.ndarray,
                 seeds: list[int], levels: Levels) -> pd.DataFrame:
    """Every fusion against the validation-best single model, and against the ensemble of its own single-model
    classifiers, with every seed (``fusion_stats.paired_gain``)."""
    combo = runs["models"].map(tuple)
    singles = runs[runs["k"] == 1].groupby(combo)
    best_single = singles["val_accuracy"].mean().idxmax()
    single_preds = np.stack([preds[(best_single, "concat", s)]["test_pred"] for s in seeds])
    single_test = float(singles["test_accuracy"].mean()[best_single])
    rows = []
    for (names, op), grp in runs[runs["k"] >= 2].groupby([combo, "operator"], sort=False):
        fused = np.stack([preds[(names, op, s)]["test_pred"] for s in seeds])
        gain = fusion_stats.paired_gain(y_test, fused, single_preds, levels)
        ens = fusion_stats.paired_gain(y_test, fused, np.stack([_ensemble_pred(preds, names, s) for s in seeds]),
                                       levels)
        rows.append({"dataset": dataset, "models": list(names), "k": len(names), "operator": op,
                     "best_single": best_single[0], "best_single_test_mean": single_test,
                     "test_mean": float(grp["test_accuracy"].mean()),
                     "test_std": float(grp["test_accuracy"].std(ddof=1)) if len(grp) > 1 else float("nan"),
                     "val_mean": float(grp["val_accuracy"].mean()), "gain": gain.gain, "gain_low": gain.low,
                     "gain_high": gain.high, "gain_mde": gain.mde, "gain_se": gain.se, "n_test": int(len(y_test)),
                     "p_value": gain.p_value, "ensemble_gain": ens.gain, "ensemble_se": ens.se,
                     "ensemble_p": ens.p_value})
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = stats.holm(table["p_value"].to_numpy())
    return table


def stability_table(runs: pd.DataFrame, ensembles: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x method x combination (``METHODS``): k, seeds, mean and std over seeds of the test
    accuracy, mean validation accuracy. Concatenations and ensembles of the same combinations, beside the singles."""
    frames = [runs[runs["k"] == 1].assign(method="single"),
              runs[(runs["k"] >= 2) & (runs["operator"] == "concat")].assign(method="concatenation"),
              ensembles.assign(method="ensemble") if len(ensembles) else None]
    df = pd.concat([f for f in frames if f is not None and len(f)], ignore_index=True)
    df["combo"] = df["models"].map("+".join)
    grouped = df.groupby(["dataset", "method", "combo", "k"], sort=False)
    out = grouped.agg(models=("models", "first"), n_seeds=("seed", "nunique"), test_mean=("test_accuracy", "mean"),
                      test_seed_std=("test_accuracy", lambda s: float(s.std(ddof=1)) if len(s) > 1 else np.nan),
                      val_mean=("val_accuracy", "mean")).reset_index()
    return out


PCA_ROWS_PER_COMPONENT = 4
"""The equal-dimension control uses PCA only with at least this many train rows per component; otherwise a seeded
Gaussian random projection. The classifier standardises every input column, so PCA components beyond what the rows
can estimate (640 components from 1,000 rows) are noise scaled up to unit variance: a single model squeezed that way
loses most of its accuracy, and the control would test the reduction rather than the fusion."""


def _reduction(dim: int, n_train: int) -> str:
    return "pca" if dim * PCA_ROWS_PER_COMPONENT <= n_train else "random"


def _controls(study: Study, dataset: str, runner: _Runner, units: dict, models: list[str], best: str,
              per_layer: pd.DataFrame, seeds: list[int], runs: pd.DataFrame) -> pd.DataFrame:
    """Fusions at the best single model's dimensionality, the same reduction applied to the best single model
    (its vectors twice, squeezed back to its own width: a reduction a single model passes keeps its accuracy), and
    the best model fused with its own second layer.

    The reduction (fitted on train only) is PCA where train has ``PCA_ROWS_PER_COMPONENT`` rows per component,
    else a seeded Gaussian random projection; the row says which. A combination already no wider than the best
    single model needs no reduction: its concatenation's own runs are the control (not refitted).
    """
    rows = []
    dim = units[best]["train"].shape[1]
    n_train = units[best]["train"].shape[0]
    concat = runs[runs["operator"] == "concat"].assign(combo=runs["models"].map(tuple))
    candidates = [((best, best), "check: best single model twice, reduced the same way")]
    candidates += [(names, None) for k in range(2, len(models) + 1) for names in combinations(models, k)]
    for names, label in candidates:
        full = {s: [np.concatenate([units[n][s] for n in names], axis=1)] for s in SPLITS}
        width = full["train"][0].shape[1]
        if dim >= width:
            method, accs = "none needed", concat.loc[concat["combo"] == names, "test_accuracy"].tolist()
        else:
            method = _reduction(dim, n_train)
            reduced = fusion.match_dimension(full["train"][0], [full["validation"][0], full["test"][0]], dim,
                                             method=method, random_state=study.config.seed)
            feats = {s: [x] for s, x in zip(SPLITS, reduced)}
            accs = [runner.fit(list(names), "concat", seed, features=feats)["test_accuracy"] for seed in seeds]
        label = label or "fusion reduced to best single's dimension"
        rows.append({"dataset": dataset, "control": f"{label} ({method})", "models": list(dict.fromkeys(names)),
                     "dim": int(min(dim, width)), **_mean_std(accs)})
    ranked = per_layer[(per_layer["dataset"] == dataset) & (per_layer["model"] == best)
                       & (per_layer["pooling"] == study.config.primary_pooling)]
    top2 = [int(x) for x in ranked.sort_values("val_accuracy", ascending=False)["layer"].head(2)]
    if len(top2) == 2:
        feats = {s: [study.layer_matrix(best, dataset, s, layer) for layer in top2] for s in SPLITS}
        accs = [runner.fit([best, best], "concat", seed, features=feats)["test_accuracy"] for seed in seeds]
        rows.append({"dataset": dataset, "control": f"best model, layers {top2[0]}+{top2[1]} concatenated",
                     "models": [best], "dim": int(sum(f.shape[1] for f in feats["train"])), **_mean_std(accs)})
    return pd.DataFrame(rows)


def _mean_std(accs: list[float]) -> dict[str, float]:
    mean, std = stats.mean_std(accs)
    return {"test_mean": mean, "test_std": std}


def _complementarity(dataset: str, models: list[str], units: dict, runner: _Runner, preds: dict,
                     runs: pd.DataFrame, seeds: list[int], max_items: int = 1000) -> pd.DataFrame:
    """Per model pair: kappa and error overlap of the two single models on validation (mean over seeds) and the
    linear CKA of their vectors, beside the pair concatenation's test gain over the member better on validation."""
    y_val = runner.y["validation"]
    means = runs.groupby([runs["models"].map(tuple), "operator"])[["test_accuracy", "val_accuracy"]].mean()
    rows = []
    for a, b in combinations(models, 2):
        if ((a, b), "concat") not in means.index:
            continue
        pairs = [(preds[((a,), "concat", s)]["validation_pred"], preds[((b,), "concat", s)]["validation_pred"])
                 for s in seeds]
        overlap = pd.DataFrame([diagnostics.error_overlap(y_val, pa, pb) for pa, pb in pairs]).mean()
        n = min(max_items, len(y_val))
        better = max((a, b), key=lambda m: means.loc[((m,), "concat"), "val_accuracy"])
        rows.append({"dataset": dataset, "model_a": a, "model_b": b, "better_on_validation": better,
                     "kappa": float(np.mean([_kappa(pa, pb) for pa, pb in pairs])),
                     "cka": float(diagnostics.linear_cka(units[a]["validation"][:n], units[b]["validation"][:n])),
                     **{f"overlap_{k}": float(v) for k, v in overlap.items()},
                     "gain_over_better": float(means.loc[((a, b), "concat"), "test_accuracy"]
                                               - means.loc[((better,), "concat"), "test_accuracy"])})
    return pd.DataFrame(rows)


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa; 1.0 for two identical constant predictions (where the statistic itself is 0/0)."""
    if np.array_equal(a, b):
        return 1.0
    return diagnostics.cohen_kappa(a, b)


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


def _fuse_dataset(study: Study, dataset: str, summary: pd.DataFrame, per_layer: pd.DataFrame,
                  operators: tuple[str, ...], extras: bool) -> dict[str, pd.DataFrame]:
    cfg = study.config
    seeds = list(cfg.fusion.seeds)
    layers = best_layers(summary, dataset, cfg.primary_pooling)
    models = [m for m in cfg.models if m in layers]
    units = {m: {s: study.layer_matrix(m, dataset, s, layers[m]) for s in SPLITS} for m in models}
    runner = _Runner(study, dataset, units)
    jobs, skipped = plan_jobs(models, operators, {m: units[m]["train"].shape[1] for m in models})
    preds, rows = {}, []
    bar = progress_bar(len(jobs) * len(seeds), f"fusion {dataset}", study.progress, unit="fit")
    for names, op in jobs:
        for seed in seeds:
            preds[(names, op, seed)] = runner.fit(list(names), op, seed)
            rows.append(_row(dataset, names, op, seed, layers, preds[(names, op, seed)]))
            bar.update(1)
    bar.close()
    runs = pd.DataFrame(rows)
    ensembles = _ensembles(dataset, runner, models, preds, seeds, layers)
    comparisons = _comparisons(dataset, runs, preds, runner.y["test"], seeds, Levels.of(cfg))
    out = {"runs": runs, "ensembles": ensembles, "comparisons": comparisons,
           "complementarity": _complementarity(dataset, models, units, runner, preds, runs, seeds),
           "skipped": pd.DataFrame([{"dataset": dataset, **row} for row in skipped], columns=SKIPPED_COLUMNS)}
    if extras:
        best = str(comparisons["best_single"].iloc[0]) if len(comparisons) else models[0]
        out["controls"] = _controls(study, dataset, runner, units, models, best, per_layer, seeds, runs)
        out["greedy"] = _greedy_units(study, dataset, per_layer)
    return out


def analyse_fusion(study: Study, summary: pd.DataFrame, per_layer: pd.DataFrame, *,
                   operators: tuple[str, ...] | None = None, extras: bool = True) -> FusionAnalysis:
    """Run the fusion chapter for every dataset of the profile.

    ``operators`` defaults to the profile's; ``extras=False`` leaves out the controls and the greedy search (their
    tables come back empty), as the robustness chapter does. Fits run with ``FIT_THREADS`` threads.
    """
    operators = tuple(operators or study.config.fusion.operators)
    names = ("runs", "ensembles", "comparisons", "complementarity", "skipped", "controls", "greedy")
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in names}
    with threadpool_limits(limits=FIT_THREADS):
        for dataset in study.config.datasets:
            for key, frame in _fuse_dataset(study, dataset, summary, per_layer, operators, extras).items():
                parts[key].append(frame)
    tables = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}
    return FusionAnalysis(stability=stability_table(tables["runs"], tables["ensembles"]), **tables)


def stability_summary(stability: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and number of models: accuracy and spreads of the concatenations beside the ensembles (points)."""
    grouped = stability[stability["method"] != "single"].groupby(["dataset", "k", "method"], sort=False)
    table = pd.DataFrame({"accuracy": grouped["test_mean"].mean() * 100,
                          "std over seeds": grouped["test_seed_std"].mean() * 100,
                          "std across combinations": grouped["test_mean"].std(ddof=1) * 100}).round(2)
    wide = table.unstack("method")
    wide.columns = [f"{method}: {what}" for what, method in wide.columns]
    order = [f"{m}: {w}" for m in ("concatenation", "ensemble") for w in table.columns]
    wide = wide[[c for c in order if c in wide]]
    wide.insert(0, "combinations", grouped["combo"].count().unstack("method").iloc[:, 0])
    return wide.reset_index()


def tests(fused: FusionAnalysis, levels: Levels) -> dict[str, pd.DataFrame]:
    """The claims' tests on this chapter's tables (``fusion_stats``): ``claim2_tests``, ``stability_tests`` and the
    wins and losses of every fusion against the best single model (``wins_and_losses``)."""
    return {"claim2_tests": fusion_stats.claim2_tests(fused.comparisons, fused.complementarity, levels),
            "stability_tests": fusion_stats.stability_tests(fused.stability, levels),
            "wins_losses": fusion_stats.wins_and_losses(fused.comparisons, levels)}


def tests_table(table: pd.DataFrame) -> pd.DataFrame:
    """A ``fusion_stats`` test table for reading: effect with its interval and MDE in accuracy points (rho as it
    is), the one-sided p-values in the claimed and the opposite direction (Holm-corrected within a claim's
    family) and the TOST against the profile's margin."""
    rho = (table["unit"] == "rho").to_numpy() if "unit" in table else table["test"].str.contains("rho").to_numpy()

    def show(value: float, scale: float) -> str:
        return f"{value * scale:+.2f}" if np.isfinite(value) else "n/a"

    def p(value: float) -> str:
        return f"{value:.2g}" if np.isfinite(value) else "–"

    scales = np.where(rho, 1.0, 100.0)
    holm = table["p_holm"].notna()
    return pd.DataFrame({
        "family": table["family"], "test": table["test"], "on": table["method"], "n": table["n"],
        "unit": np.where(rho, "rho", "points"),
        "claimed": np.where(table["claimed_sign"] > 0, "> 0", "< 0"),
        "effect [CI]": [f"{show(e, s)} [{show(lo, s)}, {show(hi, s)}]" if np.isfinite(lo) else show(e, s)
                        for e, lo, hi, s in zip(table["effect"], table["low"], table["high"], scales)],
        "MDE": [show(m, s).lstrip("+") for m, s in zip(table["mde"], scales)],
        "p claimed": [p(h if k else r) for h, r, k in zip(table["p_holm"], table["p_value"], holm)],
        "p opposite": [p(h if k else r) for h, r, k in zip(table["p_opposite_holm"], table["p_opposite"], holm)],
        "Holm": np.where(holm, "yes", "no"),
        "TOST p (margin)": [f"{p(tp)} (±{show(m, s).lstrip('+')})" for tp, m, s in
                            zip(table["tost_p"], table["margin"], scales)],
    })


def complementarity_table(compl: pd.DataFrame, levels: Levels) -> pd.DataFrame:
    """Each diagnostic's within-dataset Spearman rho with the pair's gain (``fusion_stats.complementarity_
    correlation``), per dataset beside the mean, for reading; kappa is the primary one (in claim 2's family), the
    others are shown without correction."""
    corr = fusion_stats.complementarity_correlation(compl, levels)
    if corr.empty:
        return corr
    shown = tests_table(corr.assign(family=np.where(corr["primary"], "claim 2 (primary)", "secondary"),
                                    test="within-dataset Spearman rho with the gain", method=corr["diagnostic"],
                                    unit="rho", p_holm=np.nan, p_opposite_holm=np.nan))
    shown.insert(5, "per dataset", corr["per_dataset"].to_numpy())
    return shown


def _text(value: float, spec: str = ".2f", scale: float = 1.0) -> str:
    """A number for the prose, or ``n/a`` where the test was not defined (e.g. too few models)."""
    return format(value * scale, spec) if np.isfinite(value) else "n/a"


def headline(fused: FusionAnalysis, levels: Levels, tested: dict[str, pd.DataFrame] | None = None
             ) -> dict[str, Any]:
    """The numbers the chapter's prose quotes, from ``tests(fused, levels)`` (the tests the claims table uses; pass
    them when already computed)."""
    tested = tested or tests(fused, levels)
    alpha = levels.alpha
    comp = fused.comparisons
    sig = comp[(comp["p_holm"] < alpha) & (comp["gain"] > 0)] if len(comp) else comp
    worse = comp[(comp["p_holm"] < alpha) & (comp["gain"] < 0)] if len(comp) else comp
    claim2 = tested["claim2_tests"]
    compl = claim2.iloc[0]
    chosen = claim2[claim2["test"].str.endswith("vs best single")]
    won = chosen[chosen["p_holm"] < alpha]
    lost = chosen[chosen["p_opposite_holm"] < alpha]
    vs_ens = claim2[claim2["test"].str.endswith("vs its ensemble")]
    stab = tested["stability_tests"]
    equal_m, seed, ens_m, ens, contrast = (stab.iloc[i] for i in range(5))
    return {
        "n_fusions": int(len(comp)), "n_seeds": int(fused.runs["seed"].nunique()),
        "n_significant_gains": int(len(sig)), "n_significant_losses": int(len(worse)),
        "n_datasets": int(comp["dataset"].nunique()),
        "n_chosen_significant": int(len(won)), "n_chosen_worse": int(len(lost)),
        "datasets_chosen_significant": ", ".join(won["dataset"]) or "none",
        "vs_ensemble": "; ".join(f"{r.dataset} {r.effect * 100:+.2f}" for r in vs_ens.itertuples()) or "n/a",
        "kappa_rho": _text(compl["effect"]), "kappa_rho_low": _text(compl["low"]),
        "kappa_rho_high": _text(compl["high"]), "kappa_p": _text(compl["p_value"], ".2g"),
        "kappa_p_holm": _text(compl["p_holm"], ".2g"), "kappa_per_dataset": compl.get("per_dataset", "") or "n/a",
        "n_pairs": int(compl["n"]),
        "seed_std_2": _text(seed["k2"], scale=100), "seed_std_3": _text(seed["k3plus"], scale=100),
        "seed_narrowing": _text(seed["effect"], scale=100), "seed_p": _text(seed["p_value"], ".2g"),
        "ensemble_std_2": _text(ens["k2"], scale=100), "ensemble_std_3": _text(ens["k3plus"], scale=100),
        "ensemble_p": _text(ens["p_value"], ".2g"),
        "contrast": _text(contrast["effect"], scale=100), "contrast_low": _text(contrast["low"], scale=100),
        "contrast_high": _text(contrast["high"], scale=100),
        "equal_m_narrowing": _text(equal_m["effect"], scale=100), "equal_m_p_holm": _text(equal_m["p_holm"], ".2g"),
        "equal_m_per_dataset": equal_m.get("per_dataset", "") or "n/a",
        "equal_m_ensemble": _text(ens_m["effect"], scale=100), "equal_m_ensemble_p": _text(ens_m["p_value"], ".2g"),
        "n_skipped": int(len(fused.skipped)),
    }
