"""Input validation shared by the engine: feature arrays, labels, texts and scalar settings.

Every public function of the engine validates what enters it with these helpers, so one kind of input is checked
one way everywhere and every error names the argument, says what is allowed and how to fix it. They return the
validated value (an array, a list or a number), so callers use the result rather than the raw input. The
conventions follow scikit-learn's ``check_array``/``column_or_1d`` where they overlap (object arrays are converted
to float, sparse and complex input is refused, a column-vector ``y`` is flattened with a ``DataConversionWarning``),
with messages that name the argument, which scikit-learn's do not. Where a scikit-learn validator decides the same
question (``column_or_1d``, ``check_consistent_length``, ``check_classification_targets``, ``check_scalar``) it does
the checking and these helpers only reword its error into the project's one line; ``features`` stays hand-written
because ``check_array`` copies memmaps and has no 3-D (texts x layers x width) shape message.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_consistent_length, check_is_fitted, check_scalar, column_or_1d

__all__ = ["features", "fitted", "width", "matrices", "labels", "class_labels", "paired", "encode", "texts",
           "positive_int", "fraction", "significance"]

_SHAPES = {2: "(n, d): items x features", 3: "(n, L, d): texts x layers x hidden size"}


def features(X: Any, arg: str = "X", ndim: int = 2, *, min_rows: int = 1, dtype: Any = None, finite: bool = False,
             copy: bool = False) -> np.ndarray:
    """``X`` as a real numeric numpy array of ``ndim`` dimensions with at least ``min_rows`` rows.

    Arrays and memmaps pass through without a copy unless ``dtype`` asks for a conversion (or ``copy`` for a copy);
    object arrays are converted to float64. ``finite`` also rejects NaN and inf (after the conversion, so values
    that overflow ``dtype`` count).
    """
    if scipy.sparse.issparse(X):
        raise TypeError(f"{arg} is a sparse matrix; pass a dense array (X.toarray())")
    A = np.asarray(X)
    if A.ndim != ndim:
        hint = f" {_SHAPES[ndim]}" if ndim in _SHAPES else ""
        reshape = (". Reshape your data: X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one item"
                   if ndim == 2 and A.ndim == 1 else "")
        raise ValueError(f"{arg} must be {ndim}-D{hint}, got shape {A.shape}{reshape}")
    if A.dtype.kind == "O":
        try:
            A = A.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{arg} holds entries that are not numbers: {err}") from err
    if A.dtype.kind == "c":
        raise ValueError(f"{arg}: Complex data not supported; pass real-valued features")
    if A.dtype.kind not in "fiu":
        raise ValueError(f"{arg} must be numeric, got dtype {A.dtype}")
    if A.shape[0] < min_rows:
        raise ValueError(f"{arg} is empty or too small: {A.shape[0]} sample(s) (shape={A.shape}) while a minimum of "
                         f"{min_rows} is required; pass more rows")
    if any(s == 0 for s in A.shape[1:]):
        raise ValueError(f"{arg} is empty: 0 feature(s) (shape={A.shape}) while a minimum of 1 is required; pass at "
                         f"least one {'layer and one ' if ndim == 3 else ''}feature")
    if dtype is not None or copy:
        A = A.astype(A.dtype if dtype is None else dtype, copy=copy)
    if finite and not np.isfinite(A).all():
        raise ValueError(f"{arg} contains NaN or inf; clean or impute the features first (check the extraction "
                         "for overflow)")
    return A


def fitted(estimator: Any, call: str = "fit(X, y)") -> None:
    """Raise scikit-learn's ``NotFittedError`` (a ``ValueError``) if ``estimator`` has not been fitted."""
    check_is_fitted(estimator, msg=f"this {type(estimator).__name__} is not fitted yet; call {call} first")


def width(X: np.ndarray, n_features: int, owner: Any, arg: str = "X") -> np.ndarray:
    """``X`` unchanged if it has the ``n_features`` columns ``owner`` was fitted on (scikit-learn's message)."""
    if X.shape[1] != n_features:
        raise ValueError(f"{arg} has {X.shape[1]} features, but {type(owner).__name__} is expecting {n_features} "
                         "features as input")
    return X


def matrices(Xs: Any, arg: str = "Xs") -> list[np.ndarray]:
    """A list of finite 2-D feature matrices with one row count (one per input of a fusion), as float32 copies."""
    if isinstance(Xs, np.ndarray) or not isinstance(Xs, (list, tuple)):
        raise ValueError(f"{arg} must be a list of 2-D arrays (one per input), got {type(Xs).__name__}; "
                         f"wrap a single matrix as [X]")
    if len(Xs) == 0:
        raise ValueError(f"{arg} is empty; pass at least one (n, d) feature matrix")
    out = [features(X, f"{arg}[{i}]", 2, dtype=np.float32, finite=True, copy=True) for i, X in enumerate(Xs)]
    rows = [A.shape[0] for A in out]
    if len(set(rows)) > 1:
        raise ValueError(f"{arg}: inputs have different numbers of rows {rows}; every input must hold the same texts")
    return out


