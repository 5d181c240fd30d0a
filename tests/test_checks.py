"""Tests for layerfusion.checks: the shared validators accept what the engine takes and reject the rest with errors
that name the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import DataConversionWarning

from layerfusion import checks


def test_features_passes_arrays_through_and_converts_on_request():
    X = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert checks.features(X) is X
    assert checks.features(X, dtype=np.float32).dtype == np.float32
    copy = checks.features(X, copy=True)
    assert copy is not X and np.array_equal(copy, X)
    objects = checks.features(np.array([[1, 2.5], [3, 4]], dtype=object))
    assert objects.dtype == np.float64
    stack = checks.features(np.zeros((2, 3, 4)), "X_train", 3)
    assert stack.shape == (2, 3, 4)


@pytest.mark.parametrize("X, kwargs, error, match", [
    (np.zeros(4), {}, ValueError, r"X must be 2-D \(n, d\)"),
    (np.zeros((2, 3)), {"arg": "X_val", "ndim": 3}, ValueError, r"X_val must be 3-D \(n, L, d\)"),
    (np.zeros((0, 3)), {}, ValueError, "X is empty"),
    (np.zeros((3, 0)), {}, ValueError, "X is empty"),
    (np.zeros((1, 3)), {"min_rows": 2}, ValueError, "a minimum of 2 is required"),
    (np.array([["a", "b"]]), {}, ValueError, "X must be numeric"),
    (np.ones((2, 2), dtype=complex), {}, ValueError, "Complex data not supported"),
    (np.array([[1.0, {"a": 1}]], dtype=object), {}, TypeError, "X holds entries that are not numbers"),
    (np.array([[1.0, np.nan]]), {"finite": True}, ValueError, "X contains NaN or inf"),
    (np.array([[1e39]]), {"dtype": np.float32, "finite": True}, ValueError, "overflow"),
    (scipy.sparse.csr_matrix(np.eye(3)), {}, TypeError, "sparse"),
])
def test_features_rejects(X, kwargs, error, match):
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        checks.features(X, **kwargs)


def test_matrices_are_float32_copies_with_one_row_count():
    a, b = np.ones((3, 2), dtype=np.float16), np.zeros((3, 5))
    out = checks.matrices([a, b])
    assert [m.dtype for m in out] == [np.float32, np.float32] and out[0] is not a
    with pytest.raises(ValueError, match="list"):
        checks.matrices(a)
    with pytest.raises(ValueError, match="Xs is empty"):
        checks.matrices([])
    with pytest.raises(ValueError, match="different numbers of rows"):
        checks.matrices([a, b[:2]])
    with pytest.raises(ValueError, match=r"Xs\[1\] must be 2-D"):
        checks.matrices([a, b[:, 0]])


def test_labels():
    assert checks.labels(["a", "b"]).tolist() == ["a", "b"]
    with pytest.warns(DataConversionWarning, match="column-vector"):
        assert checks.labels(np.array([[0], [1]]), "y", 2).shape == (2,)
    for y, match in ((None, "y is None"), ([0, 1], r"one label per row of the features \(3\)"),
                     ([[0, 1]], "1-D with one label per row"), ([0.0, np.nan, 1.0], "NaN"),
                     (np.array(["a", None, "b"], dtype=object), "missing labels")):
        with pytest.raises(ValueError, match=match):
            checks.labels(y, "y", 3)
    with pytest.raises(ValueError, match="y_true is empty"):
        checks.labels([], "y_true")


def test_class_labels_need_two_discrete_classes():
    y, classes = checks.class_labels(np.array(["b", "a", "b"]), "y_train")
    assert classes.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="y_train has only one class"):
        checks.class_labels([1, 1, 1], "y_train")
    with pytest.raises(ValueError, match="Unknown label type"):
        checks.class_labels(np.linspace(0, 1, 10), "y")


def test_paired_names_the_argument():
    a, b = checks.paired(y=[0, 1], pred=[1, 1])
    assert a.tolist() == [0, 1] and b.tolist() == [1, 1]
    with pytest.raises(ValueError, match="pred_b has 1 items but y_true has 2"):
        checks.paired(y_true=[0, 1], pred_a=[0, 1], pred_b=[0])


def test_encode():
    classes = np.array(["neg", "pos"])
    assert checks.encode(np.array(["pos", "neg"]), classes).tolist() == [1, 0]
    with pytest.raises(ValueError, match="y_val has labels not seen"):
        checks.encode(np.array(["pos", "meh"]), classes, "y_val")


def test_texts():
    assert checks.texts(("a", "b")) == ["a", "b"]
    for bad, match in (("a text", "single string"), ([], "texts is empty"), (["ok", " ", None], r"\[1, 2\]")):
        with pytest.raises(ValueError, match=match):
            checks.texts(bad)


def test_scalars():
    assert checks.positive_int(np.int64(3), "k") == 3 and checks.positive_int(2.0, "k") == 2
    for bad in (0, -1, 1.5, True, "3", float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            checks.positive_int(bad, "k")
    assert checks.fraction(0.0, "dropout") == 0.0
    for bad in (1.0, -0.1, "0.5", False, float("nan")):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            checks.fraction(bad, "dropout")
    assert checks.significance(0.05) == 0.05
    for bad in (0, 1, 1.5, True, float("nan"), "0.05"):
        with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
            checks.significance(bad)
