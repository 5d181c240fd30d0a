"""The batched L-BFGS solver behind the linear probes: L2 logistic regression on many layers and many C at once.

Written by hand because scikit-learn cannot do this job: its ``LogisticRegression`` fits one matrix and one ``C``
per call, on CPU, so probing every layer of a model over a grid of ``C`` means layers x Cs separate fits that each
read their features again. Here the weights have shape (layers, Cs, classes, d + 1) and one L-BFGS loop advances
every (layer, C) problem together on CPU or GPU: each problem keeps its own curvature history and line search, so
the batch converges like separate fits, but each layer's features are read once per iteration for all ``C``.

The objective per problem is scikit-learn's ``LogisticRegression(C=C)``: the sum of log-losses plus
``0.5 / C * ||W||^2`` with the intercept unpenalised (binomial with one weight vector for two classes, multinomial
with one per class otherwise), on features standardised with the training mean and standard deviation
(``moments``, the engine's standardisation rule in torch), so results agree with
``make_pipeline(StandardScaler(), LogisticRegression(C=C))``. Layers are processed in chunks (``layer_chunk``),
each converted to the compute dtype only while it is fitted or scored (``load_chunk``; the cache stores float16).

The estimators built on it are in ``layerfusion.probe``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layerfusion import checks, scaling

__all__ = ["CHUNK_BYTES", "torch_dtype", "layer_chunk", "load_chunk", "moments", "logits", "fit_lbfgs",
           "fitted_logits", "probabilities", "positions"]

CHUNK_BYTES = 256 * 2**20
"""Working-set size (features and solver state) aimed at when ``layer_chunk`` is None (at least one layer a chunk)."""
_HISTORY = 10
_ARMIJO = 1e-4
_MAX_BACKTRACK = 30
_TORCH_READABLE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype: Any) -> torch.dtype:
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


def layer_chunk(X: np.ndarray, chunk: int | None, itemsize: int, n_params: int = 0, n_logits: int = 0) -> int:
    """Layers per chunk: the explicit value, else as many as fit in ``CHUNK_BYTES``.

    A layer's working set is its features (n x d) plus, when fitting, the solver state of its problems: ``n_params``
    parameters (all values of C and outputs) held about ``2 * _HISTORY + 10`` times (L-BFGS history, gradients,
    direction, temporaries) and ``n_logits`` logits held about 10 times (line search). With many classes the state,
    not the features, is the larger part.
    """
    if chunk is not None:
        return checks.positive_int(chunk, "layer_chunk")
    per_layer = (X.shape[0] * X.shape[2] + (2 * _HISTORY + 10) * n_params + 10 * n_logits) * itemsize
    return max(1, min(X.shape[1], CHUNK_BYTES // max(per_layer, 1)))


def load_chunk(X: np.ndarray, start: int, stop: int, device: torch.device, dtype: torch.dtype,
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


def moments(Xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-feature mean and scale of a chunk (layers, n, d): the standard deviation (ddof=0), with
    near-constant features at scale 1 by ``scaling.scales`` (the probes' ``"magnitude"`` floor).

    Computed one layer at a time so the temporary is one layer, not the chunk.
    """
    mean = Xc.mean(dim=1, keepdim=True)
    var = torch.stack([(Xc[i] - mean[i]).square_().mean(dim=0, keepdim=True) for i in range(Xc.shape[0])])
    return mean, scaling.scales(mean, var, Xc.shape[1], floor="magnitude")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product per (layer, C) problem of two parameter-shaped tensors (B, nC, K, d+1) -> (B, nC)."""
    return (a * b).sum(dim=(2, 3))


def _bc(v: torch.Tensor) -> torch.Tensor:
    """(B, nC) -> (B, nC, 1, 1), to scale parameter-shaped tensors per problem."""
    return v[:, :, None, None]


def logits(X: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
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


def fit_lbfgs(X: torch.Tensor, target: torch.Tensor, n_out: int, Cs: np.ndarray, max_iter: int,
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
        ZD = logits(X, direction)
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


def fitted_logits(Xc: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
    """Logits (B, n, K) of standardised features (B, n, d) under coef (B, d, K) and intercept (B, K)."""
    return torch.baddbmm(intercept[:, None, :], Xc, coef)


def probabilities(z: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits ``z`` (..., K); one binomial logit becomes two columns."""
    if z.shape[-1] == 1:
        p = torch.sigmoid(z)
        return torch.cat([1.0 - p, p], dim=-1)
    return torch.softmax(z, dim=-1)


def positions(z: torch.Tensor) -> torch.Tensor:
    """Predicted class positions from logits ``z`` (..., K); a binomial logit > 0 means the second class (as
    sklearn)."""
    if z.shape[-1] == 1:
        return (z[..., 0] > 0).long()
    return z.argmax(dim=-1)


# ------------------------------------------------------------------------------------------------ all-layer probe
