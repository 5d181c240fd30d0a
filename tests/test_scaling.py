"""Tests for layerfusion.scaling: the standardisation rule matches scikit-learn's StandardScaler, numpy and torch
agree, and the two kept floors behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from layerfusion import scaling


@pytest.fixture
def X() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)) * [1.0, 10.0, 1e-3, 0.0, 1.0, 1.0] + [0.0, 5.0, 0.0, 1e5, 3.0, 0.0]
    X[:, 3] += 1e-10 * rng.standard_normal(200)  # constant up to round-off: scikit-learn gives it scale 1
    X[:, 4] = 3.0  # exactly constant
    X[:, 5] = 1e-7 * rng.integers(0, 2, 200)  # tiny but real variation: kept
    return X


def test_default_rule_is_standard_scalers(X):
    mean, scale = scaling.statistics(X)
    ref = StandardScaler().fit(X)
    assert mean.dtype == scale.dtype == np.float32
    np.testing.assert_allclose(mean, ref.mean_.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(scale, ref.scale_.astype(np.float32), rtol=1e-6)
    assert scale[3] == scale[4] == 1.0 and scale[5] < 1e-6
    np.testing.assert_allclose(scaling.apply(X, mean, scale), ref.transform(X), rtol=1e-4, atol=1e-4)
    assert scaling.apply(X, mean, scale).dtype == np.float32


@pytest.mark.parametrize("floor", ["sklearn", "magnitude", 1e-6])
def test_numpy_and_torch_apply_the_same_rule(X, floor):
    mean, var = X.mean(axis=0), X.var(axis=0)
    ours = scaling.scales(mean, var, len(X), floor)
    theirs = scaling.scales(torch.from_numpy(mean), torch.from_numpy(var), len(X), floor)
    assert isinstance(theirs, torch.Tensor)
    np.testing.assert_array_equal(ours == 1.0, theirs.numpy() == 1.0)  # the same features called constant
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-15)  # torch's sqrt may differ by an ulp


def test_kept_floors_on_a_tiny_feature():
    """The probes' floor calls a feature with std 1e-8 constant, fusion's clamps it to 1e-6, scikit-learn's keeps
    it: the one difference the ci data has (see the module docstring)."""
    mean = np.array([1.2e-7, 5.0], dtype=np.float32)
    var = np.array([1e-16, 4.0], dtype=np.float32)
    np.testing.assert_allclose(scaling.scales(mean, var, 96, "magnitude"), [1.0, 2.0])
    np.testing.assert_allclose(scaling.scales(mean, var, 96, 1e-6), [1e-6, 2.0])
    np.testing.assert_allclose(scaling.scales(mean, var, 96, "sklearn"), [1e-8, 2.0], rtol=1e-6)


def test_centre_only_and_bad_floor(X):
    mean, scale = scaling.statistics(X, with_std=False)
    assert (scale == 1).all()
    for floor in ("unit", 0.0):
        with pytest.raises(ValueError, match="floor must be"):
            scaling.statistics(X, floor=floor)
