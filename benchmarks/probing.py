"""Probe fitting speed: all layers at once (``LayerwiseProbe``) against scikit-learn on a few layers, one run.

``python -m benchmarks.probing [--n-train 2000 --n-val 500 --layers 31 --dim 576 --classes 2 --sklearn-layers 3]``

The default problem has the shape of SmolLM2-135M on SST-2 (30 blocks + the embedding layer, d = 576, two classes)
and is synthetic: a shared low-rank latent with a class signal whose strength varies with depth, anisotropic noise,
stored as float16 like the extraction cache. ``LayerwiseProbe`` fits every layer for the whole C grid and picks C per
layer on validation; the baseline fits ``StandardScaler`` + ``LogisticRegression(solver="lbfgs")`` for the same grid
on only ``--sklearn-layers`` layers and scores validation the same way. Both run in this process one after the
other, so their ratio is what to read (absolute times move with the load on a shared machine). The printed
"speedup" is sklearn's time on its few layers divided by ours on all layers: above 1 means fitting every layer
batched costs less than fitting a handful one by one. Peak RSS growth is the rise of the process's peak resident
memory during our fit, beside the size of the float32 copy of the whole training stack it avoids.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import warnings
from typing import Any

import numpy as np

from layerfusion import probe

CS = (0.01, 0.1, 1.0, 10.0)


def synthetic_stack(n: int, layers: int, dim: int, classes: int, seed: int = 0,
                    rank: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A float16 (n, layers, dim) stack and labels (n,): class signal peaking at 60 % depth, built layer by layer."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = rng.standard_normal((classes, rank))
    latent = rng.standard_normal((n, rank)).astype(np.float32)
    out = np.empty((n, layers, dim), dtype=np.float16)
    for layer in range(layers):
        depth = layer / max(layers - 1, 1)
        strength = 0.15 + 0.35 * np.exp(-((depth - 0.6) / 0.3) ** 2)
        mixing = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
        scales = np.exp(rng.normal(0.0, 1.0, size=dim)).astype(np.float32)
        signal = (latent + strength * centres[y]).astype(np.float32) @ mixing
        noise = rng.standard_normal((n, dim), dtype=np.float32) * scales
        out[:, layer] = (signal * 2.0 + noise + rng.normal(0, 3, size=dim)).astype(np.float16)
    return out, y


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sklearn_layers(X_tr: np.ndarray, y_tr: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   layers: list[int], Cs: tuple[float, ...], max_iter: int) -> np.ndarray:
    """Validation accuracy per (layer, C) with StandardScaler + LogisticRegression(lbfgs), one fit at a time."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros((len(layers), len(Cs)))
    for i, layer in enumerate(layers):
        scaler = StandardScaler().fit(X_tr[:, layer].astype(np.float32))
        A, V = scaler.transform(X_tr[:, layer].astype(np.float32)), scaler.transform(X_val[:, layer].astype(np.float32))
        for j, C in enumerate(Cs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LogisticRegression(C=C, max_iter=max_iter).fit(A, y_tr)
            scores[i, j] = clf.score(V, y_val)
    return scores


def run(n_train: int = 2000, n_val: int = 500, layers: int = 31, dim: int = 576, classes: int = 2,
        n_sklearn: int = 3, max_iter: int = 200, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Time both fits on one synthetic problem; return the numbers (times in seconds, memory in MiB)."""
    X, y = synthetic_stack(n_train + n_val, layers, dim, classes, seed=seed)
    X_tr, X_val, y_tr, y_val = X[:n_train], X[n_train:], y[:n_train], y[n_train:]
    del X
    gc.collect()
    rss_before = _peak_rss_mib()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = probe.LayerwiseProbe(Cs=CS, max_iter=max_iter, device=device, random_state=seed)
        est.fit(X_tr, y_tr, X_val, y_val)
    ours = time.perf_counter() - start
    rss_growth = _peak_rss_mib() - rss_before
    picked = [round(x * (layers - 1)) for x in np.linspace(0.0, 1.0, n_sklearn)]
    start = time.perf_counter()
    theirs_scores = sklearn_layers(X_tr, y_tr, X_val, y_val, picked, CS, max_iter)
    theirs = time.perf_counter() - start
    ours_scores = est.val_scores_per_C_[picked]
    return {
        "problem": f"n={n_train}+{n_val}, L={layers}, d={dim}, classes={classes}, {len(CS)} Cs",
        "ours_layers": layers, "ours_s": ours, "sklearn_layers": n_sklearn, "sklearn_s": theirs,
        "speedup": theirs / ours, "per_layer_speedup": (theirs / n_sklearn) / (ours / layers),
        "ours_iters_median": float(np.median(est.n_iter_)), "ours_iters_max": int(est.n_iter_.max()),
        "not_converged": sum(1 for w in caught if "max_iter" in str(w.message)),
        "val_acc_max_abs_diff": float(np.abs(ours_scores - theirs_scores).max()),
        "peak_rss_growth_mib": rss_growth,
        "float32_train_stack_mib": n_train * layers * dim * 4 / 2**20,
        "best_layer": int(np.argmax(est.val_scores_)), "best_val_accuracy": float(est.val_scores_.max()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run, print a short report; return the numbers (the runner reads "speedup")."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probing", description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--layers", type=int, default=31)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--sklearn-layers", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="limit torch and BLAS/OpenMP threads for both fits (default: leave as configured)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    res = run(args.n_train, args.n_val, args.layers, args.dim, args.classes, args.sklearn_layers, args.max_iter,
              args.device, args.seed)
    print(f"problem: {res['problem']}")
    print(f"LayerwiseProbe, all {res['ours_layers']} layers: {res['ours_s']:.2f} s "
          f"(iterations median {res['ours_iters_median']:.0f}, max {res['ours_iters_max']})")
    print(f"sklearn lbfgs, {res['sklearn_layers']} layers: {res['sklearn_s']:.2f} s")
    print(f"speedup (sklearn on {res['sklearn_layers']} layers / ours on {res['ours_layers']}): {res['speedup']:.2f}")
    print(f"per-layer speedup: {res['per_layer_speedup']:.1f}")
    print(f"validation accuracy, largest |ours - sklearn| over the shared (layer, C): {res['val_acc_max_abs_diff']:.4f}")
    print(f"peak RSS growth during our fit: {res['peak_rss_growth_mib']:.0f} MiB "
          f"(float32 copy of the whole train stack would be {res['float32_train_stack_mib']:.0f} MiB)")
    return res


if __name__ == "__main__":
    main()
