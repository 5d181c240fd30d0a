"""Tests for the overhead chapter's pieces that need no model: the GPU table loader and summary, the merge of the
time and memory curves, the tables for reading, the figures."""

from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest

from layerfusion import meter
from layerfusion.study import plots
from layerfusion.study.chapters import overhead

matplotlib.use("Agg")


def _gpu_rows():
    rows = []
    for model, base in (("llama-2-7b", 14e9), ("gemma-2-2b", 5e9)):
        for layers in (1, 16, 33):
            for repeat in range(3):
                rows.append({"kind": "extract", "gpu": "NVIDIA H200", "model shape": model, "dtype": "bfloat16",
                             "layers_kept": layers, "n_texts": 256, "tokens": 256, "real_tokens": 65536,
                             "repeat": repeat,
                             "seconds": 1.0 + 0.01 * layers + 0.001 * repeat,
                             "peak_bytes": int(base + layers * 1e8), "versions": "torch 2.11.0",
                             "git sha": "abc123def4567890"})
    for repeat in range(3):  # as benchmarks.gpu_overhead writes them: both backbones extracted, then the fusion head
        rows.append({"kind": "fused", "gpu": "NVIDIA H200", "model shape": "llama-2-7b+gemma-2-2b",
                     "dtype": "bfloat16", "layers_kept": "all", "n_texts": 256, "tokens": 256, "real_tokens": 65536,
                     "repeat": repeat, "seconds": 3.0 + 0.001 * repeat, "peak_bytes": int(14e9 + 33 * 1e8),
                     "versions": "torch 2.11.0", "git sha": "abc123def4567890"})
    return rows


def test_gpu_table_reads_csv_and_json_normalises_names_and_skips_provenance(tmp_path):
    folder = tmp_path / "gpu"
    folder.mkdir()
    pd.DataFrame(_gpu_rows()).to_csv(folder / "h200.csv", index=False)
    (folder / "more.json").write_text(json.dumps({"rows": _gpu_rows()[:2]}))
    (folder / "provenance.json").write_text(json.dumps({"gpu": "NVIDIA H200", "command": "..."}))
    raw = overhead.gpu_table(folder)
    assert len(raw) == 21 + 2 and {"model", "git_sha", "layers_kept", "source"} <= set(raw.columns)
    assert overhead.gpu_names(raw) == "NVIDIA H200"
    assert "NVIDIA H200" in overhead.gpu_status(raw)["gpu_sentence"]


def test_gpu_table_absent_gives_none_and_one_sentence(tmp_path):
    assert overhead.gpu_table(tmp_path / "gpu") is None
    (tmp_path / "gpu").mkdir()
    assert overhead.gpu_table(tmp_path / "gpu") is None
    assert "No GPU table" in overhead.gpu_status(None)["gpu_sentence"]
    empty = overhead.gpu_summary(None)
    assert empty.empty and overhead.gpu_reader_table(empty) is None and plots.gpu_overhead(empty, "") is None


