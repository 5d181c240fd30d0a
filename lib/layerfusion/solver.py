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

Convergence (``fit_lbfgs``): scipy's L-BFGS-B stopping rules as scikit-learn sets them (``gtol = tol`` on the largest
absolute gradient entry, ``ftol = 64 eps`` on the relative decrease) and its memory refresh after a failed line
search, but only the gradient test counts as converged; every fit reports its iterations, final gradient and stop
reason (``Fit``, ``STOP_REASONS``). ``fit_path`` fits the C grid as a warm-started path (smallest C first), as
``LogisticRegressionCV`` does. ``choose_device`` is the rule behind the probes' ``device="auto"``.

The estimators built on it are in ``layerfusion.probe``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layerfusion import checks, scaling

__all__ = ["CHUNK_BYTES", "STOP_REASONS", "FTOL", "AUTO_CUDA_WORK", "Fit", "choose_device", "torch_dtype",
           "layer_chunk", "load_chunk", "moments", "logits", "fit_lbfgs", "fit_path", "fitted_logits", "probabilities",
           "positions"]

CHUNK_BYTES = 256 * 2**20
"""Working-set size (features and solver state) aimed at when ``layer_chunk`` is None (at least one layer a chunk)."""
_HISTORY = 10
_ARMIJO = 1e-4
_MAX_BACKTRACK = 30
_TORCH_READABLE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

STOP_REASONS = ("gradient", "small_decrease", "line_search", "max_iter")
"""Why a (layer, C) problem stopped, by the codes in ``Fit.reason``: only "gradient" (the largest absolute gradient
entry fell to ``tol``) counts as converged."""
FTOL = 64 * float(np.finfo(np.float64).eps)
"""Relative-decrease threshold: scikit-learn's lbfgs ``ftol`` (64 x float64 epsilon); the objective is accumulated
in float64 whatever the compute dtype, so float64 is the precision it is resolved at."""


@dataclass(frozen=True)
class Fit:
    """What ``fit_lbfgs`` returns for a chunk of B layers and nC values of C.

    ``theta`` (B, nC, K, d+1) parameters (last entry = intercept); ``n_iter`` (B, nC) L-BFGS iterations;
    ``reason`` (B, nC) codes into ``STOP_REASONS``; ``grad`` (B, nC) final largest absolute gradient entry of the
    mean objective; ``objective`` (B, nC) final mean objective (log-loss mean + 0.5 / (C n) ||W||^2).
    """

    theta: torch.Tensor
    n_iter: np.ndarray
    reason: np.ndarray
    grad: np.ndarray
    objective: np.ndarray

    @property
    def converged(self) -> np.ndarray:
        """(B, nC) whether each problem stopped on its gradient."""
        return self.reason == 0


AUTO_CUDA_WORK = 1e9
"""``choose_device("auto")`` sends a fit to CUDA only above this many multiply-adds per L-BFGS iteration
(n x layers x len(Cs) x outputs x d), and only with more than two classes: on an H200 a 52-class problem of
1,500 x 31 layers x 576 with 4 Cs (5.6e9) ran 2.6x faster than on 16 CPU cores, a binary problem of the same size
(1.1e8) 1.2x slower (shared/research/gpu-h200-2026-12-04.md). The threshold sits between them, on the CPU side."""


