"""The claims table: one verdict rule for every claim, the row format, and the rules of claims 1, 4 and 5 on
hand-made results tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerfusion.study import claims
from layerfusion.study.chapters import layer_analysis

import claim_tables  # noqa: E402 - tests/claim_tables.py: fusion-chapter tables of known shape


@pytest.mark.parametrize("args, expected", [
    ((True, True, 1.0, 3.0, 2.0), "supported"),
    ((True, False, -1.0, 3.0, 2.0), "partly supported"),
    ((False, False, -3.0, -0.5, 2.0), "not supported"),       # the interval lies on the wrong side
    ((False, False, -1.0, 1.5, 2.0), "not supported"),        # every effect it allows is below the MDE
    ((False, False, -1.0, 2.5, 2.0), "inconclusive"),
    ((False, True, -1.0, 2.5, None), "inconclusive"),         # no MDE: only the wrong side excludes
    ((False, False, np.nan, np.nan, 2.0), "inconclusive"),
    ((False, False, 0.5, 3.0, 2.0, -1), "not supported"),     # a claim that needs a negative effect
])
def test_one_verdict_rule(args, expected):
    assert claims.verdict(*args) == expected


def test_rows_have_every_column_and_a_known_verdict():
    row = claims._row("c", "inconclusive", "e", "w", test="t", effect=np.float64(1.5), p_value=np.nan)
    assert tuple(row) == claims.COLUMNS
    assert row["effect"] == 1.5 and isinstance(row["effect"], float) and row["p_value"] is None
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims._row("c", "probably", "e", "w")


def test_median_interval_brackets_the_median_and_is_seeded():
    values = np.array([0.5, 1.0, 2.0, -0.5, 3.0, 1.5, 0.0, 2.5])
    median, low, high = claims.median_interval(values)
    assert median == np.median(values) and low <= median <= high
    assert claims.median_interval(values) == claims.median_interval(values)
    assert claims.median_interval([0.0, 0.0, 0.0]) == (0.0, 0.0, 0.0)
    assert all(np.isnan(claims.median_interval([np.nan])))


def _cells(delta, p_holm, best_is_last=None, n_models=4, mde=0.03, discordance=0.1):
    """A layers_summary of len(delta) cells: model i % n_models, a dataset per block of models."""
    n = len(delta)
    best_is_last = [d == 0 for d in delta] if best_is_last is None else best_is_last
    return pd.DataFrame({
        "model": [f"m{i % n_models}" for i in range(n)], "dataset": [f"d{i // n_models}" for i in range(n)],
        "pooling": "mean", "protocol": "validation", "best_is_last": best_is_last,
        "delta_best_minus_last": delta, "p_best_vs_last_holm": p_holm,
        "best_rel_depth": np.linspace(0.2, 1.0, n), "best_layer": 3, "last_layer": 5, "n_layers": 6,
        "mde_best_last": [np.nan if last else mde for last in best_is_last],
        "discordance_best_last": [0.0 if last else discordance for last in best_is_last]})


def _frequencies(summary, distinct: bool) -> pd.DataFrame:
    """Bootstrap frequencies: each dataset picks its own layer (distinct) or all share their mass."""
    rows = []
    for r in summary.itertuples():
        k = int(r.dataset[1:])
        for layer in range(6):
            f = float(layer == k % 6) if distinct else 1 / 6
            rows.append({"model": r.model, "dataset": r.dataset, "pooling": "mean", "protocol": "validation",
                         "layer": layer, "frequency": f})
    return pd.DataFrame(rows)


def test_dataset_dependence_measures_the_shared_mass():
    freq = pd.DataFrame({"model": "m", "dataset": ["a", "a", "b", "b", "c", "c"], "layer": [0, 1, 0, 1, 0, 1],
                         "frequency": [0.7, 0.3, 0.4, 0.6, 0.0, 1.0]})
    dep = claims.dataset_dependence(freq).set_index(["dataset_a", "dataset_b"])
    assert dep.loc[("a", "b"), "overlap"] == pytest.approx(0.7) and not dep.loc[("a", "b"), "distinct"]
    assert dep.loc[("a", "c"), "overlap"] == pytest.approx(0.3)
    freq.loc[freq["dataset"] == "c", "frequency"] = [1.0, 0.0]
    freq.loc[freq["dataset"] == "a", "frequency"] = [0.0, 1.0]
    assert claims.dataset_dependence(freq).set_index(["dataset_a", "dataset_b"]).loc[("a", "c"), "distinct"]


def test_layer_claim_needs_the_across_cells_test_a_significant_cell_and_distinct_datasets():
    gains = np.array([0.02, 0.03, 0.01, 0.04, 0.02, 0.05, 0.03, 0.01, 0.02, 0.06, 0.03, 0.02, 0.04, 0.01, 0.03, 0.02])
    p = np.where(np.arange(16) == 9, 0.01, 0.5)
    summary = _cells(gains, p)
    row = claims.layer_claim(summary, "mean", _frequencies(summary, distinct=True))
    assert row["verdict"] == "supported" and row["p_value"] < 0.05 and row["effect"] == pytest.approx(2.5)
    assert row["effect_low"] <= 2.5 <= row["effect_high"] and row["mde"] == pytest.approx(3.0)
    assert "Wilcoxon signed-rank" in row["test"] and "1/16" in row["evidence"]
    assert claims.layer_claim(summary, "mean", _frequencies(summary, distinct=False))["verdict"] == \
        "partly supported"
    no_cell = claims.layer_claim(_cells(gains, np.full(16, 0.5)), "mean", _frequencies(summary, True))
    assert no_cell["verdict"] == "partly supported"  # the across-cells test alone


def test_layer_claim_without_significance_is_not_supported_or_inconclusive():
    # the last layer is selected everywhere: the difference is zero, inside any MDE -> the claim is excluded
    last = _cells(np.zeros(16), np.ones(16))
    row = claims.layer_claim(last, "mean")
    assert row["verdict"] == "not supported" and row["effect"] == 0.0 and row["p_value"] == 1.0
    # noisy differences both ways, wider than the MDE -> inconclusive, with the MDE stated
    rng = np.random.default_rng(0)
    noisy = _cells(rng.normal(0, 0.05, 16), np.full(16, 0.6), best_is_last=[False] * 16, mde=0.01)
    row = claims.layer_claim(noisy, "mean")
    assert row["verdict"] == "inconclusive" and row["mde"] == pytest.approx(1.0)
    assert "median detectable difference 1.0 points" in row["evidence"]


def test_the_layer_chapter_prose_quotes_the_facts_of_the_verdict():
    summary = _cells(np.array([0.02, 0.0, 0.03, -0.01]), np.array([0.01, 1.0, 0.03, 0.5]), n_models=2)
    summary = pd.concat([summary, summary.assign(pooling="last", best_is_last=True)], ignore_index=True)
    freq = _frequencies(summary[summary["pooling"] == "mean"], distinct=True)
    facts = claims.layer_facts(summary, "mean", freq)
    assert layer_analysis.headline(summary, "mean", freq) == {k: round(v, 3) if isinstance(v, float) else v
                                                              for k, v in facts.items()}
    assert facts["n_cells"] == 4 and facts["n_not_last"] == 3 and facts["n_significant"] == 2
    assert facts["n_models_dataset_dependent"] == 2 and facts["n_distinct_pairs"] == 2
    evidence = claims.layer_claim(summary, "mean", freq)["evidence"]
    assert f"not the last in {facts['n_not_last']}/{facts['n_cells']}" in evidence
    assert f"significantly better than the last in {facts['n_significant']}/{facts['n_cells']}" in evidence
    assert claims.layer_facts(summary, "last")["n_not_last"] == 0


def test_overhead_claim_regresses_each_curve_with_holm():
    scaling = pd.DataFrame({"vary": ["layers"] * 4 + ["models"] * 4, "value": [1, 11, 20, 30, 1, 2, 3, 4],
                            "seconds": [0.4, 3.5, 6.2, 9.5, 60.0, 120.0, 185.0, 240.0]})
    facts = claims.overhead_facts(scaling)
    assert list(facts["curve"]) == ["time vs layers kept", "time vs models fused"]
    assert (facts["slope_low"] < facts["slope"]).all() and (facts["p_holm"] >= facts["p_value"]).all()
    row = claims.overhead_claim(scaling)
    assert row["verdict"] == "supported" and row["p_value"] < 0.05 and "Holm over 2 curves" in row["test"]
    scaling.loc[scaling["vary"] == "models", "seconds"] = [60.0, 240.0, 70.0, 200.0]
    assert claims.overhead_claim(scaling)["verdict"] == "partly supported"
    flat = scaling.assign(seconds=[1.0, 1.01, 0.99, 1.0, 5.0, 5.02, 4.98, 5.0])
    row = claims.overhead_claim(flat)
    assert row["verdict"] == "not supported" and row["mde"] > abs(row["effect_high"])
    assert claims.overhead_claim(scaling[scaling["vary"] == "n_texts"])["verdict"] == "inconclusive"


def _greedy(gains: dict[str, tuple[float, float]], keys=("dataset",)) -> pd.DataFrame:
    """Greedy frames whose last row per search has the test comparison (gain in accuracy, p)."""
    rows = []
    for name, (gain, p) in gains.items():
        rows.append({keys[0]: name, "units": ["a"], "score": 0.8, "chosen_test_accuracy": np.nan})
        rows.append({keys[0]: name, "units": ["a", "b"], "score": 0.82, "chosen_test_accuracy": 0.8 + gain,
                     "single_test_accuracy": 0.8, "p_vs_single": p, "discordance_vs_single": 0.1, "n_test": 800})
    frame = pd.DataFrame(rows)
    if len(keys) == 2:
        frame.insert(0, keys[1], "m")
    return frame


def test_selection_claim_tests_the_greedy_search_against_the_best_single_unit():
    layers = _greedy({"d1": (0.0, 1.0)}, keys=("dataset", "model"))
    row = claims.selection_claim(_greedy({"a": (0.05, 0.001), "b": (0.04, 0.002), "c": (0.0, 1.0)}), layers)
    assert row["verdict"] == "supported" and row["effect"] == pytest.approx(4.0)
    assert row["mde"] == pytest.approx(claims.stats.mcnemar_mde(800, 0.1) * 100)
    assert "Holm over 3 datasets" in row["test"]
    assert claims.selection_claim(_greedy({"a": (0.05, 0.001), "b": (-0.04, 0.002), "c": (0.0, 1.0)}),
                                  layers)["verdict"] == "partly supported"
    assert claims.selection_claim(_greedy({"a": (0.001, 0.9), "b": (0.0, 1.0), "c": (-0.001, 0.9)}),
                                  layers)["verdict"] == "not supported"


def test_evaluate_builds_the_table_in_the_row_format():
    summary = _cells(np.zeros(4), np.ones(4), n_models=2)
    comparisons, pairs = claim_tables.comparisons_and_pairs(0.03, -1)
    tables = {
        "layers_summary": summary, "layers_selection": _frequencies(summary, distinct=False),
        "fusion_comparisons": comparisons, "fusion_complementarity": pairs,
        "fusion_stability": claim_tables.stability({"concatenation": (0.02, 0.01), "ensemble": (0.02, 0.015)}),
        "overhead_scaling": pd.DataFrame({"vary": "layers", "value": [1, 2, 3], "seconds": [1.0, 2.0, 3.1]}),
        "fusion_greedy": _greedy({"a": (0.01, 0.5)}), "layers_greedy": _greedy({"a": (0.0, 1.0)}, ("dataset",
                                                                                                   "model")),
    }
    table = claims.evaluate(tables.__getitem__, "mean")
    assert tuple(table.columns) == claims.COLUMNS and len(table) == 5
    assert set(table["verdict"]) <= set(claims.VERDICTS)
