"""Linear probes on frozen embeddings: L2 logistic regression on every layer at once, and on one matrix.

``LayerwiseProbe`` fits multinomial logistic regression with an L2 penalty on all layers and all values of ``C`` as
one batched problem (``layerfusion.solver``) and keeps, per layer, the ``C`` with the best validation accuracy. Its
objective is scikit-learn's ``LogisticRegression(C=C)`` on features standardised with the training mean and standard
deviation, so results agree with ``make_pipeline(StandardScaler(), LogisticRegression(C=C))``. ``LogisticProbe`` is
the same solver on one (n, d) matrix as a scikit-learn classifier (greedy layer selection and fusion search use it
on concatenated features). The paper's MLP head is ``layerfusion.heads.MLPHead``.

Arrays in and out are numpy; torch stays inside the solver and these estimators.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
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


class LayerwiseProbe(BaseEstimator):
    """L2 logistic regression on every layer at once, ``C`` chosen per layer by validation accuracy.

    Parameters: ``Cs`` the grid of inverse penalty strengths (as sklearn's ``C``); ``max_iter`` L-BFGS iterations
    per (layer, C); ``tol`` stopping tolerance (see ``solver.fit_lbfgs``); ``layer_chunk`` layers converted to
    float32 and fitted together (None: as many as fit in 256 MiB with their solver state); ``device`` torch
    device ("cpu", "cuda"); ``dtype`` compute precision ("float32" or "float64"); ``random_state`` accepted for a
    uniform interface, unused because the solver (zero start, deterministic line search) has no randomness;
    ``progress`` shows a bar over chunks.

    Validation ties between values of ``C`` go to the smaller ``C`` (the stronger penalty, the simpler model).
    Fitted attributes (L = layers): ``classes_``, ``Cs_`` (sorted grid), ``best_C_`` (L,), ``val_scores_`` (L,),
    ``val_scores_per_C_`` (L, len(Cs)), ``val_predictions_`` (L, n_val), ``n_iter_`` (L, len(Cs)),
    ``coef_`` (L, d, K) and ``intercept_`` (L, K) on standardised features (K = 1 for two classes, else the number
    of classes), ``mean_`` and ``scale_`` (L, d) the training standardisation.

    A scikit-learn estimator in its API (parameters, cloning, tags), not a drop-in classifier: ``X`` is (n, L, d) and
    every method answers per layer, so scikit-learn's data checks run on ``LogisticProbe``, this solver on one layer.
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
        max_iter = checks.positive_int(self.max_iter, "max_iter")
        if not float(self.tol) > 0:
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")
        dtype, device = solver.torch_dtype(self.dtype), torch.device(self.device)
        X = checks.features(X_train, "X_train", 3)
        y, classes = checks.class_labels(y_train, "y_train", X.shape[0])
        has_val = X_val is not None or y_val is not None
        if has_val:
            if X_val is None or y_val is None:
                raise ValueError("pass both X_val and y_val, or neither")
            Xv = checks.features(X_val, "X_val", 3)
            if Xv.shape[1:] != X.shape[1:]:
                raise ValueError(f"X_val has (layers, d) = {Xv.shape[1:]} but X_train has {X.shape[1:]}; "
                                 "pass the same layers of the same model")
            yv = checks.encode(checks.labels(y_val, "y_val", Xv.shape[0]), classes, "y_val")
        elif Cs.size > 1:
            raise ValueError(f"X_val and y_val are needed to choose among Cs={Cs.tolist()}; pass validation data "
                             "or a single C")
        n, L, d = X.shape
        n_out = 1 if classes.size == 2 else classes.size
        target = torch.as_tensor(checks.encode(y, classes, "y_train"), device=device)
        self.classes_, self.Cs_, self.n_features_in_ = classes, Cs, d
        self.n_layers_in_ = L
        self.coef_ = np.zeros((L, d, n_out), dtype=np.float32)
        self.intercept_ = np.zeros((L, n_out), dtype=np.float32)
        self.mean_ = np.zeros((L, d), dtype=np.float32)
        self.scale_ = np.ones((L, d), dtype=np.float32)
        self.n_iter_ = np.zeros((L, Cs.size), dtype=np.int64)
        self.val_scores_per_C_ = np.full((L, Cs.size), np.nan)
        self.val_predictions_ = np.empty((L, Xv.shape[0] if has_val else 0), dtype=classes.dtype)
        chunk = solver.layer_chunk(X, self.layer_chunk, torch.empty(0, dtype=dtype).element_size(),
                             n_params=Cs.size * n_out * (d + 1), n_logits=n * Cs.size * n_out)
        unfinished = 0
        for start in tqdm(range(0, L, chunk), desc="probe chunks", disable=not self.progress):
            stop = min(start + chunk, L)
            Xc = solver.load_chunk(X, start, stop, device, dtype, "X_train")
            mean, std = solver.moments(Xc)
            Xc.sub_(mean).div_(std)
            theta, n_iter, stuck = solver.fit_lbfgs(Xc, target, n_out, Cs, max_iter, float(self.tol))
            del Xc
            best = np.zeros(stop - start, dtype=np.int64)
            if has_val:
                Vc = solver.load_chunk(Xv, start, stop, device, dtype, "X_val").sub_(mean).div_(std)
                pos = solver.positions(solver.logits(Vc, theta)).cpu().numpy()
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
        checks.fitted(self, "fit(X_train, y_train, X_val, y_val)")
        X = checks.features(X, arg, 3)
        if X.shape[1:] != (self.n_layers_in_, self.n_features_in_):
            raise ValueError(f"{arg} has (layers, d) = {X.shape[1:]} but the probe was fitted on "
                             f"{(self.n_layers_in_, self.n_features_in_)}")
        return X

    def _chunked_logits(self, X: np.ndarray, arg: str) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(start, stop, logits (layers, n, K)) per chunk of layers of ``X``."""
        dtype, device = solver.torch_dtype(self.dtype), torch.device(self.device)
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
        X = checks.features(X, "X", 2)
        grid = (self.C,) if self.Cs is None else self.Cs
        Xv = None if X_val is None else checks.features(X_val, "X_val", 2)[:, None, :]
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
        X = self._as_stack(X)[:, 0].astype(np.float32)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; ``y`` must hold only labels seen in training."""
        X = self._as_stack(X)
        return float(self.probe_.score(X, y)[0])