def choose_device(device: str | torch.device, n: int, layers: int, d: int, n_out: int, n_cs: int,
                  cuda_available: bool | None = None) -> torch.device:
    """The torch device a probe fit runs on: ``device`` itself unless it is "auto"; "auto" is CUDA when CUDA is
    available, the problem is multi-class (``n_out`` > 1) and one iteration's work ``n * layers * n_cs * n_out * d``
    is at least ``AUTO_CUDA_WORK``; CPU otherwise (binary and small problems lose to the transfers and launches)."""
    if isinstance(device, str) and device == "auto":
        if cuda_available is None:
            cuda_available = torch.cuda.is_available()
        work = float(n) * layers * n_cs * n_out * d
        return torch.device("cuda" if cuda_available and n_out > 1 and work >= AUTO_CUDA_WORK else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or another torch device, got {device!r}") from None


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
    direction, temporaries) and ``n_logits`` logits held about 10 times in float64 (line search). With many classes
    the state, not the features, is the larger part.
    """
    if chunk is not None:
        return checks.positive_int(chunk, "layer_chunk")
    per_layer = (X.shape[0] * X.shape[2] + (2 * _HISTORY + 10) * n_params) * itemsize + 10 * n_logits * 8
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


def _sq64(W: torch.Tensor) -> torch.Tensor:
    """Squared norm per problem in float64: the penalty's share of a line search's objective change is resolved
    like the loss's (in float32 its rounding, ~1e-10 of a step, stalled searches at gradients ~1e-4 with C = 0.01)."""
    W = W.double()
    return _dot(W, W)


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


