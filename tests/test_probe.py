"""Tests for layerfusion.probe and its solver: the batched all-layer logistic probe (shapes, agreement with
scikit-learn, input checks, chunking) and the single-matrix LogisticProbe."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from layerfusion import probe, solver


def _layered(n: int = 600, d: int = 64, classes: int = 3, layers: int = 3, seed: int = 0):
    """(n, layers, d) float32 stack whose layers carry the same signal under different noise, and labels."""
    informative = max(2, min(12, d // 2))
    X, y = make_classification(n_samples=n, n_features=d, n_informative=informative,
                               n_redundant=min(8, d - informative), n_classes=classes,
                               class_sep=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    noise = (4.0, 1.5, 0.5, 2.5, 1.0)
    stack = np.stack([X + noise[i % len(noise)] * rng.standard_normal(X.shape) for i in range(layers)], axis=1)
    return stack.astype(np.float32), y


def _splits(stack, y, n_train=360, n_val=120):
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)
    return (stack[tr], y[tr]), (stack[va], y[va]), (stack[te], y[te])


@pytest.fixture(scope="module")
def fitted():
    stack, y = _layered()
    (Xtr, ytr), (Xva, yva), (Xte, yte) = _splits(stack, y)
    est = probe.LayerwiseProbe(Cs=(0.01, 0.1, 1.0), max_iter=300).fit(Xtr, ytr, Xva, yva)
    return est, (Xtr, ytr), (Xva, yva), (Xte, yte)


def test_layerwise_shapes_and_attributes(fitted):
    est, _, (Xva, yva), (Xte, yte) = fitted
    L, n_val, n_te = Xte.shape[1], Xva.shape[0], Xte.shape[0]
    assert est.predict(Xte).shape == (L, n_te)
    proba = est.predict_proba(Xte)
    assert proba.shape == (L, n_te, 3)
    np.testing.assert_allclose(proba.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=2)], est.predict(Xte))
    assert est.score(Xte, yte).shape == (L,)
    assert est.best_C_.shape == est.val_scores_.shape == (L,)
    assert est.val_predictions_.shape == (L, n_val)
    assert est.n_iter_.shape == (L, 3) and (est.n_iter_ > 0).all()
    np.testing.assert_allclose(est.val_scores_, (est.val_predictions_ == yva).mean(axis=1))
    np.testing.assert_allclose(est.val_scores_, est.val_scores_per_C_.max(axis=1))
    assert est.selection_correct_.shape == (L, 3, n_val) and est.n_splits_ == 0
    np.testing.assert_allclose(est.selection_correct_.mean(axis=2), est.val_scores_per_C_)


def test_layerwise_picks_C_by_validation_ties_to_smaller(fitted):
    est = fitted[0]
    for i in range(est.best_C_.size):
        first_best = np.flatnonzero(est.val_scores_per_C_[i] == est.val_scores_per_C_[i].max())[0]
        assert est.best_C_[i] == est.Cs_[first_best]


def test_layerwise_agrees_with_sklearn(fitted):
    """Same objective as StandardScaler + LogisticRegression(C): accuracies within 0.5 points, >= 98 % agreement."""
    est, (Xtr, ytr), _, (Xte, yte) = fitted
    ours = est.predict(Xte)
    ours_acc = est.score(Xte, yte)
    for i in range(Xtr.shape[1]):
        scaler = StandardScaler().fit(Xtr[:, i])
        ref = LogisticRegression(C=float(est.best_C_[i]), max_iter=5000, tol=1e-8)
        ref.fit(scaler.transform(Xtr[:, i]), ytr)
        theirs = ref.predict(scaler.transform(Xte[:, i]))
        assert abs(ours_acc[i] - np.mean(theirs == yte)) <= 0.005
        assert np.mean(ours[i] == theirs) >= 0.98
        np.testing.assert_allclose(est.coef_[i].T, ref.coef_, atol=5e-3 * np.abs(ref.coef_).max())


def test_layerwise_binary_agrees_with_sklearn_coefficients():
    """In float64 with a tight tol the solver lands on sklearn's optimum: the objectives are the same."""
    stack, y = _layered(n=400, d=20, classes=2, layers=2, seed=3)
    est = probe.LayerwiseProbe(Cs=(0.5,), max_iter=500, tol=1e-7, dtype="float64").fit(stack, y)
    assert est.n_unconverged_ == 0 and (est.grad_norm_ <= 1e-7).all()
    assert est.coef_.shape == (2, 20, 1) and np.isnan(est.val_scores_).all()
    for i in range(2):
        features = StandardScaler().fit_transform(stack[:, i].astype(np.float64))
        ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(features, y)
        np.testing.assert_allclose(est.coef_[i, :, 0], ref.coef_[0], atol=1e-4)
        np.testing.assert_allclose(est.intercept_[i], ref.intercept_, atol=1e-4)


