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
from layerfusion.study.verdicts import Levels

from claim_tables import DATASETS, MODELS, comparisons_and_pairs, stability  # noqa: E402 - test tables


LEVELS = Levels()


def test_paired_gain_uses_every_seed_and_is_the_mean_accuracy_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    single = np.stack([np.where(rng.random(800) < 0.75, y, 1 - y) for _ in range(5)])
    fused = np.stack([np.where(rng.random(800) < 0.85, y, 1 - y) for _ in range(5)])
    gain = fusion_stats.paired_gain(y, fused, single, LEVELS)
    accuracy = lambda preds: np.mean([np.mean(p == y) for p in preds])  # noqa: E731
    assert gain.gain == pytest.approx(accuracy(fused) - accuracy(single))
    assert gain.low < gain.gain < gain.high and gain.p_value < 1e-6 and 0 < gain.mde < gain.gain
    assert gain.mde == pytest.approx(LEVELS.mde_factor() * gain.se)
    one_seed = fusion_stats.paired_gain(y, fused[0], single[0], LEVELS)
    assert one_seed.high - one_seed.low > gain.high - gain.low, "five seeds average out seed noise"
    same = fusion_stats.paired_gain(y, single, single, LEVELS)
    assert same.gain == 0 and same.p_value == 1.0
    wide = fusion_stats.paired_gain(y, fused, single, Levels(alpha=0.01))
    assert wide.high - wide.low > gain.high - gain.low       # the interval follows the profile's alpha


def test_complementarity_test_reads_pairs_within_datasets_not_differences_between_them():
    rng = np.random.default_rng(1)
    rows = [{"dataset": d, "kappa": k, "gain_over_better": 0.05 - 0.08 * k + rng.normal(0, 0.005)}
            for d in DATASETS for k in rng.uniform(0.2, 0.8, 6)]
    within = fusion_stats.complementarity_test(pd.DataFrame(rows), LEVELS)
    assert within["effect"] < -0.8 and within["p_value"] < 0.001 and within["p_opposite"] > 0.99
    assert within["high"] < 0 and within["n"] == 24 and within["claimed_sign"] == -1
    assert within["per_dataset"].count(";") == 3
    # Each dataset's gains are unrelated to kappa, but a dataset with high kappa also has high gains: pooled over
    # datasets rho would be near +1; within datasets there is nothing, in either direction.
    confounded = pd.DataFrame([{"dataset": d, "kappa": 0.2 * i + rng.uniform(0, 0.05),
                                "gain_over_better": 0.02 * i + rng.normal(0, 0.001)}
                               for i, d in enumerate(DATASETS) for _ in range(40)])
    result = fusion_stats.complementarity_test(confounded, LEVELS)
    assert abs(result["effect"]) < 0.2 and result["p_value"] > 0.05 and result["p_opposite"] > 0.05
    assert np.isnan(fusion_stats.complementarity_test(confounded.head(2), LEVELS)["p_value"])


def test_wins_and_losses_are_counted_side_by_side():
    comp, _ = comparisons_and_pairs(0.03, -1)
    comp.loc[comp["operator"] == "sum", "gain"] = -0.03
    table = fusion_stats.wins_and_losses(comp, LEVELS)
    every = table[table["operator"] == "all"].set_index("dataset")
    assert (every["better"] == 1).all() and (every["worse"] == 1).all() and (every["fusions"] == 2).all()


def test_seed_spread_test_finds_a_narrowing_and_not_noise():
    narrow = fusion_stats.seed_spread_test(stability({"concatenation": (0.02, 0.01)}), LEVELS)
    assert narrow["effect"] == pytest.approx(0.01, abs=0.002) and narrow["p_value"] < 0.001
    assert narrow["low"] > 0 and narrow["n"] == 44 and narrow["k2"] > narrow["k3plus"]
    flat = fusion_stats.seed_spread_test(stability({"concatenation": (0.015, 0.015)}), LEVELS)
    assert flat["p_value"] > 0.05 and flat["low"] < 0 < flat["high"]
    z = norm.ppf(0.95) + norm.ppf(0.8)                  # one-sided at alpha
    assert flat["mde"] == pytest.approx(z * flat["se"])


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
        effects.append(fusion_stats.combination_spread_test(pd.DataFrame(rows), LEVELS, n_permutations=50)["effect"])
        naive.append(np.ptp(pairs) - np.ptp(pairs[list(chosen)]))
    assert np.mean(effects) == pytest.approx(0.0, abs=1e-12)
    assert np.mean(naive) > 0.01


