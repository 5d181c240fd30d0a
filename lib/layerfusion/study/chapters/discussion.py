"""Chapter 5: each claim of the paper judged from this build's results files, and the reproduction gap between the
authors' protocol and ours. The verdict rules live in ``layerfusion.study.claims``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from layerfusion.study import claims

POOLING_LABELS = {"mean": "masked mean", "last": "last token", "mean_pad": "mean over padding"}
"""How the chapter's tables name each pooling."""


def verdicts(load: claims.Loader, pooling: str, alpha: float = claims.ALPHA,
             power: float = claims.POWER) -> pd.DataFrame:
    """The claims table (``claims.evaluate``), numbered from 1 as the prose numbers the claims."""
    table = claims.evaluate(load, pooling, alpha, power)
    table.index = table.index + 1
    return table


def _number(value: Any, fmt: str) -> str:
    return "" if value is None or not np.isfinite(value) else format(value, fmt)


def claims_view(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading: verdict, decisive test, effect with its 95 % interval, p-value and (where the
    verdict rests on it) the minimum detectable effect, then the evidence; numbers to three significant digits."""
    effect = [f"{_number(e, '.3g')} [{_number(lo, '.3g')}, {_number(hi, '.3g')}]" if lo is not None and
              np.isfinite(lo) else _number(e, ".3g") for e, lo, hi in
              zip(table["effect"], table["effect_low"], table["effect_high"])]
    return pd.DataFrame({
        "claim": table["claim"], "verdict": table["verdict"], "test": table["test"].fillna(""),
        "effect [95 % CI]": effect, "p": [_number(p, ".2g") for p in table["p_value"]],
        "MDE": [_number(m, ".3g") for m in table["mde"]], "evidence": table["evidence"],
    }, index=table.index)


def verdict_facts(table: pd.DataFrame) -> dict[str, str]:
    """Each claim's verdict, keyed ``claim<N>_verdict`` for the prose."""
    return {f"claim{i}_verdict": verdict for i, verdict in table["verdict"].items()}


def reproduction_gap(load: claims.Loader, pooling: str) -> pd.DataFrame:
    """The authors' protocol (max test over epochs, their pooling; mean over its seeds) against ours, per model x
    dataset.

    Ours is the selected layer of the primary ``pooling``, and the same protocol with the authors' pooling (read from
    the ``layers_authors`` table).
    """
    per_seed = load("layers_authors")
    theirs = str(per_seed["pooling"].iloc[0])
    authors = per_seed.groupby(["model", "dataset"], sort=False).agg(
        seeds=("seed", "nunique"), max_test_accuracy=("max_test_accuracy", "mean"),
        val_selected_test_accuracy=("val_selected_test_accuracy", "mean"), optimism=("optimism", "mean"),
        optimism_sd=("optimism", "std")).reset_index()
    summary = load("layers_summary")
    ours = summary[summary["pooling"] == pooling][["model", "dataset", "best_layer", "best_test_accuracy"]]
    pad = summary[summary["pooling"] == theirs][["model", "dataset", "best_test_accuracy"]]
    out = authors.merge(ours, on=["model", "dataset"]).merge(pad, on=["model", "dataset"], suffixes=("", "_theirs"))
    return pd.DataFrame({
        "model": out["model"], "dataset": out["dataset"], "seeds": out["seeds"],
        "authors: max test over epochs": out["max_test_accuracy"].round(4),
        "authors: epoch chosen on val": out["val_selected_test_accuracy"].round(4),
        "optimism (points)": (out["optimism"] * 100).round(2),
        "optimism sd (points)": (out["optimism_sd"] * 100).round(2),
        f"ours: selected layer, {POOLING_LABELS.get(pooling, pooling)}": out["best_test_accuracy"].round(4),
        f"ours, same protocol with {POOLING_LABELS.get(theirs, theirs)}": out["best_test_accuracy_theirs"].round(4),
    })


def gap_facts(gap: pd.DataFrame) -> dict[str, Any]:
    """The numbers the prose quotes: the median (over model x dataset) of the mean optimism of selecting the epoch
    on test, in points, and the number of seeds behind each mean."""
    return {"median_optimism": float(gap["optimism (points)"].median()), "authors_seeds": int(gap["seeds"].min())}
