"""Label-free layer scores and complementarity diagnostics between models.

Label-free scores (matrix entropy, effective rank, anisotropy) describe the geometry of one layer's pooled vectors
and are checked against probe accuracy; complementarity scores (Cohen's kappa, error overlap, linear CKA) say
whether two models err on different items, the precondition for fusion to help; ``layer_agreement`` says how far
two extractions of the same items (bf16 against fp32) drift apart per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from tqdm.auto import tqdm

from layerfusion import checks

_EPS32 = float(np.finfo(np.float32).eps)


def _working_copy(X: np.ndarray, arg: str) -> np.ndarray:
    """A validated float32 copy of one layer's (n, d) vectors, n >= 2 (the scores below modify it in place)."""
    return checks.features(X, arg, 2, min_rows=2, dtype=np.float32, finite=True, copy=True)


def _spectrum(Z: np.ndarray) -> np.ndarray:
    """The eigenvalues of Z Zᵀ above the float32 round-off level of the product, descending (empty for zero Z).

    Computed from the d×d covariance or the n×n Gram, whichever is smaller.
    """
    n, d = Z.shape
    small = Z.T @ Z if d <= n else Z @ Z.T
    eig = np.clip(np.linalg.eigvalsh(small.astype(np.float64))[::-1], 0.0, None)
    if eig.size == 0 or eig[0] <= 0:
        return eig[:0]
    return eig[:int(np.sum(eig > eig[0] * max(Z.shape) * _EPS32))]


def _entropy(p: np.ndarray, alpha: float) -> float:
    """Rényi entropy of order ``alpha`` (Shannon for ``alpha == 1``) of a probability vector, in nats."""
    p = p[p > 0]
    if alpha == 1:
        return float(-np.sum(p * np.log(p)))
    return float(np.log(np.sum(p ** alpha)) / (1.0 - alpha))


def _centre_normalise(X: np.ndarray) -> np.ndarray:
    X -= X.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.divide(X, norms, out=X, where=norms > 0)
    return X


