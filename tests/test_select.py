"""Tests for layerfusion.select: ranking with ties, the set tied with the best, greedy forward search."""

from __future__ import annotations

import numpy as np
import pytest

from layerfusion import select


def test_best_layer_ties_go_shallower():
    scores = [0.70, 0.82, 0.80, 0.82, 0.75]
    assert select.best_layer(scores) == 1
    assert select.best_layer(scores, layers=[0, 4, 8, 12, 16]) == 4
    # ids not in ascending order: the tie still goes to the smaller layer id
    assert select.best_layer(scores, layers=[0, 12, 8, 4, 16]) == 4


def test_best_layer_input_checks():
    with pytest.raises(ValueError, match="val_scores"):
        select.best_layer([])
    with pytest.raises(ValueError, match="NaN"):
        select.best_layer([0.5, np.nan])
    with pytest.raises(ValueError, match="layers"):
        select.best_layer([0.5, 0.6], layers=[1, 2, 3])


def test_top_k_order_ties_and_clipping():
    scores = np.array([0.70, 0.82, 0.80, 0.82, 0.75])
    assert select.top_k(scores, 3) == [1, 3, 2]
    assert select.top_k(scores, 10) == [1, 3, 2, 4, 0]
    assert select.top_k(scores, 2, layers=[10, 11, 12, 13, 14]) == [11, 13]
    with pytest.raises(ValueError, match="k"):
        select.top_k(scores, 0)


def _preds_with_accuracy(y: np.ndarray, n_right: int, offset: int = 0) -> np.ndarray:
    """Predictions right on ``n_right`` items starting at ``offset`` (cyclically), wrong elsewhere."""
    pred = 1 - y
    idx = (offset + np.arange(n_right)) % len(y)
    pred[idx] = y[idx]
    return pred


def test_indistinguishable_from_best():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    preds = np.stack([
        _preds_with_accuracy(y, 240),       # 0: far worse than the best (60% vs 90%)
        _preds_with_accuracy(y, 360),       # 1: the best
        _preds_with_accuracy(y, 355, 5),    # 2: 5 fewer right, 5 discordant pairs -> exact p = 0.0625: tied
        _preds_with_accuracy(y, 300, 30),   # 3: clearly worse
        _preds_with_accuracy(y, 360, 40),   # 4: same accuracy, different items: tied
    ])
    tied = select.indistinguishable_from_best(y, preds, best=1)
    assert tied == [1, 2, 4]
    # a very strict alpha keeps more layers; a single layer is tied with itself
    assert set(select.indistinguishable_from_best(y, preds, best=1, alpha=1e-30)) == {0, 1, 2, 3, 4}
    assert select.indistinguishable_from_best(y, preds[:1], best=0) == [0]


def test_indistinguishable_holm_is_stricter_than_raw():
    # layer 1 alone would be significantly worse (exact p = 2 * 0.5**6 ~ 0.031), but after Holm over
    # four comparisons (x4) it is not
    y = np.zeros(100, dtype=int)
    best = np.zeros(100, dtype=int)
    worse = best.copy()
    worse[:6] = 1
    preds = np.stack([best, worse, best, best, best])
    assert select.indistinguishable_from_best(y, preds[:2], best=0) == [0]
    assert select.indistinguishable_from_best(y, preds, best=0) == [0, 1, 2, 3, 4]


def test_indistinguishable_input_checks():
    y = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="val_preds"):
        select.indistinguishable_from_best(y, np.zeros(10), best=0)
    with pytest.raises(ValueError, match="y_val"):
        select.indistinguishable_from_best(y[:5], np.zeros((2, 10)), best=0)
    with pytest.raises(ValueError, match="best"):
        select.indistinguishable_from_best(y, np.zeros((2, 10)), best=2)


def _additive_score(values: dict[str, float], penalty: float = 0.0):
    """Score = sum of unit values minus a penalty per unit beyond the first: the greedy optimum is known."""
    calls = []

    def score(units: list[str]) -> float:
        calls.append(list(units))
        return sum(values[u] for u in units) - penalty * (len(units) - 1)

    return score, calls


