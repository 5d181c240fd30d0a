"""Probe fitting speed: all layers at once (``LayerwiseProbe``) against scikit-learn on a few layers, one run.

``python -m benchmarks.probing [--n-train 2000 --n-val 500 --layers 31 --dim 576 --classes 2 --sklearn-layers 3]``
``python -m benchmarks.probing --features default:smollm2-135m:sst2 [--features default:gemma3-270m:r52 ...]``

The synthetic problem has the shape of SmolLM2-135M on SST-2 (30 blocks + the embedding layer, d = 576, two
classes): a shared low-rank latent with a class signal whose strength varies with depth, anisotropic noise, stored
as float16 like the extraction cache. ``--features PROFILE:MODEL:DATASET`` instead reads the real masked-mean
features of one model x dataset from the extraction cache (extracting them first if they are missing), train and
validation splits of that profile. ``LayerwiseProbe`` fits every layer for the whole C grid and picks C per layer on
validation; the baseline fits ``StandardScaler`` + ``LogisticRegression(solver="lbfgs")`` for the same grid, the
same ``tol`` and ``max_iter`` on only ``--sklearn-layers`` layers (first, middle, last) and scores validation the
same way. Both run in this process, alternating (sklearn, ours, sklearn, ours, ...) so that a slow spell of a shared
machine hits both; their ratio is what to read, not the absolute times. Each is run ``--repeats`` times and the
fastest kept. The printed "speedup" is sklearn's time on its few layers divided by ours on all layers: above 1 means
fitting every layer batched costs less than fitting a handful one by one. Peak memory is measured by
``layerfusion.meter.measure`` around our fit (on CPU the resident set sampled every 5 ms plus the kernel's
high-water mark, on CUDA the peak allocation), above its level just before it (lowest over the repeats, so the first
call's one-time allocator and thread-pool growth is left out), beside the size of the float32 copy of the training
stack.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from layerfusion import meter, probe

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


def cached_features(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation masked-mean stacks and labels of ``PROFILE:MODEL:DATASET`` from the extraction cache."""
    from layerfusion.study import Study, StudyConfig

    try:
        profile, model, dataset = spec.split(":")
    except ValueError:
        raise ValueError(f"--features takes PROFILE:MODEL:DATASET, got {spec!r}") from None
    study = Study(StudyConfig.from_profile(profile), progress=False)
    train, val = study.features(model, dataset, "train"), study.features(model, dataset, "validation")
    return (train.vectors["mean"], study.labels(dataset, "train"), val.vectors["mean"],
            study.labels(dataset, "validation"))


def sklearn_layers(X_tr: np.ndarray, y_tr: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   layers: list[int], Cs: tuple[float, ...], max_iter: int, tol: float = 1e-4) -> np.ndarray:
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
                clf = LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(A, y_tr)
            scores[i, j] = clf.score(V, y_val)
    return scores


def compare(X_tr: np.ndarray, y_tr: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, name: str,
            Cs: tuple[float, ...] = CS, n_sklearn: int = 3, max_iter: int = 200, tol: float = 1e-4,
            device: str = "cpu", repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Time both fits on one problem, fastest of ``repeats`` each; return the numbers (seconds, MiB)."""
    n, layers, dim = X_tr.shape
    picked = [round(x * (layers - 1)) for x in np.linspace(0.0, 1.0, n_sklearn)]

    def fit() -> tuple[probe.LayerwiseProbe, int]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = probe.LayerwiseProbe(Cs=Cs, max_iter=max_iter, tol=tol, device=device, random_state=seed)
            est.fit(X_tr, y_tr, X_val, y_val)
        return est, est.n_unconverged_

    theirs, ours, memory_growth = np.inf, np.inf, np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        theirs_scores = sklearn_layers(X_tr, y_tr, X_val, y_val, picked, Cs, max_iter, tol)
        theirs = min(theirs, time.perf_counter() - start)
        timed = meter.measure(fit, repeats=1, warmup=0, device=device)
        est, not_converged = timed.result
        ours, memory_growth = min(ours, timed.seconds_min), min(memory_growth, timed.peak_bytes / 2**20)
    return {
        "problem": name, "shape": f"n={n}+{X_val.shape[0]}, L={layers}, d={dim}, classes={np.unique(y_tr).size}, "
                                  f"{len(Cs)} Cs, tol={tol:g}",
        "ours_layers": layers, "ours_s": ours, "sklearn_layers": n_sklearn, "sklearn_s": theirs,
        "speedup": theirs / ours, "per_layer_speedup": (theirs / n_sklearn) / (ours / layers),
        "ours_iters_median": float(np.median(est.n_iter_)), "ours_iters_max": int(est.n_iter_.max()),
        "not_converged": not_converged,
        "val_acc_max_abs_diff": float(np.abs(est.val_scores_per_C_[picked] - theirs_scores).max()),
        "peak_memory_growth_mib": memory_growth,
        "float32_train_stack_mib": n * layers * dim * 4 / 2**20,
    }


def run(n_train: int = 2000, n_val: int = 500, layers: int = 31, dim: int = 576, classes: int = 2,
        Cs: tuple[float, ...] = CS, n_sklearn: int = 3, max_iter: int = 200, tol: float = 1e-4, device: str = "cpu",
        seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """The synthetic problem: time both fits; return the numbers (times in seconds, memory in MiB)."""
    X, y = synthetic_stack(n_train + n_val, layers, dim, classes, seed=seed)
    X_tr, X_val, y_tr, y_val = X[:n_train], X[n_train:], y[:n_train], y[n_train:]
    del X
    return compare(X_tr, y_tr, X_val, y_val, name="synthetic", Cs=Cs, n_sklearn=n_sklearn, max_iter=max_iter,
                   tol=tol, device=device, repeats=repeats, seed=seed)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run, print a table; return one row per problem (the runner reads "speedup")."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probing", description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--layers", type=int, default=31)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--features", action="append", default=[], metavar="PROFILE:MODEL:DATASET",
                        help="real cached features instead of the synthetic problem (repeatable)")
    parser.add_argument("--Cs", type=float, nargs="+", default=list(CS),
                        help="the C grid both fit (default: 0.01 0.1 1 10; the profiles' probe grids are in params/)")
    parser.add_argument("--sklearn-layers", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-4, help="stopping tolerance for both (sklearn's default)")
    parser.add_argument("--repeats", type=int, default=3)
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
    common = dict(Cs=tuple(args.Cs), n_sklearn=args.sklearn_layers, max_iter=args.max_iter, tol=args.tol,
                  device=args.device, repeats=args.repeats, seed=args.seed)
    if args.features:
        rows = [compare(*cached_features(spec), name=spec, **common) for spec in args.features]
    else:
        rows = [run(args.n_train, args.n_val, args.layers, args.dim, args.classes, **common)]
    print("| problem | shape | ours: all layers (s) | sklearn: layers (s) | speedup | per-layer speedup | "
          "iterations median/max | max abs val-acc diff | peak memory growth (MiB) | f32 train stack (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['problem']} | {r['shape']} | {r['ours_s']:.3f} ({r['ours_layers']}) | "
              f"{r['sklearn_s']:.3f} ({r['sklearn_layers']}) | {r['speedup']:.2f} | {r['per_layer_speedup']:.1f} | "
              f"{r['ours_iters_median']:.0f}/{r['ours_iters_max']} | {r['val_acc_max_abs_diff']:.4f} | "
              f"{r['peak_memory_growth_mib']:.0f} | {r['float32_train_stack_mib']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
