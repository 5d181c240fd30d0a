"""Claims 2 and 3: the tests behind them (``fusion_stats``), their verdict rules (``claims``), the fusion chapter
that feeds them (ensemble control, no refitted jobs) and the robustness chapter that recomputes them."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from layerfusion.study import claims, fusion_stats
from layerfusion.study.settings import ProfileError, RobustnessSettings, StudyConfig

from claim_tables import DATASETS, MODELS, comparisons_and_pairs, stability  # noqa: E402 - test tables


def test_paired_gain_uses_every_seed_and_is_the_mean_accuracy_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    single = np.stack([np.where(rng.random(800) < 0.75, y, 1 - y) for _ in range(5)])
    fused = np.stack([np.where(rng.random(800) < 0.85, y, 1 - y) for _ in range(5)])
    gain = fusion_stats.paired_gain(y, fused, single)
    accuracy = lambda preds: np.mean([np.mean(p == y) for p in preds])  # noqa: E731
    assert gain.gain == pytest.approx(accuracy(fused) - accuracy(single))
    assert gain.low < gain.gain < gain.high and gain.p_value < 1e-6 and 0 < gain.mde < gain.gain
    one_seed = fusion_stats.paired_gain(y, fused[0], single[0])
    assert one_seed.high - one_seed.low > gain.high - gain.low, "five seeds average out seed noise"
    same = fusion_stats.paired_gain(y, single, single)
    assert same.gain == 0 and same.p_value == 1.0


def test_complementarity_test_reads_pairs_within_datasets_not_differences_between_them():
    rng = np.random.default_rng(1)
    rows = [{"dataset": d, "kappa": k, "gain_over_better": 0.05 - 0.08 * k + rng.normal(0, 0.005)}
            for d in DATASETS for k in rng.uniform(0.2, 0.8, 6)]
    within = fusion_stats.complementarity_test(pd.DataFrame(rows))
    assert within["effect"] < -0.8 and within["p_value"] < 0.001 and within["high"] < 0 and within["n"] == 24
    # Each dataset's gains are unrelated to kappa, but a dataset with high kappa also has high gains.
    confounded = pd.DataFrame([{"dataset": d, "kappa": 0.2 * i + rng.uniform(0, 0.05),
                                "gain_over_better": 0.02 * i + rng.normal(0, 0.001)}
                               for i, d in enumerate(DATASETS) for _ in range(6)])
    pooled = fusion_stats.complementarity_test(confounded)
    assert pooled["effect"] > 0.8 and pooled["p_value"] > 0.05
    assert np.isnan(fusion_stats.complementarity_test(confounded.head(3))["p_value"])


def test_seed_spread_test_finds_a_narrowing_and_not_noise():
    narrow = fusion_stats.seed_spread_test(stability({"concatenation": (0.02, 0.01)}))
    assert narrow["effect"] == pytest.approx(0.01, abs=0.002) and narrow["p_value"] < 0.001
    assert narrow["low"] > 0 and narrow["n"] == 44 and narrow["k2"] > narrow["k3plus"]
    flat = fusion_stats.seed_spread_test(stability({"concatenation": (0.015, 0.015)}))
    assert flat["p_value"] > 0.05 and flat["low"] < 0 < flat["high"]
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert flat["mde"] == pytest.approx(z * (flat["high"] - flat["low"]) / (2 * 1.96), rel=0.2)


def test_combination_spread_is_compared_at_an_equal_number_of_combinations():
    """If the 'triples' are any four of the six pair values, nothing distinguishes the two sizes: over every choice
    the equal-m effect averages to exactly zero, where a std over six against a std over four would not."""
    pairs = np.array([0.70, 0.74, 0.78, 0.80, 0.83, 0.90])
    effects, naive = [], []
    for chosen in combinations(range(6), 4):
        rows = [{"dataset": "a", "method": "concatenation", "combo": f"p{i}", "k": 2, "test_mean": v}
                for i, v in enumerate(pairs)]
        rows += [{"dataset": "a", "method": "concatenation", "combo": f"t{i}", "k": 3, "test_mean": pairs[i]}
                 for i in chosen]
        effects.append(fusion_stats.combination_spread_test(pd.DataFrame(rows), n_permutations=50)["effect"])
        naive.append(np.ptp(pairs) - np.ptp(pairs[list(chosen)]))
    assert np.mean(effects) == pytest.approx(0.0, abs=1e-12)
    assert np.mean(naive) > 0.01


def test_decide_is_the_verdict_rule_with_a_combined_exclusion():
    assert claims.decide(True, True, False) == "supported"
    assert claims.decide(True, False, True) == "partly supported"
    assert claims.decide(False, False, True) == "not supported"
    assert claims.decide(False, False, False) == "inconclusive"
    assert claims.excluded(-0.05, -0.01, 0.02, direction=1)
    assert claims.excluded(-0.01, 0.015, 0.02, direction=1)
    assert not claims.excluded(-0.01, 0.05, 0.02, direction=1)
    assert claims.excluded(0.1, 0.5, 0.2, direction=-1) and not claims.excluded(np.nan, 1, 1)


def test_stability_claim_needs_a_significant_narrowing_and_beats_the_ensemble_for_supported():
    spread = (0.03, 0.005)
    supported = claims.stability_claim(stability({"concatenation": (0.03, 0.01), "ensemble": (0.02, 0.018)}, spread))
    assert supported["verdict"] == "supported" and supported["p_value"] < 0.05 and supported["effect"] > 0
    assert set(supported) == {"claim", "verdict", "test", "statistic", "effect", "effect_low", "effect_high",
                              "p_value", "mde", "evidence", "where"}
    averaging = claims.stability_claim(stability({"concatenation": (0.03, 0.01), "ensemble": (0.03, 0.01)}, spread))
    assert averaging["verdict"] == "partly supported" and "ensemble" in averaging["evidence"]
    flat = stability({"concatenation": (0.01, 0.01), "ensemble": (0.01, 0.01)}, seed=3)
    assert claims.stability_claim(flat)["verdict"] == "not supported"
    few = stability({"concatenation": (0.01, 0.01), "ensemble": (0.01, 0.01)})
    few = few[few["k"] == 2]
    row = claims.stability_claim(few)
    assert row["verdict"] == "inconclusive" and row["p_value"] is None and "n/a" in row["evidence"]


def test_fusion_claim_needs_a_winning_chosen_fusion_and_complementarity_for_supported():
    assert claims.fusion_claim(*comparisons_and_pairs(0.03, -1))["verdict"] == "supported"
    row = claims.fusion_claim(*comparisons_and_pairs(0.03, 1))
    assert row["verdict"] == "partly supported" and row["test"] == "a: chosen fusion vs best single"
    assert row["effect"] == pytest.approx(3.0) and "a +3.00 [+2.00, +4.00]" in row["evidence"]
    row = claims.fusion_claim(*comparisons_and_pairs(0.0, -1))
    assert row["verdict"] == "partly supported" and row["test"].startswith("Spearman") and row["effect"] < 0
    assert claims.fusion_claim(*comparisons_and_pairs(-0.03, 1))["verdict"] == "not supported"
    comp, pairs = comparisons_and_pairs(0.005, 1, noise=0.05)
    comp[["gain_low", "gain_high"]] = [-0.05, 0.06]
    assert claims.fusion_claim(comp, pairs.head(3))["verdict"] == "inconclusive"


def test_robustness_settings_are_validated_where_they_enter():
    assert RobustnessSettings().relative_scale == 2.0 ** -8
    assert RobustnessSettings(dtype="float16").relative_scale == 2.0 ** -11
    assert StudyConfig.from_profile("default").robustness == RobustnessSettings(kind="noise", dtype="bfloat16", seed=0)
    with pytest.raises(ProfileError, match="kind: must be 'noise' or 'round'"):
        RobustnessSettings(kind="jitter")
    with pytest.raises(ProfileError, match="changes nothing"):
        RobustnessSettings(kind="round", dtype="float16")
    with pytest.raises(ProfileError, match=r"robustness\.sigma: unknown setting"):
        StudyConfig.from_profile("ci").replace(robustness={"sigma": 0.1})


def test_perturbation_is_seeded_and_at_the_rounding_level():
    from layerfusion.study.chapters import robustness

    x = np.random.default_rng(0).standard_normal((50, 3, 8)).astype(np.float16)
    settings = RobustnessSettings()
    a, b = robustness.perturb(x, settings, "m|d|train"), robustness.perturb(x, settings, "m|d|train")
    other = robustness.perturb(x, settings, "m|d|test")
    rel = np.abs(a / x.astype(np.float32) - 1)
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, other)
    assert rel.max() <= 2.0 ** -8 * (1 + 1e-5) and rel.mean() > 2.0 ** -10
    rounded = robustness.perturb(x, RobustnessSettings(kind="round"), "m|d|train")
    assert 0 < np.abs(rounded / x.astype(np.float32) - 1).max() <= 2.0 ** -8


@pytest.fixture()
def three_model_study(tmp_path):
    """Three tiny random decoders of different widths on small slices of SST-2 and R8, two seeds."""
    import dataclasses

    from layerfusion import models, testing
    from layerfusion.study import Study

    keys = []
    for arch, hidden in (("llama", 32), ("gpt2", 16), ("llama", 24)):
        spec = testing.tiny_spec(tmp_path / f"{arch}{hidden}", arch=arch, hidden=hidden)
        models.register(dataclasses.replace(spec, key=f"tiny{hidden}-fusion"), overwrite=True)
        keys.append(f"tiny{hidden}-fusion")
    sizes = {"train": 40, "validation": 20, "test": 30}
    cfg = StudyConfig.from_profile("ci", models=keys, datasets=["sst2", "r8"], poolings=["mean", "mean_pad"],
                                   subsample={"sst2": sizes, "r8": sizes}, max_length={"sst2": 16, "r8": 16})
    cfg = cfg.replace(authors_protocol={"epochs": 2, "pooling": "mean_pad"}, greedy={"top_layers": 2, "max_units": 2},
                      fusion={"operators": ["concat", "sum"], "seeds": [0, 1], "proj_dim": 8, "epochs": 3,
                              "greedy": {"top_layers": 2, "max_units": 2}})
    return Study(cfg, cache_dir=str(tmp_path / "cache"), progress=False)


def test_fusion_chapter_reuses_the_single_fits_for_the_ensemble_and_recomputes_identically(three_model_study,
                                                                                             monkeypatch):
    from layerfusion import fusion
    from layerfusion.study import Study
    from layerfusion.study.chapters import fusion as chapter
    from layerfusion.study.chapters import robustness

    study = three_model_study
    per_layer, summary, selection = robustness.layer_tables(study, "mean")
    fits = []
    original_fit = fusion.FusionClassifier.fit
    monkeypatch.setattr(fusion.FusionClassifier, "fit", lambda self, *a, **k: fits.append(1) or original_fit(
        self, *a, **k))
    fused = chapter.analyse_fusion(study, summary, per_layer)
    # 3 singles + 4 concatenations + 3 pairs and 1 triple of "sum", 2 seeds, per dataset; then the controls:
    # 4 reduced concatenations and 1 two-layer model, 2 seeds each; the ensembles train nothing.
    assert len(fused.runs) == 2 * (3 + 4 + 4) * 2 and len(fits) == len(fused.runs) + 2 * (4 + 1) * 2
    assert len(fused.ensembles) == 2 * 4 * 2 and set(fused.ensembles["operator"]) == {"ensemble"}
    stab = fused.stability
    assert stab.groupby("method").size().to_dict() == {"concatenation": 8, "ensemble": 8, "single": 6}
    assert (stab["n_seeds"] == 2).all()
    assert len(fused.complementarity) == 6 and {"kappa", "gain_over_better"} <= set(fused.complementarity)
    tested = chapter.tests(fused)
    assert tested["claim2_tests"]["family"].eq("claim 2").all() and len(tested["stability_tests"]) == 5
    facts = chapter.headline(fused, tested)
    assert facts["n_pairs"] == 6 and facts["seed_std_2"] != "n/a" and facts["equal_m_narrowing"] == "n/a"
    shown = chapter.stability_summary(stab)
    assert list(shown["k"]) == [2, 3, 2, 3] and "ensemble: std over seeds" in shown

    tables = {f"fusion_{k}": v for k, v in fused.tables().items()}
    tables["layers_summary"], tables["layers_per_layer"], tables["layers_selection"] = summary, per_layer, selection
    tables["layers_greedy"] = tables["fusion_greedy"].assign(model="one model")  # the same columns as the layer search
    tables["overhead_scaling"] = pd.DataFrame({"vary": ["layers", "layers"], "value": [1, 2], "seconds": [1.0, 2.0]})
    unchanged = Study(study.config, cache_dir=study.cache_dir, progress=False, transform=lambda *args: args[-1])
    same = robustness.analyse_robustness(study, tables.__getitem__, shaken=unchanged)
    assert not same.claims["moved"].any() and not same.layers["layer_moved"].any()
    assert np.allclose(same.fusion["gain_original"], same.fusion["gain_perturbed"])
    assert np.allclose(same.per_layer["test_accuracy_original"], same.per_layer["test_accuracy_perturbed"])
    shaken = robustness.analyse_robustness(study, tables.__getitem__)
    assert list(shaken.claims["claim"]) == list(same.claims["claim"]) and len(shaken.cost) == 3
    facts = robustness.headline(shaken, study.config.robustness)
    assert facts["n_cells"] == 6 and facts["scale"] == "0.00391" and facts["n_claims"] == 5
