"""Layer and unit selection on validation data only; the caller touches the test split once, afterwards.

``best_layer`` / ``top_k`` rank layers by validation score, ``indistinguishable_from_best`` says which layers the
validation data cannot tell apart from the best (McNemar + Holm), ``selection_frequencies`` says how often each
layer would be chosen if the selection items were drawn again (bootstrap), and ``greedy_forward`` builds a set of
units (layers or model-layer pairs) step by step under an optional cost budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from layerfusion import checks, stats


def _scores(val_scores: Sequence[float] | np.ndarray, layers: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(val_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"val_scores must be a non-empty 1-D array (one score per layer), got shape {s.shape}")
    if np.any(np.isnan(s)):
        raise ValueError("val_scores contains NaN; every layer needs a validation score")
    ids = np.arange(s.size) if layers is None else np.asarray(layers)
    if ids.shape != s.shape:
        raise ValueError(f"layers has {ids.size} entries but val_scores has {s.size}")
    return s, ids


def _ranking(s: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions sorted by score descending, ties broken towards the shallower layer (smaller id)."""
    return np.lexsort((ids, -s))


def best_layer(val_scores: Sequence[float] | np.ndarray, layers: Sequence[int] | None = None) -> int:
    """The layer with the highest validation score; ties go to the shallower layer (cheaper to extract).

    Without ``layers`` the answer is a position in ``val_scores``; with ``layers`` (the layer ids of the scores) it
    is the layer id.
    """
    s, ids = _scores(val_scores, layers)
    return int(ids[_ranking(s, ids)[0]])


def top_k(val_scores: Sequence[float] | np.ndarray, k: int, layers: Sequence[int] | None = None) -> list[int]:
    """The ``k`` best layers by validation score, best first (ties: shallower first); fewer if there are fewer."""
    k = checks.positive_int(k, "k")
    s, ids = _scores(val_scores, layers)
    return [int(x) for x in ids[_ranking(s, ids)[:k]]]


def indistinguishable_from_best(y_val: Sequence | np.ndarray, val_preds: np.ndarray, best: int,
                                alpha: float = 0.05) -> list[int]:
    """Layers whose validation predictions are not significantly worse than the best layer's, best included.

    Each layer is compared with ``best`` by McNemar's test on the validation items; the p-values are Holm-corrected
    over the ``L - 1`` comparisons. A layer is dropped only when its corrected p-value is below ``alpha`` and it is
    right less often than the best. ``val_preds`` is (L, n); ``best`` and the result are row positions in it.
    """
    preds = np.asarray(val_preds)
    y = checks.labels(y_val, "y_val")
    if preds.ndim != 2:
        raise ValueError(f"val_preds must be a 2-D (n_layers, n_items) array, got shape {preds.shape}")
    if preds.shape[1] != y.shape[0]:
        raise ValueError(f"val_preds has {preds.shape[1]} items per layer but y_val has {y.shape[0]}")
    if not 0 <= best < preds.shape[0]:
        raise ValueError(f"best must be a row of val_preds in [0, {preds.shape[0] - 1}], got {best!r}")
    checks.significance(alpha)
    others = [i for i in range(preds.shape[0]) if i != best]
    if not others:
        return [int(best)]
    tests = [stats.mcnemar(y, preds[best], preds[i]) for i in others]
    adjusted = stats.holm([t.p_value for t in tests])
    worse = {i for i, t, p in zip(others, tests, adjusted) if p < alpha and t.n10 > t.n01}
    return [i for i in range(preds.shape[0]) if i not in worse]




def selection_frequencies(correct: np.ndarray, n_boot: int = 1000, random_state: int = 0) -> np.ndarray:
    """How often each layer is the validation-best when the selection items are resampled with replacement.

    ``correct`` is the per-(layer, C, item) correctness on the selection items (validation items, or out-of-fold
    predictions), (L, n_Cs, n), or (L, n) for one C: ``LayerwiseProbe.selection_correct_``. Each of ``n_boot``
    bootstrap resamples of the items scores every (layer, C) by its accuracy on the resample, keeps the best C of
    each layer and picks the layer as ``best_layer`` does (highest score, ties to the shallower layer; ties between
    values of C go to the smaller C, which does not change the layer). Returns (L,) frequencies summing to 1.

    No refitting: the fits stay as they were, only the items that choose among them are redrawn, so this measures
    how much of the choice is the luck of the selection split. Scores are integer counts, so ties are exact.
    """
    c = np.asarray(correct)
    if c.ndim == 2:
        c = c[:, None, :]
    if c.ndim != 3 or 0 in c.shape:
        raise ValueError(f"correct must be a non-empty (layers, Cs, items) or (layers, items) array, got shape "
                         f"{np.shape(correct)}")
    if not (c.dtype == bool or np.isin(c, (0, 1)).all()):
        raise ValueError("correct must hold booleans or 0/1 (whether each item was classified right)")
    n_boot = checks.positive_int(n_boot, "n_boot")
    L, n_cs, n = c.shape
    flat = c.reshape(L * n_cs, n).astype(np.float64).T
    counts = np.zeros(L, dtype=np.int64)
    for idx in stats.bootstrap_indices(n, n_boot, random_state):
        layer_scores = (stats.resample_counts(idx, n) @ flat).reshape(len(idx), L, n_cs).max(axis=2)
        counts += np.bincount(layer_scores.argmax(axis=1), minlength=L)
    return counts / n_boot


