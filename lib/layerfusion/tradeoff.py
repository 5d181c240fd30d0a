"""Reading measured costs: how a cost grows with a setting (a least-squares line) and what it buys (the Pareto
front of cost against score). Measuring is ``layerfusion.meter`` / ``layerfusion.sweeps``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import linregress


def _require_columns(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [col for col in cols if col not in df.columns]
    if missing:
        raise KeyError(f"{where}: column(s) {missing} not in the frame; available: {list(df.columns)}")


def linearity(df: pd.DataFrame, x: str = "n_texts", y: str = "seconds") -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` with R² (``scipy.stats.linregress``), and how constant the
    per-unit cost is: ``per_unit_ratio`` = max(y/x) / min(y/x) over the rows (1.0: exactly proportional)."""
    _require_columns(df, (x, y), "linearity")
    xs = df[x].to_numpy(dtype=float)
    ys = df[y].to_numpy(dtype=float)
    if np.isnan(xs).any() or np.isnan(ys).any():
        raise ValueError(f"linearity: columns {x!r}/{y!r} contain NaN; drop those rows first")
    if len(np.unique(xs)) < 2:
        raise ValueError(f"linearity: column {x!r} needs at least two distinct values")
    fit = linregress(xs, ys)
    r2 = fit.rvalue**2 if np.ptp(ys) > 0 else 1.0  # a flat line fits constant times exactly
    if (xs <= 0).any():
        ratio = float("nan")
    else:
        per = ys / xs
        ratio = float(per.max() / per.min()) if per.min() > 0 else float("inf")
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(r2),
            "per_unit_ratio": ratio, "n_points": int(len(xs))}


def pareto_front(df: pd.DataFrame, cost: str = "cost", score: str = "accuracy") -> pd.DataFrame:
    """Rows not dominated by another (another row is no costlier and no worse, and strictly better in one).

    Rows with identical cost and score are all kept. Returned sorted by cost (then score descending), with the
    original index.
    """
    _require_columns(df, (cost, score), "pareto_front")
    c = df[cost].to_numpy(dtype=float)
    s = df[score].to_numpy(dtype=float)
    if np.isnan(c).any() or np.isnan(s).any():
        raise ValueError(f"pareto_front: columns {cost!r}/{score!r} contain NaN; drop those rows first")
    no_worse = (c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])
    strictly = (c[None, :] < c[:, None]) | (s[None, :] > s[:, None])
    dominated = (no_worse & strictly).any(axis=1)
    front = df.loc[~dominated]
    return front.sort_values([cost, score], ascending=[True, False], kind="stable")
