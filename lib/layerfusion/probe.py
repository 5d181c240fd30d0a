"""Linear probes on frozen embeddings: L2 logistic regression on every layer at once, and on one matrix.

``LayerwiseProbe`` fits multinomial logistic regression with an L2 penalty on all layers and all values of ``C`` as
one batched problem (``layerfusion.solver``) and keeps, per layer, the ``C`` with the best validation accuracy, or
the best cross-validated accuracy (``cv``). Its
objective is scikit-learn's ``LogisticRegression(C=C)`` on features standardised with the training mean and standard
deviation, so results agree with ``make_pipeline(StandardScaler(), LogisticRegression(C=C))``. ``LogisticProbe`` is
the same solver on one (n, d) matrix as a scikit-learn classifier (greedy layer selection and fusion search use it
on concatenated features). The paper's MLP head is ``layerfusion.heads.MLPHead``.

Arrays in and out are numpy; torch stays inside the solver and these estimators.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, check_cv
from tqdm.auto import tqdm

from layerfusion import checks, solver

__all__ = ["DEFAULT_CS", "LayerwiseProbe", "LogisticProbe"]

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
"""The default grid of inverse penalty strengths."""


def _check_Cs(Cs: Any) -> np.ndarray:
    """``Cs`` as a sorted float64 array of distinct positive finite values."""
    Cs = np.atleast_1d(np.asarray(Cs, dtype=np.float64))
    if Cs.ndim != 1 or Cs.size == 0 or not np.all(np.isfinite(Cs)) or np.any(Cs <= 0):
        raise ValueError(f"Cs must be a non-empty sequence of positive finite numbers, got {Cs.tolist()}")
    if np.unique(Cs).size != Cs.size:
        raise ValueError(f"Cs has repeated values {Cs.tolist()}; list each C once")
    return np.sort(Cs)


def _raw(theta: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Parameters (B, nC, K, d+1) fitted on features standardised by ``mean``/``std`` (B, 1, d), re-expressed on
    the raw features (float64): w / std per feature, intercept b - (w / std) . mean."""
    t = theta.double().cpu().numpy()
    m, s = mean.double().cpu().numpy()[:, 0], std.double().cpu().numpy()[:, 0]
    w = t[..., :-1] / s[:, None, None, :]
    b = t[..., -1] - np.einsum("bckd,bd->bck", w, m)
    return np.concatenate([w, b[..., None]], axis=-1)


