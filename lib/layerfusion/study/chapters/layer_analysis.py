"""Chapter 2: score every layer, select on validation, report test once with uncertainty.

For each model x dataset x pooling: a batched L2 logistic probe on all layers (C chosen per layer on validation),
per-layer test accuracy / macro-F1 with bootstrap CIs, the validation-best layer against the last layer (McNemar),
the set of layers indistinguishable from the best, label-free layer scores and their rank correlation with accuracy,
a greedy multi-layer combination, the authors' max-over-test protocol, and dataset baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from layerfusion import diagnostics, heads, probe, select, stats
from layerfusion.data import SPLITS
from layerfusion.study import claims
from layerfusion.study.features import Study
from layerfusion.study.results import TableSet
from layerfusion.study.selection import greedy_units


TFIDF_CS = (0.1, 1.0, 10.0, 100.0)


@dataclass
class LayerAnalysis(TableSet):
    """Tables produced by ``analyse_layers`` (each a DataFrame of plain values)."""

    per_layer: pd.DataFrame
    summary: pd.DataFrame
    label_free: pd.DataFrame
    greedy: pd.DataFrame
    authors: pd.DataFrame
    baselines: pd.DataFrame


def _split_stack(study: Study, model: str, dataset: str, pooling: str) -> tuple[np.ndarray, ...]:
    X_tr, X_val, X_te = (study.layer_stack(model, dataset, s, pooling) for s in SPLITS)
    return X_tr, X_val, X_te, np.asarray(study.features(model, dataset, "train").layers)


def probe_layers(study: Study, model: str, dataset: str, pooling: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit the batched probe on every layer; return per-layer rows and the arrays later steps need."""
    cfg = study.config
    X_tr, X_val, X_te, layers = _split_stack(study, model, dataset, pooling)
    y_tr, y_val, y_te = (study.labels(dataset, s) for s in SPLITS)
    est = probe.LayerwiseProbe(**cfg.probe.params(), random_state=cfg.seed)
    est.fit(X_tr, y_tr, X_val, y_val)
    test_pred = est.predict(X_te)
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
    arrays = {"X_tr": X_tr, "X_val": X_val, "X_te": X_te, "y_tr": y_tr, "y_val": y_val, "y_te": y_te,
              "layers": layers, "test_pred": test_pred, "val_pred": est.val_predictions_,
              "val_scores": np.asarray(est.val_scores_)}
    return pd.DataFrame(rows), arrays


def summarise(model: str, dataset: str, pooling: str, arrays: dict[str, Any], alpha: float = 0.05) -> dict[str, Any]:
    """Best layer by validation vs the last layer, with test accuracy, CI, McNemar p and the tied set."""
    layers, y_te, y_val = arrays["layers"], arrays["y_te"], arrays["y_val"]
    best_i = select.best_layer(arrays["val_scores"])
    last_i = len(layers) - 1
    best_ci = stats.bootstrap_ci(y_te, arrays["test_pred"][best_i], metric="accuracy")
    last_acc = stats.accuracy(y_te, arrays["test_pred"][last_i])
    test = stats.mcnemar(y_te, arrays["test_pred"][best_i], arrays["test_pred"][last_i])
    tied = select.indistinguishable_from_best(y_val, arrays["val_pred"], best_i, alpha=alpha)
    return {
        "model": model, "dataset": dataset, "pooling": pooling,
        "n_layers": int(len(layers)), "best_layer": int(layers[best_i]),
        "best_rel_depth": best_i / max(last_i, 1),
        "best_val_accuracy": float(arrays["val_scores"][best_i]),
        "best_test_accuracy": best_ci.estimate, "best_test_low": best_ci.low, "best_test_high": best_ci.high,
        "best_test_macro_f1": stats.macro_f1(y_te, arrays["test_pred"][best_i]),
        "last_layer": int(layers[last_i]), "last_val_accuracy": float(arrays["val_scores"][last_i]),
        "last_test_accuracy": last_acc,
        "layer0_test_accuracy": stats.accuracy(y_te, arrays["test_pred"][0]),
        "delta_best_minus_last": best_ci.estimate - last_acc,
        "p_best_vs_last": test.p_value,
        "best_is_last": bool(best_i == last_i),
        "n_tied_with_best": len(tied), "tied_layers": [int(layers[i]) for i in tied],
        "last_tied_with_best": bool(last_i in tied),
    }


