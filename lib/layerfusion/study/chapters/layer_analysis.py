"""Chapter 2: score every layer, select layers and C without touching test, report test once with uncertainty.

For each model x dataset x pooling: a batched L2 logistic probe on all layers, C and the layer chosen by the profile's
``selection.protocol`` (the validation split, or stratified k-fold cross-validation on train and validation pooled);
per-layer test accuracy / macro-F1 with bootstrap CIs; the selected layer against the last layer (McNemar, Holm
across the cells of a pooling) with their observed discordance and the test's minimum detectable difference; the set
of layers indistinguishable from the best. On the primary pooling: both protocols on the same texts, how stably each
selects (bootstrap resamples of the selection items, ``select.selection_frequencies``) and the rule that picks one
(``choose_protocol``); label-free layer scores and their rank correlation with accuracy; a greedy multi-layer
combination. Then the authors' max-over-test protocol over several seeds and dataset baselines. Warnings raised on the
way are counted in a table (``warnings``), not printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import entropy, spearmanr

from layerfusion import diagnostics, heads, probe, select, stats
from layerfusion.progress import progress_bar
from layerfusion.data import SPLITS
from layerfusion.study import claims
from layerfusion.study.features import Study
from layerfusion.study.results import TableSet
from layerfusion.study.selection import greedy_units
from layerfusion.study.settings import PROTOCOLS
from layerfusion.study.verdicts import Levels
from layerfusion.study.warnlog import WarningLog


TFIDF_CS = (0.1, 1.0, 10.0, 100.0)
PROTOCOL_TOLERANCE = 0.05
"""How much more often (in the median cell) cross-validation must choose its modal layer than the validation split
before ``choose_protocol`` prefers it to the cheaper split."""


@dataclass
class LayerAnalysis(TableSet):
    """Tables produced by ``analyse_layers`` (each a DataFrame of plain values)."""

    per_layer: pd.DataFrame
    summary: pd.DataFrame
    selection: pd.DataFrame
    protocols: pd.DataFrame
    label_free: pd.DataFrame
    greedy: pd.DataFrame
    authors: pd.DataFrame
    baselines: pd.DataFrame
    warnings: pd.DataFrame


def fit_probe(study: Study, model: str, dataset: str, pooling: str, protocol: str
              ) -> tuple[probe.LayerwiseProbe, np.ndarray, float]:
    """Fit the all-layer probe of one cell under ``protocol``: "validation" fits on train and chooses on the
    validation split; "cv" runs ``selection.folds``-fold cross-validation on train and validation pooled and refits
    on all of them. Returns the probe, the labels of its selection items and the fit's wall time in seconds."""
    cfg = study.config
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    X_tr, X_val = (study.layer_stack(model, dataset, s, pooling) for s in ("train", "validation"))
    y_tr, y_val = (study.labels(dataset, s) for s in ("train", "validation"))
    cv = cfg.selection.folds if protocol == "cv" else None
    est = probe.LayerwiseProbe(**cfg.probe.params(), cv=cv, random_state=cfg.seed)
    if cv is None:
        est, seconds = study.fits.fit_timed(est, X_tr, y_tr, X_val, y_val)
        y_sel = y_val
    else:
        y_sel = np.concatenate([y_tr, y_val])
        est, seconds = study.fits.fit_timed(est, np.concatenate([X_tr, X_val]), y_sel)
    return est, y_sel, seconds


