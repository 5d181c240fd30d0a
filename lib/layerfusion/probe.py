"""Probes on frozen embeddings: L2 logistic regression on every layer at once, and the paper's MLP head.

``LayerwiseProbe`` fits multinomial logistic regression with an L2 penalty on all layers and all values of ``C`` as
one batched problem in torch: weights of shape (layers, d, Cs, classes), one L-BFGS loop in which every
(layer, C) problem keeps its own curvature history and its own line search, so the batch converges like separate
fits but reads each layer's features once per iteration for all ``C``. The objective per problem is
scikit-learn's ``LogisticRegression(C=C)``: the sum of log-losses plus ``0.5 / C * ||W||^2`` with the intercept
unpenalised (binomial with one weight vector for two classes, multinomial with one per class otherwise), fitted on
features standardised with the training mean and standard deviation, so results agree with
``make_pipeline(StandardScaler(), LogisticRegression(C=C))``. Layers are processed in chunks, each converted to
float32 (the cache stores float16) only while it is being fitted or scored.

``LogisticProbe`` is the same solver on one (n, d) matrix as a scikit-learn estimator (fusion uses it on
concatenated features). ``MLPHead`` is the authors' classifier (d -> 1024 -> 256 -> C, ReLU, dropout, Adam) with
per-epoch accuracy on named evaluation sets, so the authors' "maximum test accuracy over epochs" can be shown beside
selection on validation.

Arrays in and out are numpy; torch stays inside this module.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from torch import nn
from tqdm.auto import tqdm

__all__ = ["LayerwiseProbe", "LogisticProbe", "MLPHead"]

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
CHUNK_BYTES = 256 * 2**20
"""Working-set size (features and solver state) aimed at when ``layer_chunk`` is None (at least one layer a chunk)."""
_HISTORY = 10
_ARMIJO = 1e-4
_MAX_BACKTRACK = 30
_PREDICT_BATCH = 4096
_TORCH_READABLE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------------------- checks

def _check_features(X: Any, arg: str, ndim: int) -> np.ndarray:
    """``X`` as a numeric numpy array of ``ndim`` dimensions (no copy for arrays and memmaps)."""
    X = np.asarray(X)
    if X.ndim != ndim:
        shape = "(n, L, d): texts x layers x hidden size" if ndim == 3 else "(n, d): texts x features"
        raise ValueError(f"{arg} must be {ndim}-D {shape}, got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{arg} must be numeric, got dtype {X.dtype}")
    if X.shape[0] == 0 or any(s == 0 for s in X.shape[1:]):
        raise ValueError(f"{arg} is empty (shape {X.shape}); pass at least one row, layer and feature")
    return X


def _check_labels(y: Any, n: int, arg: str) -> np.ndarray:
    """``y`` as a 1-D array of ``n`` labels without missing values."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{arg} must be 1-D with one label per row of the features ({n}), got shape {y.shape}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{arg} contains NaN; drop or label those rows first")
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v)) for v in y):
        raise ValueError(f"{arg} contains missing labels (None/NaN); drop or label those rows first")
    return y


def _encode(y: np.ndarray, classes: np.ndarray, arg: str) -> np.ndarray:
    """Positions of ``y`` in ``classes``; labels never seen in training raise."""
    known = np.isin(y, classes)
    if not known.all():
        raise ValueError(f"{arg} has labels not seen in the training labels: {np.unique(y[~known]).tolist()[:10]}; "
                         f"known classes are {classes.tolist()[:20]}")
    return np.searchsorted(classes, y).astype(np.int64)


