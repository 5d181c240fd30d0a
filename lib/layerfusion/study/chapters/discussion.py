"""Chapter 5: each claim of the paper judged from this build's results files, and the reproduction gap between the
authors' protocol and ours. The verdict rules live in ``layerfusion.study.claims``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from layerfusion.study import claims

POOLING_LABELS = {"mean": "masked mean", "last": "last token", "mean_pad": "mean over padding"}
"""How the chapter's tables name each pooling."""


def verdicts(load: claims.Loader, pooling: str) -> pd.DataFrame:
    """The claims table (``claims.evaluate``), numbered from 1 as the prose numbers the claims."""
    table = claims.evaluate(load, pooling)
    table.index = table.index + 1
    return table


def verdict_facts(table: pd.DataFrame) -> dict[str, str]:
    """Each claim's verdict, keyed ``claim<N>_verdict`` for the prose."""
    return {f"claim{i}_verdict": verdict for i, verdict in table["verdict"].items()}


def reproduction_gap(load: claims.Loader, pooling: str) -> pd.DataFrame:
    """The authors' protocol (max test over epochs, their pooling) against ours, per model x dataset.

    Ours is the validation-best layer of the primary ``pooling``, and the same protocol with the authors' pooling
    (read from the ``layers_authors`` table).
    """
    authors = load("layers_authors")
    summary = load("layers_summary")
    theirs = str(authors["pooling"].iloc[0])
    ours = summary[summary["pooling"] == pooling][["model", "dataset", "best_layer", "best_test_accuracy"]]
    pad = summary[summary["pooling"] == theirs][["model", "dataset", "best_test_accuracy"]]
    out = authors.merge(ours, on=["model", "dataset"]).merge(pad, on=["model", "dataset"], suffixes=("", "_theirs"))
    return pd.DataFrame({
        "model": out["model"], "dataset": out["dataset"],
        "authors: max test over epochs": out["max_test_accuracy"].round(4),
        "authors: epoch chosen on val": out["val_selected_test_accuracy"].round(4),
        "optimism (points)": (out["optimism"] * 100).round(2),
        f"ours: best layer (val), {POOLING_LABELS.get(pooling, pooling)}": out["best_test_accuracy"].round(4),
        f"ours, same protocol with {POOLING_LABELS.get(theirs, theirs)}": out["best_test_accuracy_theirs"].round(4),
    })


def gap_facts(gap: pd.DataFrame) -> dict[str, Any]:
    """The number the prose quotes: the median optimism of selecting the epoch on test, in points."""
    return {"median_optimism": float(gap["optimism (points)"].median())}