def probe_layers(study: Study, model: str, dataset: str, pooling: str, fitted: tuple | None = None
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-layer rows of one cell and the arrays later steps need, from ``fitted`` (``fit_probe``'s result) or a
    fit under the profile's protocol. ``val_accuracy`` is the selection accuracy: on the validation split, or out
    of fold under cross-validation."""
    cfg = study.config
    est, y_sel, _ = fitted or fit_probe(study, model, dataset, pooling, cfg.selection.protocol)
    layers = np.asarray(study.features(model, dataset, "train").layers)
    y_te = study.labels(dataset, "test")
    test_pred = est.predict(study.layer_stack(model, dataset, "test", pooling))
    n_layers = len(layers)
    rows = []
    for i, layer in enumerate(layers):
        acc = stats.bootstrap_ci(y_te, test_pred[i], metric="accuracy", random_state=cfg.seed)
        f1 = stats.bootstrap_ci(y_te, test_pred[i], metric="macro_f1", random_state=cfg.seed)
        rows.append({
            "model": model, "dataset": dataset, "pooling": pooling, "layer": int(layer),
            "rel_depth": i / max(n_layers - 1, 1), "C": float(est.best_C_[i]),
            "val_accuracy": float(est.val_scores_[i]),
            "test_accuracy": acc.estimate, "test_accuracy_low": acc.low, "test_accuracy_high": acc.high,
            "test_macro_f1": f1.estimate, "test_macro_f1_low": f1.low, "test_macro_f1_high": f1.high,
        })
    arrays = {"X_tr": study.layer_stack(model, dataset, "train", pooling), "y_te": y_te, "y_sel": y_sel,
              "layers": layers, "test_pred": test_pred, "sel_pred": est.val_predictions_,
              "sel_scores": np.asarray(est.val_scores_), "protocol": "cv" if est.cv is not None else "validation",
              "convergence": convergence(est)}
    return pd.DataFrame(rows), arrays


CONVERGENCE_COLUMNS = ("fits", "unconverged", "max_iterations", "max_final_gradient")


def convergence(est: probe.LayerwiseProbe) -> dict[str, Any]:
    """How the fits of one cell's probe ended (folds and refit): how many (layer, C) problems were solved, how many
    stopped before the gradient test passed (``probe.LayerwiseProbe.unconverged_``), the most iterations and the
    largest final max-abs gradient of any of them (compare with the profile's ``probe.tol``). ``convergence_table``
    shows these per cell."""
    n_iter = np.concatenate([est.cv_n_iter_.ravel(), est.n_iter_.ravel()])
    grads = np.concatenate([est.cv_grad_norm_.ravel(), est.grad_norm_.ravel()])
    return {"fits": int(est.n_fits_), "unconverged": int(est.n_unconverged_),
            "max_iterations": int(n_iter.max()), "max_final_gradient": float(np.nanmax(grads))}


def convergence_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Cells x (fits, unconverged, max iterations, max final gradient) of the probes behind the per-layer results,
    from ``analyse_layers(...).summary``; the layer chapter shows it so every unconverged fit is counted."""
    return summary[["model", "dataset", "pooling", "protocol", *CONVERGENCE_COLUMNS]].reset_index(drop=True)


def summarise(model: str, dataset: str, pooling: str, arrays: dict[str, Any], alpha: float,
              power: float) -> dict[str, Any]:
    """Selected layer vs the last layer: test accuracy, CI, McNemar p, their discordance on test and the smallest
    difference McNemar detects there at ``alpha`` with ``power`` (``stats.mcnemar_mde``), the tied set, and their
    discordance on the selection items (validation, or cross-validated predictions): the planning rate for the next
    run's power analysis, which must not come from test."""
    layers, y_te, y_sel = arrays["layers"], arrays["y_te"], arrays["y_sel"]
    best_i = select.best_layer(arrays["sel_scores"])
    last_i = len(layers) - 1
    best_pred, last_pred = arrays["test_pred"][best_i], arrays["test_pred"][last_i]
    best_ci = stats.bootstrap_ci(y_te, best_pred, metric="accuracy")
    last_acc = stats.accuracy(y_te, last_pred)
    test = stats.mcnemar(y_te, best_pred, last_pred)
    discordance = stats.discordance(y_te, best_pred, last_pred)
    tied = select.indistinguishable_from_best(y_sel, arrays["sel_pred"], best_i, alpha=alpha)
    return {
        "model": model, "dataset": dataset, "pooling": pooling, "protocol": arrays.get("protocol", "validation"),
        "n_selection_items": int(len(y_sel)), "n_test": int(len(y_te)),
        "n_layers": int(len(layers)), "best_layer": int(layers[best_i]),
        "best_rel_depth": best_i / max(last_i, 1),
        "best_val_accuracy": float(arrays["sel_scores"][best_i]),
        "best_test_accuracy": best_ci.estimate, "best_test_low": best_ci.low, "best_test_high": best_ci.high,
        "best_test_macro_f1": stats.macro_f1(y_te, best_pred),
        "last_layer": int(layers[last_i]), "last_val_accuracy": float(arrays["sel_scores"][last_i]),
        "last_test_accuracy": last_acc,
        "layer0_test_accuracy": stats.accuracy(y_te, arrays["test_pred"][0]),
        "delta_best_minus_last": best_ci.estimate - last_acc,
        "p_best_vs_last": test.p_value,
        "discordance_best_last": discordance,
        "selection_discordance_best_last": stats.discordance(y_sel, arrays["sel_pred"][best_i],
                                                             arrays["sel_pred"][last_i]),
        "mde_best_last": stats.mcnemar_mde(len(y_te), discordance, alpha, power) if discordance > 0 else np.nan,
        "best_is_last": bool(best_i == last_i),
        "n_tied_with_best": len(tied), "tied_layers": [int(layers[i]) for i in tied],
        "last_tied_with_best": bool(last_i in tied),
        **arrays.get("convergence", {}),
    }


def selection_rows(model: str, dataset: str, pooling: str, protocol: str, est: probe.LayerwiseProbe,
                   layers: np.ndarray, n_boot: int, seed: int) -> pd.DataFrame:
    """How often each layer is chosen over ``n_boot`` bootstrap resamples of the selection items of a fitted probe
    (``select.selection_frequencies``), one row per layer."""
    freq = select.selection_frequencies(est.selection_correct_, n_boot=n_boot, random_state=seed)
    return pd.DataFrame({"model": model, "dataset": dataset, "pooling": pooling, "protocol": protocol,
                         "layer": layers.astype(int), "rel_depth": np.arange(len(layers)) / max(len(layers) - 1, 1),
                         "frequency": freq})


def compare_protocols(study: Study, model: str, dataset: str, pooling: str
                      ) -> tuple[dict[str, tuple], pd.DataFrame, list[dict[str, Any]]]:
    """Both selection protocols on the same labelled texts of one cell: the fits (``fit_probe``), their bootstrap
    selection frequencies, and one row per protocol: selection items, chosen layer, modal layer and its frequency,
    entropy of the frequencies (bits), the chosen layer's test accuracy and the fit's wall time."""
    cfg = study.config
    layers = np.asarray(study.features(model, dataset, "train").layers)
    y_te = study.labels(dataset, "test")
    X_te = study.layer_stack(model, dataset, "test", pooling)
    fits, frames, rows = {}, [], []
    for protocol in PROTOCOLS:
        est, y_sel, seconds = fits[protocol] = fit_probe(study, model, dataset, pooling, protocol)
        freq = selection_rows(model, dataset, pooling, protocol, est, layers, cfg.selection.n_boot, cfg.seed)
        frames.append(freq)
        chosen = select.best_layer(est.val_scores_)
        rows.append({"model": model, "dataset": dataset, "pooling": pooling, "protocol": protocol,
                     "n_selection_items": int(len(y_sel)), "n_fits": est.n_splits_ + 1,
                     "chosen_layer": int(layers[chosen]), "modal_layer": int(layers[freq["frequency"].argmax()]),
                     "modal_frequency": float(freq["frequency"].max()),
                     "entropy_bits": float(entropy(freq["frequency"], base=2)),
                     "chosen_test_accuracy": stats.accuracy(y_te, est.predict(X_te)[chosen]),
                     "fit_seconds": seconds})
    return fits, pd.concat(frames, ignore_index=True), rows


def choose_protocol(protocols: pd.DataFrame, tolerance: float = PROTOCOL_TOLERANCE) -> dict[str, Any]:
    """The rule that picks the selection protocol from ``compare_protocols``' rows: cross-validation when, in the
    median model x dataset cell, it chooses its modal layer more often than the validation split by more than
    ``tolerance``; otherwise the validation split, which is cheaper (one fit instead of one per fold plus a refit).
    Returns the choice with what it rests on: the median gain in modal frequency, in how many cells cross-validation
    was more stable, the median entropies, the median test-accuracy difference of the chosen layers (cv −
    validation, points) and the median cost ratio."""
    wide = protocols.pivot_table(index=["model", "dataset"], columns="protocol",
                                 values=["modal_frequency", "entropy_bits", "chosen_test_accuracy", "fit_seconds"])
    gain = wide["modal_frequency"]["cv"] - wide["modal_frequency"]["validation"]
    return {
        "recommended_protocol": "cv" if float(gain.median()) > tolerance else "validation",
        "stability_gain": float(gain.median()),
        "n_cells": int(len(wide)),
        "n_cells_cv_more_stable": int((gain > 0).sum()),
        "median_modal_frequency_validation": float(wide["modal_frequency"]["validation"].median()),
        "median_modal_frequency_cv": float(wide["modal_frequency"]["cv"].median()),
        "median_entropy_validation": float(wide["entropy_bits"]["validation"].median()),
        "median_entropy_cv": float(wide["entropy_bits"]["cv"].median()),
        "test_accuracy_difference": float((wide["chosen_test_accuracy"]["cv"]
                                           - wide["chosen_test_accuracy"]["validation"]).median() * 100),
        "cost_ratio": float((wide["fit_seconds"]["cv"] / wide["fit_seconds"]["validation"]).median()),
    }


def label_free_scores(model: str, dataset: str, pooling: str, arrays: dict[str, Any]) -> pd.DataFrame:
    """Label-free scores per layer (train vectors) beside the validation accuracy."""
    report = diagnostics.layer_report(arrays["X_tr"]).reset_index(drop=True)
    report.insert(0, "layer", arrays["layers"].astype(int))
    report.insert(0, "pooling", pooling)
    report.insert(0, "dataset", dataset)
    report.insert(0, "model", model)
    report["val_accuracy"] = arrays["sel_scores"]
    return report


def label_free_correlation(label_free: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each label-free score with validation accuracy, per model x dataset x pooling."""
    score_cols = [c for c in label_free.columns
                  if c not in ("model", "dataset", "pooling", "layer", "val_accuracy")]
    rows = []
    for (model, dataset, pooling), grp in label_free.groupby(["model", "dataset", "pooling"], sort=False):
        for col in score_cols:
            rho, p = spearmanr(grp[col], grp["val_accuracy"])
            rows.append({"model": model, "dataset": dataset, "pooling": pooling, "score": col,
                         "spearman": float(rho), "p_value": float(p)})
    return pd.DataFrame(rows)


def greedy_layers(study: Study, model: str, dataset: str, arrays: dict[str, Any]) -> pd.DataFrame:
    """Automated multi-layer selection: greedy forward over the layers with the best selection scores, each set
    scored on the validation split (under either protocol: a cross-validated greedy search would cost a fit per
    fold and candidate set)."""
    cfg = study.config
    top = select.top_k(arrays["sel_scores"], cfg.greedy.top_layers)
    layers = [int(arrays["layers"][i]) for i in top]
    frame = greedy_units(study, dataset, {str(layer): (model, layer) for layer in layers}, cfg.greedy)
    frame.insert(0, "dataset", dataset)
    frame.insert(0, "model", model)
    frame["units"] = frame["units"].map(lambda u: [int(x) for x in u])
    return frame


def authors_protocol(study: Study, model: str, dataset: str) -> list[dict[str, Any]]:
    """The authors' protocol, once per seed of ``authors_protocol.seeds``: last layer, mean over padding, MLP head,
    max test accuracy over epochs, beside the test accuracy at the epoch the validation split would choose."""
    cfg = study.config
    pooling = cfg.authors_protocol.pooling
    feats = {s: study.features(model, dataset, s) for s in SPLITS}
    last = feats["train"].layers[-1]
    X = {s: f.layer(pooling, last) for s, f in feats.items()}
    y = {s: study.labels(dataset, s) for s in feats}
    rows = []
    for seed in cfg.authors_protocol.seeds:
        head = study.fits.fit(heads.MLPHead(epochs=cfg.authors_protocol.epochs, random_state=seed),
                              X["train"], y["train"], eval_sets={"val": (X["validation"], y["validation"]),
                                                                 "test": (X["test"], y["test"])})
        hist = head.history_.pivot(index="epoch", columns="set", values="accuracy")
        best_val_epoch = int(hist["val"].idxmax())
        rows.append({
            "model": model, "dataset": dataset, "pooling": pooling, "layer": int(last), "seed": int(seed),
            "epochs": int(hist.index.max()),
            "max_test_accuracy": float(hist["test"].max()), "epoch_of_max_test": int(hist["test"].idxmax()),
            "val_selected_test_accuracy": float(hist.loc[best_val_epoch, "test"]),
            "val_selected_epoch": best_val_epoch,
            "last_epoch_test_accuracy": float(hist["test"].iloc[-1]),
            "optimism": float(hist["test"].max() - hist.loc[best_val_epoch, "test"]),
            # the confound of the reproduction gap, measured: how many texts it trained on, whether its loss had
            # reached a plateau when the epochs ran out (heads.MLPHead.converged_) and by how much it still fell
            "n_train": int(len(y["train"])), "converged": bool(head.converged_),
            "loss_change": float(head.loss_change_),
        })
    return rows


def authors_summary(authors: pd.DataFrame) -> pd.DataFrame:
    """The authors' protocol per model x dataset as mean ± sd over seeds (points): max test over epochs, test at
    the epoch chosen on validation, and the optimism between them; beside them the confound of the reproduction gap
    as measured: the median epoch of the max (the last epoch means it was still learning), the training texts, and in
    how many seeds the training loss had reached a plateau."""
    columns = {"max_test_accuracy": "max test over epochs", "val_selected_test_accuracy": "epoch chosen on val",
               "optimism": "optimism (points)"}
    rows = []
    for (model, dataset), grp in authors.groupby(["model", "dataset"], sort=False):
        row = {"model": model, "dataset": dataset, "seeds": len(grp),
               **{label: stats.format_mean_std(grp[col], digits=2) for col, label in columns.items()},
               "epoch of max test (median)": int(np.median(grp["epoch_of_max_test"]))}
        if "converged" in grp:  # results written before the convergence columns existed lack them
            row["training texts"] = int(grp["n_train"].iloc[0])
            row["loss at a plateau (seeds)"] = f"{int(grp['converged'].sum())} of {len(grp)}"
        rows.append(row)
    return pd.DataFrame(rows)


def baselines(study: Study, dataset: str) -> list[dict[str, Any]]:
    """Majority class and TF-IDF + logistic regression (C chosen on validation), test accuracy with CI."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    dd = study.data(dataset)
    y_tr, y_val, y_te = (study.labels(dataset, s) for s in SPLITS)
    majority = np.full_like(y_te, np.bincount(y_tr).argmax())
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit(dd["train"]["text"])
    X_tr, X_val, X_te = (vec.transform(dd[s]["text"]) for s in SPLITS)
    best = None
    for C in TFIDF_CS:
        clf = LogisticRegression(C=C, max_iter=2000).fit(X_tr, y_tr)
        val = clf.score(X_val, y_val)
        if best is None or val > best[0]:
            best = (val, clf)
    rows = []
    for name, pred in (("majority class", majority), ("TF-IDF + logistic regression", best[1].predict(X_te))):
        ci = stats.bootstrap_ci(y_te, pred, metric="accuracy", random_state=study.config.seed)
        rows.append({"dataset": dataset, "baseline": name, "test_accuracy": ci.estimate,
                     "test_low": ci.low, "test_high": ci.high, "test_macro_f1": stats.macro_f1(y_te, pred)})
    return rows


def analyse_layers(study: Study, poolings: tuple[str, ...] | None = None) -> LayerAnalysis:
    """Run the whole layer analysis of a profile (every model x dataset x pooling); layers are selected by the
    profile's ``selection.protocol``, and on the primary pooling both protocols are fitted and compared."""
    cfg = study.config
    poolings = poolings or tuple(cfg.poolings)
    log = WarningLog()
    parts: dict[str, list] = {k: [] for k in ("per_layer", "summary", "selection", "protocols", "label_free",
                                               "greedy", "authors", "baselines")}
    bar = progress_bar(len(cfg.datasets) * len(cfg.models), "layer analysis", study.progress, unit="cell")
    for dataset in cfg.datasets:
        with log.capture(model="", dataset=dataset, pooling="", step="baselines"):
            parts["baselines"].extend(baselines(study, dataset))
        for model in cfg.models:
            bar.set_postfix_str(f"{model} x {dataset}")
            for pooling in poolings:
                primary = pooling == cfg.primary_pooling
                with log.capture(model=model, dataset=dataset, pooling=pooling, step="probe"):
                    fitted = None
                    if primary:
                        fits, frequencies, rows = compare_protocols(study, model, dataset, pooling)
                        fitted = fits[cfg.selection.protocol]
                        parts["selection"].append(frequencies)
                        parts["protocols"].extend(rows)
                    per_layer, arrays = probe_layers(study, model, dataset, pooling, fitted)
                    parts["per_layer"].append(per_layer)
                    parts["summary"].append(summarise(model, dataset, pooling, arrays, cfg.power.alpha,
                                                      cfg.power.power))
                    if primary:
                        parts["label_free"].append(label_free_scores(model, dataset, pooling, arrays))
                if primary:
                    with log.capture(model=model, dataset=dataset, pooling=pooling, step="greedy"):
                        parts["greedy"].append(greedy_layers(study, model, dataset, arrays))
            with log.capture(model=model, dataset=dataset, pooling=cfg.authors_protocol.pooling, step="authors"):
                parts["authors"].extend(authors_protocol(study, model, dataset))
            bar.update(1)
    bar.close()
    tables = {key: _frame(value) for key, value in parts.items()}
    summary = tables["summary"]
    summary["p_best_vs_last_holm"] = summary.groupby("pooling")["p_best_vs_last"].transform(
        lambda p: stats.holm(p.to_numpy()))
    return LayerAnalysis(**tables, warnings=log.table())


def _frame(part: list) -> pd.DataFrame:
    """A list of frames or of row dicts as one frame (empty when a step did not run, e.g. without the primary
    pooling)."""
    if part and isinstance(part[0], pd.DataFrame):
        return pd.concat(part, ignore_index=True)
    return pd.DataFrame(part)


def summary_table(summary: pd.DataFrame, pooling: str) -> pd.DataFrame:
    """The chapter's main table: selected layer vs last layer, test accuracy with CI, Holm p, and the power of that
    comparison (observed discordance on test, the smallest difference McNemar detects there, in points)."""
    df = summary[summary["pooling"] == pooling]
    return pd.DataFrame({
        "model": df["model"], "dataset": df["dataset"],
        "selected / last layer": df["best_layer"].astype(str) + " / " + df["last_layer"].astype(str),
        "selected: test acc [95% CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                                        zip(df["best_test_accuracy"], df["best_test_low"], df["best_test_high"])],
        "last: test acc": df["last_test_accuracy"].round(3),
        "Δ (points)": (df["delta_best_minus_last"] * 100).round(1),
        "p (Holm)": df["p_best_vs_last_holm"].map(lambda p: f"{p:.2g}"),
        "discordance": df["discordance_best_last"].round(3),
        "MDE (points)": (df["mde_best_last"] * 100).round(1),
        "tied layers": df["n_tied_with_best"],
    }).reset_index(drop=True)


def plan_check(summary: pd.DataFrame, pooling: str, planned: dict[str, float]) -> pd.DataFrame:
    """Per dataset, the discordance between the selected and the last layer on test as observed (median over the
    models whose selected layer is not the last) beside the planning rate of the profile (``power.discordance``),
    the median MDE achieved (points), and the same discordance on the selection items: the rate to plan the next
    run with (validation or cross-validation data only; test is not looked at for planning)."""
    df = summary[(summary["pooling"] == pooling) & ~summary["best_is_last"]]
    grouped = df.groupby("dataset", sort=False)
    selection = (grouped["selection_discordance_best_last"].median() if "selection_discordance_best_last" in df
                 else pd.Series(np.nan, index=grouped.size().index))
    out = pd.DataFrame({"cells": grouped.size(), "observed discordance": grouped["discordance_best_last"].median(),
                        "MDE achieved (points)": grouped["mde_best_last"].median() * 100,
                        "selection discordance (plan next run)": selection})
    out.insert(1, "planned discordance", [planned.get(d, float("nan")) for d in out.index])
    return out.round(3).reset_index()


def protocol_table(protocols: pd.DataFrame) -> pd.DataFrame:
    """The protocol comparison for reading: per model x dataset, each protocol's chosen layer, how often its modal
    layer is chosen under resampling, the entropy of the choice, the chosen layer's test accuracy and the fit time."""
    wide = protocols.pivot(index=["model", "dataset"], columns="protocol",
                           values=["chosen_layer", "modal_frequency", "entropy_bits", "chosen_test_accuracy",
                                   "fit_seconds"])
    wide.columns = [f"{protocol}: {name.replace('_', ' ')}" for name, protocol in wide.columns]
    wide = wide.round(3)
    for column in [c for c in wide.columns if c.endswith("chosen layer")]:
        wide[column] = wide[column].astype("Int64")  # a layer index is an integer (the pivot made it a float)
    order = protocols[["model", "dataset"]].drop_duplicates()
    return order.merge(wide.reset_index(), on=["model", "dataset"]).reset_index(drop=True)


def warning_counts(warnings_table: pd.DataFrame) -> pd.DataFrame:
    """The warnings of the run per step and category: how many cells raised them, how often, and one message."""
    columns = ["step", "category", "cells", "count", "example"]
    if warnings_table.empty:
        return pd.DataFrame(columns=columns)
    grouped = warnings_table.groupby(["step", "category"], sort=False)
    return grouped.agg(cells=("model", lambda m: len(set(zip(m, warnings_table.loc[m.index, "dataset"])))),
                       count=("count", "sum"), example=("message", "first")).reset_index()[columns]


def protocol_facts(protocols: pd.DataFrame, profile_protocol: str) -> dict[str, Any]:
    """``choose_protocol``'s decision and numbers for the prose, rounded, with the protocol the profile uses."""
    facts = choose_protocol(protocols)
    facts["profile_protocol"] = profile_protocol
    facts["profile_follows_rule"] = facts["recommended_protocol"] == profile_protocol
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in facts.items()}


def dependence_table(selection: pd.DataFrame, summary: pd.DataFrame, pooling: str) -> pd.DataFrame:
    """Per model and pair of datasets, the overlap of their bootstrap selection distributions
    (``claims.dataset_dependence``, descriptive) under the protocol the summary selected with."""
    protocol = summary.loc[summary["pooling"] == pooling, "protocol"].iloc[0]
    rows = selection[(selection["pooling"] == pooling) & (selection["protocol"] == protocol)]
    return claims.dataset_dependence(rows).round(3)


def headline(summary: pd.DataFrame, pooling: str, levels: Levels,
             selection: pd.DataFrame | None = None) -> dict[str, Any]:
    """The numbers the chapter's prose quotes, from the same function that judges claim 1 (``claims.layer_facts``,
    at the profile's ``levels``), rounded for reading."""
    return {key: round(value, 3) if isinstance(value, float) else value
            for key, value in claims.layer_facts(summary, pooling, levels, selection).items()}


def dataset_table(summary: pd.DataFrame, pooling: str, levels: Levels) -> pd.DataFrame:
    """Claim 1 at its unit, the dataset (``claims.dataset_effects``), rounded for reading: the mean over models of
    selected − last (points), its conservative standard error, one-sided Holm p-values both ways, MDE and the
    models whose own McNemar test (Holm across cells) finds the selected layer better or worse."""
    table = claims.dataset_effects(summary, pooling, levels)
    return table.round({"difference": 2, "se": 2, "mde": 2}).assign(
        **{c: table[c].map(lambda p: f"{p:.2g}") for c in ("p_value", "p_opposite", "p_holm", "p_opposite_holm")})