def matrix_entropy(X: np.ndarray, alpha: float = 1.0, normalize: str | None = "max_rank") -> float:
    """Dataset-level matrix-based Rényi entropy of pooled vectors (Skean et al. 2025), in [0, 1] by default.

    Rows are centred (column means removed) and L2-normalised; the eigenvalues of the resulting Gram matrix,
    divided by their sum, form a probability vector whose Rényi entropy of order ``alpha`` (von Neumann for 1) is
    taken. High values: variance spread over many directions; low: the vectors collapse onto a few.
    ``normalize``: ``"max_rank"`` divides by log(min(n - 1, d)) (the largest rank centred data can have, so values
    are comparable across layers of one model), ``"rank"`` by log of the numerical rank, ``None`` returns nats.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if normalize not in ("max_rank", "rank", None):
        raise ValueError(f"normalize must be 'max_rank', 'rank' or None, got {normalize!r}")
    Z = _centre_normalise(_working_copy(X, "X"))
    eig = _spectrum(Z)
    if eig.size == 0:
        return 0.0
    h = _entropy(eig / eig.sum(), alpha)
    if normalize is None:
        return h
    ref = min(Z.shape[0] - 1, Z.shape[1]) if normalize == "max_rank" else eig.size
    return float(h / np.log(ref)) if ref > 1 else 0.0


def effective_rank(X: np.ndarray, center: bool = True) -> float:
    """Effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised singular values of ``X``.

    Between 1 (one direction) and min(n, d) (all singular values equal); columns are centred first by default so the
    mean vector does not count as a direction.
    """
    Z = _working_copy(X, "X")
    if center:
        Z -= Z.mean(axis=0, keepdims=True)
    eig = _spectrum(Z)
    if eig.size == 0:
        return 0.0
    s = np.sqrt(eig)
    return float(np.exp(_entropy(s / s.sum(), 1.0)))


def anisotropy(X: np.ndarray, n_pairs: int | None = None, random_state: int = 0) -> float:
    """Mean cosine similarity between two different rows of ``X`` (Ethayarajh 2019); 0 for isotropic vectors.

    Exact by default, through the sum of the unit vectors: ``sum_{i != j} u_i·u_j = |sum u_i|² - sum |u_i|²``.
    With ``n_pairs`` it is estimated from that many random pairs of distinct rows (seeded). Zero rows count as 0.
    """
    U = _working_copy(X, "X")
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    np.divide(U, norms, out=U, where=norms > 0)
    U[(norms == 0).ravel()] = 0.0
    n = U.shape[0]
    if n_pairs is None:
        total = U.sum(axis=0, dtype=np.float64)
        self_sim = float(np.sum(norms > 0))
        return float((total @ total - self_sim) / (n * (n - 1)))
    n_pairs = checks.positive_int(n_pairs, "n_pairs")
    rng = np.random.default_rng(random_state)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n
    return float(np.mean(np.einsum("ij,ij->i", U[i], U[j], dtype=np.float64)))


def layer_report(X_layers: np.ndarray, layers: Sequence[int] | None = None, *, alpha: float = 1.0,
                 max_items: int | None = None, random_state: int = 0, progress: bool = False) -> pd.DataFrame:
    """Label-free scores of every layer: one row per layer (index ``layer``), columns
    ``matrix_entropy``, ``effective_rank``, ``anisotropy``.

    ``X_layers`` is (n, L, d), e.g. ``LayerEmbeddings.stack(pooling)`` or its float16 vectors; one layer at a time is
    copied to float32, never the whole array to float64. ``max_items`` scores a seeded random subset of rows (the
    same rows for every layer) to bound the cost on large splits. ``layers`` labels the rows (default 0..L-1).
    """
    X_layers = checks.features(X_layers, "X_layers", 3)
    n, n_layers, _ = X_layers.shape
    labels = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(labels) != n_layers:
        raise ValueError(f"layers has {len(labels)} entries but X_layers has {n_layers} layers")
    rows = np.arange(n)
    if max_items is not None and max_items < n:
        rows = np.sort(np.random.default_rng(random_state).choice(n, size=max_items, replace=False))
    records = []
    for i in tqdm(range(n_layers), desc="label-free scores", disable=not progress):
        X = np.asarray(X_layers[rows, i] if len(rows) < n else X_layers[:, i], dtype=np.float32)
        records.append({"matrix_entropy": matrix_entropy(X, alpha=alpha), "effective_rank": effective_rank(X),
                        "anisotropy": anisotropy(X)})
    return pd.DataFrame(records, index=pd.Index(labels, name="layer"))


def layer_agreement(A: np.ndarray, B: np.ndarray, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """How closely two extractions of the same items agree, layer by layer (e.g. bf16 against fp32 vectors).

    ``A`` and ``B`` are (n, L, d) stacks of the same items and layers (``LayerEmbeddings.stack`` or its float16
    vectors); ``A`` is the reference. One row per layer (index ``layer``, default 0..L-1) with the per-item cosine
    between the two vectors summarised as ``cosine_mean``, ``cosine_min`` and ``cosine_q01`` (1st percentile), and
    ``rel_error_mean``, the mean of ``||a - b|| / ||a||``. Items whose reference or other vector is zero have no
    cosine and are left out of those summaries. One layer at a time is copied to float64.
    """
    shapes = (getattr(A, "shape", None), getattr(B, "shape", None))
    if getattr(A, "ndim", None) != 3 or shapes[0] != shapes[1]:
        raise ValueError(f"A and B must be 3-D (n_items, n_layers, dim) arrays of one shape, got {shapes[0]} and "
                         f"{shapes[1]}; compare extractions of the same items and layers")
    n_layers = A.shape[1]
    labels = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(labels) != n_layers:
        raise ValueError(f"layers has {len(labels)} entries but A and B have {n_layers} layers")
    records = []
    for i in range(n_layers):
        a = checks.features(A[:, i], f"A[:, {i}]", 2, min_rows=1, dtype=np.float64, finite=True)
        b = checks.features(B[:, i], f"B[:, {i}]", 2, min_rows=1, dtype=np.float64, finite=True)
        norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        ok = (norm_a > 0) & (norm_b > 0)
        cosine = np.einsum("ij,ij->i", a[ok], b[ok]) / (norm_a[ok] * norm_b[ok])
        rel = np.linalg.norm(a[ok] - b[ok], axis=1) / norm_a[ok]
        empty = not ok.any()
        records.append({"cosine_mean": float("nan") if empty else float(cosine.mean()),
                        "cosine_min": float("nan") if empty else float(cosine.min()),
                        "cosine_q01": float("nan") if empty else float(np.quantile(cosine, 0.01)),
                        "rel_error_mean": float("nan") if empty else float(rel.mean())})
    return pd.DataFrame(records, index=pd.Index(labels, name="layer"))


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two representations of the same items.

    ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` after centring columns: 1 for representations equal up to rotation
    and isotropic scaling, near 0 for unrelated ones. Computed in feature space or item space, whichever is cheaper.
    """
    Xc, Yc = _working_copy(X, "X"), _working_copy(Y, "Y")
    if Xc.shape[0] != Yc.shape[0]:
        raise ValueError(f"X has {Xc.shape[0]} rows but Y has {Yc.shape[0]}; rows must be the same items")
    Xc = Xc.astype(np.float64)
    Yc = Yc.astype(np.float64)
    Xc -= Xc.mean(axis=0)
    Yc -= Yc.mean(axis=0)
    n, dx, dy = Xc.shape[0], Xc.shape[1], Yc.shape[1]
    if n * n * (dx + dy) < n * (dx * dy + dx * dx + dy * dy):
        Kx, Ky = Xc @ Xc.T, Yc @ Yc.T
        cross, nx, ny = np.sum(Kx * Ky), np.linalg.norm(Kx), np.linalg.norm(Ky)
    else:
        cross = np.linalg.norm(Yc.T @ Xc) ** 2
        nx, ny = np.linalg.norm(Xc.T @ Xc), np.linalg.norm(Yc.T @ Yc)
    if nx == 0 or ny == 0:
        raise ValueError("X or Y is constant across items (zero variance after centring); CKA is undefined")
    return float(cross / (nx * ny))