@dataclass(frozen=True)
class GreedyStep:
    """One accepted step of a greedy search: the set after adding ``added``, its score, gain and total cost."""

    units: tuple[str, ...]
    added: str
    score: float
    gain: float
    cost: float
    n_evaluated: int


@dataclass
class GreedyPath:
    """The accepted steps of ``greedy_forward`` in order, every evaluated set, and why the search stopped."""

    steps: list[GreedyStep] = field(default_factory=list)
    evaluations: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def units(self) -> list[str]:
        """The selected set (the last step's), empty if nothing was affordable."""
        return list(self.steps[-1].units) if self.steps else []

    @property
    def score(self) -> float:
        """Validation score of the selected set (NaN if empty)."""
        return self.steps[-1].score if self.steps else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """One row per accepted step: ``step, units, added, score, gain, cost, n_evaluated``."""
        cols = ["step", "units", "added", "score", "gain", "cost", "n_evaluated"]
        rows = [{"step": i + 1, "units": list(s.units), "added": s.added, "score": s.score, "gain": s.gain,
                 "cost": s.cost, "n_evaluated": s.n_evaluated} for i, s in enumerate(self.steps)]
        return pd.DataFrame(rows, columns=cols)


def greedy_forward(candidates: list[str], score_fn: Callable[[list[str]], float],
                   cost: dict[str, float] | None = None, budget: float | None = None,
                   max_units: int | None = None, min_gain: float = 0.0, progress: bool = False) -> GreedyPath:
    """Forward selection of units by validation score.

    Starting from the empty set, each step calls ``score_fn(current + [candidate])`` for every remaining candidate
    whose cost still fits the ``budget`` and adds the best one; ties go to the earlier candidate in ``candidates``.
    The first step always adds the best affordable single unit; later steps must improve the score by more than
    ``min_gain``. The search stops at ``max_units`` units, when nothing affordable is left, or when no candidate
    gains enough. ``cost`` maps each candidate to its cost (default 1 each, so ``budget`` then counts units).
    """
    names = list(candidates)
    if not names:
        raise ValueError("candidates is empty; pass at least one unit name")
    if len(set(names)) != len(names):
        raise ValueError(f"candidates contains duplicates: {sorted({n for n in names if names.count(n) > 1})}")
    if cost is None:
        cost = {n: 1.0 for n in names}
    missing = [n for n in names if n not in cost]
    if missing:
        raise KeyError(f"cost has no entry for candidates {missing}; give a cost for every candidate")
    if any(cost[n] < 0 for n in names):
        raise ValueError("cost values must be non-negative")
    if max_units is not None:
        checks.positive_int(max_units, "max_units")
    if min_gain < 0:
        raise ValueError(f"min_gain must be >= 0, got {min_gain!r}")

    path = GreedyPath()
    chosen: list[str] = []
    spent, current = 0.0, -np.inf
    bar = tqdm(desc="greedy forward", unit="fit", disable=not progress)
    while True:
        if max_units is not None and len(chosen) >= max_units:
            path.stop_reason = "max_units"
            break
        options = [n for n in names if n not in chosen and (budget is None or spent + cost[n] <= budget)]
        if not options:
            path.stop_reason = "budget" if len(chosen) < len(names) else "exhausted"
            break
        best_name, best_score = None, -np.inf
        for name in options:
            units = chosen + [name]
            value = float(score_fn(list(units)))
            if not np.isfinite(value):
                raise ValueError(f"score_fn returned {value} for units {units}; it must return a finite score")
            path.evaluations.append((tuple(units), value))
            bar.update(1)
            if value > best_score:
                best_name, best_score = name, value
        if chosen and not best_score - current > min_gain:
            path.stop_reason = "no_gain"
            break
        gain = best_score - current if chosen else float("nan")
        chosen.append(best_name)
        spent += cost[best_name]
        current = best_score
        path.steps.append(GreedyStep(tuple(chosen), best_name, best_score, gain, spent, len(options)))
    bar.close()
    return path