def test_stability_claim_verdicts_on_data_where_the_answer_is_known():
    seeds = {"concatenation": (0.01, 0.01), "ensemble": (0.01, 0.01)}
    supported = claims.stability_claim(stability(seeds, (0.03, 0.003)), LEVELS)
    assert supported["verdict"] == "supported" and supported["p_value"] < 0.05 and supported["effect"] > 0
    assert supported["test"] == "std across combinations, equal m" and supported["direction"] == "> 0"
    assert tuple(supported) == claims.COLUMNS and "optimiser noise" in supported["evidence"]
    wider = claims.stability_claim(stability(seeds, (0.003, 0.03)), LEVELS)
    assert wider["verdict"] == "contradicted" and wider["p_opposite"] < 0.05
    # spreads of a twentieth of a point on both sides: the narrowing is within the 0.25-point margin
    same = claims.stability_claim(stability(seeds, (0.0005, 0.0005), seed=5), LEVELS)
    assert same["verdict"] == "not supported" and same["tost_p"] < 0.05
    # spreads of two points on both sides: nothing shown, nothing excluded
    noisy = claims.stability_claim(stability(seeds, (0.02, 0.02), seed=5), LEVELS)
    assert noisy["verdict"] == "inconclusive" and noisy["mde"] > 0.25
    # the seed spread alone (optimiser noise) does not decide: a big seed narrowing with equal spreads
    seed_only = claims.stability_claim(stability({"concatenation": (0.03, 0.005), "ensemble": (0.01, 0.01)},
                                                 (0.02, 0.02), seed=5), LEVELS)
    assert seed_only["verdict"] == "inconclusive"
    few = stability(seeds)
    row = claims.stability_claim(few[few["k"] == 2], LEVELS)
    assert row["verdict"] == "inconclusive" and row["p_value"] is None and "n/a" in row["evidence"]


def test_fusion_claim_verdicts_on_data_where_the_answer_is_known():
    row = claims.fusion_claim(*comparisons_and_pairs(0.03, -1), LEVELS)
    assert row["verdict"] == "supported" and row["test"].startswith("within-dataset Spearman") and row["effect"] < 0
    assert row["direction"] == "< 0" and row["unit"] == "rho" and "a 2 better, 0 worse of 2" in row["evidence"]
    assert "chosen fusion − its ensemble" in row["evidence"] and "per dataset: a " in row["evidence"]
    # complementary pairs gain less, and the chosen fusions lose: contradicted
    assert claims.fusion_claim(*comparisons_and_pairs(-0.03, 1), LEVELS)["verdict"] == "contradicted"
    # the chosen fusion wins but complementarity predicts nothing: partly supported
    comp, pairs = comparisons_and_pairs(0.03, 0.0, noise=0.01, pairs_per_dataset=60)
    assert claims.fusion_claim(comp, pairs, LEVELS)["verdict"] == "partly supported"
    # a precise null: many pairs per dataset, no association, no gain -> equivalence -> not supported
    comp, pairs = comparisons_and_pairs(0.0, 0.0, noise=0.01, pairs_per_dataset=200, seed=4)
    row = claims.fusion_claim(comp, pairs, LEVELS)
    assert row["verdict"] == "not supported" and row["tost_p"] < 0.05
    # six pairs per dataset and no gain: nothing shown, nothing excluded
    comp, pairs = comparisons_and_pairs(0.0, 0.0, noise=0.01, seed=4)
    assert claims.fusion_claim(comp, pairs, LEVELS)["verdict"] == "inconclusive"
    # a fusion that loses to the ensemble of its own models blocks "supported"
    comp, pairs = comparisons_and_pairs(0.03, -1, ensemble_gain=-0.03)
    assert claims.fusion_claim(comp, pairs, LEVELS)["verdict"] == "partly supported"


def test_fusion_claim_verdict_moves_with_the_profile_alpha():
    comp, pairs = comparisons_and_pairs(0.0, -1, noise=0.012, seed=2)     # Holm p of the primary about 0.015
    verdicts = {a: claims.fusion_claim(comp, pairs, Levels(alpha=a))["verdict"] for a in (0.05, 0.01)}
    p = claims.fusion_claim(comp, pairs, LEVELS)["p_value"]
    assert 0.01 < p < 0.05, p
    assert verdicts == {0.05: "partly supported", 0.01: "inconclusive"}


def test_robustness_settings_are_validated_where_they_enter():
    assert RobustnessSettings().relative_scale == 2.0 ** -8
    assert RobustnessSettings(dtype="float16").relative_scale == 2.0 ** -11
    assert StudyConfig.from_profile("default").robustness == RobustnessSettings(kind="noise", dtype="bfloat16",
                                                                                match="measured_max", seed=0)
    with pytest.raises(ProfileError, match="kind: must be 'noise' or 'round'"):
        RobustnessSettings(kind="jitter")
    with pytest.raises(ProfileError, match="match: must be one of"):
        RobustnessSettings(match="guess")
    with pytest.raises(ProfileError, match="changes nothing"):
        RobustnessSettings(kind="round", dtype="float16")
    with pytest.raises(ProfileError, match=r"robustness\.sigma: unknown setting"):
        StudyConfig.from_profile("ci").replace(robustness={"sigma": 0.1})