def _objective(Z: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, w_sq: torch.Tensor,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean log-loss of float64 logits ``Z`` (B, n, nC, K) + 0.5 * lam * ``w_sq`` per problem (B, nC), in float64,
    and d(loss)/d(logits) * n (B, n, nC, K) in ``dtype`` (the compute dtype).

    Dividing sklearn's objective by n (lam = 1 / (C n)) leaves the minimiser unchanged and keeps values O(1). The
    logits are accumulated (Z + step * ZD) and the loss evaluated and summed in float64 (a few operations per logit,
    cheap beside the products with X, which stay in the compute dtype): with float32 logits the rounding of Z
    (relative 6e-8 of |z|) made objective differences below ~1e-9 noise, and line searches stalled at gradients
    near 1e-5; now an iteration's change is resolved to the rounding of the step's own logits.
    """
    Z64 = Z
    if Z.shape[3] == 1:
        z = Z64[..., 0]
        t = target.to(z.dtype)[None, :, None]
        point = F.softplus(z) - t * z
        G = (torch.sigmoid(z) - t).unsqueeze(-1)
    else:
        logp = torch.log_softmax(Z64, dim=-1)
        index = target.view(1, -1, 1, 1).expand(Z.shape[0], -1, Z.shape[2], 1)
        point = -logp.gather(-1, index).squeeze(-1)
        G = logp.exp_()
        G.scatter_add_(-1, index, torch.full_like(index, -1, dtype=G.dtype))
    return point.mean(dim=1) + 0.5 * lam[None, :] * w_sq.double(), G.to(dtype)


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
              tol: float, *, theta0: torch.Tensor | None = None, ftol: float = FTOL,
              keep_X: bool = False) -> Fit:
    """Fit every (layer, C) problem of one chunk: X (B, n, d) standardised, ``target`` (n,) class positions,
    starting from ``theta0`` (B, nC, K, d+1) or zero. X is overwritten (finished layers are compacted into it)
    unless ``keep_X``.

    Stopping rule per problem, scipy's L-BFGS-B as scikit-learn's ``LogisticRegression(solver="lbfgs")`` sets it:
    converged when the largest absolute gradient entry of the mean objective is <= ``tol`` (sklearn: ``gtol=tol``,
    on the same mean objective, ``l2_reg_strength = 1 / (C n)``); stopped, *unconverged*, when an iteration lowers
    the objective by <= ``ftol`` relative to ``max(abs(f_k), abs(f_k+1), 1)`` ("small_decrease", sklearn's
    ``ftol = 64 eps``; never tested on a problem's first iteration, whose step is a short steepest-descent probe),
    when the backtracking line search finds no lower objective even from a refreshed memory ("line_search": float
    precision reached before the gradient test passed; a first failure refreshes the problem's L-BFGS memory and
    restarts it from steepest descent, as scipy's L-BFGS-B does, since a stale curvature pair can point a direction
    no step along which descends enough), or after ``max_iter`` iterations ("max_iter"). The objective is
    accumulated in float64 from the compute-dtype logits, and its penalty from float64 norms (``_sq64``), so its
    decrease is resolved well below float32 epsilon and the small-decrease and stall tests fire only at float64
    level: only the gradient test counts as convergence, no exception is made.

    Each iteration reads X twice: once for the logits of the search direction (logits are linear in the
    parameters, so every backtracking step of the line search is computed from them without touching X) and once
    for the gradient. Finished layers are dropped from the batch once they make up a quarter of it, so the rest
    iterate on less data.
    """
    B, n, d = X.shape
    nC = len(Cs)
    lam = torch.as_tensor(1.0 / (np.asarray(Cs, dtype=np.float64) * n), dtype=X.dtype, device=X.device)
    lam64 = lam.double()
    if theta0 is None:
        theta = torch.zeros(B, nC, n_out, d + 1, dtype=X.dtype, device=X.device)
        Z = torch.zeros(B, n, nC, n_out, dtype=torch.float64, device=X.device)
    else:
        if tuple(theta0.shape) != (B, nC, n_out, d + 1):
            raise ValueError(f"theta0 has shape {tuple(theta0.shape)}, expected {(B, nC, n_out, d + 1)}")
        theta = theta0.to(device=X.device, dtype=X.dtype).clone()
        Z = logits(X, theta).double()
    out = torch.empty_like(theta)
    n_iter = np.zeros((B, nC), dtype=np.int64)
    reason = np.full((B, nC), STOP_REASONS.index("max_iter"), dtype=np.int8)
    grad = np.zeros((B, nC))
    objective = np.zeros((B, nC))
    ids = torch.arange(B, device=X.device)
    w_sq = _sq64(theta[..., :d])
    f, G = _objective(Z, target, lam64, w_sq, X.dtype)
    g = _gradient(X, theta, G, lam)
    gmax = g.abs().amax(dim=(2, 3))
    active = gmax > tol
    reason[~active.cpu().numpy()] = 0
    iters = torch.zeros(B, nC, dtype=torch.long, device=X.device)
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    rho: list[torch.Tensor] = []
    gamma = torch.ones(B, nC, dtype=X.dtype, device=X.device)
    fresh = torch.ones(B, nC, dtype=torch.bool, device=X.device)
    owned = not keep_X

    def record(sel: torch.Tensor | slice) -> None:
        """Copy the state of the batch rows ``sel`` into the outputs."""
        idx = ids[sel].cpu().numpy()
        out[ids[sel]] = theta[sel]
        n_iter[idx] = iters[sel].cpu().numpy()
        grad[idx] = gmax[sel].double().cpu().numpy()
        objective[idx] = f[sel].cpu().numpy()

    for _ in range(max_iter):
        done = ~active.any(dim=1)
        n_done = int(done.sum())
        if n_done == done.shape[0]:
            break
        if n_done and 4 * n_done >= done.shape[0]:
            record(done)
            if owned:
                X, order = _drop_layers(X, done)
            else:
                order = (~done).nonzero()[:, 0]
                X, owned = X[order], True
            theta, Z, w_sq, f, G, g, gmax, active, gamma, fresh, ids, iters = (
                a[order] for a in (theta, Z, w_sq, f, G, g, gmax, active, gamma, fresh, ids, iters))
            S, Y, rho = [s[order] for s in S], [y[order] for y in Y], [r[order] for r in rho]
        direction, slope = _direction(g, S, Y, rho, gamma)
        ZD = logits(X, direction).double()
        W, DW = theta[..., :d], direction[..., :d]
        wd, dd = _dot(W.double(), DW.double()), _sq64(DW)
        first = fresh
        step = torch.where(first, torch.clamp(1.0 / _dot(g, g).sqrt(), max=1.0), torch.ones_like(gamma))
        step = torch.where(active, step, torch.zeros_like(step))
        accepted = ~active
        slope64 = slope.double()
        f_new, G_new, Z_new = f, G, Z
        for _ in range(_MAX_BACKTRACK):
            Z_try = torch.addcmul(Z, step.double()[:, None, :, None], ZD)
            f_try, G_try = _objective(Z_try, target, lam64, w_sq + step.double() * (2 * wd + step.double() * dd),
                                        X.dtype)
            ok = ~accepted & torch.isfinite(f_try) & (f_try <= f + _ARMIJO * step.double() * slope64)
            pick = ok[:, None, :, None]
            f_new = torch.where(ok, f_try, f_new)
            G_new = torch.where(pick, G_try, G_new)
            Z_new = torch.where(pick, Z_try, Z_new)
            accepted |= ok
            if accepted.all():
                break
            step = torch.where(accepted, step, 0.5 * step)
        failed = active & ~accepted
        # scipy's L-BFGS-B on a failed line search: refresh the memory and restart from steepest descent; stop only
        # when a fresh memory fails too (the step is then below what the objective's precision resolves)
        restart = failed & ~fresh
        stalled = failed & fresh
        fresh = torch.where(active, restart, fresh)
        if restart.any():
            rho = [torch.where(restart, torch.zeros_like(r), r) for r in rho]
            gamma = torch.where(restart, torch.ones_like(gamma), gamma)
        step = torch.where(accepted & active, step, torch.zeros_like(step))
        s = _bc(step) * direction
        theta = theta + s
        w_sq = _sq64(theta[..., :d])
        g_new = _gradient(X, theta, G_new, lam)
        y = g_new - g
        sy, yy = _dot(s, y), _dot(y, y)
        valid = active & accepted & (sy > 1e-10 * yy) & (yy > 0)
        rho.append(torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy)))
        gamma = torch.where(valid, sy / torch.where(valid, yy, torch.ones_like(yy)), gamma)
        S.append(s)
        Y.append(y)
        if len(S) > _HISTORY:
            S.pop(0), Y.pop(0), rho.pop(0)
        iters += (active & accepted).long()
        gmax = torch.where(active, g_new.abs().amax(dim=(2, 3)), gmax)
        scale = torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        small = (f - f_new) <= ftol * scale
        by_grad = active & (gmax <= tol)
        by_stall = active & ~by_grad & stalled
        by_small = active & ~by_grad & ~failed & small & ~first
        for code, hit in ((0, by_grad), (1, by_small), (2, by_stall)):
            if hit.any():
                rows = hit.nonzero()
                reason[ids[rows[:, 0]].cpu().numpy(), rows[:, 1].cpu().numpy()] = code
        active = active & ~(by_grad | by_small | by_stall)
        f, G, g, Z = f_new, G_new, g_new, Z_new
    record(slice(None))
    return Fit(out, n_iter, reason, grad, objective)


def fit_path(X: torch.Tensor, target: torch.Tensor, n_out: int, Cs: np.ndarray, max_iter: int, tol: float, *,
             theta0: torch.Tensor | None = None, ftol: float = FTOL) -> Fit:
    """``fit_lbfgs`` along the C path with warm starts, as scikit-learn's ``LogisticRegressionCV``: the values of
    ``Cs`` (ascending) are fitted one after the other, each starting from the previous C's solution (the first from
    ``theta0[:, 0]`` when given, else zero), so each larger C starts near its optimum. Same result as one batched
    ``fit_lbfgs`` (the optimum does not depend on the start), fewer iterations; X is left intact."""
    Cs = np.asarray(Cs, dtype=np.float64)
    if np.any(np.diff(Cs) <= 0):
        raise ValueError(f"fit_path needs Cs in ascending order, got {Cs.tolist()}")
    start = None if theta0 is None else theta0[:, :1]
    parts = []
    for j, C in enumerate(Cs):
        part = fit_lbfgs(X, target, n_out, Cs[j:j + 1], max_iter, tol, theta0=start, ftol=ftol, keep_X=True)
        parts.append(part)
        start = part.theta
    return Fit(torch.cat([p.theta for p in parts], dim=1), *(np.concatenate([getattr(p, a) for p in parts], axis=1)
                                                             for a in ("n_iter", "reason", "grad", "objective")))


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
