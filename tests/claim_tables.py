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


def comparisons_and_pairs(gain: float, rho_sign: float, noise: float = 0.002, pairs_per_dataset: int = 6,
                          se: float = 0.005, ensemble_gain: float = 0.0, seed: int = 2
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A ``comparisons`` table (per dataset a concatenation and a sum of models w + x, the concatenation better on
    validation, each ``gain`` over the best single model with standard error ``se`` and ``ensemble_gain`` over its
    ensemble) and a ``complementarity`` table whose gain within each dataset follows ``rho_sign * kappa`` plus
    ``noise`` (every dataset at its own level, so a pooled correlation would mislead)."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)

    def p(effect: float) -> float:
        return float(2 * norm.sf(abs(effect) / se))
    comp = pd.DataFrame([{"dataset": d, "models": ["w", "x"], "k": 2, "operator": op,
                          "val_mean": 0.8 + (op == "concat") * 0.01, "gain": gain, "gain_low": gain - 1.96 * se,
                          "gain_high": gain + 1.96 * se, "gain_mde": 2.8 * se, "gain_se": se, "n_test": 900,
                          "p_value": p(gain), "ensemble_gain": ensemble_gain, "ensemble_se": se,
                          "ensemble_p": p(ensemble_gain)}
                         for d in DATASETS for op in ("concat", "sum")])
    comp["p_holm"] = np.minimum(comp["p_value"] * len(comp), 1.0)
    pairs = pd.DataFrame([{"dataset": d, "kappa": k,
                           "gain_over_better": 0.01 * i + rho_sign * 0.05 * k + rng.normal(0, noise)}
                          for i, d in enumerate(DATASETS) for k in rng.uniform(0.2, 0.8, pairs_per_dataset)])
    return comp, pairs
