"""Standardisation with training statistics: one rule for near-constant features, for numpy and torch.

Every estimator of the engine standardises its inputs with the training mean and standard deviation (ddof=0), as
scikit-learn's ``StandardScaler`` does. ``statistics`` computes them for a numpy matrix and ``apply`` uses them;
the solver's per-layer torch moments (``solver.moments``) go through the same ``scales``, so a near-constant
feature is treated by one rule wherever it is standardised.

The rule (``floor="sklearn"``, the default) is scikit-learn's: a feature is constant when its variance is within
the round-off bound of the two-pass variance, ``var <= n eps var + (n |mean| eps)^2`` with ``eps`` of the dtype the
statistics were computed in, and then gets scale 1 (``sklearn.preprocessing._data._is_constant_feature``). Two
callers keep the floor they had before this rule was shared, named here so the difference is visible in one place:

- ``floor="magnitude"`` (the linear probes): constant when ``std <= 10 eps max(|mean|, 1)``, then scale 1;
- a number, e.g. ``floor=1e-6`` (fusion and ``match_dimension``): ``scale = max(std, floor)``, no constant test.

Why they are kept: on the study's own data the floors decide real scales. Of the 123,264 training features of the
ci cache (every model, dataset, pooling and layer), 590 are exactly constant (0 after centring under every rule)
and 122,670 have a std at least 882 times every floor; the other 4 are one feature, 319 of minilm-l6's last layer,
with std 1.3e-8 around a mean of 1.2e-7 (float16 subnormals). The probes call it constant, the head scales it to
unit variance and fusion divides it by 1e-6, and it reaches all three, so one floor would change committed results.
Aligning them is one argument per caller and a re-run of the book.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["Floor", "Array", "scales", "statistics", "apply"]

Floor = str | float
"""``"sklearn"``, ``"magnitude"`` or a positive number (a clamp); see the module docstring."""

Array = np.ndarray | torch.Tensor
"""A numpy array or a torch tensor (``scales`` returns the kind it is given)."""


def scales(mean: Array, var: Array, n_samples: int, floor: Floor = "sklearn") -> Array:
    """The divisor of each feature from its mean and variance over ``n_samples`` rows: the standard deviation, or 1
    for a feature the ``floor`` rule calls constant (or ``max(std, floor)`` for a numeric floor).

    ``mean`` and ``var`` are numpy arrays or torch tensors of one dtype, the dtype the statistics were computed in.
    """
    std = var.sqrt() if isinstance(var, torch.Tensor) else np.sqrt(var)
    if not isinstance(floor, str):
        if not floor > 0:
            raise ValueError(f"floor must be 'sklearn', 'magnitude' or a positive number, got {floor!r}")
        return std.clamp_min(floor) if isinstance(std, torch.Tensor) else np.maximum(std, floor)
    if isinstance(var, torch.Tensor):
        eps, ones, where = torch.finfo(var.dtype).eps, torch.ones_like(std), torch.where
    else:
        eps, ones, where = np.finfo(var.dtype).eps, np.ones_like(std), np.where
    if floor == "sklearn":
        constant = var <= n_samples * eps * var + (n_samples * mean * eps) ** 2
    elif floor == "magnitude":
        constant = std <= 10 * eps * abs(mean).clip(min=1.0)
    else:
        raise ValueError(f"floor must be 'sklearn', 'magnitude' or a positive number, got {floor!r}")
    return where(constant, ones, std)


def statistics(X: np.ndarray, *, dtype: Any = np.float64, floor: Floor = "sklearn",
               with_std: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of ``X`` (n, d) for ``apply``, both float32.

    The statistics are accumulated in ``dtype`` (float64 as scikit-learn; fusion passes float32 inputs with
    ``dtype=np.float32``, as it always has). ``with_std=False`` centres only (scale 1).
    """
    mean = X.mean(axis=0, dtype=dtype)
    if not with_std:
        return mean.astype(np.float32), np.ones(X.shape[1], dtype=np.float32)
    var = X.var(axis=0, dtype=dtype)
    return mean.astype(np.float32), scales(mean, var, X.shape[0], floor).astype(np.float32)


def apply(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` in float32 (a new array)."""
    return (X.astype(np.float32) - mean) / scale
