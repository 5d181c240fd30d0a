"""Tests for layerfusion.diagnostics: label-free scores on data of known geometry, CKA invariances, kappa, overlap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import ortho_group

from layerfusion import diagnostics


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _low_rank(rng: np.random.Generator, n: int, d: int, rank: int) -> np.ndarray:
    return (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))).astype(np.float32)


def test_matrix_entropy_isotropic_high_collapsed_low(rng):
    iso = rng.standard_normal((400, 32))
    low = _low_rank(rng, 400, 32, 2)
    h_iso, h_low = diagnostics.matrix_entropy(iso), diagnostics.matrix_entropy(low)
    assert 0.95 < h_iso <= 1.0
    assert 0.0 < h_low <= np.log(2) / np.log(32) + 1e-6  # two directions at most: log 2 of log 32
    assert diagnostics.matrix_entropy(low, normalize="rank") == pytest.approx(h_low * np.log(32) / np.log(2))
    assert diagnostics.matrix_entropy(iso, normalize=None) == pytest.approx(h_iso * np.log(32))


def test_matrix_entropy_orders_and_gram_vs_covariance_path(rng):
    X = rng.standard_normal((40, 10)) * np.linspace(3, 0.1, 10)
    h1, h2 = diagnostics.matrix_entropy(X, alpha=1), diagnostics.matrix_entropy(X, alpha=2)
    assert 0 < h2 < h1 < 1  # Rényi entropy decreases with the order on a non-uniform spectrum
    # n < d takes the n×n Gram path; padding with zero columns changes neither the spectrum nor (with
    # normalize="rank") the score
    wide = np.hstack([X, np.zeros((40, 50))])
    assert diagnostics.matrix_entropy(wide, normalize="rank") == pytest.approx(
        diagnostics.matrix_entropy(X, normalize="rank"), rel=1e-5)


def test_matrix_entropy_invariant_to_shift_and_row_scale(rng):
    X = rng.standard_normal((200, 16)) * np.linspace(2, 0.5, 16)
    shifted = X + 5.0
    assert diagnostics.matrix_entropy(shifted) == pytest.approx(diagnostics.matrix_entropy(X), rel=1e-5)
    assert diagnostics.matrix_entropy(X * 7.0) == pytest.approx(diagnostics.matrix_entropy(X), rel=1e-5)


def test_effective_rank_known_values(rng):
    Q = ortho_group.rvs(8, random_state=1)[:, :3]
    # three orthogonal directions with equal variance -> effective rank 3
    coef = np.tile(np.vstack([np.eye(3), -np.eye(3)]), (10, 1))  # mean zero, equal variance per direction
    X = coef @ Q.T
    assert diagnostics.effective_rank(X) == pytest.approx(3.0, rel=1e-4)
    assert diagnostics.effective_rank(rng.standard_normal((2000, 16))) > 15
    assert diagnostics.effective_rank(_low_rank(rng, 300, 16, 1)) == pytest.approx(1.0, rel=1e-4)


def test_anisotropy_exact_and_sampled(rng):
    X = rng.standard_normal((300, 24))
    assert abs(diagnostics.anisotropy(X)) < 0.01
    shifted = X + 3.0
    exact = diagnostics.anisotropy(shifted)
    U = shifted / np.linalg.norm(shifted, axis=1, keepdims=True)
    S = U @ U.T
    brute = (S.sum() - np.trace(S)) / (300 * 299)
    assert exact == pytest.approx(brute, rel=1e-5)
    assert exact > 0.8
    sampled = diagnostics.anisotropy(shifted, n_pairs=5000, random_state=0)
    assert sampled == pytest.approx(exact, abs=0.01)
    assert sampled == diagnostics.anisotropy(shifted, n_pairs=5000, random_state=0)


def test_layer_report_one_row_per_layer_float16_input(rng):
    n, d = 120, 16
    layers = np.stack([rng.standard_normal((n, d)), _low_rank(rng, n, d, 2), rng.standard_normal((n, d)) + 4],
                      axis=1).astype(np.float16)
    report = diagnostics.layer_report(layers, layers=[0, 5, 9])
    assert list(report.index) == [0, 5, 9]
    assert report.index.name == "layer"
    assert list(report.columns) == ["matrix_entropy", "effective_rank", "anisotropy"]
    assert report.loc[5, "matrix_entropy"] < report.loc[0, "matrix_entropy"]
    assert report.loc[9, "anisotropy"] > 0.8 > abs(report.loc[0, "anisotropy"])
    assert report.loc[0, "effective_rank"] == pytest.approx(diagnostics.effective_rank(layers[:, 0]))
    sub = diagnostics.layer_report(layers, max_items=60, random_state=0)
    assert sub.equals(diagnostics.layer_report(layers, max_items=60, random_state=0))
    with pytest.raises(ValueError, match="X_layers"):
        diagnostics.layer_report(layers[:, 0])
    with pytest.raises(ValueError, match="layers"):
        diagnostics.layer_report(layers, layers=[0, 1])


def test_linear_cka_invariances_and_independence(rng):
    X = rng.standard_normal((200, 20))
    Q = ortho_group.rvs(20, random_state=2)
    assert diagnostics.linear_cka(X, X @ Q * 3.5) == pytest.approx(1.0, abs=1e-6)
    assert diagnostics.linear_cka(X, X + 10.0) == pytest.approx(1.0, abs=1e-6)
    independent = diagnostics.linear_cka(X, rng.standard_normal((200, 30)))
    assert independent < 0.2
    # partial overlap sits in between, and the Gram path (n < d) agrees with the feature path
    Y = np.hstack([X[:, :5], rng.standard_normal((200, 15))])
    mid = diagnostics.linear_cka(X, Y)
    assert independent < mid < 1.0
    small_x, small_y = X[:10], Y[:10]
    Kx, Ky = small_x - small_x.mean(0), small_y - small_y.mean(0)
    expected = np.linalg.norm(Ky.T @ Kx) ** 2 / (np.linalg.norm(Kx.T @ Kx) * np.linalg.norm(Ky.T @ Ky))
    assert diagnostics.linear_cka(small_x, small_y) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="rows"):
        diagnostics.linear_cka(X, X[:50])
    with pytest.raises(ValueError, match="constant"):
        diagnostics.linear_cka(X, np.ones((200, 3)))


def test_cohen_kappa_hand_example_and_checks():
    # observed agreement 3/4; chance (2 * 1 + 2 * 3) / 16 = 1/2 -> kappa (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert diagnostics.cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    assert diagnostics.cohen_kappa(["x", "y", "y"], ["x", "y", "y"]) == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(diagnostics.cohen_kappa([1, 1, 1], [1, 1, 1]))
    with pytest.raises(ValueError, match="b has 1 items"):
        diagnostics.cohen_kappa([0, 1], [0])


def test_error_overlap_hand_example():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    a = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # wrong on 0, 1, 2
    b = np.array([0, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # wrong on 1, 2, 3
    out = diagnostics.error_overlap(y, a, b)
    assert out == pytest.approx({"both_wrong": 0.2, "only_a_wrong": 0.1, "only_b_wrong": 0.1,
                                 "both_wrong_if_independent": 0.09, "jaccard": 0.5, "oracle_accuracy": 0.8})
    assert np.isnan(diagnostics.error_overlap(y, y, y)["jaccard"])


def test_layer_agreement_identical_scaled_and_perturbed(rng):
    A = rng.normal(size=(50, 3, 16)).astype(np.float32)
    B = A.copy()
    B[:, 1] *= 3.0
    B[:, 2] += rng.normal(scale=0.1, size=(50, 16))
    table = diagnostics.layer_agreement(A, B.astype(np.float16), layers=[0, 5, 10])
    assert list(table.index) == [0, 5, 10] and table.index.name == "layer"
    assert table.loc[0, "cosine_min"] == pytest.approx(1.0, abs=1e-3)
    assert table.loc[0, "rel_error_mean"] < 1e-3
    assert table.loc[5, "cosine_mean"] == pytest.approx(1.0, abs=1e-3)
    assert table.loc[5, "rel_error_mean"] == pytest.approx(2.0, abs=1e-2)
    noisy = table.loc[10]
    assert 0.9 < noisy["cosine_min"] <= noisy["cosine_q01"] <= noisy["cosine_mean"] < 0.999


def test_layer_agreement_skips_zero_vectors_and_rejects_bad_shapes(rng):
    A = rng.normal(size=(4, 2, 8))
    B = A.copy()
    B[0, 0] = 0.0
    table = diagnostics.layer_agreement(A, B)
    assert table.loc[0, "cosine_min"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        diagnostics.layer_agreement(A, B[:, :1])
    with pytest.raises(ValueError, match="layers has 3 entries"):
        diagnostics.layer_agreement(A, B, layers=[0, 1, 2])
    B[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"B\[:, 1\] contains NaN"):
        diagnostics.layer_agreement(A, B)
