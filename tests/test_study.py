"""The study layer: profile config, claims rules, report glue, analysis summaries, overhead tables, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from layerfusion.study import claims, cli, report
from layerfusion.study.chapters import extraction
from layerfusion.study.chapters import layer_analysis
from layerfusion.study.chapters import overhead as overhead_analysis
from layerfusion.study import StudyConfig


def test_profile_config_reads_every_shipped_profile():
    for name in ("ci", "default", "paper"):
        cfg = StudyConfig.from_profile(name)
        assert cfg.profile == name and cfg.models and cfg.datasets
        assert set(cfg.datasets) <= {"sst2", "mr", "r8", "r52"}
        ext = cfg.extraction_config(cfg.datasets[0])
        assert ext.max_length == cfg.max_length[cfg.datasets[0]]
        assert ext.token_budget == cfg.token_budget and ext.poolings == cfg.poolings
        json.dumps(cfg.as_dict())


def test_profile_overrides_win_and_unknown_profile_is_named():
    cfg = StudyConfig.from_profile("ci", models=("minilm-l6",), datasets=None)
    assert cfg.models == ("minilm-l6",)
    assert cfg.datasets == StudyConfig.from_profile("ci").datasets
    with pytest.raises(KeyError, match="unknown profile 'nope'"):
        StudyConfig.from_profile("nope")




def test_layer_summary_from_arrays_picks_validation_best_and_tests_last():
    rng = np.random.default_rng(0)
    y_val, y_te = rng.integers(0, 2, 200), rng.integers(0, 2, 300)
    noisy = lambda y, p: np.where(rng.random(y.size) < p, y, 1 - y)  # noqa: E731
    val_pred = np.stack([noisy(y_val, p) for p in (0.5, 0.95, 0.6)])
    test_pred = np.stack([noisy(y_te, p) for p in (0.5, 0.95, 0.6)])
    arrays = {"layers": np.arange(3), "y_te": y_te, "y_sel": y_val, "sel_pred": val_pred, "test_pred": test_pred,
              "sel_scores": (val_pred == y_val).mean(axis=1)}
    row = layer_analysis.summarise("m", "d", "mean", arrays, 0.05, 0.8)
    assert row["best_layer"] == 1 and row["last_layer"] == 2 and not row["best_is_last"]
    assert row["p_best_vs_last"] < 1e-6 and row["delta_best_minus_last"] > 0.2
    assert row["best_test_low"] <= row["best_test_accuracy"] <= row["best_test_high"]
    assert row["discordance_best_last"] == np.mean((test_pred[1] == y_te) != (test_pred[2] == y_te))
    assert row["mde_best_last"] == layer_analysis.stats.mcnemar_mde(300, row["discordance_best_last"])
    table = layer_analysis.summary_table(pd.DataFrame([{**row, "p_best_vs_last_holm": row["p_best_vs_last"]}]),
                                         "mean")
    assert table.loc[0, "selected / last layer"] == "1 / 2"
    from layerfusion.study.verdicts import Levels
    facts = layer_analysis.headline(pd.DataFrame([{**row, "p_best_vs_last_holm": 0.001, "n_test": 300}]), "mean",
                                    Levels())
    assert (facts["n_cells"], facts["n_not_last"], facts["n_significant"]) == (1, 1, 1)
    assert facts["mean_difference"] == round(row["delta_best_minus_last"] * 100, 3)


def test_accuracy_vs_cost_sums_the_models_fused():
    deploy = pd.DataFrame({"model": ["a", "b"], "dataset": "d", "setting": "stop at best layer",
                           "seconds_per_1k": [10.0, 30.0]})
    runs = pd.DataFrame({"dataset": "d", "models": [["a"], ["b"]], "k": 1, "test_accuracy": [0.8, 0.7]})
    comparisons = pd.DataFrame({"dataset": ["d"], "models": [["a", "b"]], "operator": ["concat"],
                                "test_mean": [0.85]})
    table = overhead_analysis.accuracy_vs_cost(comparisons, runs, deploy)
    assert sorted(table["cost"]) == [10.0, 30.0, 40.0]
    front = overhead_analysis.pareto(table)
    assert set(front["cost"]) == {10.0, 40.0}


def test_report_saves_reads_and_lists_runs(tmp_path):
    run = report.start("unit", "chapter", seed=3, results_dir=tmp_path)
    run.save("table", pd.DataFrame({"x": [1, 2]}))
    assert run.load("table")["x"].tolist() == [1, 2]
    assert run.load_run("table")["run_id"] == run.run_id
    card = report.finish(run)
    assert card.loc["profile", "value"] == "unit" and card.loc["seed", "value"] == 3
    records = report.run_records(run.results_dir)
    assert records.loc[0, "run id"] == run.run_id and records.loc[0, "result files"] == 2


def test_cli_parser_and_errors(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["extract", "--model", "smollm2-135m", "--dataset", "mr", "--profile", "default"])
    assert args.model == ["smollm2-135m"] and args.dataset == ["mr"] and args.func is cli.cmd_extract
    assert cli.main(["extract", "--profile", "nope"]) == 2
    assert capsys.readouterr().err.startswith("layerfusion: error: unknown profile 'nope'")
    assert cli.main(["extract", "--profile", "ci", "--model", "nope"]) == 2
    assert capsys.readouterr().err.startswith("layerfusion: error: unknown model 'nope'; known models:")
    assert cli.main(["models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert cli.main(["report", "--chapter", "99_nothing", "--out-dir", "/tmp/unused"]) == 2
    assert "unknown chapter '99_nothing'; chapters are 00_setup, 01_extraction" in capsys.readouterr().err
    assert cli.main(["report", "--profile", "/no/such/profile.yaml", "--out-dir", "/tmp/unused"]) == 2
    assert "profile file /no/such/profile.yaml does not exist" in capsys.readouterr().err


def test_extract_all_loads_each_model_once_and_reads_the_cache_after(tmp_path, monkeypatch):
    import dataclasses

    from layerfusion import models, testing
    from layerfusion.study import Study

    keys = []
    for arch in ("llama", "gpt2"):
        spec = dataclasses.replace(testing.tiny_spec(tmp_path / arch, arch=arch), key=f"tiny-{arch}-study")
        models.register(spec, overwrite=True)
        keys.append(spec.key)
    calls = []
    real_load = models.load
    monkeypatch.setattr(models, "load", lambda key, **kw: calls.append(key) or real_load(key, **kw))
    cfg = StudyConfig.from_profile("ci", models=tuple(keys), datasets=("sst2", "mr"),
                                   subsample={"sst2": {"train": 6, "validation": 4, "test": 4},
                                              "mr": {"train": 6, "validation": 4, "test": 4}})
    table = extraction.extract_all(Study(cfg, cache_dir=str(tmp_path / "cache"), progress=False))
    assert calls == keys
    assert list(zip(table["dataset"], table["model"]))[:2] == [("sst2", keys[0])] * 2
    assert len(table) == 2 * 2 * 3
    calls.clear()
    again = extraction.extract_all(Study(cfg, cache_dir=str(tmp_path / "cache"), progress=False))
    assert calls == []
    pd.testing.assert_frame_equal(again.drop(columns=["extract_seconds"], errors="ignore"),
                                  table.drop(columns=["extract_seconds"], errors="ignore"))


def test_runtimes_lists_chapters_the_fit_cache_hit_rate_and_the_slowest_cells(tmp_path, capsys):
    import nbformat

    for chapter, seconds, hits, misses in (("layer_analysis", 12.34, 3, 1), ("overhead", 40.0, 0, 0)):
        run = report.start("unit", chapter, results_dir=tmp_path)
        run.save(f"runtime_{chapter}", [{"chapter": chapter, "runtime_s": seconds, "fit_cache_hits": hits,
                                         "fit_cache_misses": misses}])
    folder = run.results_dir
    table = report.chapter_runtimes(folder)
    assert table["chapter"].tolist() == ["layer_analysis", "overhead"] and table["runtime_s"].tolist() == [12.3, 40.0]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"\nx = {i}") for i in range(3)])
    for i, cell in enumerate(nb.cells):
        cell.metadata["papermill"] = {"duration": float(i)}
    nbformat.write(nb, tmp_path / "04_overhead.ipynb")
    assert cli.main(["runtimes", "--results-dir", str(folder), "--executed-dir", str(tmp_path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "total 52 s over 2 chapters; fit cache 3 hits, 1 misses (75.0%)" in out
    cells = report.slowest_cells(tmp_path, top=2)
    assert cells["cell"].tolist() == [2, 1] and cells["source"].tolist() == ["x = 2", "x = 1"]
    assert cli.main(["runtimes", "--results-dir", str(tmp_path / "empty")]) == 2
    assert "no chapter runtimes (runtime_*.json) in" in capsys.readouterr().err