def label_free_scores(model: str, dataset: str, pooling: str, arrays: dict[str, Any]) -> pd.DataFrame:
    """Label-free scores per layer (train vectors) beside the validation accuracy."""
    report = diagnostics.layer_report(arrays["X_tr"]).reset_index(drop=True)
    report.insert(0, "layer", arrays["layers"].astype(int))
    report.insert(0, "pooling", pooling)
    report.insert(0, "dataset", dataset)
    report.insert(0, "model", model)
    report["val_accuracy"] = arrays["val_scores"]
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
    """Automated multi-layer selection: greedy forward over the top validation layers, scored on validation."""
    cfg = study.config
    top = select.top_k(arrays["val_scores"], cfg.greedy.top_layers)
    layers = [int(arrays["layers"][i]) for i in top]
    frame = greedy_units(study, dataset, {str(layer): (model, layer) for layer in layers}, cfg.greedy)
    frame.insert(0, "dataset", dataset)
    frame.insert(0, "model", model)
    frame["units"] = frame["units"].map(lambda u: [int(x) for x in u])
    return frame


def authors_protocol(study: Study, model: str, dataset: str) -> dict[str, Any]:
    """The authors' protocol: last layer, mean over padding, MLP head, max test accuracy over epochs."""
    cfg = study.config
    pooling = cfg.authors_protocol.pooling
    feats = {s: study.features(model, dataset, s) for s in SPLITS}
    last = feats["train"].layers[-1]
    X = {s: f.layer(pooling, last) for s, f in feats.items()}
    y = {s: study.labels(dataset, s) for s in feats}
    head = heads.MLPHead(epochs=cfg.authors_protocol.epochs, random_state=cfg.seed)
    head.fit(X["train"], y["train"], eval_sets={"val": (X["validation"], y["validation"]),
                                                "test": (X["test"], y["test"])})
    hist = head.history_.pivot(index="epoch", columns="set", values="accuracy")
    best_val_epoch = int(hist["val"].idxmax())
    return {
        "model": model, "dataset": dataset, "pooling": pooling, "layer": int(last),
        "epochs": int(hist.index.max()),
        "max_test_accuracy": float(hist["test"].max()), "epoch_of_max_test": int(hist["test"].idxmax()),
        "val_selected_test_accuracy": float(hist.loc[best_val_epoch, "test"]),
        "val_selected_epoch": best_val_epoch,
        "last_epoch_test_accuracy": float(hist["test"].iloc[-1]),
        "optimism": float(hist["test"].max() - hist.loc[best_val_epoch, "test"]),
    }


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
    """Run the whole layer analysis of a profile (every model x dataset x pooling)."""
    cfg = study.config
    poolings = poolings or tuple(cfg.poolings)
    per_layer, summary, label_free, greedy, authors, base = [], [], [], [], [], []
    for dataset in cfg.datasets:
        base.extend(baselines(study, dataset))
        for model in cfg.models:
            for pooling in poolings:
                rows, arrays = probe_layers(study, model, dataset, pooling)
                per_layer.append(rows)
                summary.append(summarise(model, dataset, pooling, arrays))
                if pooling == cfg.primary_pooling:
                    label_free.append(label_free_scores(model, dataset, pooling, arrays))
                    greedy.append(greedy_layers(study, model, dataset, arrays))
            authors.append(authors_protocol(study, model, dataset))
    summary_frame = pd.DataFrame(summary)
    summary_frame["p_best_vs_last_holm"] = stats.holm(summary_frame["p_best_vs_last"].to_numpy())
    return LayerAnalysis(
        per_layer=pd.concat(per_layer, ignore_index=True),
        summary=summary_frame,
        label_free=pd.concat(label_free, ignore_index=True),
        greedy=pd.concat(greedy, ignore_index=True),
        authors=pd.DataFrame(authors),
        baselines=pd.DataFrame(base),
    )


def summary_table(summary: pd.DataFrame, pooling: str) -> pd.DataFrame:
    """The chapter's main table: best layer (validation) vs last layer, test accuracy with CI, Holm p."""
    df = summary[summary["pooling"] == pooling]
    return pd.DataFrame({
        "model": df["model"], "dataset": df["dataset"],
        "best layer": df["best_layer"].astype(str) + " / " + df["last_layer"].astype(str),
        "best: test acc [95% CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                                    zip(df["best_test_accuracy"], df["best_test_low"], df["best_test_high"])],
        "last: test acc": df["last_test_accuracy"].round(3),
        "Δ best − last": df["delta_best_minus_last"].round(3),
        "p (Holm)": df["p_best_vs_last_holm"].map(lambda p: f"{p:.2g}"),
        "tied layers": df["n_tied_with_best"],
    }).reset_index(drop=True)


def headline(summary: pd.DataFrame, pooling: str) -> dict[str, Any]:
    """The numbers the chapter's prose quotes, from the same function that judges claim 1 (``claims.layer_facts``),
    rounded for reading: cells where the best layer is not the last, where it beats it significantly, and depths."""
    return {key: round(value, 3) if isinstance(value, float) else value
            for key, value in claims.layer_facts(summary, pooling).items()}