def test_layerwise_float16_chunks_and_determinism(fitted):
    est, (Xtr, ytr), (Xva, yva), (Xte, _) = fitted
    half = [A.astype(np.float16) for A in (Xtr, Xva, Xte)]
    a = probe.LayerwiseProbe(Cs=(0.01, 0.1, 1.0), max_iter=300, layer_chunk=1).fit(half[0], ytr, half[1], yva)
    b = probe.LayerwiseProbe(Cs=(0.01, 0.1, 1.0), max_iter=300, layer_chunk=2).fit(half[0], ytr, half[1], yva)
    np.testing.assert_array_equal(a.predict(half[2]), b.predict(half[2]))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-5)
    again = probe.LayerwiseProbe(Cs=(0.01, 0.1, 1.0), max_iter=300, layer_chunk=1).fit(half[0], ytr, half[1], yva)
    np.testing.assert_array_equal(a.coef_, again.coef_)
    assert np.mean(a.predict(half[2]) == est.predict(Xte)) >= 0.98


def test_layerwise_reads_read_only_and_foreign_byte_order_alike(fitted):
    """Cache memmaps are read-only float16 and other sources may be big-endian: same fit, no warning."""
    _, (Xtr, ytr), (Xva, yva), _ = fitted
    half, half_val = Xtr.astype(np.float16), Xva.astype(np.float16)
    ref = probe.LayerwiseProbe(Cs=(0.1, 1.0)).fit(half, ytr, half_val, yva)
    frozen, frozen_val = half.copy(), half_val.copy()
    frozen.flags.writeable = frozen_val.flags.writeable = False
    big = half.astype(half.dtype.newbyteorder(">")), half_val.astype(half.dtype.newbyteorder(">"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for X, V in ((frozen, frozen_val), big):
            est = probe.LayerwiseProbe(Cs=(0.1, 1.0)).fit(X, ytr, V, yva)
            np.testing.assert_array_equal(est.coef_, ref.coef_)
            np.testing.assert_array_equal(est.mean_, ref.mean_)


def test_layer_chunks_count_the_solver_state(monkeypatch):
    """Chunks hold CHUNK_BYTES of features plus L-BFGS state: many classes mean fewer layers a chunk."""
    monkeypatch.setattr(solver, "CHUNK_BYTES", 64 * 2**20)
    X = np.zeros((400, 31, 576), dtype=np.float16)
    assert solver.layer_chunk(X, 5, 4) == 5
    assert solver.layer_chunk(X, None, 4) == 31
    binary = solver.layer_chunk(X, None, 4, n_params=3 * 1 * 577, n_logits=400 * 3)
    many = solver.layer_chunk(X, None, 4, n_params=3 * 52 * 577, n_logits=400 * 3 * 52)
    per_layer = (400 * 576 + 30 * 3 * 52 * 577) * 4 + 10 * 400 * 3 * 52 * 8
    assert binary == 31 and many == 64 * 2**20 // per_layer < 31


def test_layerwise_separable_reaches_100_percent():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=150)
    X = rng.standard_normal((150, 2, 8)).astype(np.float32)
    X[:, 1, :3] += 6.0 * np.eye(3)[y]
    est = probe.LayerwiseProbe(Cs=(1.0, 10.0)).fit(X[:100], y[:100], X[100:], y[100:])
    assert est.score(X[100:], y[100:])[1] == 1.0
    assert est.val_scores_[1] == 1.0


def test_layerwise_keeps_label_values():
    stack, y = _layered(n=200, d=10, classes=2, layers=1)
    labels = np.array(["neg", "pos"])[y]
    est = probe.LayerwiseProbe(Cs=(1.0,)).fit(stack, labels)
    by_int = probe.LayerwiseProbe(Cs=(1.0,)).fit(stack, y)
    np.testing.assert_array_equal(est.predict(stack), np.array(["neg", "pos"])[by_int.predict(stack)])
    np.testing.assert_array_equal(est.score(stack, labels), by_int.score(stack, y))


@pytest.mark.parametrize("call, match", [
    (lambda X, y: probe.LayerwiseProbe().fit(X[:, 0], y, X[:, 0], y), "X_train must be 3-D"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, y[:-1], X, y), "y_train"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, y, X[:, :1], y), "X_val has"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, y, X, y[:-1]), "y_val"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, y), "X_val and y_val are needed"),
    (lambda X, y: probe.LayerwiseProbe(Cs=(1.0, -1.0)).fit(X, y, X, y), "Cs"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, np.where(np.arange(len(y)) == 0, np.nan, y), X, y), "y_train.*NaN"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, y, X, y + 5), "y_val has labels not seen"),
    (lambda X, y: probe.LayerwiseProbe().fit(X, np.zeros_like(y), X, y), "only one class"),
    (lambda X, y: probe.LayerwiseProbe(dtype="float16").fit(X, y, X, y), "dtype"),
    (lambda X, y: probe.LayerwiseProbe().fit(np.where(X > 2, np.nan, X), y, X, y), "X_train contains NaN"),
])
def test_layerwise_rejects_bad_input(call, match):
    X, y = _layered(n=60, d=6, classes=2, layers=2)
    with pytest.raises(ValueError, match=match):
        call(X, y)