def cohen_kappa(a: Sequence | np.ndarray, b: Sequence | np.ndarray) -> float:
    """Cohen's kappa between two prediction arrays: agreement beyond what their label frequencies give by chance.

    scikit-learn's ``cohen_kappa_score``; NaN (with its warning) when chance agreement is already 1 (both constant on
    the same label).
    """
    a, b = checks.paired(a=a, b=b)
    return float(cohen_kappa_score(a, b))


def error_overlap(y: Sequence | np.ndarray, a: Sequence | np.ndarray, b: Sequence | np.ndarray) -> dict[str, float]:
    """How two classifiers' errors overlap on the same items (all rates are fractions of the items).

    Keys: ``both_wrong``, ``only_a_wrong``, ``only_b_wrong``, ``both_wrong_if_independent`` (product of the two
    error rates), ``jaccard`` (``|errors a ∩ errors b| / |errors a ∪ errors b|``, NaN when neither errs) and
    ``oracle_accuracy`` (an item counts as right when either is right: the ceiling for fusing the two).
    """
    y, a, b = checks.paired(y=y, a=a, b=b)
    wrong_a, wrong_b = a != y, b != y
    both = float(np.mean(wrong_a & wrong_b))
    union = int(np.sum(wrong_a | wrong_b))
    return {
        "both_wrong": both,
        "only_a_wrong": float(np.mean(wrong_a & ~wrong_b)),
        "only_b_wrong": float(np.mean(~wrong_a & wrong_b)),
        "both_wrong_if_independent": float(np.mean(wrong_a) * np.mean(wrong_b)),
        "jaccard": float(np.sum(wrong_a & wrong_b) / union) if union else float("nan"),
        "oracle_accuracy": 1.0 - both,
    }
