"""The setup chapter's power analysis: the items each comparison is made on and the MDE of McNemar's test there."""

from __future__ import annotations

import numpy as np
import pytest

from layerfusion import stats
from layerfusion.study import Study, StudyConfig
from layerfusion.study.chapters import setup


@pytest.fixture(scope="module")
def study():
    cfg = StudyConfig.from_profile("ci", datasets=["sst2", "r8"])
    cfg = cfg.replace(subsample={"sst2": {"train": 400, "validation": 100, "test": 300}, "r8": {"test": 64}},
                      power={"alpha": 0.05, "power": 0.8, "discordance": {"sst2": 0.2},
                             "discordance_grid": [0.1, 0.3]})
    return Study(cfg, progress=False)


def test_power_table_states_the_items_and_mcnemars_mde_per_split(study):
    table = setup.power_table(study).set_index("dataset")
    assert (table.loc["sst2", ["test items", "validation items", "cross-validation items"]].tolist()
            == [300, 100, 500])
    assert table.loc["sst2", "MDE test (points)"] == pytest.approx(stats.mcnemar_mde(300, 0.2) * 100, abs=0.005)
    assert table.loc["sst2", "MDE cross-validation (points)"] < table.loc["sst2", "MDE validation (points)"]
    assert np.isnan(table.loc["r8", "planning discordance"]) and np.isnan(table.loc["r8", "MDE test (points)"])
    holm = table.loc["sst2", "MDE test, Holm over 4 cells (points)"]   # two models x two datasets
    assert holm == pytest.approx(stats.mcnemar_mde(300, 0.2, alpha=0.05 / 4) * 100, abs=0.005)
    assert holm > table.loc["sst2", "MDE test, Holm over 2 datasets (points)"] > table.loc["sst2", "MDE test (points)"]
    facts = setup.power_facts(table.reset_index(), study.config)
    assert facts["mde_test_min"] == table.loc["sst2", "MDE test (points)"] and facts["power_percent"] == 80
    assert facts["mde_test_holm_cells_max"] == holm


def test_mde_grid_covers_every_split_and_planning_rate(study):
    grid = setup.mde_grid(study)
    assert list(grid.columns) == ["ψ = 0.1", "ψ = 0.3"]
    assert grid.index.names == ["dataset", "items"] and len(grid) == 6
    assert grid.loc[("sst2", "test"), "ψ = 0.3"] == pytest.approx(stats.mcnemar_mde(300, 0.3) * 100, abs=0.005)
    both = grid.dropna()
    assert len(both) == 5 and (both["ψ = 0.3"] > both["ψ = 0.1"]).all()  # more discordance, larger MDE
    assert np.isnan(grid.loc[("r8", "test"), "ψ = 0.1"])  # 64 items at ψ = 0.1: nothing detectable


def test_settings_table_writes_blocks_for_reading_and_empty_ones_as_none():
    assert setup._readable({"a": {"b": 1, "c": [1, 2]}, "d": {}, "e": None}) == "a: (b: 1; c: 1, 2); d: none; e: none"
    table = setup.settings_table(StudyConfig.from_profile("ci"))
    assert "deploy_n_texts_by_dataset: none" in table.loc["overhead", "value"]