def test_layerwise_cross_validation_is_a_loop_over_folds_then_a_refit():
    """cv=k scores every (layer, C) on each fold's held-out rows as a validation fit would, chooses C per layer by
    out-of-fold accuracy, and refits each layer on all rows with that C (as LogisticRegressionCV)."""
    from sklearn.model_selection import StratifiedKFold

    X, y = _layered(n=240, d=12, classes=3, layers=3, seed=5)
    Cs = (0.01, 0.1, 1.0)
    tight = {"max_iter": 300, "tol": 1e-6, "dtype": "float64"}
    est = probe.LayerwiseProbe(Cs=Cs, cv=3, random_state=7, **tight).fit(X, y)
    folds = StratifiedKFold(3, shuffle=True, random_state=7).split(X[:, 0], y)
    correct = np.zeros((3, 3, len(y)), dtype=bool)
    for train, held in folds:
        fold = probe.LayerwiseProbe(Cs=Cs, **tight).fit(X[train], y[train], X[held], y[held])
        correct[:, :, held] = fold.selection_correct_
    np.testing.assert_array_equal(est.selection_correct_, correct)
    np.testing.assert_allclose(est.val_scores_per_C_, correct.mean(axis=2))
    assert est.n_splits_ == 3 and est.val_predictions_.shape == (3, len(y))
    np.testing.assert_allclose(est.val_scores_, (est.val_predictions_ == y).mean(axis=1))
    for layer in range(3):
        first_best = np.flatnonzero(est.val_scores_per_C_[layer] == est.val_scores_per_C_[layer].max())[0]
        assert est.best_C_[layer] == Cs[first_best]
        alone = probe.LayerwiseProbe(Cs=(est.best_C_[layer],), **tight).fit(X[:, layer:layer + 1], y)
        # warm (from the folds' mean) and cold refits both stop at a gradient <= 1e-6; the parameters then lie within
        # about tol / lambda_min = 1e-6 * C * n of the optimum (2.4e-4 at C = 1)
        np.testing.assert_allclose(est.coef_[layer], alone.coef_[0], atol=2.4e-4 * est.best_C_[layer])
        np.testing.assert_array_equal(est.predict(X)[layer], alone.predict(X[:, layer:layer + 1])[0])
        assert est.n_iter_[layer, first_best] > 0 and est.n_iter_[layer].sum() == est.n_iter_[layer, first_best]
    splitter = probe.LayerwiseProbe(Cs=Cs, cv=StratifiedKFold(3, shuffle=True, random_state=7), **tight).fit(X, y)
    np.testing.assert_array_equal(splitter.selection_correct_, est.selection_correct_)