def test_greedy_forward_known_answer():
    values = {"a": 0.50, "b": 0.70, "c": 0.10, "d": 0.02}
    score, calls = _additive_score(values, penalty=0.05)
    path = select.greedy_forward(list(values), score)
    # b first, then a (+0.45), then c (+0.05); d would add -0.03 -> stop
    assert path.units == ["b", "a", "c"]
    assert path.stop_reason == "no_gain"
    assert path.score == pytest.approx(1.20)
    frame = path.to_frame()
    assert list(frame.columns) == ["step", "units", "added", "score", "gain", "cost", "n_evaluated"]
    assert frame["added"].tolist() == ["b", "a", "c"]
    assert frame["units"].iloc[-1] == ["b", "a", "c"]
    np.testing.assert_allclose(frame["gain"].iloc[1:], [0.45, 0.05])
    assert frame["cost"].tolist() == [1.0, 2.0, 3.0]
    assert frame["n_evaluated"].tolist() == [4, 3, 2]
    assert calls[:4] == [["a"], ["b"], ["c"], ["d"]]
    assert calls[4] == ["b", "a"]  # the current set first, then the candidate
    assert len(path.evaluations) == 4 + 3 + 2 + 1


def test_greedy_forward_min_gain_max_units_and_ties():
    values = {"a": 0.50, "b": 0.70, "c": 0.10, "d": 0.02}
    score, _ = _additive_score(values, penalty=0.05)
    assert select.greedy_forward(list(values), score, min_gain=0.1).units == ["b", "a"]
    capped = select.greedy_forward(list(values), score, max_units=1)
    assert capped.units == ["b"] and capped.stop_reason == "max_units"
    tie_score, _ = _additive_score({"x": 0.3, "y": 0.3, "z": 0.3})
    assert select.greedy_forward(["y", "x", "z"], tie_score).units == ["y", "x", "z"]
    assert select.greedy_forward(["y", "x", "z"], tie_score).stop_reason == "exhausted"


def test_greedy_forward_budget_and_cost():
    values = {"big": 0.80, "small1": 0.50, "small2": 0.45, "small3": 0.05}
    cost = {"big": 1000.0, "small1": 300.0, "small2": 300.0, "small3": 300.0}
    score, _ = _additive_score(values)
    path = select.greedy_forward(list(values), score, cost=cost, budget=900)
    # "big" never fits; the three small ones fit exactly
    assert path.units == ["small1", "small2", "small3"]
    assert path.to_frame()["cost"].tolist() == [300.0, 600.0, 900.0]
    assert path.stop_reason == "budget"
    # budget without cost counts units
    assert select.greedy_forward(list(values), score, budget=2).units == ["big", "small1"]
    empty = select.greedy_forward(list(values), score, cost=cost, budget=100)
    assert empty.units == [] and empty.to_frame().empty and np.isnan(empty.score)


def test_greedy_forward_input_checks():
    score, _ = _additive_score({"a": 1.0, "b": 0.5})
    with pytest.raises(ValueError, match="candidates"):
        select.greedy_forward([], score)
    with pytest.raises(ValueError, match="duplicates"):
        select.greedy_forward(["a", "a"], score)
    with pytest.raises(KeyError, match="cost"):
        select.greedy_forward(["a", "b"], score, cost={"a": 1.0})
    with pytest.raises(ValueError, match="finite"):
        select.greedy_forward(["a"], lambda units: float("nan"))


def test_selection_frequencies_follow_the_margin_between_layers():
    rng = np.random.default_rng(1)
    n = 300
    # layer 0: 60 % right; layer 1: 90 % right at the second C only; layer 2: 89 % right (close to layer 1)
    correct = np.zeros((3, 2, n), dtype=bool)
    correct[0, :] = rng.random(n) < 0.6
    correct[1, 1] = rng.random(n) < 0.9
    correct[2, :] = rng.random(n) < 0.89
    freq = select.selection_frequencies(correct, n_boot=400, random_state=0)
    assert freq.shape == (3,) and freq.sum() == pytest.approx(1.0)
    assert freq[0] == 0.0 and freq[1] > 0.1 and freq[2] > 0.1
    # a clear winner is chosen on every resample; the same seed gives the same frequencies
    correct[1, 1] = True
    assert select.selection_frequencies(correct, n_boot=200).tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_array_equal(select.selection_frequencies(correct, 50, 3), select.selection_frequencies(
        correct, 50, 3))


def test_selection_frequencies_break_ties_like_best_layer():
    # identical layers: every resample ties, and the tie goes to the shallower layer, as best_layer's
    row = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    correct = np.stack([row, row, row])
    assert select.selection_frequencies(correct, n_boot=100).tolist() == [1.0, 0.0, 0.0]
    assert select.best_layer(correct.mean(axis=1)) == 0


def test_selection_frequencies_input_checks():
    with pytest.raises(ValueError, match="shape"):
        select.selection_frequencies(np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="0/1"):
        select.selection_frequencies(np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="n_boot"):
        select.selection_frequencies(np.zeros((2, 4), dtype=bool), n_boot=0)