def labels(y: Any, arg: str = "y", n: int | None = None) -> np.ndarray:
    """``y`` as a non-empty 1-D array of labels without missing values (one per row of the features if ``n``).

    A column vector (n, 1) is flattened with a ``DataConversionWarning``, as scikit-learn does.
    """
    if y is None:
        raise ValueError(f"{arg} is None; fitting requires y to be passed, but the target y is None")
    A = np.asarray(y)
    shape = A.shape
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataConversionWarning)
            A = column_or_1d(A, warn=True)  # scikit-learn's rule: 1-D, or a column vector flattened with a warning
    except ValueError:
        A = np.asarray(y)
    else:
        if any(issubclass(w.category, DataConversionWarning) for w in caught):
            warnings.warn(f"A column-vector y was passed when a 1d array was expected ({arg} has shape {shape}); "
                          "it is flattened", DataConversionWarning, stacklevel=3)
    if n is not None and (A.ndim != 1 or A.shape[0] != n):
        raise ValueError(f"{arg} must be 1-D with one label per row of the features ({n}), got shape {shape}")
    if A.ndim != 1:
        raise ValueError(f"{arg} must be a 1-D array of labels, got shape {shape}")
    if A.size == 0:
        raise ValueError(f"{arg} is empty; pass at least one item")
    if A.dtype.kind == "f" and np.isnan(A).any():
        raise ValueError(f"{arg} contains NaN; drop or label those rows first")
    if A.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v)) for v in A):
        raise ValueError(f"{arg} contains missing labels (None/NaN); drop or label those rows first")
    return A


def class_labels(y: Any, arg: str = "y", n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training labels of a classifier: ``labels`` plus discrete values and at least two classes.

    Returns ``(y, classes)`` with ``classes`` sorted (``np.unique``).
    """
    y = labels(y, arg, n)
    try:
        check_classification_targets(y)
    except ValueError:
        kind = type_of_target(y, input_name=arg)
        raise ValueError(f"Unknown label type: {arg} looks {kind}; a classifier needs discrete class labels "
                         "(integers or strings), not continuous values") from None
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"{arg} has only one class {classes.tolist()}; a classifier needs at least two")
    return y, classes


def paired(**arrays: Any) -> list[np.ndarray]:
    """Label arrays (``labels``) of one common length, e.g. true labels and two predictions on the same items.

    The keyword names are the argument names used in errors.
    """
    out = [labels(values, name) for name, values in arrays.items()]
    try:
        check_consistent_length(*out)
    except ValueError:
        names = list(arrays)
        name, arr = next((k, a) for k, a in zip(names[1:], out[1:]) if len(a) != len(out[0]))
        raise ValueError(f"{name} has {len(arr)} items but {names[0]} has {len(out[0])}; they must be paired"
                         ) from None
    return out


def encode(y: np.ndarray, classes: np.ndarray, arg: str = "y") -> np.ndarray:
    """Positions of ``y`` in the sorted ``classes`` (int64); labels never seen in training raise."""
    known = np.isin(y, classes)
    if not known.all():
        raise ValueError(f"{arg} has labels not seen in the training labels: {np.unique(y[~known]).tolist()[:10]}; "
                         f"known classes are {classes.tolist()[:20]}")
    return np.searchsorted(classes, y).astype(np.int64)


def texts(values: Sequence[Any], arg: str = "texts") -> list[str]:
    """``values`` as a list of strings; a bare string, an empty sequence, or None, non-str, empty or
    whitespace-only entries raise ValueError naming them."""
    if isinstance(values, str):
        raise ValueError(f"{arg} must be a sequence of strings, not a single string; wrap it in a list")
    values = list(values)
    if not values:
        raise ValueError(f"{arg} is empty; pass at least one text")
    bad = [i for i, t in enumerate(values) if not isinstance(t, str) or not t.strip()]
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise ValueError(f"{arg} at indices [{shown}] are None, not str, empty or whitespace-only; drop or fill "
                         "them before extraction")
    return values


def positive_int(value: Any, arg: str) -> int:
    """``value`` as an int >= 1 (integral floats such as ``3.0`` pass; bools, fractions and strings do not)."""
    whole = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
             and int(value) == value)
    try:
        if isinstance(value, bool):  # an int to Python and to check_scalar, never a count here
            raise TypeError(arg)
        return int(check_scalar(int(value) if whole else value, arg, numbers.Integral, min_val=1))
    except (TypeError, ValueError):
        raise ValueError(f"{arg} must be a positive integer, got {value!r}") from None


def _in_unit_interval(value: Any, arg: str, boundaries: str, expected: str) -> float:
    """``value`` as a float in [0, 1] with ``check_scalar``'s ``include_boundaries``; else ValueError "``arg`` must
    ``expected``". Bools and NaN are refused first: check_scalar takes bools as numbers and lets NaN through its
    comparisons."""
    try:
        if isinstance(value, bool) or (isinstance(value, numbers.Real) and math.isnan(value)):
            raise TypeError(arg)
        return float(check_scalar(value, arg, numbers.Real, min_val=0.0, max_val=1.0, include_boundaries=boundaries))
    except (TypeError, ValueError):
        raise ValueError(f"{arg} must {expected}, got {value!r}") from None


def fraction(value: Any, arg: str) -> float:
    """``value`` as a float in [0, 1) (a dropout rate)."""
    return _in_unit_interval(value, arg, "left", "be in [0, 1)")


def significance(alpha: Any, arg: str = "alpha") -> float:
    """``alpha`` as a float strictly between 0 and 1 (a significance level or interval miss rate)."""
    return _in_unit_interval(alpha, arg, "neither", "lie strictly between 0 and 1")
