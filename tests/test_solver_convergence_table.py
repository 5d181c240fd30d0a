"""The layer chapter's convergence table: per cell, how many probe fits were solved, how many stopped unconverged,
the most iterations and the largest final gradient (``layer_analysis.convergence`` / ``convergence_table``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from layerfusion import probe
from layerfusion.study.chapters import layer_analysis


def _stack(seed: int = 0):
    X, y = make_classification(n_samples=240, n_features=10, n_informative=5, n_classes=3, random_state=seed)
    return np.stack([X, X + np.random.default_rng(seed).standard_normal(X.shape)], axis=1).astype(np.float32), y


def test_convergence_counts_every_fold_and_refit_fit_and_the_table_lists_cells():
    X, y = _stack()
    good = probe.LayerwiseProbe(Cs=(0.1, 1.0), cv=3, max_iter=500, tol=1e-4).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        capped = probe.LayerwiseProbe(Cs=(0.1, 1.0), cv=3, max_iter=3, tol=1e-4).fit(X, y)
    row_good, row_capped = layer_analysis.convergence(good), layer_analysis.convergence(capped)
    assert row_good["fits"] == row_capped["fits"] == 3 * 2 * 2 + 2
    assert row_good["unconverged"] == 0 and row_good["max_final_gradient"] <= 1e-4
    assert row_capped["unconverged"] == row_capped["fits"] and row_capped["max_iterations"] == 3
    assert row_capped["max_final_gradient"] > 1e-4
    validation = probe.LayerwiseProbe(Cs=(0.1, 1.0), max_iter=500).fit(X[:160], y[:160], X[160:], y[160:])
    assert layer_analysis.convergence(validation)["fits"] == 2 * 2
    cells = [{"model": "m", "dataset": d, "pooling": "mean", "protocol": "cv", "best_layer": 1, **row}
             for d, row in (("a", row_good), ("b", row_capped))]
    table = layer_analysis.convergence_table(pd.DataFrame(cells))
    assert list(table.columns) == ["model", "dataset", "pooling", "protocol", *layer_analysis.CONVERGENCE_COLUMNS]
    assert table["unconverged"].tolist() == [0, row_capped["fits"]]
