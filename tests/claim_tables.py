"""Claims tables for the claims tests: ``stability`` and ``comparisons_and_pairs`` build fusion-chapter tables of
known shape (four models, four datasets) so the claim rules can be checked on numbers chosen to pass or fail."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

MODELS = ("w", "x", "y", "z")
DATASETS = ("a", "b", "c", "d")


def stability(seed_std: dict[str, tuple[float, float]], spread: tuple[float, float] = (0.02, 0.02),
              seed: int = 0) -> pd.DataFrame:
    """A ``stability`` table over four models and four datasets: per method, the seed std of two-model and of
    >= 3-model combinations (each combination jittered by 20 %), and combination means spread as ``spread``."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in DATASETS:
        for k in range(2, 5):
            for combo in combinations(MODELS, k):
                mean = 0.8 + rng.normal(0, spread[k >= 3])
                for method, (few, many) in seed_std.items():
                    rows.append({"dataset": dataset, "method": method, "combo": "+".join(combo), "k": k,
                                 "models": list(combo), "n_seeds": 5, "test_mean": mean, "val_mean": 0.8,
                                 "test_seed_std": (many if k >= 3 else few) * (1 + 0.2 * rng.uniform(-1, 1))})
    return pd.DataFrame(rows)


def comparisons_and_pairs(gain: float, rho_sign: float, noise: float = 0.002) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(2)
    comp = pd.DataFrame([{"dataset": d, "models": ["w", "x"], "operator": op, "val_mean": 0.8 + (op == "concat") * 0.01,
                          "gain": gain, "gain_low": gain - 0.01, "gain_high": gain + 0.01, "gain_mde": 0.014,
                          "n_test": 900, "p_value": 1e-4 if abs(gain) > 0.015 else 0.4}
                         for d in DATASETS for op in ("concat", "sum")])
    pairs = pd.DataFrame([{"dataset": d, "kappa": k, "gain_over_better": rho_sign * 0.05 * k + rng.normal(0, noise)}
                          for d in DATASETS for k in rng.uniform(0.2, 0.8, 6)])
    return comp, pairs
