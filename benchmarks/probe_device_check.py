"""The batched probe on CPU and on CUDA: the same R52-sized synthetic problem on both, agreement and times.

``python -m benchmarks.probe_device_check [--dry-run]``

The problem has the shape the H200 measurement used (shared/research/gpu-h200-2026-12-04.md): 1,500 texts x 31
layers x 576 features, 52 classes, Cs 0.01-10, 5-fold cross-validation, the default profile's ``max_iter`` (100) and
``tol`` (1e-4), built by ``benchmarks.probing.synthetic_stack``. Prints, per device, the fit time, the device
``device="auto"`` would pick (``solver.choose_device``) and the unconverged fits, then the agreement: layers with the
same C, the largest |difference| in out-of-fold accuracy over every (layer, C), and the CPU / CUDA time ratio. About
30 s on an H200 machine. ``--dry-run`` runs CPU against CPU on a toy problem (any machine, a second or two), so a
test can check the script itself.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from benchmarks.probing import synthetic_stack
from layerfusion import probe, solver

FULL = {"n": 1500, "layers": 31, "dim": 576, "classes": 52, "folds": 5}
TOY = {"n": 150, "layers": 3, "dim": 16, "classes": 5, "folds": 3}
CS = (0.01, 0.1, 1.0, 10.0)


def fit(X: np.ndarray, y: np.ndarray, device: str, folds: int, max_iter: int, tol: float
        ) -> tuple[probe.LayerwiseProbe, float]:
    """The probe under cross-validation on ``device`` and its wall time (seconds, after a CUDA sync)."""
    est = probe.LayerwiseProbe(Cs=CS, max_iter=max_iter, tol=tol, cv=folds, device=device, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return est, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU against CPU on a toy problem")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    shape = TOY if args.dry_run else FULL
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --dry-run, or on a machine with a GPU")
    X, y = synthetic_stack(shape["n"], shape["layers"], shape["dim"], shape["classes"], seed=0)
    other = "cpu" if args.dry_run else "cuda"
    auto = solver.choose_device("auto", int(shape["n"] * (shape["folds"] - 1) / shape["folds"]), shape["layers"],
                                shape["dim"], shape["classes"], len(CS))
    print(f"problem: n={shape['n']}, layers={shape['layers']}, d={shape['dim']}, classes={shape['classes']}, "
          f"Cs={list(CS)}, {shape['folds']}-fold CV, max_iter={args.max_iter}, tol={args.tol:g}; "
          f"device='auto' picks {auto.type}")
    if other == "cuda":
        fit(X[:200], y[:200], "cuda", 2, 5, args.tol)  # CUDA context and kernels, not timed
    results = {}
    for device in ("cpu", other):
        est, seconds = fit(X, y, device, shape["folds"], args.max_iter, args.tol)
        results[device if device not in results else f"{device} (again)"] = (est, seconds)
        print(f"{device}: {seconds:.2f} s, unconverged {est.n_unconverged_} of {est.n_fits_} fits, "
              f"max iterations {int(est.cv_n_iter_.max())}")
    (a, ta), (b, tb) = results.values()
    same_C = int((a.best_C_ == b.best_C_).sum())
    diff = float(np.abs(a.val_scores_per_C_ - b.val_scores_per_C_).max())
    print(f"same C on {same_C}/{len(a.best_C_)} layers; max |out-of-fold accuracy difference| over (layer, C) "
          f"{diff:.2e}; cpu / {other} time {ta / tb:.2f}")
    return {"same_C": same_C, "layers": len(a.best_C_), "max_abs_val_diff": diff, "ratio": ta / tb}


if __name__ == "__main__":
    main()