def test_layerwise_cross_validation_input_checks():
    from sklearn.model_selection import ShuffleSplit

    X, y = _layered(n=90, d=6, classes=2, layers=2)
    with pytest.raises(ValueError, match="pass validation data .* or set cv, not both"):
        probe.LayerwiseProbe(cv=3).fit(X, y, X, y)
    with pytest.raises(ValueError, match="held-out folds cover every row"):
        probe.LayerwiseProbe(cv=ShuffleSplit(2, test_size=0.2, random_state=0)).fit(X, y)
    with pytest.raises(ValueError, match="cv must be a positive integer"):
        probe.LayerwiseProbe(cv=0).fit(X, y)


def test_layerwise_predict_checks(fitted):
    est, _, _, (Xte, yte) = fitted
    with pytest.raises(ValueError, match="X has"):
        est.predict(Xte[:, :2])
    with pytest.raises(ValueError, match="X must be 3-D"):
        est.predict_proba(Xte[:, 0])
    with pytest.raises(ValueError, match="y has labels not seen"):
        est.score(Xte, np.where(yte == 0, 7, yte))
    with pytest.raises(ValueError, match="y contains NaN"):
        est.score(Xte, np.where(yte == 0, np.nan, yte))
    with pytest.raises(ValueError, match="not fitted"):
        probe.LayerwiseProbe().predict(Xte)


def test_logistic_probe_is_an_sklearn_classifier():
    stack, y = _layered(n=400, d=16, classes=3, layers=1, seed=2)
    X = stack[:, 0]
    est = probe.LogisticProbe(C=1.0, max_iter=500).fit(X[:300], y[:300])
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10)
    scaler = StandardScaler().fit(X[:300])
    ref.fit(scaler.transform(X[:300]), y[:300])
    assert np.mean(est.predict(X[300:]) == ref.predict(scaler.transform(X[300:]))) >= 0.98
    np.testing.assert_allclose(est.decision_function(X[300:]), ref.decision_function(scaler.transform(X[300:])),
                               atol=2e-2)
    assert est.predict_proba(X[300:]).shape == (100, 3)
    assert 0.0 <= est.score(X[300:], y[300:]) <= 1.0
    assert clone(est).get_params()["C"] == 1.0


def test_logistic_probe_selects_C_on_validation():
    stack, y = _layered(n=400, d=16, classes=2, layers=1, seed=4)
    X = stack[:, 0]
    est = probe.LogisticProbe(Cs=(0.001, 1.0)).fit(X[:200], y[:200], X[200:300], y[200:300])
    assert est.C_ in (0.001, 1.0)
    assert est.val_score_ == est.probe_.val_scores_per_C_[0].max()
    with pytest.raises(ValueError, match="X_val and y_val are needed"):
        probe.LogisticProbe(Cs=(0.1, 1.0)).fit(X, y)
    with pytest.raises(ValueError, match="X must be 2-D"):
        probe.LogisticProbe().fit(stack, y)
