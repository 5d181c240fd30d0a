"""Trained heads on frozen embeddings: the paper's MLP and the one training loop every head uses.

``train`` is the loop: Adam on cross-entropy over seeded shuffled mini-batches for a number of epochs, scoring
named evaluation sets after each epoch, optionally restoring the epoch with the best "val" accuracy and stopping
after ``patience`` epochs without a strict improvement. Both ``MLPHead`` (here) and ``fusion.FusionClassifier``
train through it. It runs inside ``torch.random.fork_rng`` seeded with ``random_state``, so a fit is deterministic
for a seed on CPU (initialisation, dropout and shuffling) and leaves torch's global random state untouched.

``MLPHead`` is the authors' classifier (d -> 1024 -> 256 -> C, ReLU, dropout, Adam) with per-epoch accuracy on
named evaluation sets, so the authors' "maximum test accuracy over epochs" can be shown beside selection on
validation.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from torch import nn
from tqdm.auto import tqdm

from layerfusion import checks, scaling

__all__ = ["PAPER_HIDDEN", "PAPER_DROPOUT", "MLP", "TrainingSettings", "TrainingLog", "train", "predict_logits",
           "MLPHead"]

PAPER_HIDDEN = (1024, 256)
"""Hidden widths of the authors' head."""
PAPER_DROPOUT = (0.5, 0.3)
"""Dropout after each hidden layer of the authors' head."""
_PREDICT_BATCH = 4096
PLATEAU_WINDOW = 5
"""Epochs per window when ``TrainingLog.plateaued`` compares the mean training loss of the last two windows."""
PLATEAU_RTOL = 0.01
"""The training loss has plateaued when its last window's mean is less than this fraction below the window before."""


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


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainingSettings:
    """How ``train`` fits a network; validated on construction (estimators build one at the start of ``fit``)."""

    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    random_state: int
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not (_real(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (_real(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        object.__setattr__(self, "batch_size", checks.positive_int(self.batch_size, "batch_size"))
        object.__setattr__(self, "epochs", checks.positive_int(self.epochs, "epochs"))
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer seed, got {self.random_state!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingSettings:
        """The settings among an estimator's ``get_params()`` (which hold more)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})


@dataclass
class TrainingLog:
    """What ``train`` saw: the mean training loss and the accuracy on each evaluation set, per epoch.

    ``best_epoch`` is the epoch (from 1) with the best "val" accuracy, ties to the earliest; 0 without a "val" set.
    """

    losses: list[float] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def n_epochs(self) -> int:
        """Epochs run (fewer than asked when early stopping ended the run)."""
        return len(self.losses)

    def loss_change(self, window: int = PLATEAU_WINDOW) -> float:
        """Relative change of the mean training loss between the last ``window`` epochs and the ``window`` before
        (negative while it falls); NaN with fewer than 2 * ``window`` epochs."""
        if len(self.losses) < 2 * window:
            return float("nan")
        last, before = np.mean(self.losses[-window:]), np.mean(self.losses[-2 * window:-window])
        return float((last - before) / max(abs(before), 1e-12))

    def plateaued(self, window: int = PLATEAU_WINDOW, rtol: float = PLATEAU_RTOL) -> bool:
        """Whether the training loss has stopped falling: its mean over the last ``window`` epochs is less than
        ``rtol`` below the mean of the ``window`` before (means over windows, because dropout and mini-batches
        make single epochs noisy). False with fewer than 2 * ``window`` epochs."""
        change = self.loss_change(window)
        return bool(np.isfinite(change) and change > -rtol)


def predict_logits(net: nn.Module, inputs: Sequence[np.ndarray], device: torch.device | str) -> np.ndarray:
    """Logits (n, C) of ``net`` in eval mode on float32 ``inputs`` (one array per network input), in batches."""
    net.eval()
    device = torch.device(device)
    out = []
    with torch.inference_mode():
        for start in range(0, inputs[0].shape[0], _PREDICT_BATCH):
            batch = [torch.from_numpy(X[start:start + _PREDICT_BATCH]).to(device) for X in inputs]
            out.append(net(*batch).float().cpu().numpy())
    return np.concatenate(out, axis=0)


def train(build: Callable[[], nn.Module], inputs: Sequence[np.ndarray], y: np.ndarray, settings: TrainingSettings,
          eval_sets: dict[str, tuple[Sequence[np.ndarray], np.ndarray]] | None = None, *,
          restore_best: bool = False, patience: int | None = None, progress: bool = False,
          desc: str = "epochs") -> tuple[nn.Module, TrainingLog]:
    """Train the network ``build()`` makes on float32 ``inputs`` (one array per network input) and class positions
    ``y`` (int64).

    Every epoch shuffles the rows with a generator seeded by ``settings.random_state``, takes Adam steps on the
    mean cross-entropy of each mini-batch, then scores each evaluation set (name -> (inputs, class positions)).
    With a "val" set, ``restore_best`` loads the weights of the best "val" epoch at the end and ``patience`` stops
    after that many epochs without a strict improvement. ``build`` is called inside the seeded context, so the
    initial weights depend on the seed only. Returns the network in eval mode and the ``TrainingLog``.
    """
    device = torch.device(settings.device)
    eval_sets = eval_sets or {}
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, device_type="cuda"):
        torch.manual_seed(int(settings.random_state))
        net = build().to(device)
        opt = torch.optim.Adam(net.parameters(), lr=float(settings.lr), weight_decay=float(settings.weight_decay))
        Xt = [torch.from_numpy(X).to(device) for X in inputs]
        yt = torch.from_numpy(y).to(device)
        gen = torch.Generator().manual_seed(int(settings.random_state))
        n, bs = len(y), settings.batch_size
        log = TrainingLog()
        best_acc, best_state, waited = -math.inf, None, 0
        for epoch in tqdm(range(1, settings.epochs + 1), desc=desc, disable=not progress):
            net.train()
            order = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                opt.zero_grad()
                loss = F.cross_entropy(net(*[X[idx] for X in Xt]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            log.losses.append(total / n)
            log.scores.append({name: float(np.mean(predict_logits(net, Xe, device).argmax(axis=1) == ye))
                               for name, (Xe, ye) in eval_sets.items()})
            if "val" not in eval_sets:
                continue
            if log.scores[-1]["val"] > best_acc:
                best_acc, log.best_epoch, waited = log.scores[-1]["val"], epoch, 0
                if restore_best:
                    best_state = copy.deepcopy(net.state_dict())
            else:
                waited += 1
            if patience is not None and waited >= patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
    return net.eval(), log


class MLPHead(ClassifierMixin, BaseEstimator):
    """The authors' classifier: d -> 1024 -> 256 -> C, ReLU, dropout 0.5/0.3, Adam, cross-entropy, on inputs
    standardised with the training mean and std (``scaling``, scikit-learn's rule; ``mean_``, ``scale_``).

    ``fit(X, y, eval_sets={"val": (X_val, y_val), "test": (X_test, y_test)})`` records the accuracy on each
    evaluation set after every epoch in ``history_`` (columns epoch, set, accuracy; epochs counted from 1) and the
    mean training loss per epoch in ``loss_curve_``. ``select_epoch="last"`` keeps the weights after the last epoch;
    ``"val"`` restores those of the epoch with the best "val" accuracy (ties: earliest). ``selected_epoch_`` says
    which. Convergence: ``converged_`` is whether the training loss reached a plateau (``TrainingLog.plateaued``:
    the mean over the last 5 epochs less than 1 % below the 5 before) and ``loss_change_`` that relative change; a
    fit that used every epoch without reaching it raises a ``ConvergenceWarning`` (as scikit-learn's
    ``MLPClassifier`` at ``max_iter``). Deterministic for a ``random_state`` on CPU: the seed drives initialisation,
    dropout and shuffling without touching torch's global random state.
    """

    def __init__(self, hidden: Sequence[int] = PAPER_HIDDEN, dropout: Sequence[float] = PAPER_DROPOUT,
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

    def _settings(self) -> TrainingSettings:
        """The validated training settings; raises on a bad hyper-parameter before any work is done."""
        hidden, dropout = tuple(self.hidden), tuple(self.dropout)
        if len(hidden) != len(dropout):
            raise ValueError(f"hidden {hidden} and dropout {dropout} need one entry per hidden layer each")
        for width in hidden:
            checks.positive_int(width, f"hidden widths {hidden}: each")
        for p in dropout:
            checks.fraction(p, f"dropout rates {dropout}: each")
        if self.select_epoch not in ("last", "val"):
            raise ValueError(f"select_epoch must be 'last' or 'val', got {self.select_epoch!r}")
        return TrainingSettings.from_params(self.get_params())

    def fit(self, X: Any, y: Any, eval_sets: dict[str, tuple[Any, Any]] | None = None) -> MLPHead:
        """Train for ``epochs`` epochs on ``X`` (n, d), scoring every evaluation set after each epoch."""
        settings = self._settings()
        X = checks.features(X, "X", 2, finite=True)
        y, classes = checks.class_labels(y, "y", X.shape[0])
        eval_sets = dict(eval_sets or {})
        if self.select_epoch == "val" and "val" not in eval_sets:
            raise ValueError("select_epoch='val' needs eval_sets={'val': (X_val, y_val), ...}")
        self.classes_, self.n_features_in_ = classes, X.shape[1]
        self.mean_, self.scale_ = scaling.statistics(X)
        evals = {}
        for name, pair in eval_sets.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"eval_sets[{name!r}] must be a pair (X, y)")
            Xe = checks.features(pair[0], f"eval_sets[{name!r}] X", 2)
            if Xe.shape[1] != X.shape[1]:
                raise ValueError(f"eval_sets[{name!r}] X has {Xe.shape[1]} features but X has {X.shape[1]}")
            ye = checks.labels(pair[1], f"eval_sets[{name!r}] y", Xe.shape[0])
            evals[name] = ([scaling.apply(Xe, self.mean_, self.scale_)],
                           checks.encode(ye, classes, f"eval_sets[{name!r}] y"))
        hidden, dropout = tuple(self.hidden), tuple(self.dropout)
        net, log = train(lambda: MLP(X.shape[1], hidden, dropout, classes.size),
                         [scaling.apply(X, self.mean_, self.scale_)], checks.encode(y, classes, "y"), settings, evals,
                         restore_best=self.select_epoch == "val", progress=self.progress, desc="MLP epochs")
        self.selected_epoch_ = log.best_epoch if self.select_epoch == "val" else settings.epochs
        self.history_ = pd.DataFrame([{"epoch": epoch, "set": name, "accuracy": acc}
                                      for epoch, scores in enumerate(log.scores, start=1)
                                      for name, acc in scores.items()], columns=["epoch", "set", "accuracy"])
        self.loss_curve_ = log.losses
        self.loss_change_ = log.loss_change()
        self.converged_ = log.plateaued()
        self.network_ = net
        if not self.converged_ and not np.isfinite(self.loss_change_):
            warnings.warn(f"MLPHead: {settings.epochs} epochs are too few to tell whether the training loss reached a "
                          f"plateau (it compares the last {PLATEAU_WINDOW} epochs with the {PLATEAU_WINDOW} before); "
                          f"train {2 * PLATEAU_WINDOW} epochs or more", ConvergenceWarning, stacklevel=2)
        elif not self.converged_:
            warnings.warn(f"MLPHead: the training loss was still falling after {settings.epochs} epochs (mean of the "
                          f"last {PLATEAU_WINDOW} epochs {self.loss_change_:+.1%} against the {PLATEAU_WINDOW} before, "
                          f"plateau below {PLATEAU_RTOL:.0%}); raise epochs or lr", ConvergenceWarning, stacklevel=2)
        return self

    def _checked(self, X: Any) -> np.ndarray:
        checks.fitted(self)
        X = checks.width(checks.features(X, "X", 2, finite=True), self.n_features_in_, self)
        return scaling.apply(X, self.mean_, self.scale_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in ``classes_`` order."""
        X = self._checked(X)
        logits = predict_logits(self.network_, [X], self.device)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, (n,)."""
        X = self._checked(X)
        logits = predict_logits(self.network_, [X], self.device)
        return self.classes_[logits.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; ``y`` must hold only labels seen in training."""
        Xs = self._checked(X)
        y = checks.labels(y, "y", Xs.shape[0])
        checks.encode(y, self.classes_, "y")
        return float(np.mean(self.predict(X) == y))
