"""Fusion of several feature matrices (models at their best layers, or layers of one model) into one classifier.

Every operator maps a list of inputs ``[X_1 (n, d_1), ..., X_k (n, d_k)]`` to one vector per text. Operators share
one interface (``FusionOperator``: an ``nn.Module`` built from the input dimensions once they are known) and live in
the ``OPERATORS`` registry, so adding an operator is adding one class. ``FusionClassifier`` standardises each input
on train, trains operator + head end to end with the engine's one training loop (``heads.train``), and early-stops
on validation accuracy. ``match_dimension`` gives the fair control "the fusion squeezed to the single model's
dimension", fitted on train only.

Arrays in and out are numpy; torch stays inside the operators and the classifier.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score
from torch import nn

from layerfusion import checks, scaling
from layerfusion.heads import MLP, PAPER_DROPOUT, PAPER_HIDDEN, TrainingSettings, predict_logits, train

__all__ = [
    "OPERATORS", "FusionOperator", "Concat", "ProjectedSum", "ProjectedProduct", "Residual", "CoOccurrence",
    "ScalarMix", "register_operator", "make_operator", "FusionClassifier", "match_dimension",
]

OPERATORS: dict[str, type[FusionOperator]] = {}

FLOOR = 1e-6
"""Smallest divisor when standardising fusion inputs (``scaling.statistics``; kept from before the engine shared
one rule, see ``layerfusion.scaling``)."""


def register_operator(cls: type[FusionOperator] | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator: add a ``FusionOperator`` subclass to ``OPERATORS`` under its ``name``.

    The rule of ``models.register``: registering the same class again is a no-op; another class under a taken name
    needs ``@register_operator(overwrite=True)``.
    """
    def add(cls: type[FusionOperator]) -> type[FusionOperator]:
        if not (isinstance(cls, type) and issubclass(cls, FusionOperator)):
            raise ValueError(f"register_operator: {cls!r} is not a FusionOperator subclass; derive from "
                             "FusionOperator")
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"register_operator: {cls.__name__} needs a non-empty class attribute `name`")
        known = OPERATORS.get(name)
        if known is not None and known is not cls and not overwrite:
            raise ValueError(f"fusion operator {name!r} is already registered ({known.__name__}); pass "
                             "@register_operator(overwrite=True) to replace it")
        OPERATORS[name] = cls
        return cls

    return add if cls is None else add(cls)


class FusionOperator(nn.Module):
    """Base class: ``forward(list of (B, d_i) tensors) -> (B, out_dim)``.

    Subclasses set ``name`` (registry key), ``min_inputs`` and ``equal_dims`` (whether all inputs must share one
    dimension), build their layers in ``__init__`` from ``dims`` and set ``self.out_dim``.
    """

    name: ClassVar[str] = ""
    min_inputs: ClassVar[int] = 2
    equal_dims: ClassVar[bool] = False

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.check_dims(dims)
        self.dims = tuple(int(d) for d in dims)
        self.proj_dim = checks.positive_int(proj_dim, "proj_dim")
        self.dropout = checks.fraction(dropout, "dropout")
        self.out_dim = 0

    @classmethod
    def check_dims(cls, dims: Sequence[int]) -> None:
        """Raise ``ValueError`` if ``dims`` (one per input) cannot feed this operator."""
        dims = list(dims)
        if len(dims) < cls.min_inputs:
            raise ValueError(f"Xs: operator {cls.name!r} needs at least {cls.min_inputs} inputs, got {len(dims)}; "
                             "pass more feature matrices or use operator='concat'")
        if any(int(d) < 1 for d in dims):
            raise ValueError(f"Xs: every input needs at least one column, got dims {dims}")
        if cls.equal_dims and len(set(dims)) > 1:
            raise ValueError(f"Xs: operator {cls.name!r} needs inputs of one dimension, got dims {dims}; "
                             "use it on layers of one model, or use a projecting operator")

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _Projecting(FusionOperator):
    """Shared part of the authors' scheme: each input to ``proj_dim`` by its own learned linear projection (output
    ``proj_dim`` unless a subclass says otherwise)."""

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(dims, proj_dim, dropout)
        self.projections = nn.ModuleList(nn.Linear(d, self.proj_dim) for d in self.dims)
        self.out_dim = self.proj_dim

    def project(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [proj(x) for proj, x in zip(self.projections, xs)]


def _product(ps: list[torch.Tensor]) -> torch.Tensor:
    out = ps[0]
    for p in ps[1:]:
        out = out * p
    return out


@register_operator
class Concat(FusionOperator):
    """Concatenation, no parameters; output ``d_1 + ... + d_k``. Accepts one input (the single-model baseline)."""

    name = "concat"
    min_inputs = 1

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(dims, proj_dim, dropout)
        self.out_dim = sum(self.dims)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=1)


