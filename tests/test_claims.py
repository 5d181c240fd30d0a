"""The claims table: one verdict rule for every claim (``verdicts``), the row format, the levels read from the
profile, and the rules of claims 1 and 4 and the descriptive greedy search on hand-made results tables where the
right verdict is known (each rule has a case it must call supported, contradicted, not supported (equivalence) and
inconclusive)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps
import pytest

from layerfusion import stats
from layerfusion.study import claims
from layerfusion.study.chapters import layer_analysis
from layerfusion.study.settings import ProfileError, StudyConfig
from layerfusion.study.verdicts import VERDICTS, Levels, judge, one_sided

import claim_tables  # noqa: E402 - tests/claim_tables.py: fusion-chapter tables of known shape

LEVELS = Levels()


@pytest.mark.parametrize("claimed, opposite, equivalent, expected", [
    ([True, True], [False], False, "supported"),
    ([True, False], [False], False, "partly supported"),
    ([True, True], [True], False, "partly supported"),       # a significant opposite result blocks "supported"
    ([False, False], [True], True, "contradicted"),           # significance beats equivalence
    ([False], [False], True, "not supported"),                # only an equivalence test shows absence
    ([False], [False], False, "inconclusive"),
])
def test_one_verdict_rule(claimed, opposite, equivalent, expected):
    assert judge(claimed, opposite, equivalent) == expected


def test_one_sided_p_values_split_a_symmetric_two_sided_test():
    assert one_sided(0.5, 0.04, 1) == pytest.approx((0.02, 0.98))
    assert one_sided(-0.5, 0.04, 1) == pytest.approx((0.98, 0.02))
    assert one_sided(-0.5, 0.04, -1) == pytest.approx((0.02, 0.98))
    assert all(np.isnan(one_sided(np.nan, 0.1, 1)))


def test_levels_come_from_the_profile_and_are_validated():
    cfg = StudyConfig.from_profile("ci")
    levels = Levels.of(cfg)
    assert levels.alpha == cfg.power.alpha and levels.power == cfg.power.power
    assert levels.margin_points == cfg.claims.equivalence_margin and levels.rho_margin == cfg.claims.correlation_margin
    strict = Levels.of(cfg.replace(power={"alpha": 0.01, "power": 0.9}))
    assert strict.alpha == 0.01 and strict.mde_factor() > levels.mde_factor()
    assert levels.mde_factor(4) > levels.mde_factor(1)      # Holm's first step over four tests
    with pytest.raises(ProfileError, match=r"claims\.equivalence_margin: must be a positive"):
        cfg.replace(claims={"equivalence_margin": 0})
    with pytest.raises(ProfileError, match=r"claims\.correlation_margin"):
        cfg.replace(claims={"correlation_margin": 1.5})
    with pytest.raises(ProfileError, match=r"claims\.margin: unknown setting"):
        cfg.replace(claims={"margin": 1.0})
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        Levels(alpha=0.0)
    for profile in ("ci", "default", "paper", "quick"):   # every profile fixes its margins in the file
        assert "claims:" in open(f"params/{profile}.yaml").read()


def test_rows_have_every_column_and_only_known_verdicts():
    row = claims._row("c", "contradicted", "e", "w", test="t", effect=np.float64(1.5), p_value=np.nan)
    assert tuple(row) == claims.COLUMNS and row["effect"] == 1.5 and row["p_value"] is None
    assert set(VERDICTS) == {"supported", "partly supported", "contradicted", "not supported", "inconclusive"}
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims._row("c", "probably", "e", "w")


# -- claim 1 --------------------------------------------------------------------------------------------------------

def _cells(per_dataset: list[float], n_models: int = 4, n_test: int = 800, discordance: float = 0.1,
           p_holm: float = 0.5, jitter: float = 0.0) -> pd.DataFrame:
    """A layers_summary: ``n_models`` models on each dataset, selected − last = the dataset's value (accuracy,
    optionally jittered per model); a zero difference means the last layer was selected."""
    rng = np.random.default_rng(0)
    rows = []
    for d, value in enumerate(per_dataset):
        for m in range(n_models):
            delta = value + (jitter * rng.standard_normal() if value else 0.0)
            last = delta == 0
            rows.append({"model": f"m{m}", "dataset": f"d{d}", "pooling": "mean", "protocol": "validation",
                         "best_is_last": last, "delta_best_minus_last": delta, "p_best_vs_last_holm": p_holm,
                         "best_rel_depth": 0.5 + 0.1 * d, "best_layer": 3, "last_layer": 5, "n_layers": 6,
                         "n_test": n_test, "discordance_best_last": 0.0 if last else discordance,
                         "mde_best_last": np.nan if last else 0.03})
    return pd.DataFrame(rows)


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


def test_claim1_uses_the_dataset_as_unit_so_more_models_on_one_test_set_add_no_evidence():
    one = claims.dataset_effects(_cells([0.02] * 4, n_models=1), "mean", LEVELS)
    four = claims.dataset_effects(_cells([0.02] * 4, n_models=4), "mean", LEVELS)
    # four copies of a model on the same items: the same effect and the same (conservative) standard error
    assert np.allclose(one["difference"], four["difference"]) and np.allclose(one["se"], four["se"])
    se = np.sqrt(0.1 - 0.02 ** 2) / np.sqrt(800) * 100
    assert four["se"].iloc[0] == pytest.approx(se)
    assert four["p_value"].iloc[0] == pytest.approx(stats_norm_sf(2.0 / se))


def stats_norm_sf(z):
    from scipy.stats import norm
    return float(norm.sf(z))


def test_claim1_verdicts_on_data_where_the_answer_is_known():
    # two datasets gain 5 points, two 0.5: a positive mean and heterogeneity -> supported, effect in d0 and d1
    row = claims.layer_claim(_cells([0.05, 0.05, 0.005, 0.005]), "mean", LEVELS)
    assert row["verdict"] == "supported" and row["effect"] == pytest.approx(2.75)
    assert "significant in: d0, d1" in row["evidence"] and row["unit"].startswith("dataset")
    assert row["direction"].startswith("> 0") and "Holm" in row["family"]
    # the same gain everywhere: positive but not dataset-dependent -> partly supported
    assert claims.layer_claim(_cells([0.03] * 4), "mean", LEVELS)["verdict"] == "partly supported"
    # the last layer is significantly better everywhere -> contradicted
    row = claims.layer_claim(_cells([-0.03] * 4), "mean", LEVELS)
    assert row["verdict"] == "contradicted" and row["p_opposite"] < 0.05
    # a precise zero: big test sets, rare disagreement, tiny differences both ways -> equivalent -> not supported
    row = claims.layer_claim(_cells([0.0005, -0.0005, 0.0005, -0.0005], n_test=20000, discordance=0.01), "mean",
                             LEVELS)
    assert row["verdict"] == "not supported" and row["tost_p"] < 0.05
    # a small difference measured on few items -> inconclusive (neither shown nor excluded)
    row = claims.layer_claim(_cells([0.005] * 4, n_test=100, discordance=0.2), "mean", LEVELS)
    assert row["verdict"] == "inconclusive" and row["mde"] > 1.0 and row["power"] < 0.8   # underpowered at the margin
    assert claims.power_at(row["mde"], row["mde"], LEVELS, 2) == pytest.approx(LEVELS.power)


def test_claim1_verdict_moves_with_the_profile_alpha():
    summary = _cells([0.0123] * 4)       # one-sided Holm p about 0.03: significant at 0.05, not at 0.01
    assert claims.layer_claim(summary, "mean", Levels(alpha=0.05))["verdict"] == "partly supported"
    assert claims.layer_claim(summary, "mean", Levels(alpha=0.01))["verdict"] == "inconclusive"


def test_the_layer_chapter_prose_quotes_the_facts_of_the_verdict():
    summary = _cells([0.02, 0.0, 0.03], n_models=2, p_holm=0.01)
    summary = pd.concat([summary, summary.assign(pooling="last", best_is_last=True)], ignore_index=True)
    freq = _frequencies(summary[summary["pooling"] == "mean"], distinct=True)
    facts = claims.layer_facts(summary, "mean", LEVELS, freq)
    assert layer_analysis.headline(summary, "mean", LEVELS, freq) == {
        k: round(v, 3) if isinstance(v, float) else v for k, v in facts.items()}
    assert facts["n_cells"] == 6 and facts["n_not_last"] == 4 and facts["n_significant"] == 4
    assert facts["n_datasets"] == 3 and facts["mean_difference"] == pytest.approx(5 / 3)
    evidence = claims.layer_claim(summary, "mean", LEVELS, freq)["evidence"]
    assert f"not the last in {facts['n_not_last']}/{facts['n_cells']}" in evidence
    table = layer_analysis.dataset_table(summary, "mean", LEVELS)
    assert list(table["dataset"]) == ["d0", "d1", "d2"] and table["models_better"].iloc[1] == "none"


# -- claim 4 --------------------------------------------------------------------------------------------------------

def _scaling(seconds: list[list[float]], peak: list[float]) -> pd.DataFrame:
    """An overhead_scaling table: layers kept 1, 11, 20, 30, each with its timed repeats and fresh-process peak."""
    return pd.DataFrame({"vary": ["layers"] * 4, "value": [1, 11, 20, 30], "seconds_all": seconds,
                         "peak_bytes": peak})


def test_overhead_claim_regresses_every_repeat_and_memory_with_holm():
    grows = _scaling([[0.40, 0.42, 0.41], [3.5, 3.6, 3.4], [6.2, 6.1, 6.3], [9.5, 9.4, 9.6]], [10e6, 12e6, 14e6, 16.1e6])
    facts = claims.overhead_facts(grows, 0.05, 0.8)
    assert list(facts["curve"]) == ["time vs layers kept", "memory vs layers kept"]
    assert list(facts["n_points"]) == [12, 4]           # every timed repeat is a point; memory one per setting
    assert (facts["slope_low"] < facts["slope"]).all() and (facts["p_holm"] >= facts["p_value"]).all()
    # the slope and its one-sided p are scipy's on the same points
    x = np.repeat([1, 11, 20, 30], 3).astype(float)
    y = np.array([0.40, 0.42, 0.41, 3.5, 3.6, 3.4, 6.2, 6.1, 6.3, 9.5, 9.4, 9.6])
    ref = sps.linregress(x, y, alternative="greater")
    assert facts.loc[0, "slope"] == pytest.approx(ref.slope) and facts.loc[0, "p_value"] == pytest.approx(ref.pvalue)
    row = claims.overhead_claim(grows, 0.05, 0.8)
    assert row["verdict"] == "supported" and row["p_value"] < 0.05 and "Holm over 2 curves" in row["test"]
    flat_memory = grows.assign(peak_bytes=[12e6, 11.9e6, 12.1e6, 12e6])
    assert claims.overhead_claim(flat_memory, 0.05, 0.8)["verdict"] == "partly supported"
    shrinking = _scaling([[9.5, 9.4], [6.2, 6.3], [3.5, 3.4], [0.4, 0.41]], [16e6, 14e6, 12e6, 10e6])
    assert claims.overhead_claim(shrinking, 0.05, 0.8)["verdict"] == "contradicted"
    flat = _scaling([[1.0, 1.01], [0.99, 1.0], [1.0, 1.02], [0.98, 1.0]], [5e6, 5.01e6, 4.99e6, 5e6])
    assert claims.overhead_claim(flat, 0.05, 0.8)["verdict"] == "inconclusive"   # no margin for a slope
    assert claims.overhead_claim(grows[grows["vary"] == "n_texts"], 0.05, 0.8)["verdict"] == "inconclusive"


def test_overhead_claim_adds_the_gpu_curves_per_backbone_and_models_as_accounting():
    grows = _scaling([[0.40, 0.42], [3.5, 3.6], [6.2, 6.1], [9.5, 9.4]], [10e6, 12e6, 14e6, 16.1e6])
    gpu = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "layers_kept": [1, 4, 8, 33] * 2,
                        "seconds": [0.90, 0.92, 0.94, 1.07, 0.39, 0.40, 0.41, 0.47],
                        "peak_bytes": [13.87e9, 13.90e9, 13.95e9, 14.24e9, 6.05e9, 6.07e9, 6.10e9, 6.22e9]})
    models = pd.DataFrame({"dataset": ["sst2", "sst2"], "k": [1, 2], "added_model": ["m1", "m2"],
                           "added_per_1k": [218.0, 57.5], "added_per_1k_low": [216.0, 49.4],
                           "added_per_1k_high": [250.0, 84.3], "head_per_1k": [0.0, 0.13]})
    facts = claims.overhead_facts(grows, 0.05, 0.8, gpu)
    assert len(facts) == 2 + 2 * 2 and "GPU time vs layers kept, b" in set(facts["curve"])
    row = claims.overhead_claim(grows, 0.05, 0.8, gpu, models)
    assert "Holm over 6 curves" in row["test"] and "+m2 57.5 s/1k texts [49.4, 84.3]" in row["evidence"]
    assert row["verdict"] == "supported"


# -- beyond the paper -------------------------------------------------------------------------------------------------

def _greedy(gains: dict[str, tuple[float, float]], keys=("dataset",), units=("w@1", "x@2")) -> pd.DataFrame:
    """Greedy frames whose last row per search has the test comparison (gain in accuracy, p)."""
    rows = []
    for name, (gain, p) in gains.items():
        rows.append({keys[0]: name, "units": list(units[:1]), "score": 0.8, "chosen_test_accuracy": np.nan})
        rows.append({keys[0]: name, "units": list(units), "score": 0.82, "chosen_test_accuracy": 0.8 + gain,
                     "single_test_accuracy": 0.8, "p_vs_single": p, "discordance_vs_single": 0.1, "n_test": 800})
    frame = pd.DataFrame(rows)
    if len(keys) == 2:
        frame.insert(0, keys[1], "m")
    return frame


def test_beyond_the_paper_gives_intervals_over_items_and_flags_the_claim2_pairing():
    comparisons, _ = claim_tables.comparisons_and_pairs(0.03, -1)
    table = claims.beyond_the_paper(_greedy({"a": (0.05, 0.001), "b": (0.0, 1.0)}),
                                    _greedy({"a": (0.01, 0.5)}, keys=("dataset", "model")), comparisons, LEVELS)
    units = table[table["search"] == "models and layers"].set_index("dataset")
    se = np.sqrt(0.1 - 0.05 ** 2) / np.sqrt(800) * 100
    assert units.loc["a", "gain"] == pytest.approx(5.0)
    assert units.loc["a", "high"] - units.loc["a", "low"] == pytest.approx(2 * 1.959964 * se, rel=1e-4)
    assert units.loc["a", "same_as_claim2"] and units.loc["b", "same_as_claim2"]   # w + x is claim 2's choice
    assert units.loc["a", "mde"] == pytest.approx(stats.mcnemar_mde(800, 0.1) * 100)
    other = claims.beyond_the_paper(_greedy({"a": (0.05, 0.001)}, units=("y@1", "z@2")),
                                    _greedy({"a": (0.0, 1.0)}, keys=("dataset", "model")), comparisons, LEVELS)
    assert not other["same_as_claim2"].any()


# -- the table --------------------------------------------------------------------------------------------------------

def _tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    comparisons, pairs = claim_tables.comparisons_and_pairs(0.03, -1)
    return {
        "layers_summary": summary, "layers_selection": _frequencies(summary, distinct=False),
        "fusion_comparisons": comparisons, "fusion_complementarity": pairs,
        "fusion_stability": claim_tables.stability({"concatenation": (0.02, 0.01), "ensemble": (0.02, 0.015)}),
        "overhead_scaling": pd.DataFrame({"vary": "layers", "value": [1, 2, 3], "seconds": [1.0, 2.0, 3.1]}),
    }


def test_evaluate_builds_the_table_in_the_row_format_and_follows_the_profile_alpha():
    tables = _tables(_cells([0.0123] * 4))
    table = claims.evaluate(tables.__getitem__, "mean", LEVELS)
    assert tuple(table.columns) == claims.COLUMNS and len(table) == 4
    assert set(table["verdict"]) <= set(VERDICTS) and table["family"].notna().all() and table["null"].notna().all()
    strict = claims.evaluate(tables.__getitem__, "mean", Levels(alpha=0.01))
    assert table.loc[0, "verdict"] == "partly supported" and strict.loc[0, "verdict"] == "inconclusive"
