"""The layer chapter on tiny random models: both selection protocols on the same texts, bootstrap selection
frequencies, the protocol rule, power columns, the authors' protocol over seeds, and warnings counted, not printed."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from layerfusion import stats
from layerfusion.study import claims
from layerfusion.study.verdicts import VERDICTS, Levels
from layerfusion.study.chapters import layer_analysis


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    from layerfusion import models, testing
    from layerfusion.study import Study, StudyConfig

    tmp = tmp_path_factory.mktemp("layer_chapter")
    keys = []
    with testing.registries_restored():
        for arch, hidden in (("llama", 32), ("gpt2", 16)):
            spec = testing.tiny_spec(tmp / arch, arch=arch, hidden=hidden)
            models.register(dataclasses.replace(spec, key=f"tiny-{arch}-layers"), overwrite=True)
            keys.append(f"tiny-{arch}-layers")
        sizes = {"train": 40, "validation": 20, "test": 24}
        cfg = StudyConfig.from_profile("ci", models=keys, datasets=["sst2", "r8"], poolings=["mean", "mean_pad"],
                                       subsample={"sst2": sizes, "r8": sizes}, max_length={"sst2": 16, "r8": 16})
        cfg = cfg.replace(probe={"Cs": [0.1, 1.0], "max_iter": 3, "tol": 1e-4},
                          selection={"protocol": "cv", "folds": 3, "n_boot": 50},
                          authors_protocol={"epochs": 2, "pooling": "mean_pad", "seeds": [0, 1]},
                          greedy={"top_layers": 2, "max_units": 2})
        study = Study(cfg, cache_dir=str(tmp / "cache"), progress=False)
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            result = layer_analysis.analyse_layers(study)
        yield study, result, escaped


def test_both_protocols_are_fitted_on_the_primary_pooling_and_the_profile_one_is_used(analysis):
    study, result, _ = analysis
    protocols = result.protocols
    assert len(protocols) == 2 * 2 * 2 and set(protocols["protocol"]) == {"validation", "cv"}
    assert set(protocols["pooling"]) == {"mean"}
    items = protocols.set_index("protocol")["n_selection_items"]
    assert set(items["validation"]) == {20} and set(items["cv"]) == {60}
    assert set(protocols.loc[protocols["protocol"] == "cv", "n_fits"]) == {4}
    assert set(result.summary["protocol"]) == {"cv"} and set(result.summary["n_selection_items"]) == {60}
    cv = protocols[protocols["protocol"] == "cv"].set_index(["model", "dataset"])["chosen_layer"]
    mean = result.summary[result.summary["pooling"] == "mean"].set_index(["model", "dataset"])["best_layer"]
    assert cv.sort_index().tolist() == mean.sort_index().tolist()
    decision = layer_analysis.choose_protocol(protocols)
    assert decision["recommended_protocol"] in ("validation", "cv") and decision["n_cells"] == 4
    facts = layer_analysis.protocol_facts(protocols, "cv")
    assert facts["profile_follows_rule"] == (facts["recommended_protocol"] == "cv")
    assert "cv: modal frequency" in layer_analysis.protocol_table(protocols).columns


def test_selection_frequencies_are_distributions_over_each_models_layers(analysis):
    study, result, _ = analysis
    sums = result.selection.groupby(["model", "dataset", "protocol"])["frequency"].sum()
    np.testing.assert_allclose(sums, 1.0)
    assert set(result.selection["pooling"]) == {"mean"}
    modal = result.selection.groupby(["model", "dataset", "protocol"])["frequency"].max()
    rows = result.protocols.set_index(["model", "dataset", "protocol"])["modal_frequency"]
    np.testing.assert_allclose(rows.loc[modal.index], modal)
    dependence = layer_analysis.dependence_table(result.selection, result.summary, "mean")
    assert len(dependence) == 2 and set(dependence["model"]) == set(study.config.models)


def test_summary_has_holm_within_each_pooling_and_the_power_of_each_comparison(analysis):
    _, result, _ = analysis
    for _, grp in result.summary.groupby("pooling"):
        np.testing.assert_allclose(grp["p_best_vs_last_holm"], stats.holm(grp["p_best_vs_last"].to_numpy()))
    moved = result.summary[result.summary["discordance_best_last"] > 0]
    expected = [stats.mcnemar_mde(24, d) for d in moved["discordance_best_last"]]
    np.testing.assert_allclose(moved["mde_best_last"], expected)
    table = layer_analysis.summary_table(result.summary, "mean")
    assert {"discordance", "MDE (points)", "p (Holm)"} <= set(table.columns)
    row = claims.layer_claim(result.summary, "mean", Levels(), result.selection)
    assert row["verdict"] in VERDICTS and row["test"].startswith("mean over 2 datasets")


def test_authors_protocol_runs_once_per_seed(analysis):
    _, result, _ = analysis
    assert len(result.authors) == 2 * 2 * 2 and set(result.authors["seed"]) == {0, 1}
    summary = layer_analysis.authors_summary(result.authors)
    assert len(summary) == 4 and set(summary["seeds"]) == {2}
    assert all("±" in text for text in summary["optimism (points)"])


def test_warnings_are_counted_in_a_table_and_none_escapes(analysis):
    _, result, escaped = analysis
    assert not escaped, [str(w.message) for w in escaped]
    table = result.warnings
    assert list(table.columns) == ["model", "dataset", "pooling", "step", "category", "message", "count"]
    converged = table[table["category"] == "ConvergenceWarning"]
    assert len(converged) and (converged["count"] > 0).all()
    assert not table["message"].str.contains("/").any()


def test_selection_stability_figure_marks_the_selected_layer_of_each_cell(analysis):
    import matplotlib

    matplotlib.use("Agg")
    from layerfusion.study import plots

    study, result, _ = analysis
    fig = plots.selection_stability(result.selection, result.summary, "mean")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == list(study.config.models)
    summary = result.summary[result.summary["pooling"] == "mean"].set_index(["model", "dataset"])["best_layer"]
    for ax in axes:
        xs, ys = ax.lines[0].get_data()
        datasets = [t.get_text() for t in ax.get_yticklabels()]
        assert [int(x) for x in xs] == [int(summary[(ax.get_title(), d)]) for d in datasets]
        assert list(ys) == list(range(len(datasets)))
    assert fig.get_size_inches()[0] <= 8
    matplotlib.pyplot.close(fig)


def test_plan_check_sets_the_observed_discordance_beside_the_plan(analysis):
    study, result, _ = analysis
    check = layer_analysis.plan_check(result.summary, "mean", {"sst2": 0.1}).set_index("dataset")
    moved = result.summary[(result.summary["pooling"] == "mean") & ~result.summary["best_is_last"]]
    for dataset, grp in moved.groupby("dataset"):
        assert check.loc[dataset, "cells"] == len(grp)
        assert check.loc[dataset, "observed discordance"] == round(grp["discordance_best_last"].median(), 3)
        # the planning rate for the next run comes from the selection items, never from test
        assert check.loc[dataset, "selection discordance (plan next run)"] == round(
            grp["selection_discordance_best_last"].median(), 3)
    assert (result.summary["selection_discordance_best_last"].between(0, 1)).all()
    assert check["planned discordance"].get("sst2", 0.1) == 0.1
    assert np.isnan(check["planned discordance"].get("r8", np.nan))