def _standardised(raw: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_raw``: raw-feature parameters (B, nC, K, d+1) on features standardised by ``mean``/``std``,
    as a tensor on their device and dtype: w * std, intercept b + w . mean."""
    m, s = mean.double().cpu().numpy()[:, 0], std.double().cpu().numpy()[:, 0]
    w = raw[..., :-1]
    b = raw[..., -1] + np.einsum("bckd,bd->bck", w, m)
    out = np.concatenate([w * s[:, None, None, :], b[..., None]], axis=-1)
    return torch.as_tensor(out, dtype=mean.dtype, device=mean.device)


class LayerwiseProbe(BaseEstimator):
    """L2 logistic regression on every layer at once, ``C`` chosen per layer on held-out items.

    Parameters: ``Cs`` the grid of inverse penalty strengths (as sklearn's ``C``); ``max_iter`` L-BFGS iterations
    per (layer, C); ``tol`` stopping tolerance (see ``solver.fit_lbfgs``); ``cv`` None to choose on validation data
    passed to ``fit``, else cross-validation: an int (that many stratified folds, shuffled with ``random_state``) or
    a scikit-learn splitter (``StratifiedKFold(5)`` for scikit-learn's unshuffled folds); ``layer_chunk`` layers
    converted to float32 and fitted together (None: as many as fit in 256 MiB with their solver state); ``device``
    torch device ("cpu", "cuda") or "auto" (``solver.choose_device``: CUDA for large multi-class problems when
    available, else CPU); ``dtype`` compute precision ("float32" or "float64"); ``random_state`` the fold
    shuffle (the solver itself, deterministic start and line search, has no randomness); ``progress`` shows a
    bar over chunks; ``warm_start`` fits the C grid as a path (smallest C first, each next C started from the
    previous solution, as ``LogisticRegressionCV``) and, with ``cv``, starts each refit from the mean of the folds'
    solutions at the chosen C (mapped to the refit's standardisation); False fits every C from zero at once. Both
    reach the same optimum (the objective is strictly convex); warm starts take fewer iterations.

    With ``cv``, ``fit(X, y)`` works as scikit-learn's ``LogisticRegressionCV``: every (layer, C) is fitted on each
    fold's training rows and scored on its held-out rows, C is chosen per layer by out-of-fold accuracy, and every
    layer is refitted on all rows with its chosen C. Ties between values of ``C`` go to the smaller ``C`` (the
    stronger penalty, the simpler model) in both modes.

    Fitted attributes (L = layers; the selection items are the validation items, or every row out of fold):
    ``classes_``, ``Cs_`` (sorted grid), ``best_C_`` (L,), ``val_scores_`` (L,) selection accuracy at the chosen
    C, ``val_scores_per_C_`` (L, len(Cs)), ``val_predictions_`` (L, n_sel) at the chosen C,
    ``selection_correct_`` (L, len(Cs), n_sel) whether each (layer, C) got each selection item right (what
    ``select.selection_frequencies`` resamples), ``n_splits_`` (0 without ``cv``), ``n_iter_``, ``grad_norm_``
    (final largest absolute gradient entry) and ``stop_reason_`` (``solver.STOP_REASONS``) (L, len(Cs)) of the fits
    behind ``coef_`` (with ``cv``: the refit, only the chosen C's column filled: 0, NaN, ""), ``cv_n_iter_``,
    ``cv_grad_norm_``, ``cv_stop_reason_`` (n_splits, L, len(Cs)) of the fold fits, ``n_fits_`` every (layer, C)
    problem solved (folds and refit), ``n_unconverged_`` those that stopped for any reason but a small gradient
    and ``unconverged_`` one (fit, layer, C, reason, grad_norm) tuple for each (a ``ConvergenceWarning`` names
    them), ``device_`` the device used, ``coef_`` (L, d, K) and ``intercept_`` (L, K) on standardised features
    (K = 1 for two classes, else the number of classes), ``mean_`` and ``scale_`` (L, d) the training
    standardisation (stored in float64 when ``dtype="float64"``, else float32).

    A scikit-learn estimator in its API (parameters, cloning, tags), not a drop-in classifier: ``X`` is (n, L, d) and
    every method answers per layer, so scikit-learn's data checks run on ``LogisticProbe``, this solver on one layer.
    """

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 200, tol: float = 1e-4,
                 cv: int | Any | None = None, layer_chunk: int | None = None, device: str = "auto",
                 dtype: Any = "float32", random_state: int | None = 0, progress: bool = False,
                 warm_start: bool = True) -> None:
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.cv = cv
        self.layer_chunk = layer_chunk
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.progress = progress
        self.warm_start = warm_start

    def fit(self, X_train: Any, y_train: Any, X_val: Any = None, y_val: Any = None) -> LayerwiseProbe:
        """Fit every (layer, C) on ``X_train`` (n, L, d); pick C per layer on ``X_val`` (n_val, L, d), or by
        cross-validation on ``X_train`` when ``cv`` is set (then pass no validation data).

        Without ``cv``, validation data may be left out only when ``Cs`` holds a single value (then ``val_scores_``
        is NaN).
        """
        Cs = _check_Cs(self.Cs)
        checks.positive_int(self.max_iter, "max_iter")
        if not float(self.tol) > 0:
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")
        X = checks.features(X_train, "X_train", 3)
        y, classes = checks.class_labels(y_train, "y_train", X.shape[0])
        codes = checks.encode(y, classes, "y_train")
        has_val = X_val is not None or y_val is not None
        if self.cv is not None and has_val:
            raise ValueError("pass validation data (X_val, y_val) or set cv, not both: with cv the probe chooses C "
                             "by cross-validation on X_train")
        n, L, d = X.shape
        self.classes_, self.Cs_, self.n_features_in_, self.n_layers_in_ = classes, Cs, d, L
        n_out = 1 if classes.size == 2 else classes.size
        store = np.float64 if solver.torch_dtype(self.dtype) == torch.float64 else np.float32
        self.coef_ = np.zeros((L, d, n_out), dtype=store)
        self.intercept_ = np.zeros((L, n_out), dtype=store)
        self.mean_ = np.zeros((L, d), dtype=store)
        self.scale_ = np.ones((L, d), dtype=store)
        self.n_iter_ = np.zeros((L, Cs.size), dtype=np.int64)
        self.grad_norm_ = np.full((L, Cs.size), np.nan)
        self.stop_reason_ = np.full((L, Cs.size), "", dtype=object)
        self.cv_n_iter_ = np.zeros((0, L, Cs.size), dtype=np.int64)
        self.cv_grad_norm_ = np.zeros((0, L, Cs.size))
        self.cv_stop_reason_ = np.zeros((0, L, Cs.size), dtype=object)
        self.n_fits_, self.n_unconverged_, self.unconverged_ = 0, 0, []
        self.device_ = str(solver.choose_device(self.device, n, L, d, n_out, Cs.size))
        if self.cv is not None:
            positions, sel_codes = self._cross_validate(X, y, codes, Cs), codes
        elif has_val:
            if X_val is None or y_val is None:
                raise ValueError("pass both X_val and y_val, or neither")
            Xv = checks.features(X_val, "X_val", 3)
            if Xv.shape[1:] != X.shape[1:]:
                raise ValueError(f"X_val has (layers, d) = {Xv.shape[1:]} but X_train has {X.shape[1:]}; "
                                 "pass the same layers of the same model")
            sel_codes = checks.encode(checks.labels(y_val, "y_val", Xv.shape[0]), classes, "y_val")
            positions = np.empty((L, Cs.size, Xv.shape[0]), dtype=np.int64)
        elif Cs.size > 1:
            raise ValueError(f"X_val and y_val are needed to choose among Cs={Cs.tolist()}; pass validation data, "
                             "set cv, or give a single C")
        else:
            sel_codes, positions = np.empty(0, dtype=np.int64), np.empty((L, 1, 0), dtype=np.int64)
        if self.cv is None:
            self.n_splits_ = 0
            for start, stop, fit, mean, std in self._fit_chunks(X, codes, np.arange(L), Cs, "fit"):
                best = np.zeros(stop - start, dtype=np.int64)
                if has_val:
                    positions[start:stop] = self._held_out(Xv, start, stop, fit.theta, mean, std, "X_val")
                    best = (positions[start:stop] == sel_codes).mean(axis=2).argmax(axis=1)
                self._keep(np.arange(start, stop), fit.theta, best, mean, std)
                self.n_iter_[start:stop] = fit.n_iter
                self.grad_norm_[start:stop] = fit.grad
                self.stop_reason_[start:stop] = np.asarray(solver.STOP_REASONS, dtype=object)[fit.reason]
        self.selection_correct_ = positions == sel_codes
        self.val_scores_per_C_ = self.selection_correct_.mean(axis=2) if sel_codes.size else np.full((L, 1), np.nan)
        best = np.nanargmax(self.val_scores_per_C_, axis=1) if sel_codes.size else np.zeros(L, dtype=np.int64)
        self.best_C_ = Cs[best]
        self.val_scores_ = np.take_along_axis(self.val_scores_per_C_, best[:, None], axis=1)[:, 0]
        self.val_predictions_ = classes[np.take_along_axis(positions, best[:, None, None], axis=1)[:, 0]]
        if self.n_unconverged_:
            layers = sorted({u[1] for u in self.unconverged_})
            reasons = sorted({u[3] for u in self.unconverged_})
            warnings.warn(f"LayerwiseProbe: {self.n_unconverged_} of {self.n_fits_} (layer, C) fits stopped before "
                          f"the largest gradient entry reached tol={self.tol} ({', '.join(reasons)}) on layers "
                          f"{layers}; raise max_iter (max_iter={self.max_iter}) or loosen tol",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _fit_chunks(self, X: np.ndarray, codes: np.ndarray, layers: np.ndarray, Cs: np.ndarray, name: str,
                    start_raw: np.ndarray | None = None
                    ) -> Iterator[tuple[int, int, solver.Fit, torch.Tensor, torch.Tensor]]:
        """Fit every (layer, C) of ``X[:, layers]`` on standardised rows, a chunk of layers at a time: yields
        (start, stop) positions in ``layers``, the ``solver.Fit`` and the chunk's mean and scale.

        ``start_raw`` (len(layers), len(Cs), K, d+1), float64, are starting parameters on the raw features (weights
        per raw unit, intercept at zero input); each chunk converts them to its own standardisation. Every problem
        that stops unconverged is recorded under ``name`` (the fold or "refit"/"fit").
        """
        dtype, device = solver.torch_dtype(self.dtype), torch.device(self.device_)
        if layers.size != X.shape[1]:
            X = X[:, layers]
        n, L, d = X.shape
        n_out = self.coef_.shape[2]
        target = torch.as_tensor(codes, device=device)
        chunk = solver.layer_chunk(X, self.layer_chunk, torch.empty(0, dtype=dtype).element_size(),
                                   n_params=Cs.size * n_out * (d + 1), n_logits=n * Cs.size * n_out)
        for start in tqdm(range(0, L, chunk), desc="probe chunks", disable=not self.progress):
            stop = min(start + chunk, L)
            Xc = solver.load_chunk(X, start, stop, device, dtype, "X_train")
            mean, std = solver.moments(Xc)
            Xc.sub_(mean).div_(std)
            theta0 = None if start_raw is None else _standardised(start_raw[start:stop], mean, std)
            if self.warm_start:
                fit = solver.fit_path(Xc, target, n_out, Cs, int(self.max_iter), float(self.tol), theta0=theta0)
            else:
                fit = solver.fit_lbfgs(Xc, target, n_out, Cs, int(self.max_iter), float(self.tol), theta0=theta0)
            del Xc
            self.n_fits_ += fit.reason.size
            for i, j in zip(*np.nonzero(~fit.converged)):
                self.n_unconverged_ += 1
                self.unconverged_.append((name, int(layers[start + i]), float(Cs[j]),
                                          solver.STOP_REASONS[fit.reason[i, j]], float(fit.grad[i, j])))
            yield start, stop, fit, mean, std

    def _held_out(self, X: np.ndarray, start: int, stop: int, theta: torch.Tensor, mean: torch.Tensor,
                  std: torch.Tensor, arg: str) -> np.ndarray:
        """Predicted class positions (layers, Cs, n) of held-out rows ``X`` under every (layer, C) of a chunk."""
        Xc = solver.load_chunk(X, start, stop, torch.device(self.device_), solver.torch_dtype(self.dtype), arg)
        return solver.positions(solver.logits(Xc.sub_(mean).div_(std), theta)).cpu().numpy().transpose(0, 2, 1)

    def _keep(self, layers: np.ndarray, theta: torch.Tensor, best: np.ndarray, mean: torch.Tensor,
              std: torch.Tensor) -> None:
        """Store the parameters of C position ``best`` (one per layer) and the standardisation of ``layers``."""
        rows = torch.arange(len(layers), device=theta.device)
        chosen = theta[rows, torch.as_tensor(best, device=theta.device)]
        d = self.coef_.shape[1]
        self.coef_[layers] = chosen[..., :d].transpose(1, 2).cpu().numpy()
        self.intercept_[layers] = chosen[..., d].cpu().numpy()
        self.mean_[layers] = mean[:, 0].cpu().numpy()
        self.scale_[layers] = std[:, 0].cpu().numpy()

    def _cross_validate(self, X: np.ndarray, y: np.ndarray, codes: np.ndarray, Cs: np.ndarray) -> np.ndarray:
        """Out-of-fold predicted positions (L, Cs, n) of every (layer, C), then the refit of every layer on all rows
        with its chosen C (layers grouped by C, so each layer is fitted once)."""
        if isinstance(self.cv, numbers.Integral) and not isinstance(self.cv, bool):
            splitter = StratifiedKFold(n_splits=checks.positive_int(self.cv, "cv"), shuffle=True,
                                       random_state=self.random_state)
        else:
            splitter = check_cv(self.cv, y, classifier=True)
        n, L, d = X.shape
        positions = np.full((L, Cs.size, n), -1, dtype=np.int64)
        raw_sum = np.zeros((L, Cs.size, self.coef_.shape[2], d + 1)) if self.warm_start else None
        n_iter, grad, reason = [], [], []
        self.n_splits_ = 0
        for train, held in splitter.split(np.zeros((n, 1)), y):
            self.n_splits_ += 1
            X_held = X[held]
            n_iter.append(np.zeros((L, Cs.size), dtype=np.int64))
            grad.append(np.zeros((L, Cs.size)))
            reason.append(np.zeros((L, Cs.size), dtype=np.int8))
            for start, stop, fit, mean, std in self._fit_chunks(X[train], codes[train], np.arange(L), Cs,
                                                                f"fold {self.n_splits_}"):
                positions[start:stop, :, held] = self._held_out(X_held, start, stop, fit.theta, mean, std, "X_train")
                n_iter[-1][start:stop], grad[-1][start:stop], reason[-1][start:stop] = fit.n_iter, fit.grad, fit.reason
                if raw_sum is not None:
                    raw_sum[start:stop] += _raw(fit.theta, mean, std)
        if (positions < 0).any():
            raise ValueError(f"cv={self.cv!r} left some rows out of every held-out fold; use a splitter whose "
                             "held-out folds cover every row once (k-fold)")
        self.cv_n_iter_, self.cv_grad_norm_ = np.stack(n_iter), np.stack(grad)
        self.cv_stop_reason_ = np.asarray(solver.STOP_REASONS, dtype=object)[np.stack(reason)]
        best = (positions == codes).mean(axis=2).argmax(axis=1)
        for c in np.unique(best):
            layers = np.flatnonzero(best == c)
            start_raw = None if raw_sum is None else raw_sum[layers, c:c + 1] / self.n_splits_
            for start, stop, fit, mean, std in self._fit_chunks(X, codes, layers, Cs[c:c + 1], "refit", start_raw):
                rows = layers[start:stop]
                self._keep(rows, fit.theta, np.zeros(stop - start, dtype=np.int64), mean, std)
                self.n_iter_[rows, c] = fit.n_iter[:, 0]
                self.grad_norm_[rows, c] = fit.grad[:, 0]
                self.stop_reason_[rows, c] = np.asarray(solver.STOP_REASONS, dtype=object)[fit.reason[:, 0]]
        return positions

    def _check_fitted_input(self, X: Any, arg: str) -> np.ndarray:
        checks.fitted(self, "fit(X_train, y_train, X_val, y_val)")
        X = checks.features(X, arg, 3)
        if X.shape[1:] != (self.n_layers_in_, self.n_features_in_):
            raise ValueError(f"{arg} has (layers, d) = {X.shape[1:]} but the probe was fitted on "
                             f"{(self.n_layers_in_, self.n_features_in_)}")
        return X

    def _chunked_logits(self, X: np.ndarray, arg: str) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(start, stop, logits (layers, n, K)) per chunk of layers of ``X``."""
        dtype, device = solver.torch_dtype(self.dtype), torch.device(self.device_)
        chunk = solver.layer_chunk(X, self.layer_chunk, torch.empty(0, dtype=dtype).element_size())
        for start in range(0, X.shape[1], chunk):
            stop = min(start + chunk, X.shape[1])
            Xc = solver.load_chunk(X, start, stop, device, dtype, arg)
            Xc.sub_(torch.as_tensor(self.mean_[start:stop, None], device=device, dtype=dtype))
            Xc.div_(torch.as_tensor(self.scale_[start:stop, None], device=device, dtype=dtype))
            coef = torch.as_tensor(self.coef_[start:stop], device=device, dtype=dtype)
            intercept = torch.as_tensor(self.intercept_[start:stop], device=device, dtype=dtype)
            yield start, stop, solver.fitted_logits(Xc, coef, intercept)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels per layer, (L, n)."""
        X = self._check_fitted_input(X, "X")
        out = np.empty((X.shape[1], X.shape[0]), dtype=self.classes_.dtype)
        for start, stop, logits in self._chunked_logits(X, "X"):
            out[start:stop] = self.classes_[solver.positions(logits).cpu().numpy()]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities per layer, (L, n, n_classes), columns in ``classes_`` order."""
        X = self._check_fitted_input(X, "X")
        out = np.empty((X.shape[1], X.shape[0], self.classes_.size), dtype=np.float32)
        for start, stop, logits in self._chunked_logits(X, "X"):
            out[start:stop] = solver.probabilities(logits).cpu().numpy()
        return out

    def score(self, X: Any, y: Any) -> np.ndarray:
        """Accuracy per layer, (L,); ``y`` must hold only labels seen in training."""
        X = self._check_fitted_input(X, "X")
        y = checks.labels(y, "y", X.shape[0])
        checks.encode(y, self.classes_, "y")
        return (self.predict(X) == y[None, :]).mean(axis=1)


# ------------------------------------------------------------------------------------------ single-matrix estimator

class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2 logistic regression on one (n, d) matrix with the batched solver; a scikit-learn classifier.

    With ``Cs`` (a sequence) every value is fitted at once and the one with the best validation accuracy is kept
    (ties: smaller C), which needs ``X_val``/``y_val`` in ``fit``; otherwise ``C`` is used. Inputs are standardised
    on the training rows. ``coef_`` (K, d) and ``intercept_`` (K,) are expressed on the original features, as
    sklearn's (K = 1 for two classes). ``random_state`` is accepted for a uniform interface (the solver is
    deterministic). ``warm_start`` and ``device`` as ``LayerwiseProbe``. Convergence: ``n_iter_``, ``grad_norm_``,
    ``stop_reason_`` (len(grid),) and ``n_unconverged_`` (a ``ConvergenceWarning`` is raised when it is not 0).
    """

    def __init__(self, C: float = 1.0, Cs: Sequence[float] | None = None, max_iter: int = 200, tol: float = 1e-4,
                 device: str = "auto", dtype: Any = "float32", random_state: int | None = 0,
                 warm_start: bool = True) -> None:
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> LogisticProbe:
        """Fit on ``X`` (n, d); with ``Cs``, choose C on ``X_val`` (n_val, d)."""
        X = checks.features(X, "X", 2)
        grid = (self.C,) if self.Cs is None else self.Cs
        Xv = None if X_val is None else checks.features(X_val, "X_val", 2)[:, None, :]
        probe = LayerwiseProbe(Cs=grid, max_iter=self.max_iter, tol=self.tol, layer_chunk=1, device=self.device,
                               dtype=self.dtype, random_state=self.random_state, warm_start=self.warm_start)
        probe.fit(X[:, None, :], y, Xv, y_val)
        self.probe_ = probe
        self.classes_ = probe.classes_
        self.n_features_in_ = X.shape[1]
        self.C_ = float(probe.best_C_[0])
        self.val_score_ = float(probe.val_scores_[0])
        self.n_iter_, self.grad_norm_, self.stop_reason_ = probe.n_iter_[0], probe.grad_norm_[0], probe.stop_reason_[0]
        self.n_unconverged_ = probe.n_unconverged_
        scaled = probe.coef_[0] / probe.scale_[0][:, None]
        self.coef_ = scaled.T.copy()
        self.intercept_ = probe.intercept_[0] - probe.mean_[0] @ scaled
        return self

    def _as_stack(self, X: Any) -> np.ndarray:
        checks.fitted(self)
        return checks.width(checks.features(X, "X", 2), self.n_features_in_, self)[:, None, :]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, (n,)."""
        X = self._as_stack(X)
        return self.probe_.predict(X)[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        X = self._as_stack(X)
        return self.probe_.predict_proba(X)[0]

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits on the original features: (n,) for two classes, else (n, n_classes)."""
        X = self._as_stack(X)[:, 0].astype(self.coef_.dtype)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; ``y`` must hold only labels seen in training."""
        X = self._as_stack(X)
        return float(self.probe_.score(X, y)[0])