@register_operator
class ProjectedSum(_Projecting):
    """Sum of the projections; output ``proj_dim``."""

    name = "sum"

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(self.project(xs), dim=0).sum(dim=0)


@register_operator
class ProjectedProduct(_Projecting):
    """Hadamard (element-wise) product of the projections; output ``proj_dim``."""

    name = "product"

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return _product(self.project(xs))


@register_operator
class Residual(_Projecting):
    """``[p_1; ...; p_k; p_1 * ... * p_k]`` (the authors' ``[x1; x2; x1*x2]`` for k=2); output ``(k+1) proj_dim``."""

    name = "residual"

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(dims, proj_dim, dropout)
        self.out_dim = (len(self.dims) + 1) * self.proj_dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        ps = self.project(xs)
        return torch.cat([*ps, _product(ps)], dim=1)


@register_operator
class CoOccurrence(FusionOperator):
    """LLMEmbed's co-occurrence pooling, without its double softmax (the head returns logits to the loss).

    Each input goes through Linear(d_i -> proj_dim) + ReLU + Dropout; the k vectors are stacked to X (k x proj_dim),
    the Gram matrix X X^T is flattened (k^2 values) and power-normalised to ``2 sigmoid(sigma P) - 1`` (sigma learned,
    initialised to ``sigma``), so that part lies in [-1, 1]. It is concatenated with the mean of the (standardised)
    raw inputs when all inputs share one dimension, as LLMEmbed does with its Llama layers; otherwise a mean is not
    defined and the projections themselves are concatenated instead. Output ``k^2 + d`` or ``k^2 + k proj_dim``.
    """

    name = "cooccurrence"

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0, sigma: float = 1.0) -> None:
        super().__init__(dims, proj_dim, dropout)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(d, self.proj_dim), nn.ReLU(), nn.Dropout(self.dropout)) for d in self.dims)
        self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        self.mean_raw = len(set(self.dims)) == 1
        k = len(self.dims)
        self.gram_dim = k * k
        self.out_dim = self.gram_dim + (self.dims[0] if self.mean_raw else k * self.proj_dim)

    def gram(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Power-normalised flattened Gram matrix (B, k^2) and the projections."""
        ps = [branch(x) for branch, x in zip(self.branches, xs)]
        stacked = torch.stack(ps, dim=1)
        g = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1)
        return 2.0 * torch.sigmoid(self.sigma * g) - 1.0, ps

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        g, ps = self.gram(xs)
        rest = torch.stack(xs, dim=0).mean(dim=0) if self.mean_raw else torch.cat(ps, dim=1)
        return torch.cat([g, rest], dim=1)


@register_operator
class ScalarMix(FusionOperator):
    """ELMo-style scalar mix ``gamma * sum_i softmax(w)_i X_i`` over inputs of one dimension (layers of one model)."""

    name = "scalar_mix"
    equal_dims = True

    def __init__(self, dims: Sequence[int], proj_dim: int = 256, dropout: float = 0.0) -> None:
        super().__init__(dims, proj_dim, dropout)
        self.logits = nn.Parameter(torch.zeros(len(self.dims)))
        self.gamma = nn.Parameter(torch.tensor(1.0))
        self.out_dim = self.dims[0]

    def mix_weights(self) -> np.ndarray:
        """The softmax weights over the inputs (sum to 1), as numpy."""
        return torch.softmax(self.logits.detach(), dim=0).cpu().numpy()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(self.logits, dim=0)
        return self.gamma * torch.einsum("k,kbd->bd", w, torch.stack(xs, dim=0))


def make_operator(operator: str | type[FusionOperator], dims: Sequence[int], **kwargs: Any) -> FusionOperator:
    """Build an operator from its registry name (or class) for inputs of dimensions ``dims``."""
    return _operator_class(operator)(dims, **kwargs)


def _operator_class(operator: str | type[FusionOperator]) -> type[FusionOperator]:
    if isinstance(operator, type) and issubclass(operator, FusionOperator):
        return operator
    if isinstance(operator, str) and operator in OPERATORS:
        return OPERATORS[operator]
    raise ValueError(f"operator {operator!r} is unknown; use one of {sorted(OPERATORS)} "
                     "or register a FusionOperator subclass with register_operator")


class _Network(nn.Module):
    """Operator followed by a linear or MLP head returning logits."""

    def __init__(self, operator: FusionOperator, head: str, n_classes: int) -> None:
        super().__init__()
        self.operator = operator
        d = operator.out_dim
        if head == "linear":
            self.head: nn.Module = nn.Linear(d, n_classes)
        else:
            self.head = MLP(d, PAPER_HIDDEN, PAPER_DROPOUT, n_classes)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.head(self.operator(list(xs)))


class FusionClassifier(ClassifierMixin, BaseEstimator):
    """Fusion operator + head trained end to end on a list of feature matrices (scikit-learn style).

    Each input is standardised with train statistics (layer scales differ by orders of magnitude). Training is Adam
    with cross-entropy on logits; with validation data it early-stops on validation accuracy (``patience`` epochs
    without a strict improvement) and restores the best epoch's weights. ``head="mlp"`` is the paper's head
    d -> 1024 -> 256 -> C with dropout 0.5 / 0.3. ``dropout`` applies inside operators that have one (CoOccurrence).
    Deterministic for a ``random_state`` on CPU; the global torch RNG is left untouched. Inputs are lists of
    matrices, so scikit-learn's data checks run on it through a one-input wrapper (``tests/test_estimator_checks.py``).

    Fitted attributes: ``classes_``, ``operator_`` (the fitted ``FusionOperator``), ``network_``, ``history_``
    (one dict per epoch: ``epoch``, ``train_loss``, ``val_accuracy``), ``best_epoch_``, ``n_epochs_``, ``dims_``
    (columns per input) and ``n_features_in_`` (their sum).
    """

    def __init__(self, operator: str | type[FusionOperator] = "concat", head: str = "linear", proj_dim: int = 256,
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 50, batch_size: int = 256,
                 patience: int = 10, dropout: float = 0.1, device: str = "cpu", random_state: int = 0,
                 progress: bool = False) -> None:
        self.operator = operator
        self.head = head
        self.proj_dim = proj_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.dropout = dropout
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _settings(self) -> TrainingSettings:
        """The validated training settings; raises on a bad hyper-parameter before any work is done."""
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {self.head!r}")
        checks.positive_int(self.patience, "patience")
        _operator_class(self.operator)
        return TrainingSettings.from_params(self.get_params())

    def fit(self, Xs: Sequence[np.ndarray], y: Any, Xs_val: Sequence[np.ndarray] | None = None,
            y_val: Any = None) -> FusionClassifier:
        """Train on ``Xs`` (list of (n, d_i)) and labels ``y``; early-stop on ``(Xs_val, y_val)`` when given."""
        settings = self._settings()
        Xs = checks.matrices(Xs, "Xs")
        y, classes = checks.class_labels(y, "y", Xs[0].shape[0])
        if (Xs_val is None) != (y_val is None):
            raise ValueError("Xs_val and y_val must be given together (or neither)")
        dims = tuple(X.shape[1] for X in Xs)
        evals = {}
        if Xs_val is not None:
            Xv = checks.matrices(Xs_val, "Xs_val")
            if tuple(X.shape[1] for X in Xv) != dims:
                raise ValueError(f"Xs_val has input dims {tuple(X.shape[1] for X in Xv)} but Xs has {dims}")
            evals["val"] = (Xv, checks.encode(checks.labels(y_val, "y_val", Xv[0].shape[0]), classes, "y_val"))
        _operator_class(self.operator).check_dims(dims)
        self.dims_, self.classes_, self.n_features_in_ = dims, classes, sum(dims)
        moments = [scaling.statistics(X, dtype=np.float32, floor=FLOOR) for X in Xs]
        self.means_, self.scales_ = [m for m, _ in moments], [s for _, s in moments]
        evals = {name: (self._standardise(Xe), ye) for name, (Xe, ye) in evals.items()}

        def build() -> nn.Module:
            operator = make_operator(self.operator, dims, proj_dim=int(self.proj_dim), dropout=float(self.dropout))
            return _Network(operator, self.head, len(classes))

        net, log = train(build, self._standardise(Xs), checks.encode(y, classes, "y"), settings, evals,
                         restore_best=True, patience=int(self.patience), progress=self.progress, desc="fusion epochs")
        self.history_ = [{"epoch": epoch, "train_loss": loss, "val_accuracy": scores.get("val", float("nan"))}
                         for epoch, (loss, scores) in enumerate(zip(log.losses, log.scores), start=1)]
        self.best_epoch_ = log.best_epoch if evals else log.n_epochs
        self.n_epochs_ = log.n_epochs
        self.network_ = net
        self.operator_ = net.operator
        return self

    def _prepare(self, Xs: Sequence[np.ndarray], arg: str) -> list[np.ndarray]:
        Xs = checks.matrices(Xs, arg)
        dims = tuple(X.shape[1] for X in Xs)
        if dims != self.dims_:
            raise ValueError(f"{arg} has input dims {dims} but the classifier was fitted on {self.dims_}")
        return self._standardise(Xs)

    def _standardise(self, Xs: list[np.ndarray]) -> list[np.ndarray]:
        return [scaling.apply(X, m, s) for X, m, s in zip(Xs, self.means_, self.scales_)]

    def _logits(self, Xs: Sequence[np.ndarray]) -> np.ndarray:
        """Logits (n, C) of the fitted network on ``Xs``."""
        checks.fitted(self, "fit(Xs, y)")
        return predict_logits(self.network_, self._prepare(Xs, "Xs"), self.device)

    def decision_function(self, Xs: Sequence[np.ndarray]) -> np.ndarray:
        """Logits (n, C); for two classes the log-odds of ``classes_[1]`` (n,), as scikit-learn's classifiers."""
        logits = self._logits(Xs)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, Xs: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (n, C), columns in the order of ``classes_``."""
        return torch.softmax(torch.from_numpy(self._logits(Xs)), dim=1).numpy()

    def predict(self, Xs: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted labels (n,), taken from ``classes_``."""
        best = self._logits(Xs).argmax(axis=1)
        return self.classes_[best]

    def score(self, Xs: Sequence[np.ndarray], y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the predictions on ``Xs`` against ``y`` (weighted by ``sample_weight`` if given)."""
        best = self._logits(Xs).argmax(axis=1)
        pred = self.classes_[best]
        return float(accuracy_score(checks.labels(y, "y", len(pred)), pred, sample_weight=sample_weight))


def match_dimension(X_train: np.ndarray, X_others: Sequence[np.ndarray], dim: int, method: str = "pca",
                    random_state: int = 0, standardize: bool = True) -> list[np.ndarray]:
    """Reduce ``X_train`` and each of ``X_others`` to ``dim`` columns with a map fitted on ``X_train`` only.

    The fair control for fusion: a fused representation compared with a single model at equal dimensionality.
    ``method="pca"`` keeps the top principal components of train (columns in decreasing train variance);
    ``method="random"`` is a seeded Gaussian random projection. With ``standardize`` (default) features are first
    z-scored with train statistics so a model with larger activations does not own the components. Returns
    ``[X_train_reduced, *X_others_reduced]`` as float32. If ``dim >= d`` nothing is reduced (padding would add no
    information): the inputs are returned unchanged, with a warning.
    """
    Xtr = checks.features(X_train, "X_train", 2, dtype=np.float32, finite=True, copy=True)
    if isinstance(X_others, np.ndarray) or not isinstance(X_others, (list, tuple)):
        raise ValueError(f"X_others must be a list of 2-D arrays, got {type(X_others).__name__}; wrap one as [X]")
    others = [checks.features(X, f"X_others[{i}]", 2, dtype=np.float32, finite=True, copy=True)
              for i, X in enumerate(X_others)]
    d = Xtr.shape[1]
    for i, X in enumerate(others):
        if X.shape[1] != d:
            raise ValueError(f"X_others[{i}] has {X.shape[1]} columns but X_train has {d}")
    dim = checks.positive_int(dim, "dim")
    if method not in ("pca", "random"):
        raise ValueError(f"method must be 'pca' or 'random', got {method!r}")
    if dim >= d:
        warnings.warn(f"match_dimension: dim={dim} >= input dimension {d}; returning the inputs unchanged "
                      "(padding is not allowed)", stacklevel=2)
        return [Xtr, *others]
    mean, scale = scaling.statistics(Xtr, dtype=np.float32, floor=FLOOR, with_std=standardize)
    Ztr = scaling.apply(Xtr, mean, scale)
    if method == "pca":
        if dim > min(Ztr.shape):
            raise ValueError(f"dim={dim} exceeds min(n_train, d)={min(Ztr.shape)}; PCA cannot give that many "
                             "components; lower dim or use method='random'")
        W = PCA(n_components=dim, random_state=random_state).fit(Ztr).components_.T
    else:
        W = np.random.default_rng(random_state).standard_normal((d, dim)).astype(np.float32) / np.sqrt(dim)
    return [(scaling.apply(X, mean, scale) @ W).astype(np.float32) for X in (Xtr, *others)]
