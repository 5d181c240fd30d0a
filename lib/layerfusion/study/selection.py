"""The study's greedy search over (model, layer) units, shared by the layer chapter (layers of one model) and the
fusion chapter (layers of several models).

Each candidate set is scored by a logistic probe (the profile's ``probe`` settings) fitted on train and scored on
validation; ``select.greedy_forward`` grows the set; the chosen set is refitted and scored on test once, at the end.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from layerfusion import probe, select, stats
from layerfusion.data import SPLITS
from layerfusion.study.features import Study
from layerfusion.study.settings import GreedySettings


def greedy_units(study: Study, dataset: str, candidates: Mapping[str, tuple[str, int]], settings: GreedySettings,
                 *, cost_in_dims: bool = False) -> pd.DataFrame:
    """Greedy forward selection over ``candidates`` (unit name -> (model, layer)) on ``dataset``.

    Units are the profile's primary-pooling vectors of one layer, concatenated. The path's ``cost`` column counts
    feature dimensions when ``cost_in_dims`` or a ``settings.budget_dims`` is set, else units. Returns the
    ``select.GreedyPath`` frame (one row per accepted step) with, on the last row, the test once: the accuracy of
    the chosen set (the first candidate if the search chose nothing) in ``chosen_test_accuracy``, that of the best
    single unit it started from in ``single_test_accuracy``, McNemar's p between the two (``p_vs_single``), their
    discordance and ``n_test``.
    """
    cfg = study.config
    names = list(candidates)
    y = {s: study.labels(dataset, s) for s in SPLITS}

    def stack(split: str, units: list[str]) -> np.ndarray:
        return np.concatenate([study.layer_matrix(candidates[u][0], dataset, split, int(candidates[u][1]))
                               for u in units], axis=1)

    def fit(units: list[str]) -> probe.LogisticProbe:
        return study.fits.fit(probe.LogisticProbe(**cfg.probe.params(), random_state=cfg.seed),
                              stack("train", units), y["train"], stack("validation", units), y["validation"])

    by_dims = cost_in_dims or settings.budget_dims is not None
    cost = {u: float(study.width(candidates[u][0], dataset)) for u in names} if by_dims else None
    path = select.greedy_forward(names, lambda units: fit(units).score(stack("validation", units), y["validation"]),
                                 cost=cost, budget=settings.budget_dims, max_units=settings.max_units)
    frame = path.to_frame()
    chosen = path.units or names[:1]
    single = chosen[:1] if not path.steps else list(path.steps[0].units)
    pred = fit(chosen).predict(stack("test", chosen))
    single_pred = pred if single == chosen else fit(single).predict(stack("test", single))
    test = stats.mcnemar(y["test"], pred, single_pred)
    last = {"chosen_test_accuracy": stats.accuracy(y["test"], pred),
            "single_test_accuracy": stats.accuracy(y["test"], single_pred), "p_vs_single": test.p_value,
            "discordance_vs_single": stats.discordance(y["test"], pred, single_pred), "n_test": len(y["test"])}
    if frame.empty:
        frame = pd.DataFrame([{"units": list(chosen)}]).reindex(columns=frame.columns)
    for key, value in last.items():
        frame[key] = [np.nan] * (len(frame) - 1) + [value]
    return frame
