"""Tests for layerfusion.heads: the authors' MLP head (history, determinism, epoch selection, input checks) and the
shared training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from layerfusion import heads


def _mlp_data():
    X, y = make_classification(n_samples=300, n_features=12, n_informative=6, n_redundant=4, n_classes=3,
                               random_state=5)
    X = X.astype(np.float32)
    return (X[:200], y[:200]), (X[200:250], y[200:250]), (X[250:], y[250:])


def test_mlp_history_and_determinism():
    (Xtr, ytr), val, test = _mlp_data()
    kwargs = dict(hidden=(32, 16), epochs=4, batch_size=100, lr=1e-3, random_state=0)
    a = heads.MLPHead(**kwargs).fit(Xtr.astype(np.float16), ytr, eval_sets={"val": val, "test": test})
    b = heads.MLPHead(**kwargs).fit(Xtr.astype(np.float16), ytr, eval_sets={"val": val, "test": test})
    assert len(a.history_) == 4 * 2 and list(a.history_.columns) == ["epoch", "set", "accuracy"]
    pd_test = a.history_[a.history_["set"] == "test"]
    assert pd_test["accuracy"].max() >= pd_test["accuracy"].iloc[-1]
    np.testing.assert_array_equal(a.predict_proba(test[0]), b.predict_proba(test[0]))
    assert a.history_.equals(b.history_)
    assert len(a.loss_curve_) == 4 and a.selected_epoch_ == 4
    other = heads.MLPHead(**{**kwargs, "random_state": 1, "epochs": 1}).fit(Xtr, ytr)
    assert not np.array_equal(other.predict_proba(test[0]), heads.MLPHead(**{**kwargs, "epochs": 1}).fit(
        Xtr, ytr).predict_proba(test[0]))


def test_mlp_select_val_epoch_restores_best():
    (Xtr, ytr), val, test = _mlp_data()
    head = heads.MLPHead(hidden=(32, 16), epochs=8, batch_size=64, lr=1e-3, select_epoch="val")
    head.fit(Xtr, ytr, eval_sets={"val": val})
    hist = head.history_.set_index("epoch")["accuracy"]
    assert head.selected_epoch_ == int(hist.idxmax())
    assert head.score(*val) == pytest.approx(hist.max())
    with pytest.raises(ValueError, match="select_epoch='val' needs"):
        heads.MLPHead(select_epoch="val", epochs=1).fit(Xtr, ytr)


def test_mlp_separable_reaches_100_percent():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    X = rng.standard_normal((200, 5)).astype(np.float32)
    X[:, 0] += 4.0 * (2 * y - 1)
    head = heads.MLPHead(hidden=(16, 8), dropout=(0.0, 0.0), epochs=40, batch_size=50, lr=1e-2).fit(X, y)
    assert head.score(X, y) == 1.0


def test_mlp_rejects_bad_input():
    (Xtr, ytr), val, _ = _mlp_data()
    with pytest.raises(ValueError, match="X must be 2-D"):
        heads.MLPHead(epochs=1).fit(Xtr[:, :, None], ytr)
    with pytest.raises(ValueError, match="y must be 1-D"):
        heads.MLPHead(epochs=1).fit(Xtr, ytr[:-1])
    with pytest.raises(ValueError, match=r"eval_sets\['val'\] y has labels not seen"):
        heads.MLPHead(epochs=1).fit(Xtr, ytr, eval_sets={"val": (val[0], val[1] + 10)})
    with pytest.raises(ValueError, match="hidden"):
        heads.MLPHead(hidden=(8,), dropout=(0.1, 0.2), epochs=1).fit(Xtr, ytr)
    head = heads.MLPHead(hidden=(8,), dropout=(0.1,), epochs=1).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="X has 3 features"):
        head.predict(Xtr[:, :3])


def test_train_stops_after_patience_and_restores_the_best_epoch():
    rng = np.random.default_rng(0)
    X, Xv = rng.standard_normal((120, 30)).astype(np.float32), rng.standard_normal((200, 30)).astype(np.float32)
    y, yv = rng.integers(0, 2, 120), rng.integers(0, 2, 200)  # pure noise: validation accuracy goes up and down
    settings = heads.TrainingSettings(lr=3e-3, weight_decay=0.0, batch_size=16, epochs=60, random_state=0)
    net, log = heads.train(lambda: heads.MLP(30, (64,), (0.0,), 2), [X], y, settings, {"val": ([Xv], yv)},
                           restore_best=True, patience=4)
    accs = [s["val"] for s in log.scores]
    assert log.best_epoch == int(np.argmax(accs)) + 1
    assert log.n_epochs == log.best_epoch + 4 < 60 and len(log.losses) == log.n_epochs
    assert np.mean(heads.predict_logits(net, [Xv], "cpu").argmax(axis=1) == yv) == max(accs) > accs[-1]


def test_train_is_seeded_and_leaves_the_global_rng_alone():
    X, y = _mlp_data()[0]
    settings = heads.TrainingSettings(lr=1e-3, weight_decay=0.0, batch_size=64, epochs=2, random_state=7)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = heads.predict_logits(heads.train(lambda: heads.MLP(12, (8,), (0.5,), 3), [X], y, settings)[0], [X], "cpu")
    assert torch.equal(torch.rand(3), expected)
    b = heads.predict_logits(heads.train(lambda: heads.MLP(12, (8,), (0.5,), 3), [X], y, settings)[0], [X], "cpu")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("lr", float("nan")), ("weight_decay", -1.0),
                                          ("batch_size", 0), ("epochs", 2.5), ("random_state", None)])
def test_training_settings_are_validated(field, value):
    settings = dict(lr=1e-3, weight_decay=0.0, batch_size=8, epochs=2, random_state=0)
    with pytest.raises(ValueError, match=field):
        heads.TrainingSettings(**{**settings, field: value})


def test_mlp_reports_whether_the_training_loss_reached_a_plateau():
    """A head trained to its plateau says so; one stopped while its loss still falls warns and says it did not."""
    from sklearn.exceptions import ConvergenceWarning

    (Xtr, ytr), _, _ = _mlp_data()
    settled = heads.MLPHead(hidden=(32, 16), epochs=150, batch_size=50, lr=3e-3, weight_decay=1e-2).fit(Xtr, ytr)
    assert settled.converged_ and abs(settled.loss_change_) < heads.PLATEAU_RTOL
    assert np.mean(settled.loss_curve_[-5:]) < np.mean(settled.loss_curve_[:5])
    with pytest.warns(ConvergenceWarning, match="still falling after 12 epochs"):
        early = heads.MLPHead(hidden=(32, 16), epochs=12, batch_size=50, lr=1e-3).fit(Xtr, ytr)
    assert not early.converged_ and early.loss_change_ < -heads.PLATEAU_RTOL
    short = heads.TrainingLog(losses=[1.0, 0.9, 0.8])
    assert np.isnan(short.loss_change()) and not short.plateaued()
    flat = heads.TrainingLog(losses=[1.0] * 5 + [0.995] * 5)
    assert flat.plateaued() and not heads.TrainingLog(losses=[1.0] * 5 + [0.98] * 5).plateaued()
