"""Chapter 5: each claim of the paper judged from this build's results files, and the reproduction gap between the
authors' protocol and ours. The verdict rules live in ``layerfusion.study.claims``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from layerfusion import pooling as pooling_mod
from layerfusion.study import claims
from layerfusion.study.verdicts import Levels

def _label(name: str) -> str:
    """How the chapter's tables name a pooling: its registry label (``pooling.POOLINGS``), else its name."""
    spec = pooling_mod.POOLINGS.get(name)
    return spec.label if spec is not None else name


def verdicts(load: claims.Loader, pooling: str, levels: Levels) -> pd.DataFrame:
    """The claims table (``claims.evaluate`` at the profile's ``levels``), numbered from 1 as the prose numbers the
    claims."""
    table = claims.evaluate(load, pooling, levels)
    table.index = table.index + 1
    return table


def beyond_the_paper(load: claims.Loader, levels: Levels) -> pd.DataFrame:
    """The automated layer search (the authors' future work), descriptive, not a verdict
    (``claims.beyond_the_paper``), rounded for reading: gains and intervals in points over test items."""
    table = claims.beyond_the_paper(load("fusion_greedy"), load("layers_greedy"), load("fusion_comparisons"), levels)
    for column in ("gain", "low", "high", "mde"):
        table[column] = table[column].round(2)
    table["p_holm"] = table["p_holm"].map(lambda p: f"{p:.2g}" if np.isfinite(p) else "–")
    return table.rename(columns={"low": "gain low", "high": "gain high", "p_holm": "McNemar p (Holm)",
                                 "same_as_claim2": "same models as claim 2's chosen fusion"})


def _number(value: Any, fmt: str) -> str:
    return "" if value is None or not np.isfinite(value) else format(value, fmt)


def claims_view(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading: verdict; the registered test (name, unit, claimed direction, null, family);
    effect with its ``1 - alpha`` interval; one-sided p in the claimed and in the opposite direction (corrected in
    the family); the minimum detectable effect at the profile's power and the power to detect an effect the size of
    the margin; the TOST p against the margin; then the
    evidence; numbers to three significant digits."""
    effect = [f"{_number(e, '.3g')} [{_number(lo, '.3g')}, {_number(hi, '.3g')}]" if lo is not None and
              np.isfinite(lo) else _number(e, ".3g") for e, lo, hi in
              zip(table["effect"], table["effect_low"], table["effect_high"])]
    return pd.DataFrame({
        "claim": table["claim"], "verdict": table["verdict"], "test": table["test"].fillna(""),
        "unit": table["unit"].fillna(""), "claimed": table["direction"].fillna(""),
        "null": table["null"].fillna(""), "family": table["family"].fillna(""),
        "effect [CI]": effect, "p claimed": [_number(p, ".2g") for p in table["p_value"]],
        "p opposite": [_number(p, ".2g") for p in table["p_opposite"]],
        "MDE": [_number(m, ".3g") for m in table["mde"]],
        "power at margin": [_number(p, ".2f") for p in table["power"]],
        "TOST p (margin)": [f"{_number(p, '.2g')} (±{_number(m, '.3g')})" if m is not None and np.isfinite(m)
                            else "no margin" for p, m in zip(table["tost_p"], table["margin"])],
        "evidence": table["evidence"],
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
        f"ours: selected layer, {_label(pooling)}": out["best_test_accuracy"].round(4),
        f"ours, same protocol with {_label(theirs)}": out["best_test_accuracy_theirs"].round(4),
    })


def gap_facts(gap: pd.DataFrame) -> dict[str, Any]:
    """The numbers the prose quotes: the median (over model x dataset) of the mean optimism of selecting the epoch
    on test, in points, and the number of seeds behind each mean."""
    return {"median_optimism": float(gap["optimism (points)"].median()), "authors_seeds": int(gap["seeds"].min())}