def _check_Cs(Cs: Any) -> np.ndarray:
    Cs = np.atleast_1d(np.asarray(Cs, dtype=np.float64))
    if Cs.ndim != 1 or Cs.size == 0 or not np.all(np.isfinite(Cs)) or np.any(Cs <= 0):
        raise ValueError(f"Cs must be a non-empty sequence of positive finite numbers, got {Cs.tolist()}")
    if np.unique(Cs).size != Cs.size:
        raise ValueError(f"Cs has repeated values {Cs.tolist()}; list each C once")
    return np.sort(Cs)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _torch_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` ("float32", "float64", or the numpy / torch dtype) as a torch float dtype."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _DTYPES[name]


def _check_positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- batched L-BFGS solver

def _layer_chunk(X: np.ndarray, layer_chunk: int | None, itemsize: int, n_params: int = 0, n_logits: int = 0) -> int:
    """Layers per chunk: the explicit value, else as many as fit in ``CHUNK_BYTES``.

    A layer's working set is its features (n x d) plus, when fitting, the solver state of its problems: ``n_params``
    parameters (all values of C and outputs) held about ``2 * _HISTORY + 10`` times (L-BFGS history, gradients,
    direction, temporaries) and ``n_logits`` logits held about 10 times (line search). With many classes the state,
    not the features, is the larger part.
    """
    if layer_chunk is not None:
        return _check_positive_int(layer_chunk, "layer_chunk")
    per_layer = (X.shape[0] * X.shape[2] + (2 * _HISTORY + 10) * n_params + 10 * n_logits) * itemsize
    return max(1, min(X.shape[1], CHUNK_BYTES // max(per_layer, 1)))


def _load_chunk(X: np.ndarray, start: int, stop: int, device: torch.device, dtype: torch.dtype,
                arg: str) -> torch.Tensor:
    """Layers ``start:stop`` of ``X`` (n, L, d) as a (layers, n, d) tensor in ``dtype`` on ``device``: one copy.

    On CPU, float arrays are converted by torch straight from the strided view (several times faster than numpy's
    cast-and-transpose); other dtypes go through numpy.
    """
    part = X[:, start:stop].transpose(1, 0, 2)
    if device.type == "cpu" and part.dtype in _TORCH_READABLE and part.dtype.isnative:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            source = torch.from_numpy(part)
        out = torch.empty(source.shape, dtype=dtype).copy_(source)
    elif device.type == "cpu":
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        out = torch.from_numpy(np.array(part, dtype=np_dtype, order="C"))
    else:
        out = torch.from_numpy(np.ascontiguousarray(part)).to(device=device, dtype=dtype)
    suspect = ~torch.isfinite(out.sum(dim=1)).all(dim=1)
    for i in suspect.nonzero()[:, 0].tolist():
        if not torch.isfinite(out[i]).all():
            raise ValueError(f"{arg} contains NaN or inf in layer {start + i}; clean the features first")
    return out


def _moments(Xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-feature mean and standard deviation (ddof=0; constant features get scale 1, as in sklearn).

    Computed one layer at a time so the temporary is one layer, not the chunk.
    """
    mean = Xc.mean(dim=1, keepdim=True)
    std = torch.stack([(Xc[i] - mean[i]).square_().mean(dim=0, keepdim=True) for i in range(Xc.shape[0])]).sqrt_()
    floor = 10 * torch.finfo(std.dtype).eps * mean.abs().clamp_min(1.0)
    return mean, torch.where(std > floor, std, torch.ones_like(std))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product per (layer, C) problem of two parameter-shaped tensors (B, nC, K, d+1) -> (B, nC)."""
    return (a * b).sum(dim=(2, 3))


def _bc(v: torch.Tensor) -> torch.Tensor:
    """(B, nC) -> (B, nC, 1, 1), to scale parameter-shaped tensors per problem."""
    return v[:, :, None, None]


def _logits(X: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, n, d) features and (B, nC, K, d+1) parameters (last entry = intercept) -> (B, n, nC, K) logits.

    Weights are kept (outputs, d) so both products read X row-major, the fast layout for torch's CPU bmm.
    """
    B, n, d = X.shape
    nC, K = theta.shape[1], theta.shape[2]
    W = theta[..., :d].reshape(B, nC * K, d)
    b = theta[..., d].reshape(B, 1, nC * K)
    return torch.baddbmm(b, X, W.transpose(1, 2)).view(B, n, nC, K)


def _objective(Z: torch.Tensor, target: torch.Tensor, lam: torch.Tensor,
               w_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean log-loss of logits ``Z`` (B, n, nC, K) + 0.5 * lam * ``w_sq`` per problem (B, nC), and
    d(loss)/d(logits) * n (B, n, nC, K).

    Dividing sklearn's objective by n (lam = 1 / (C n)) leaves the minimiser unchanged and keeps values O(1).
    """
    if Z.shape[3] == 1:
        z = Z[..., 0]
        t = target.to(z.dtype)[None, :, None]
        point = F.softplus(z) - t * z
        G = (torch.sigmoid(z) - t).unsqueeze(-1)
    else:
        logp = torch.log_softmax(Z, dim=-1)
        index = target.view(1, -1, 1, 1).expand(Z.shape[0], -1, Z.shape[2], 1)
        point = -logp.gather(-1, index).squeeze(-1)
        G = logp.exp_()
        G.scatter_add_(-1, index, torch.full_like(index, -1, dtype=G.dtype))
    return point.mean(dim=1) + 0.5 * lam[None, :] * w_sq, G


def _gradient(X: torch.Tensor, theta: torch.Tensor, G: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean objective with respect to the parameters, (B, nC, K, d+1)."""
    B, n, d = X.shape
    Gt = G.reshape(B, n, -1).transpose(1, 2).contiguous()
    gW = torch.bmm(Gt, X).view(B, *G.shape[2:], d).div_(n)
    gW.add_(lam[None, :, None, None] * theta[..., :d])
    return torch.cat([gW, G.sum(dim=1).div_(n).unsqueeze(-1)], dim=-1)


def _direction(g: torch.Tensor, S: list[torch.Tensor], Y: list[torch.Tensor], rho: list[torch.Tensor],
               gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L-BFGS two-loop recursion per problem: the search direction and its slope g.d (steepest descent if uphill)."""
    q = g.clone()
    alphas = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
        a = r * _dot(s, q)
        q.sub_(_bc(a) * y)
        alphas.append(a)
    q.mul_(_bc(gamma))
    for s, y, r, a in zip(S, Y, rho, reversed(alphas)):
        q.add_(_bc(a - r * _dot(y, q)) * s)
    direction = q.neg_()
    slope = _dot(g, direction)
    uphill = slope >= 0
    if uphill.any():
        direction = torch.where(_bc(uphill), -g, direction)
        slope = torch.where(uphill, -_dot(g, g), slope)
    return direction, slope


def _drop_layers(X: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the ``done`` layers from X (B, n, d) in place: the kept layers that sit behind the new end move into
    the holes the done ones leave in front of it, so only those are copied, never the whole chunk.

    Returns the shortened view of X and the indices (into the old batch) of its layers, in order.
    """
    keep = ~done
    k = int(keep.sum())
    order = torch.arange(X.shape[0], device=X.device)
    holes = done[:k].nonzero()[:, 0]
    movers = keep[k:].nonzero()[:, 0] + k
    for hole, mover in zip(holes.tolist(), movers.tolist()):
        X[hole].copy_(X[mover])
        order[hole] = mover
    return X[:k], order[:k]


def _fit_lbfgs(X: torch.Tensor, target: torch.Tensor, n_out: int, Cs: np.ndarray, max_iter: int,
               tol: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Fit every (layer, C) problem of one chunk: X (B, n, d) standardised (overwritten), ``target`` (n,) class
    positions.

    Returns parameters (B, nC, n_out, d+1) (last entry = intercept), iterations (B, nC) and a (B, nC) mask of the
    problems that stopped at ``max_iter``. A problem stops when the largest absolute gradient entry of the mean
    objective is <= ``tol``, when one iteration lowers the objective by less than ``tol`` relative to its value
    (as scipy's ``ftol``), or when its line search cannot lower the objective any more (float precision reached).

    Each iteration reads X twice: once for the logits of the search direction (logits are linear in the
    parameters, so every backtracking step of the line search is computed from them without touching X) and once
    for the gradient. Finished layers are dropped from the batch (in place) once they make up a quarter of it, so
    the rest iterate on less data.
    """
    B, n, d = X.shape
    nC = len(Cs)
    lam = torch.as_tensor(1.0 / (Cs * n), dtype=X.dtype, device=X.device)
    theta = torch.zeros(B, nC, n_out, d + 1, dtype=X.dtype, device=X.device)
    out = torch.empty_like(theta)
    n_iter = np.zeros((B, nC), dtype=np.int64)
    unfinished = np.zeros((B, nC), dtype=bool)
    ids = torch.arange(B, device=X.device)
    Z = torch.zeros(B, n, nC, n_out, dtype=X.dtype, device=X.device)
    w_sq = torch.zeros(B, nC, dtype=X.dtype, device=X.device)
    f, G = _objective(Z, target, lam, w_sq)
    g = _gradient(X, theta, G, lam)
    active = g.abs().amax(dim=(2, 3)) > tol
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    rho: list[torch.Tensor] = []
    gamma = torch.ones(B, nC, dtype=X.dtype, device=X.device)
    for _ in range(max_iter):
        done = ~active.any(dim=1)
        n_done = int(done.sum())
        if n_done == done.shape[0]:
            break
        if n_done and 4 * n_done >= done.shape[0]:
            out[ids[done]] = theta[done]
            X, order = _drop_layers(X, done)
            theta, Z, w_sq, f, G, g, active, gamma, ids = (
                a[order] for a in (theta, Z, w_sq, f, G, g, active, gamma, ids))
            S, Y, rho = [s[order] for s in S], [y[order] for y in Y], [r[order] for r in rho]
        direction, slope = _direction(g, S, Y, rho, gamma)
        ZD = _logits(X, direction)
        W, DW = theta[..., :d], direction[..., :d]
        wd, dd = _dot(W, DW), _dot(DW, DW)
        step = torch.ones_like(f) if S else torch.clamp(1.0 / _dot(g, g).sqrt(), max=1.0)
        step = torch.where(active, step, torch.zeros_like(step))
        accepted = ~active
        f_new, G_new, Z_new = f, G, Z
        for _ in range(_MAX_BACKTRACK):
            Z_try = torch.addcmul(Z, step[:, None, :, None], ZD)
            f_try, G_try = _objective(Z_try, target, lam, w_sq + step * (2 * wd + step * dd))
            ok = ~accepted & torch.isfinite(f_try) & (f_try <= f + _ARMIJO * step * slope)
            pick = ok[:, None, :, None]
            f_new = torch.where(ok, f_try, f_new)
            G_new = torch.where(pick, G_try, G_new)
            Z_new = torch.where(pick, Z_try, Z_new)
            accepted |= ok
            if accepted.all():
                break
            step = torch.where(accepted, step, 0.5 * step)
        stalled = ~accepted
        step = torch.where(stalled, torch.zeros_like(step), step)
        s = _bc(step) * direction
        theta = theta + s
        w_sq = w_sq + step * (2 * wd + step * dd)
        g_new = _gradient(X, theta, G_new, lam)
        y = g_new - g
        sy, yy = _dot(s, y), _dot(y, y)
        valid = active & ~stalled & (sy > 1e-10 * yy) & (yy > 0)
        rho.append(torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy)))
        gamma = torch.where(valid, sy / torch.where(valid, yy, torch.ones_like(yy)), gamma)
        S.append(s)
        Y.append(y)
        if len(S) > _HISTORY:
            S.pop(0), Y.pop(0), rho.pop(0)
        n_iter[ids.cpu().numpy()] += active.cpu().numpy()
        scale = torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        converged = (g_new.abs().amax(dim=(2, 3)) <= tol) | ((f - f_new) <= tol * scale) | stalled
        active = active & ~converged
        f, G, g, Z = f_new, G_new, g_new, Z_new
    else:
        unfinished[ids.cpu().numpy()] = active.cpu().numpy()
    out[ids] = theta
    return out, n_iter, unfinished


def _predict_chunk(Xc: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
    """Logits (B, n, K) of standardised features (B, n, d) under coef (B, d, K) and intercept (B, K)."""
    return torch.baddbmm(intercept[:, None, :], Xc, coef)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits (..., K); one binomial logit becomes two columns."""
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=-1)
    return torch.softmax(logits, dim=-1)


def _positions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class positions from logits (..., K); a binomial logit > 0 means the second class (as sklearn)."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).long()
    return logits.argmax(dim=-1)


# ------------------------------------------------------------------------------------------------ all-layer probe

class LayerwiseProbe(BaseEstimator):
    """L2 logistic regression on every layer at once, ``C`` chosen per layer by validation accuracy.

    Parameters: ``Cs`` the grid of inverse penalty strengths (as sklearn's ``C``); ``max_iter`` L-BFGS iterations
    per (layer, C); ``tol`` stopping tolerance (see ``_fit_lbfgs``); ``layer_chunk`` layers converted to float32 and
    fitted together (None: as many as fit in 256 MiB with their solver state); ``device`` torch device ("cpu",
    "cuda"); ``dtype`` compute precision ("float32" or "float64"); ``random_state`` accepted for a uniform
    interface, unused because the solver (zero start, deterministic line search) has no randomness; ``progress``
    shows a bar over chunks.

    Validation ties between values of ``C`` go to the smaller ``C`` (the stronger penalty, the simpler model).
    Fitted attributes (L = layers): ``classes_``, ``Cs_`` (sorted grid), ``best_C_`` (L,), ``val_scores_`` (L,),
    ``val_scores_per_C_`` (L, len(Cs)), ``val_predictions_`` (L, n_val), ``n_iter_`` (L, len(Cs)),
    ``coef_`` (L, d, K) and ``intercept_`` (L, K) on standardised features (K = 1 for two classes, else the number
    of classes), ``mean_`` and ``scale_`` (L, d) the training standardisation.
    """

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 200, tol: float = 1e-6,
                 layer_chunk: int | None = None, device: str = "cpu", dtype: Any = "float32",
                 random_state: int | None = 0, progress: bool = False) -> None:
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.layer_chunk = layer_chunk
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.progress = progress

    def fit(self, X_train: Any, y_train: Any, X_val: Any = None, y_val: Any = None) -> LayerwiseProbe:
        """Fit every (layer, C) on ``X_train`` (n, L, d); pick C per layer on ``X_val`` (n_val, L, d).

        Validation data may be left out only when ``Cs`` holds a single value (then ``val_scores_`` is NaN).
        """
        Cs = _check_Cs(self.Cs)
        max_iter = _check_positive_int(self.max_iter, "max_iter")
        if not float(self.tol) > 0:
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")
        dtype, device = _torch_dtype(self.dtype), torch.device(self.device)
        X = _check_features(X_train, "X_train", 3)
        y = _check_labels(y_train, X.shape[0], "y_train")
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"y_train has a single class {classes.tolist()}; a classifier needs at least two")
        has_val = X_val is not None or y_val is not None
        if has_val:
            if X_val is None or y_val is None:
                raise ValueError("pass both X_val and y_val, or neither")
            Xv = _check_features(X_val, "X_val", 3)
            if Xv.shape[1:] != X.shape[1:]:
                raise ValueError(f"X_val has (layers, d) = {Xv.shape[1:]} but X_train has {X.shape[1:]}; "
                                 "pass the same layers of the same model")
            yv = _encode(_check_labels(y_val, Xv.shape[0], "y_val"), classes, "y_val")
        elif Cs.size > 1:
            raise ValueError(f"X_val and y_val are needed to choose among Cs={Cs.tolist()}; pass validation data "
                             "or a single C")
        n, L, d = X.shape
        n_out = 1 if classes.size == 2 else classes.size
        target = torch.as_tensor(_encode(y, classes, "y_train"), device=device)
        self.classes_, self.Cs_, self.n_features_in_ = classes, Cs, d
        self.n_layers_in_ = L
        self.coef_ = np.zeros((L, d, n_out), dtype=np.float32)
        self.intercept_ = np.zeros((L, n_out), dtype=np.float32)
        self.mean_ = np.zeros((L, d), dtype=np.float32)
        self.scale_ = np.ones((L, d), dtype=np.float32)
        self.n_iter_ = np.zeros((L, Cs.size), dtype=np.int64)
        self.val_scores_per_C_ = np.full((L, Cs.size), np.nan)
        self.val_predictions_ = np.empty((L, Xv.shape[0] if has_val else 0), dtype=classes.dtype)
        chunk = _layer_chunk(X, self.layer_chunk, torch.empty(0, dtype=dtype).element_size(),
                             n_params=Cs.size * n_out * (d + 1), n_logits=n * Cs.size * n_out)
        unfinished = 0
        for start in tqdm(range(0, L, chunk), desc="probe chunks", disable=not self.progress):
            stop = min(start + chunk, L)
            Xc = _load_chunk(X, start, stop, device, dtype, "X_train")
            mean, std = _moments(Xc)
            Xc.sub_(mean).div_(std)
            theta, n_iter, stuck = _fit_lbfgs(Xc, target, n_out, Cs, max_iter, float(self.tol))
            del Xc
            best = np.zeros(stop - start, dtype=np.int64)
            if has_val:
                Vc = _load_chunk(Xv, start, stop, device, dtype, "X_val").sub_(mean).div_(std)
                pos = _positions(_logits(Vc, theta)).cpu().numpy()
                del Vc
                correct = pos == yv[None, :, None]
                self.val_scores_per_C_[start:stop] = correct.mean(axis=1)
                best = self.val_scores_per_C_[start:stop].argmax(axis=1)
                picked = np.take_along_axis(pos, best[:, None, None], axis=2)[..., 0]
                self.val_predictions_[start:stop] = classes[picked]
            rows = torch.arange(stop - start, device=theta.device)
            chosen = theta[rows, torch.as_tensor(best, device=theta.device)]
            self.coef_[start:stop] = chosen[..., :d].transpose(1, 2).cpu().numpy()
            self.intercept_[start:stop] = chosen[..., d].cpu().numpy()
            self.mean_[start:stop] = mean[:, 0].cpu().numpy()
            self.scale_[start:stop] = std[:, 0].cpu().numpy()
            self.n_iter_[start:stop] = n_iter
            unfinished += int(stuck.sum())
        self.best_C_ = Cs[np.nanargmax(self.val_scores_per_C_, axis=1)] if has_val else np.full(L, Cs[0])
        self.val_scores_ = (self.val_scores_per_C_.max(axis=1) if has_val else np.full(L, np.nan))
        if unfinished:
            warnings.warn(f"LayerwiseProbe: {unfinished} of {L * Cs.size} (layer, C) fits stopped at "
                          f"max_iter={max_iter} before reaching tol={self.tol}; raise max_iter for tighter fits",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _check_fitted_input(self, X: Any, arg: str) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ValueError("this LayerwiseProbe is not fitted yet; call fit(X_train, y_train, X_val, y_val) first")
        X = _check_features(X, arg, 3)
        if X.shape[1:] != (self.n_layers_in_, self.n_features_in_):
            raise ValueError(f"{arg} has (layers, d) = {X.shape[1:]} but the probe was fitted on "
                             f"{(self.n_layers_in_, self.n_features_in_)}")
        return X

    def _chunked_logits(self, X: np.ndarray, arg: str) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(start, stop, logits (layers, n, K)) per chunk of layers of ``X``."""
        dtype, device = _torch_dtype(self.dtype), torch.device(self.device)
        chunk = _layer_chunk(X, self.layer_chunk, torch.empty(0, dtype=dtype).element_size())
        for start in range(0, X.shape[1], chunk):
            stop = min(start + chunk, X.shape[1])
            Xc = _load_chunk(X, start, stop, device, dtype, arg)
            Xc.sub_(torch.as_tensor(self.mean_[start:stop, None], device=device, dtype=dtype))
            Xc.div_(torch.as_tensor(self.scale_[start:stop, None], device=device, dtype=dtype))
            coef = torch.as_tensor(self.coef_[start:stop], device=device, dtype=dtype)
            intercept = torch.as_tensor(self.intercept_[start:stop], device=device, dtype=dtype)
            yield start, stop, _predict_chunk(Xc, coef, intercept)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels per layer, (L, n)."""
        X = self._check_fitted_input(X, "X")
        out = np.empty((X.shape[1], X.shape[0]), dtype=self.classes_.dtype)
        for start, stop, logits in self._chunked_logits(X, "X"):
            out[start:stop] = self.classes_[_positions(logits).cpu().numpy()]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities per layer, (L, n, n_classes), columns in ``classes_`` order."""
        X = self._check_fitted_input(X, "X")
        out = np.empty((X.shape[1], X.shape[0], self.classes_.size), dtype=np.float32)
        for start, stop, logits in self._chunked_logits(X, "X"):
            out[start:stop] = _probabilities(logits).cpu().numpy()
        return out

    def score(self, X: Any, y: Any) -> np.ndarray:
        """Accuracy per layer, (L,); ``y`` must hold only labels seen in training."""
        X = self._check_fitted_input(X, "X")
        y = _check_labels(y, X.shape[0], "y")
        _encode(y, self.classes_, "y")
        return (self.predict(X) == y[None, :]).mean(axis=1)


# ------------------------------------------------------------------------------------------ single-matrix estimator

class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2 logistic regression on one (n, d) matrix with the batched solver; a scikit-learn classifier.

    With ``Cs`` (a sequence) every value is fitted at once and the one with the best validation accuracy is kept
    (ties: smaller C), which needs ``X_val``/``y_val`` in ``fit``; otherwise ``C`` is used. Inputs are standardised
    on the training rows. ``coef_`` (K, d) and ``intercept_`` (K,) are expressed on the original features, as
    sklearn's (K = 1 for two classes). ``random_state`` is accepted for a uniform interface (the solver is
    deterministic).
    """

    def __init__(self, C: float = 1.0, Cs: Sequence[float] | None = None, max_iter: int = 200, tol: float = 1e-6,
                 device: str = "cpu", dtype: Any = "float32", random_state: int | None = 0) -> None:
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> LogisticProbe:
        """Fit on ``X`` (n, d); with ``Cs``, choose C on ``X_val`` (n_val, d)."""
        X = _check_features(X, "X", 2)
        grid = (self.C,) if self.Cs is None else self.Cs
        Xv = None if X_val is None else _check_features(X_val, "X_val", 2)[:, None, :]
        probe = LayerwiseProbe(Cs=grid, max_iter=self.max_iter, tol=self.tol, layer_chunk=1, device=self.device,
                               dtype=self.dtype, random_state=self.random_state)
        probe.fit(X[:, None, :], y, Xv, y_val)
        self.probe_ = probe
        self.classes_ = probe.classes_
        self.n_features_in_ = X.shape[1]
        self.C_ = float(probe.best_C_[0])
        self.val_score_ = float(probe.val_scores_[0])
        self.n_iter_ = probe.n_iter_[0]
        scaled = probe.coef_[0] / probe.scale_[0][:, None]
        self.coef_ = scaled.T.copy()
        self.intercept_ = probe.intercept_[0] - probe.mean_[0] @ scaled
        return self

    def _as_stack(self, X: Any) -> np.ndarray:
        if not hasattr(self, "probe_"):
            raise ValueError("this LogisticProbe is not fitted yet; call fit(X, y) first")
        X = _check_features(X, "X", 2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the probe was fitted on {self.n_features_in_}")
        return X[:, None, :]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, (n,)."""
        return self.probe_.predict(self._as_stack(X))[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        return self.probe_.predict_proba(self._as_stack(X))[0]

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits on the original features: (n,) for two classes, else (n, n_classes)."""
        X = self._as_stack(X)[:, 0].astype(np.float32)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; ``y`` must hold only labels seen in training."""
        return float(self.probe_.score(self._as_stack(X), y)[0])


# --------------------------------------------------------------------------------------------------- the MLP head

class MLP(nn.Module):
    """d -> hidden... -> n_classes with ReLU and dropout after each hidden layer."""

    def __init__(self, d: int, hidden: Sequence[int], dropout: Sequence[float], n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width, p in zip(hidden, dropout):
            layers += [nn.Linear(d, int(width)), nn.ReLU(), nn.Dropout(float(p))]
            d = int(width)
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPHead(ClassifierMixin, BaseEstimator):
    """The authors' classifier: d -> 1024 -> 256 -> C, ReLU, dropout 0.5/0.3, Adam, cross-entropy, on standardised
    inputs (training mean/std).

    ``fit(X, y, eval_sets={"val": (X_val, y_val), "test": (X_test, y_test)})`` records the accuracy on each
    evaluation set after every epoch in ``history_`` (columns epoch, set, accuracy; epochs counted from 1) and the
    mean training loss per epoch in ``loss_curve_``. ``select_epoch="last"`` keeps the weights after the last epoch;
    ``"val"`` restores those of the epoch with the best "val" accuracy (ties: earliest). ``selected_epoch_`` says
    which. Deterministic for a ``random_state`` on CPU: the seed drives initialisation, dropout and shuffling
    without touching torch's global random state.
    """

    def __init__(self, hidden: Sequence[int] = (1024, 256), dropout: Sequence[float] = (0.5, 0.3),
                 lr: float = 1e-4, batch_size: int = 1024, epochs: int = 100, weight_decay: float = 0.0,
                 select_epoch: str = "last", device: str = "cpu", random_state: int = 0,
                 progress: bool = False) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.select_epoch = select_epoch
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _check_params(self) -> None:
        if len(tuple(self.hidden)) != len(tuple(self.dropout)):
            raise ValueError(f"hidden {tuple(self.hidden)} and dropout {tuple(self.dropout)} need one entry per "
                             "hidden layer each")
        if any(int(w) < 1 for w in self.hidden):
            raise ValueError(f"hidden widths must be positive integers, got {tuple(self.hidden)}")
        if any(not 0.0 <= float(p) < 1.0 for p in self.dropout):
            raise ValueError(f"dropout rates must be in [0, 1), got {tuple(self.dropout)}")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        _check_positive_int(self.batch_size, "batch_size")
        _check_positive_int(self.epochs, "epochs")
        if self.select_epoch not in ("last", "val"):
            raise ValueError(f"select_epoch must be 'last' or 'val', got {self.select_epoch!r}")

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return ((X.astype(np.float32) - self.mean_) / self.scale_).astype(np.float32)

    def fit(self, X: Any, y: Any, eval_sets: dict[str, tuple[Any, Any]] | None = None) -> MLPHead:
        """Train for ``epochs`` epochs on ``X`` (n, d), scoring every evaluation set after each epoch."""
        self._check_params()
        X = _check_features(X, "X", 2)
        y = _check_labels(y, X.shape[0], "y")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf; clean the features first")
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"y has a single class {classes.tolist()}; a classifier needs at least two")
        eval_sets = dict(eval_sets or {})
        if self.select_epoch == "val" and "val" not in eval_sets:
            raise ValueError("select_epoch='val' needs eval_sets={'val': (X_val, y_val), ...}")
        self.classes_, self.n_features_in_ = classes, X.shape[1]
        self.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = X.std(axis=0, dtype=np.float64)
        self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
        evals = {}
        for name, pair in eval_sets.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"eval_sets[{name!r}] must be a pair (X, y)")
            Xe = _check_features(pair[0], f"eval_sets[{name!r}] X", 2)
            if Xe.shape[1] != X.shape[1]:
                raise ValueError(f"eval_sets[{name!r}] X has {Xe.shape[1]} features but X has {X.shape[1]}")
            ye = _encode(_check_labels(pair[1], Xe.shape[0], f"eval_sets[{name!r}] y"), classes,
                         f"eval_sets[{name!r}] y")
            evals[name] = (self._standardise(Xe), ye)
        device = torch.device(self.device)
        fork = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork, device_type="cuda"):
            torch.manual_seed(int(self.random_state))
            self._train(self._standardise(X), _encode(y, classes, "y"), evals, device)
        return self

    def _train(self, X: np.ndarray, y: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]],
               device: torch.device) -> None:
        net = MLP(X.shape[1], tuple(self.hidden), tuple(self.dropout), self.classes_.size).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        gen = torch.Generator().manual_seed(int(self.random_state))
        n, bs = X.shape[0], int(self.batch_size)
        rows, losses = [], []
        best_acc, best_state, best_epoch = -math.inf, None, 0
        for epoch in tqdm(range(1, int(self.epochs) + 1), desc="MLP epochs", disable=not self.progress):
            net.train()
            order = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                opt.zero_grad()
                loss = F.cross_entropy(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
            for name, (Xe, ye) in evals.items():
                acc = float(np.mean(self._logits(net, Xe, device).argmax(axis=1) == ye))
                rows.append({"epoch": epoch, "set": name, "accuracy": acc})
                if name == "val" and acc > best_acc:
                    best_acc, best_epoch = acc, epoch
                    if self.select_epoch == "val":
                        best_state = copy.deepcopy(net.state_dict())
        if self.select_epoch == "val" and best_state is not None:
            net.load_state_dict(best_state)
            self.selected_epoch_ = best_epoch
        else:
            self.selected_epoch_ = int(self.epochs)
        self.history_ = pd.DataFrame(rows, columns=["epoch", "set", "accuracy"])
        self.loss_curve_ = losses
        self.network_ = net.eval()

    @staticmethod
    def _logits(net: nn.Module, X: np.ndarray, device: torch.device) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, X.shape[0], _PREDICT_BATCH):
                out.append(net(torch.from_numpy(X[start:start + _PREDICT_BATCH]).to(device)).float().cpu().numpy())
        return np.concatenate(out, axis=0)

    def _checked(self, X: Any) -> np.ndarray:
        if not hasattr(self, "network_"):
            raise ValueError("this MLPHead is not fitted yet; call fit(X, y) first")
        X = _check_features(X, "X", 2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the head was fitted on {self.n_features_in_}")
        return self._standardise(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        logits = self._logits(self.network_, self._checked(X), torch.device(self.device))
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, (n,)."""
        logits = self._logits(self.network_, self._checked(X), torch.device(self.device))
        return self.classes_[logits.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; ``y`` must hold only labels seen in training."""
        Xs = self._checked(X)
        y = _check_labels(y, Xs.shape[0], "y")
        _encode(y, self.classes_, "y")
        return float(np.mean(self.predict(X) == y))