def test_gpu_table_missing_required_column_names_the_file(tmp_path):
    folder = tmp_path / "gpu"
    folder.mkdir()
    pd.DataFrame(_gpu_rows()).drop(columns=["peak_bytes"]).to_csv(folder / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv.*peak_bytes"):
        overhead.gpu_table(folder)


def test_gpu_summary_medians_throughput_peak_and_optional_columns(tmp_path):
    raw = overhead.gpu_columns(pd.DataFrame(_gpu_rows()))
    summary = overhead.gpu_summary(raw)
    assert len(summary) == 7 and (summary["repeats"] == 3).all()
    row = summary[(summary["model"] == "llama-2-7b") & (summary["layers_kept"] == "16")].iloc[0]
    assert row["seconds"] == pytest.approx(1.0 + 0.16 + 0.001)
    assert row["tokens_per_s"] == pytest.approx(65536 / row["seconds"])
    assert row["peak_bytes"] == int(14e9 + 16 * 1e8)
    minimal = overhead.gpu_summary(raw[["gpu", "model", "layers_kept", "seconds", "peak_bytes"]])
    assert len(minimal) == 7 and "tokens_per_s" not in minimal
    shown = overhead.gpu_reader_table(summary)
    assert list(shown["layers kept"]).count("all") == 1 and shown["repeats"].dtype.kind == "i"
    assert "peak memory (GiB)" in shown and "throughput (tokens/s)" in shown
    sweep = overhead.gpu_layer_sweep(summary)
    assert len(sweep) == 6 and sweep["layers_kept"].dtype.kind == "i" and set(sweep["kind"]) == {"extract"}
    fig = plots.gpu_overhead(sweep, "NVIDIA H200")
    assert fig._suptitle.get_text() == "NVIDIA H200"
    assert [ax.get_ylabel() for ax in fig.axes] == ["peak GPU memory (GiB)", "throughput (tokens/s)"]


def test_gpu_table_keeps_tokens_per_text_beside_real_tokens(tmp_path):
    """benchmarks.gpu_overhead writes ``tokens`` (per text) and ``real_tokens``: the alias of the second must not
    turn it into a second ``tokens`` column (which broke the summary)."""
    folder = tmp_path / "gpu"
    folder.mkdir()
    pd.DataFrame(_gpu_rows()).rename(columns={"model shape": "model_shape"}).to_csv(folder / "gpu.csv", index=False)
    raw = overhead.gpu_table(folder)
    assert list(raw.columns).count("tokens") == 1 and "real_tokens" in raw
    assert (overhead.gpu_summary(raw)["tokens"] == 256).all()


def _curves():
    times = pd.DataFrame({"vary": ["n_texts", "n_texts", "layers", "layers", "token_budget"],
                          "value": [4, 8, 1, 30, 256], "seconds": [0.1, 0.2, 0.1, 1.0, 0.3],
                          "seconds_low": [0.09, 0.19, 0.09, 0.9, 0.28], "seconds_high": [0.11, 0.21, 0.11, 1.1, 0.32]})
    memory = pd.DataFrame({"vary": ["layers", "layers", "token_budget"], "value": [1, 30, 256],
                           "peak_bytes": [20 * 2**20, 35 * 2**20, 10 * 2**20], "memory_kind": "rss_fresh_process",
                           "setup_bytes": 600 * 2**20, "n_texts": 16, "n_layers_kept": [2, 31, 31],
                           "seconds": [0.1, 1.0, 0.3]})
    return times, memory


def test_scaling_table_puts_fresh_process_peaks_on_their_settings():
    times, memory = _curves()
    table = overhead.scaling_table(times, memory)
    assert len(table) == len(times)
    layers = table[table["vary"] == "layers"].set_index("value")["peak_bytes"]
    assert layers.to_dict() == {1: 20 * 2**20, 30: 35 * 2**20}
    assert table.loc[table["vary"] == "n_texts", "peak_bytes"].isna().all()
    fig = plots.scaling_panels(table)
    assert [ax.get_ylabel() for ax in fig.axes] == ["extraction time (s)"] * 3 + ["extraction peak memory (MiB)"] * 2
    shown = overhead.memory_table(memory)
    assert shown["value"].dtype.kind == "i" and list(shown["extraction peak above it (MiB)"]) == [20.0, 35.0, 10.0]


def test_reader_tables_have_units_and_integers():
    deploy = pd.DataFrame({"model": ["m"] * 2, "dataset": ["d"] * 2,
                           "setting": ["full model", "stop at selected layer"], "best_layer": [3, 3],
                           "n_layers": [6, 6], "seconds_per_1k": [10.0, 5.0], "seconds_per_1k_low": [9.0, 4.5],
                           "seconds_per_1k_high": [11.0, 5.5]})
    shown = overhead.deployment_table(deploy)
    assert shown.loc[0, "full model (s per 1k texts)"] == "10.00 [9.00, 11.00]"
    assert shown.loc[0, "time saved (%)"] == 50 and shown.loc[0, "selected layer / layers"] == "3 / 6"
    costs = pd.DataFrame({"k": [1, 2], "models": ["a", "a+b"], "added_per_1k": [5.0, 3.0],
                          "added_per_1k_low": [4.0, 2.5], "added_per_1k_high": [6.0, 3.5], "head_per_1k": [0.0, 0.01],
                          "head_per_1k_low": [0.0, 0.009], "head_per_1k_high": [0.0, 0.011],
                          "total_per_1k": [5.0, 8.01], "total_per_1k_low": [4.0, 7.0], "total_per_1k_high": [6.0, 9.0],
                          "repeats": [5, 5]})
    table = overhead.models_table(costs)
    assert table["models fused"].tolist() == [1, 2] and table.loc[1, "fusion head (s per 1k texts)"].startswith("0.0100")
    cal = overhead.calibration_table(pd.DataFrame({"allocated_bytes": [200 * 2**20], "peak_bytes": [201 * 2**20],
                                                   "memory_kind": ["rss_fresh_process"]}))
    assert cal.loc[0, "measured peak (MiB)"] == 201.0


def test_pareto_figure_log_axis_labels_do_not_overlap_and_carry_a_unit():
    df = pd.DataFrame({"dataset": ["d"] * 4, "cost": [12.0, 15.0, 19.0, 24.0], "accuracy": [0.7, 0.8, 0.82, 0.81],
                       "label": list("abcd")})
    fig = plots.pareto(df, df.iloc[:3], cost="cost", score="accuracy")
    ax = fig.axes[0]
    assert "s per 1,000 texts" in ax.get_xlabel()
    fig.canvas.draw()
    labels = ax.get_xticklabels() + ax.get_xticklabels(minor=True)
    boxes = [t.get_window_extent() for t in labels if t.get_text() and t.get_visible()]
    boxes = sorted(boxes, key=lambda b: b.x0)
    assert len(boxes) >= 2
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "x tick labels overlap"


# the meter on CUDA (benchmarks/gpu_check.sh runs `-k cuda` in this file on a lent GPU) ------------------------

MIB = 2**20


def test_cuda_allocator_peak_in_fresh_process():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    m = meter.peak_in_fresh_process("layerfusion.meter:allocation",
                                    {"n_bytes": 200 * MIB, "kind": "torch", "device": "cuda:0"}, device="cuda:0")
    assert m.memory_kind == "cuda_allocated" and m.cuda_peak_bytes >= 200 * MIB


def test_measure_tracks_cuda_allocations():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    m = meter.measure(lambda: torch.ones(25 * 1024 * 1024, device="cuda").numel(), repeats=2,
                      device="cuda", dtype=torch.float32)
    assert m.memory_kind == "cuda_allocated" and m.dtype == "float32"
    assert m.peak_bytes >= 100 * MIB and m.result == 25 * 1024 * 1024


def test_deployment_costs_time_the_full_pass_once_where_the_selected_layer_is_last(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import yaml

    from layerfusion.study.settings import StudyConfig
    raw = {"profile": "small", "seed": 0, "models": ["a"], "datasets": ["sst2", "r8"], "validation_size": 0.2,
           "overhead": {"n_texts": [4], "deploy_n_texts": 6, "deploy_n_texts_by_dataset": {"r8": 3}, "repeats": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    cfg = StudyConfig.from_profile(tmp_path / "p.yaml")
    texts = {"test": {"text": [f"t{i}" for i in range(10)]}}
    study = SimpleNamespace(config=cfg, cache_dir=None, data=lambda dataset: texts)
    monkeypatch.setattr(overhead.models, "load", lambda *a, **k: SimpleNamespace(n_hidden_states=5))
    timed = []

    def cost(loaded, sub, config, repeats, warmup):
        timed.append((len(sub), config.layers))
        assert config.poolings == (cfg.primary_pooling,), "a deployment pools one layer in the primary pooling"
        return {"seconds": 1.0 if config.layers == (4,) else 0.25, "seconds_low": 0.9, "seconds_high": 1.1,
                "n_texts": len(sub)}

    monkeypatch.setattr(overhead.sweeps, "extraction_cost", cost)
    summary = pd.DataFrame({"model": ["a", "a"], "dataset": ["sst2", "r8"], "pooling": [cfg.primary_pooling] * 2,
                            "best_layer": [2, 4]})
    out = overhead.deployment_costs(study, summary)
    # the full pass pools only the last layer (4); r8's selected layer 4 is the last: the full pass, timed once
    assert timed == [(6, (4,)), (6, (2,)), (3, (4,))]
    r8 = out[out["dataset"] == "r8"].set_index("setting")
    assert r8.loc["stop at selected layer", "same_as"] == "full model"
    assert r8.loc["stop at selected layer", "seconds_per_1k"] == r8.loc["full model", "seconds_per_1k"] == 1000 / 3
    shown = overhead.deployment_table(out).set_index("dataset")
    assert shown.loc["r8", "time saved (%)"] == 0 and "full pass" in shown.loc["r8"].to_string()
    assert shown.loc["sst2", "time saved (%)"] == 75
