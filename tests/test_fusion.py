"""Tests for layerfusion.fusion: operator shapes, the classifier (learning, determinism, early stopping),
the operator registry, input validation and the dimension-matched control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layerfusion import fusion

N_OUT = {
    "concat": lambda dims, p: sum(dims),
    "sum": lambda dims, p: p,
    "product": lambda dims, p: p,
    "residual": lambda dims, p: (len(dims) + 1) * p,
    "cooccurrence": lambda dims, p: len(dims) ** 2 + (dims[0] if len(set(dims)) == 1 else len(dims) * p),
    "scalar_mix": lambda dims, p: dims[0],
}


def _two_views(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Two views; the label is sign(x1[0] + x2[0]), so each view alone sees only half of the signal."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((n, 6)), rng.standard_normal((n, 4))
    y = (x1[:, 0] + x2[:, 0] > 0).astype(int)
    return [x1.astype(np.float32), x2.astype(np.float16)], y


@pytest.mark.parametrize("name", sorted(N_OUT))
@pytest.mark.parametrize("dims", [(5, 5, 5), (5, 7)])
def test_operator_output_shapes(name, dims):
    cls = fusion.OPERATORS[name]
    if cls.equal_dims and len(set(dims)) > 1:
        with pytest.raises(ValueError, match="one dimension"):
            fusion.make_operator(name, dims, proj_dim=3)
        return
    op = fusion.make_operator(name, dims, proj_dim=3)
    out = op([torch.randn(4, d) for d in dims])
    assert op.out_dim == N_OUT[name](dims, 3)
    assert out.shape == (4, op.out_dim)


def test_concat_beats_each_single_view():
    Xs, y = _two_views(600)
    Xv, yv = _two_views(300, seed=1)
    kw = dict(epochs=60, lr=1e-2, batch_size=64, random_state=0)
    fused = fusion.FusionClassifier(operator="concat", **kw).fit(Xs, y, Xv, yv).score(Xv, yv)
    singles = [fusion.FusionClassifier(operator="concat", **kw).fit([Xs[i]], y, [Xv[i]], yv).score([Xv[i]], yv)
               for i in range(2)]
    assert fused > 0.9
    assert fused > max(singles) + 0.1


@pytest.mark.parametrize("operator,head", [("concat", "linear"), ("cooccurrence", "mlp"), ("residual", "linear")])
def test_deterministic_for_a_seed(operator, head):
    Xs, y = _two_views(200)
    kw = dict(operator=operator, head=head, proj_dim=8, epochs=4, batch_size=32, dropout=0.2)
    a = fusion.FusionClassifier(random_state=3, **kw).fit(Xs, y).predict_proba(Xs)
    b = fusion.FusionClassifier(random_state=3, **kw).fit(Xs, y).predict_proba(Xs)
    c = fusion.FusionClassifier(random_state=4, **kw).fit(Xs, y).predict_proba(Xs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)


def test_fit_leaves_global_torch_rng_alone():
    Xs, y = _two_views(100)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fusion.FusionClassifier(epochs=2, random_state=0).fit(Xs, y)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_restores_best_validation_epoch():
    Xs, y = _two_views(120)
    Xv, yv = _two_views(200, seed=1)
    rng = np.random.default_rng(5)
    noise = [rng.standard_normal((120, 40)).astype(np.float32)]
    noise_val = [rng.standard_normal((200, 40)).astype(np.float32)]
    # a wide head on pure noise over-fits: validation accuracy goes up and down, so the best epoch is not the last
    clf = fusion.FusionClassifier(operator="concat", head="mlp", epochs=40, patience=5, lr=3e-3, batch_size=16,
                                  random_state=0).fit(Xs + noise, y, Xv + noise_val, yv)
    accs = [h["val_accuracy"] for h in clf.history_]
    assert clf.n_epochs_ == len(accs)
    assert clf.best_epoch_ == int(np.argmax(accs)) + 1
    assert clf.n_epochs_ == clf.best_epoch_ + 5 < 40  # stopped early, patience epochs after the best
    assert accs[-1] < max(accs)  # so restoring the best weights matters
    assert clf.score(Xv + noise_val, yv) == pytest.approx(max(accs))


def test_no_validation_trains_all_epochs():
    Xs, y = _two_views(80)
    clf = fusion.FusionClassifier(epochs=3, random_state=0).fit(Xs, y)
    assert clf.n_epochs_ == 3 and clf.best_epoch_ == 3
    assert all(np.isnan(h["val_accuracy"]) for h in clf.history_)


def test_string_labels_and_classes():
    Xs, y = _two_views(100)
    labels = np.array(["neg", "pos"])[y]
    clf = fusion.FusionClassifier(epochs=5, lr=1e-2, random_state=0).fit(Xs, labels)
    assert list(clf.classes_) == ["neg", "pos"]
    assert set(clf.predict(Xs)) <= {"neg", "pos"}
    assert clf.predict_proba(Xs).shape == (100, 2)
    assert clf.get_params()["operator"] == "concat"


def test_cooccurrence_gram_part_in_unit_interval():
    op = fusion.CoOccurrence((6, 6, 6), proj_dim=16, sigma=1.0)
    with torch.no_grad():
        op.sigma.fill_(-3.0)  # a negative sigma must still stay within [-1, 1]
        xs = [10 * torch.randn(50, 6) for _ in range(3)]
        g, _ = op.gram(xs)
        out = op(xs)
    assert g.shape == (50, 9)
    assert float(g.min()) >= -1.0 and float(g.max()) <= 1.0
    torch.testing.assert_close(out[:, :9], g)
    torch.testing.assert_close(out[:, 9:], torch.stack(xs).mean(dim=0))
    mixed = fusion.CoOccurrence((6, 4), proj_dim=5)
    assert mixed(xs[:1] + [torch.randn(50, 4)]).shape == (50, 4 + 2 * 5)


def test_scalar_mix_weights_sum_to_one_after_training():
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((150, 8)).astype(np.float32) for _ in range(4)]
    y = (layers[2][:, 0] > 0).astype(int)
    clf = fusion.FusionClassifier(operator="scalar_mix", epochs=30, lr=5e-2, batch_size=32, random_state=0)
    clf.fit(layers, y)
    w = clf.operator_.mix_weights()
    assert w.shape == (4,)
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    assert int(np.argmax(w)) == 2  # the layer carrying the label gets the largest weight
    with pytest.raises(ValueError, match="one dimension"):
        fusion.FusionClassifier(operator="scalar_mix").fit([layers[0], layers[1][:, :5]], y)


def test_registry_accepts_a_new_operator(monkeypatch):
    class FirstOnly(fusion.FusionOperator):
        name = "first_only"
        min_inputs = 1

        def __init__(self, dims, proj_dim=256, dropout=0.0):
            super().__init__(dims, proj_dim, dropout)
            self.scale = nn.Parameter(torch.ones(1))
            self.out_dim = self.dims[0]

        def forward(self, xs):
            return self.scale * xs[0]

    monkeypatch.setitem(fusion.OPERATORS, "first_only", FirstOnly)
    assert fusion.register_operator(FirstOnly) is FirstOnly
    Xs, y = _two_views(100)
    clf = fusion.FusionClassifier(operator="first_only", epochs=3, random_state=0).fit(Xs, y)
    assert isinstance(clf.operator_, FirstOnly)
    assert clf.predict(Xs).shape == (100,)
    with pytest.raises(ValueError, match="FusionOperator"):
        fusion.register_operator(int)


def test_input_validation():
    Xs, y = _two_views(30)
    clf = fusion.FusionClassifier(epochs=1)
    with pytest.raises(ValueError, match="Xs is empty"):
        clf.fit([], y)
    with pytest.raises(ValueError, match="different numbers of rows"):
        clf.fit([Xs[0], Xs[1][:20]], y)
    bad = Xs[0].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"Xs\[0\].*NaN"):
        clf.fit([bad, Xs[1]], y)
    with pytest.raises(ValueError, match=r"Xs\[1\].*2-D"):
        clf.fit([Xs[0], Xs[1][:, 0]], y)
    with pytest.raises(ValueError, match="list"):
        clf.fit(Xs[0], y)
    with pytest.raises(ValueError, match="y must be 1-D"):
        clf.fit(Xs, y[:10])
    with pytest.raises(ValueError, match="at least 2 inputs"):
        fusion.FusionClassifier(operator="residual").fit(Xs[:1], y)
    with pytest.raises(ValueError, match="operator 'nope' is unknown"):
        fusion.FusionClassifier(operator="nope").fit(Xs, y)
    with pytest.raises(ValueError, match="head"):
        fusion.FusionClassifier(head="tree").fit(Xs, y)
    with pytest.raises(ValueError, match="together"):
        clf.fit(Xs, y, Xs_val=Xs)
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict(Xs)
    clf.fit(Xs, y)
    with pytest.raises(ValueError, match="fitted on"):
        clf.predict(Xs[::-1])


def test_match_dimension_fits_on_train_only():
    rng = np.random.default_rng(0)
    X_train = rng.standard_normal((200, 12)) * np.linspace(5, 0.5, 12)
    X_val = rng.standard_normal((50, 12)) * np.linspace(5, 0.5, 12)
    X_test = rng.standard_normal((40, 12))
    out = fusion.match_dimension(X_train, [X_val, X_test], 4, method="pca", standardize=False)
    assert [o.shape for o in out] == [(200, 4), (50, 4), (40, 4)]
    var = out[0].var(axis=0)
    assert np.all(np.diff(var) < 0)
    # the map depends on train only: changing the other sets does not change the train transform
    again = fusion.match_dimension(X_train, [X_test], 4, method="pca", standardize=False)
    np.testing.assert_allclose(again[0], out[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again[1], out[2], rtol=1e-5, atol=1e-5)
    # a shifted validation set keeps its shift (centred with the train mean, not its own)
    shifted = fusion.match_dimension(X_train, [X_val + 3.0], 4, method="pca", standardize=False)[1]
    assert not np.allclose(shifted.mean(axis=0), 0.0, atol=0.5)

    r1 = fusion.match_dimension(X_train, [X_val], 5, method="random", random_state=1)
    r2 = fusion.match_dimension(X_train, [X_val], 5, method="random", random_state=1)
    r3 = fusion.match_dimension(X_train, [X_val], 5, method="random", random_state=2)
    assert r1[0].shape == (200, 5) and r1[1].shape == (50, 5)
    np.testing.assert_array_equal(r1[1], r2[1])
    assert not np.array_equal(r1[1], r3[1])


def test_match_dimension_no_padding_and_checks():
    rng = np.random.default_rng(0)
    X_train, X_val = rng.standard_normal((30, 6)), rng.standard_normal((10, 6))
    with pytest.warns(UserWarning, match="unchanged"):
        out = fusion.match_dimension(X_train, [X_val], 6)
    np.testing.assert_allclose(out[0], X_train, rtol=1e-6)
    np.testing.assert_allclose(out[1], X_val, rtol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        fusion.match_dimension(X_train, [X_val], 0)
    with pytest.raises(ValueError, match="method"):
        fusion.match_dimension(X_train, [X_val], 3, method="umap")
    with pytest.raises(ValueError, match=r"X_others\[0\]"):
        fusion.match_dimension(X_train, [X_val[:, :4]], 3)
    with pytest.raises(ValueError, match="X_train"):
        fusion.match_dimension(np.full((5, 6), np.inf), [X_val], 3)


def test_register_operator_refuses_to_overwrite_like_models_register():
    from layerfusion import fusion

    concat = fusion.OPERATORS["concat"]
    assert fusion.register_operator(concat) is concat  # the same class again: a no-op

    class Other(concat):
        name = "concat"

    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        fusion.register_operator(Other)
    try:
        assert fusion.register_operator(overwrite=True)(Other) is Other
        assert fusion.OPERATORS["concat"] is Other
    finally:
        fusion.OPERATORS["concat"] = concat
