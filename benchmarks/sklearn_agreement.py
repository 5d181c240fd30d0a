"""The batched probe against scikit-learn on every layer of one real cell, under a profile's protocol.

``python -m benchmarks.sklearn_agreement [--profile default --model smollm2-135m --dataset sst2 --pooling mean]
[--max-iter N] [--tol T] [--cold]``

Features come from the study's extraction cache (``Study.layer_stack``; extracted first when missing). The protocol
is the profile's: its C grid, ``selection.folds``-fold stratified cross-validation (shuffled with the profile's
seed) on train and validation pooled, C chosen per layer by out-of-fold accuracy (ties: smaller C), a refit on all of
them, test accuracy once. Ours is ``LayerwiseProbe(cv=folds)`` with the profile's ``max_iter`` and ``tol``
(``--max-iter``/``--tol`` override them); scikit-learn's is ``make_pipeline(StandardScaler(),
LogisticRegression(C, tol, max_iter=10_000))`` on the same folds, layer by layer (``sklearn_cell``). Prints one row
per layer and a summary: the largest |difference| in test accuracy, the layers with the same C, our unconverged fits
and their reasons, our iterations, and the layers more than 5 points below both neighbours (each side's curve).
``--cold`` also fits without warm starts and prints both iteration totals. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from layerfusion import probe

DIP = 0.05
"""A layer "dips" when its test accuracy is more than this below both neighbours'."""


def sklearn_cell(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, Cs: tuple[float, ...], folds: int, seed: int,
                 tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer of ``X`` (n, L, d): scikit-learn's chosen C (out-of-fold accuracy on the probe's folds, ties to
    the smaller C), its out-of-fold accuracy and the refit's test predictions (L, n_test)."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    L = X.shape[1]
    best_C, oof, test_pred = np.zeros(L), np.zeros(L), np.empty((L, X_test.shape[0]), dtype=y.dtype)
    for layer in range(L):
        A = X[:, layer].astype(np.float64)
        scores = []
        for C in sorted(Cs):
            pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=tol, max_iter=10_000))
            scores.append(np.mean(cross_val_predict(pipe, A, y, cv=splitter) == y))
        j = int(np.argmax(scores))
        best_C[layer], oof[layer] = sorted(Cs)[j], scores[j]
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=best_C[layer], tol=tol, max_iter=10_000))
        test_pred[layer] = pipe.fit(A, y).predict(X_test[:, layer].astype(np.float64))
    return best_C, oof, test_pred


def dips(acc: np.ndarray, margin: float = DIP) -> list[int]:
    """Positions of inner layers more than ``margin`` below both neighbours."""
    return [i for i in range(1, len(acc) - 1) if acc[i] < acc[i - 1] - margin and acc[i] < acc[i + 1] - margin]


def compare_cell(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, Cs: tuple[float, ...],
                 folds: int, seed: int, max_iter: int, tol: float, warm_start: bool = True
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Both pipelines on one cell: per-layer rows and the summary numbers."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = probe.LayerwiseProbe(Cs=Cs, max_iter=max_iter, tol=tol, cv=folds, random_state=seed,
                                   warm_start=warm_start).fit(X, y)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    sk_C, sk_oof, sk_pred = sklearn_cell(X, y, X_test, Cs, folds, seed, tol)
    sklearn_s = time.perf_counter() - start
    ours_acc = est.score(X_test, y_test)
    sk_acc = (sk_pred == y_test).mean(axis=1)
    table = pd.DataFrame({"layer": np.arange(X.shape[1]), "C_ours": est.best_C_, "C_sklearn": sk_C,
                          "oof_ours": est.val_scores_, "oof_sklearn": sk_oof, "test_ours": ours_acc,
                          "test_sklearn": sk_acc, "test_diff": ours_acc - sk_acc,
                          "refit_iter": est.n_iter_.max(axis=1)})
    summary = {
        "layers": X.shape[1], "max_abs_test_diff": float(np.abs(ours_acc - sk_acc).max()),
        "mean_abs_test_diff": float(np.abs(ours_acc - sk_acc).mean()),
        "max_abs_oof_diff": float(np.abs(est.val_scores_ - sk_oof).max()),
        "same_C": int((est.best_C_ == sk_C).sum()), "fits": est.n_fits_, "unconverged": est.n_unconverged_,
        "unconverged_reasons": dict(Counter(u[3] for u in est.unconverged_)),
        "iterations_cv": int(est.cv_n_iter_.sum()), "iterations_refit": int(est.n_iter_.sum()),
        "max_iterations": int(max(est.cv_n_iter_.max(), est.n_iter_.max())),
        "max_final_gradient": float(max(est.cv_grad_norm_.max(), np.nanmax(est.grad_norm_))),
        "dips_ours": dips(ours_acc), "dips_sklearn": dips(sk_acc),
        "ours_s": ours_s, "sklearn_s": sklearn_s, "sklearn_over_ours_time": sklearn_s / ours_s,
    }
    return table, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--max-iter", type=int, default=None, help="override the profile's probe.max_iter")
    parser.add_argument("--tol", type=float, default=None, help="override the profile's probe.tol")
    parser.add_argument("--cold", action="store_true", help="also fit without warm starts (iteration counts)")
    args = parser.parse_args(argv)

    from layerfusion.study import Study, StudyConfig

    cfg = StudyConfig.from_profile(args.profile)
    study = Study(cfg, progress=False)
    stacks = {s: study.layer_stack(args.model, args.dataset, s, args.pooling) for s in ("train", "validation", "test")}
    labels = {s: study.labels(args.dataset, s) for s in stacks}
    X = np.concatenate([stacks["train"], stacks["validation"]])
    y = np.concatenate([labels["train"], labels["validation"]])
    max_iter = args.max_iter or cfg.probe.max_iter
    tol = args.tol or cfg.probe.tol
    Cs = tuple(cfg.probe.Cs)
    print(f"{args.profile}: {args.model} x {args.dataset}, {args.pooling} pooling, n = {len(y)} (train + validation), "
          f"{len(labels['test'])} test, {X.shape[1]} layers, Cs {list(Cs)}, {cfg.selection.folds}-fold CV, "
          f"max_iter {max_iter}, tol {tol:g}")
    table, summary = compare_cell(X, y, stacks["test"], labels["test"], Cs=Cs, folds=cfg.selection.folds,
                                  seed=cfg.seed, max_iter=max_iter, tol=tol)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.round(4).to_string(index=False))
    for key, value in summary.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.cold:
        _, cold = compare_cell(X, y, stacks["test"], labels["test"], Cs=Cs, folds=cfg.selection.folds,
                               seed=cfg.seed, max_iter=max_iter, tol=tol, warm_start=False)
        warm_total = summary["iterations_cv"] + summary["iterations_refit"]
        cold_total = cold["iterations_cv"] + cold["iterations_refit"]
        print(f"iterations cold start: cv {cold['iterations_cv']}, refit {cold['iterations_refit']}, "
              f"unconverged {cold['unconverged']}; warm / cold iterations = {warm_total / cold_total:.3f}, "
              f"cold / warm time = {cold['ours_s'] / summary['ours_s']:.2f}")


if __name__ == "__main__":
    main()