def test_robustness_noise_is_sized_from_the_measured_dtype_error():
    from layerfusion.study.chapters import robustness

    agreement = pd.DataFrame({"dtype": ["bfloat16"] * 3 + ["float16"], "rel_error_mean": [0.002, 0.006, 0.02, 0.5]})
    load = {"dtype_agreement": agreement}.__getitem__
    assert robustness.resolve(RobustnessSettings(), load).scale == pytest.approx(np.sqrt(3) * 0.02)
    assert robustness.resolve(RobustnessSettings(match="measured_median"), load).scale == pytest.approx(
        np.sqrt(3) * 0.006)
    assert robustness.resolve(RobustnessSettings(match="roundoff"), load).relative_scale == 2.0 ** -8
    assert robustness.resolve(RobustnessSettings(scale=0.1), load).scale == 0.1
    x = np.random.default_rng(0).standard_normal((400, 64)).astype(np.float32)
    settings = robustness.resolve(RobustnessSettings(), load)
    y = robustness.perturb(x, settings, "m|d|train")
    rel = np.linalg.norm(y - x, axis=1) / np.linalg.norm(x, axis=1)
    assert np.median(rel) == pytest.approx(0.02, rel=0.1)     # the noise reproduces the measured vector error
    with pytest.raises(ValueError, match="dtype_agreement has no bfloat16 rows"):
        robustness.resolve(RobustnessSettings(), {"dtype_agreement": agreement.iloc[3:]}.__getitem__)


def test_perturbation_is_seeded_and_at_the_rounding_level():
    from layerfusion.study.chapters import robustness

    x = np.random.default_rng(0).standard_normal((50, 3, 8)).astype(np.float16)
    settings = RobustnessSettings(match="roundoff")
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
    # 4 reduced concatenations, the reduction check on the best model and 1 two-layer model, 2 seeds each; the
    # ensembles train nothing.
    assert len(fused.runs) == 2 * (3 + 4 + 4) * 2 and len(fits) == len(fused.runs) + 2 * (4 + 1 + 1) * 2
    assert fused.controls["control"].str.startswith("check: best single model twice").sum() == 2
    assert len(fused.ensembles) == 2 * 4 * 2 and set(fused.ensembles["operator"]) == {"ensemble"}
    stab = fused.stability
    assert stab.groupby("method").size().to_dict() == {"concatenation": 8, "ensemble": 8, "single": 6}
    assert (stab["n_seeds"] == 2).all()
    assert len(fused.complementarity) == 6 and {"kappa", "gain_over_better"} <= set(fused.complementarity)
    tested = chapter.tests(fused, LEVELS)
    assert tested["claim2_tests"]["family"].eq("claim 2").all() and len(tested["stability_tests"]) == 5
    assert {"ensemble_gain", "ensemble_se", "gain_se"} <= set(fused.comparisons)
    assert tested["claim2_tests"]["test"].str.endswith("vs its ensemble").sum() == 2
    facts = chapter.headline(fused, LEVELS, tested)
    assert facts["n_pairs"] == 6 and facts["seed_std_2"] != "n/a" and facts["equal_m_narrowing"] == "n/a"
    shown = chapter.stability_summary(stab)
    assert list(shown["k"]) == [2, 3, 2, 3] and "ensemble: std over seeds" in shown

    tables = {f"fusion_{k}": v for k, v in fused.tables().items()}
    tables["layers_summary"], tables["layers_per_layer"], tables["layers_selection"] = summary, per_layer, selection
    tables["layers_greedy"] = tables["fusion_greedy"].assign(model="one model")  # the same columns as the layer search
    tables["overhead_scaling"] = pd.DataFrame({"vary": ["layers", "layers"], "value": [1, 2], "seconds": [1.0, 2.0]})
    tables["dtype_agreement"] = pd.DataFrame({"dtype": "bfloat16", "rel_error_mean": [0.001, 0.004]})
    unchanged = Study(study.config, cache_dir=study.cache_dir, progress=False, transform=lambda *args: args[-1])
    same = robustness.analyse_robustness(study, tables.__getitem__, shaken=unchanged)
    assert not same.claims["moved"].any() and not same.layers["layer_moved"].any()
    assert np.allclose(same.fusion["gain_original"], same.fusion["gain_perturbed"])
    assert np.allclose(same.per_layer["test_accuracy_original"], same.per_layer["test_accuracy_perturbed"])
    shaken = robustness.analyse_robustness(study, tables.__getitem__)
    assert list(shaken.claims["claim"]) == list(same.claims["claim"]) and len(shaken.cost) == 3
    settings = robustness.resolve(study.config.robustness, tables.__getitem__)
    facts = robustness.headline(shaken, settings, study.config.power.alpha)
    assert facts["n_cells"] == 6 and facts["scale"] == f"{np.sqrt(3) * 0.004:.3g}" and facts["n_claims"] == 4
