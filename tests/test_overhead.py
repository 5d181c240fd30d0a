"""Tests for layerfusion.overhead: timing, peak memory, scaling, linearity, Pareto front, storage."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from layerfusion import overhead
from layerfusion.extract import ExtractionConfig, plan_batches

TEXTS = [
    "the movie was good",
    "a very boring plot",
    "great acting and a fun story",
    "not good",
    "the bank said profit rate was up this year",
    "love the film",
    "terrible terrible acting",
    "oil price market shares trade",
]


@dataclasses.dataclass(frozen=True)
class _Config:
    """Stand-in with the ExtractionConfig fields overhead reads (used only with a stand-in extractor)."""

    max_length: int = 512
    layers: tuple[int, ...] | None = None
    token_budget: int = 16384
    max_batch_size: int = 256
    stop_at_deepest: bool = True


class _WordTokenizer:
    def __call__(self, texts, truncation=True, max_length=512):
        return {"input_ids": [list(range(min(len(t.split()) + 1, max_length))) for t in texts]}


def _fake_loaded():
    return SimpleNamespace(tokenizer=_WordTokenizer(), device="cpu", dtype="float32",
                           spec=SimpleNamespace(key="fake"))


def _recording_extract(calls):
    def run(loaded, texts, config, progress=True):
        calls.append((len(texts), config))
        return {"mean": np.zeros((len(texts), 3, 4), dtype=np.float32)}

    return run


# measure -------------------------------------------------------------------------------------------------------


def test_measure_returns_positive_times_result_and_tags():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
        return "done"

    m = overhead.measure(fn, repeats=3, warmup=1, dtype="float32")
    assert len(calls) == 4
    assert m.result == "done"
    assert len(m.seconds_all) == 3 and all(s >= 0.009 for s in m.seconds_all)
    assert m.seconds_min <= m.seconds_median
    assert m.device == "cpu" and m.dtype == "float32" and m.memory_kind == "rss"
    assert m.hardware["logical_cores"] >= 1
    assert m.peak_total_bytes > 0
    row = m.as_dict()
    assert "result" not in row and row["seconds_all"] == list(m.seconds_all)


_FRESH_MEASUREMENTS = """
import json
import numpy as np
from layerfusion import overhead

def allocate_200mb():
    a = np.ones(200 * 1024 * 1024 // 8, dtype=np.float64)
    return float(a[::4096].sum())

small = overhead.measure(lambda: sum(range(1000)), repeats=2, warmup=0)
large = overhead.measure(allocate_200mb, repeats=1, warmup=0)
print(json.dumps({"small": small.peak_bytes, "small_result": small.result, "large": large.peak_bytes,
                  "large_total": large.peak_total_bytes}))
"""


@pytest.fixture(scope="module")
def fresh_measurements():
    """Peak-RSS measurements taken in a new interpreter.

    A process's RSS peak during a call depends on its history: after real models were loaded and freed in the same
    process (the slow tests), a 200 MB allocation once measured a 4 KiB peak (memory the process already held was
    reused, or memory-mapped weight pages were reclaimed during the call). A fresh process has no such history, so
    the assertions below hold whatever ran before them.
    """
    done = subprocess.run([sys.executable, "-c", _FRESH_MEASUREMENTS], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_measure_detects_200mb_numpy_allocation_on_cpu(fresh_measurements):
    assert fresh_measurements["large"] >= 150 * 1024 * 1024
    assert fresh_measurements["large_total"] >= fresh_measurements["large"]


def test_measure_small_call_reports_small_increase(fresh_measurements):
    assert fresh_measurements["small"] < 50 * 1024 * 1024
    assert fresh_measurements["small_result"] == sum(range(1000))


def test_measure_tracks_cuda_allocations():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    m = overhead.measure(lambda: torch.ones(25 * 1024 * 1024, device="cuda").numel(), repeats=2,
                         device="cuda", dtype=torch.float32)
    assert m.memory_kind == "cuda_allocated" and m.dtype == "float32"
    assert m.peak_bytes >= 100 * 1024 * 1024 and m.result == 25 * 1024 * 1024


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}])
def test_measure_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="measure"):
        overhead.measure(lambda: None, **kwargs)


def test_measure_rejects_non_callable():
    with pytest.raises(ValueError, match="callable"):
        overhead.measure(3)


# padded tokens, extraction cost and scaling with a stand-in extractor -------------------------------------------


def test_padded_tokens_packs_longest_first_within_budget():
    assert overhead.padded_tokens([5, 3, 3, 1], token_budget=10, max_batch_size=8) == 5 * 2 + 3 * 2
    assert overhead.padded_tokens([4, 4, 4], token_budget=100, max_batch_size=2) == 4 * 2 + 4
    assert overhead.padded_tokens([20, 1], token_budget=8, max_batch_size=8) == 20 + 1
    assert overhead.padded_tokens([], token_budget=8, max_batch_size=8) == 0
    with pytest.raises(ValueError, match="token_budget"):
        overhead.padded_tokens([1], token_budget=0, max_batch_size=1)


def test_padded_tokens_matches_the_engine_batching_plan():
    rng = np.random.default_rng(0)
    for budget, max_batch, cap in [(64, 256, 1.0), (100, 3, 1.0), (7, 8, 1.0), (400, 256, 0.1)]:
        lengths = rng.integers(1, 40, size=50)
        plan = list(plan_batches(lengths, budget, max_batch, max_padding=cap))
        expected = sum(len(b) * int(lengths[b].max()) for b in plan)
        assert overhead.padded_tokens(lengths, budget, max_batch, cap) == expected


def test_extraction_cost_fields_with_stand_in_extractor():
    calls = []
    row = overhead.extraction_cost(_fake_loaded(), TEXTS[:3], _Config(), extract_fn=_recording_extract(calls))
    assert len(calls) == 1
    assert row["n_texts"] == 3
    assert row["real_tokens"] == (4 + 1) + (4 + 1) + (6 + 1)
    assert row["padded_tokens"] >= row["real_tokens"]
    assert row["seconds"] > 0 and row["texts_per_s"] > 0 and row["tokens_per_s"] > 0
    assert row["model"] == "fake" and row["dtype"] == "float32"


def test_extraction_cost_rejects_bad_texts():
    with pytest.raises(ValueError, match="empty"):
        overhead.extraction_cost(_fake_loaded(), [], _Config(), extract_fn=_recording_extract([]))
    with pytest.raises(ValueError, match="single string"):
        overhead.extraction_cost(_fake_loaded(), "one text", _Config(), extract_fn=_recording_extract([]))


def test_scaling_layers_keeps_layers_up_to_value_and_stops_there():
    calls = []
    df = overhead.scaling(_fake_loaded(), TEXTS, _Config(stop_at_deepest=False), "layers", [1, 2],
                          extract_fn=_recording_extract(calls))
    configs = [cfg for _, cfg in calls[1:]]
    assert [c.layers for c in configs] == [(0, 1), (0, 1, 2)]
    assert all(c.stop_at_deepest for c in configs)
    assert list(df["value"]) == [1, 2] and set(df["vary"]) == {"layers"}


def test_scaling_token_budget_and_max_length_replace_config():
    calls = []
    overhead.scaling(_fake_loaded(), TEXTS, _Config(), "token_budget", [16, 64], extract_fn=_recording_extract(calls))
    assert [cfg.token_budget for _, cfg in calls[1:]] == [16, 64]
    calls.clear()
    df = overhead.scaling(_fake_loaded(), TEXTS, _Config(), "max_length", [2, 8], extract_fn=_recording_extract(calls))
    assert [cfg.max_length for _, cfg in calls[1:]] == [2, 8]
    assert df["real_tokens"].iloc[0] == 2 * len(TEXTS)


@pytest.mark.parametrize("vary,values,match", [
    ("batch", [1], "vary"),
    ("n_texts", [], "empty"),
    ("n_texts", [len(TEXTS) + 1], "n_texts"),
    ("max_length", [0], "max_length"),
    ("layers", [-1], "layers"),
])
def test_scaling_rejects_bad_settings(vary, values, match):
    with pytest.raises(ValueError, match=match):
        overhead.scaling(_fake_loaded(), TEXTS, _Config(), vary, values, extract_fn=_recording_extract([]))


def test_sample_layers_even_and_includes_last():
    assert overhead.sample_layers(31, 5) == [1, 8, 16, 23, 30]
    assert overhead.sample_layers(3, 5) == [1, 2]
    with pytest.raises(ValueError):
        overhead.sample_layers(1, 3)


# linearity -----------------------------------------------------------------------------------------------------


def test_linearity_exact_line():
    df = pd.DataFrame({"n_texts": [8, 16, 32, 64], "seconds": [0.5 + 0.25 * n for n in (8, 16, 32, 64)]})
    fit = overhead.linearity(df)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["slope"] == pytest.approx(0.25)
    assert fit["intercept"] == pytest.approx(0.5)
    assert fit["per_unit_ratio"] == pytest.approx((0.5 / 8 + 0.25) / (0.5 / 64 + 0.25))
    assert fit["n_points"] == 4


def test_linearity_quadratic_data_is_flagged():
    xs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = overhead.linearity(pd.DataFrame({"x": xs, "y": xs**2}), x="x", y="y")
    assert fit["r2"] < 0.99
    assert fit["per_unit_ratio"] == pytest.approx(16.0)


def test_linearity_bad_input():
    with pytest.raises(KeyError, match="seconds"):
        overhead.linearity(pd.DataFrame({"n_texts": [1, 2]}))
    with pytest.raises(ValueError, match="distinct"):
        overhead.linearity(pd.DataFrame({"n_texts": [4, 4], "seconds": [1.0, 2.0]}))


# pareto front --------------------------------------------------------------------------------------------------


def test_pareto_front_hand_example_with_ties():
    df = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f", "g"],
            "cost": [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 1.0],
            "accuracy": [0.70, 0.80, 0.75, 0.80, 0.90, 0.85, 0.70],
        }
    )
    front = overhead.pareto_front(df)
    # a and g tie exactly (both kept); c is beaten by b at equal cost; d is beaten by b (cheaper, equal score);
    # f is beaten by e (cheaper, better).
    assert list(front["name"]) == ["a", "g", "b", "e"]
    assert list(front.index) == [0, 6, 1, 4]


def test_pareto_front_custom_columns_and_errors():
    df = pd.DataFrame({"seconds": [3.0, 1.0], "f1": [0.9, 0.9]})
    assert list(overhead.pareto_front(df, cost="seconds", score="f1")["seconds"]) == [1.0]
    with pytest.raises(KeyError, match="accuracy"):
        overhead.pareto_front(df, cost="seconds")
    with pytest.raises(ValueError, match="NaN"):
        overhead.pareto_front(pd.DataFrame({"cost": [1.0, np.nan], "accuracy": [0.5, 0.6]}))


# storage -------------------------------------------------------------------------------------------------------


def test_storage_bytes_counts_nested_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "b.npy").write_bytes(b"y" * 250)
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    assert overhead.storage_bytes(tmp_path) == 350
    assert overhead.storage_bytes(tmp_path / "a.bin") == 100
    with pytest.raises(FileNotFoundError):
        overhead.storage_bytes(tmp_path / "missing")


# the real engine on a tiny model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_loaded(tmp_path_factory):
    from layerfusion import models
    from layerfusion.testing import tiny_spec

    spec = tiny_spec(tmp_path_factory.mktemp("tiny") / "llama", arch="llama", n_layers=3)
    return models.load(spec, device="cpu")


def test_scaling_over_n_texts_with_real_engine(tiny_loaded):
    config = ExtractionConfig(max_length=16, token_budget=64, device="cpu")
    values = [2, 4, 8]
    df = overhead.scaling(tiny_loaded, TEXTS, config, "n_texts", values)
    assert list(df["value"]) == values and list(df["n_texts"]) == values
    assert df["real_tokens"].is_monotonic_increasing and df["real_tokens"].iloc[-1] > df["real_tokens"].iloc[0]
    assert (df["padded_tokens"] >= df["real_tokens"]).all()
    assert (df["seconds"] > 0).all() and (df["tokens_per_s"] > 0).all()
    assert set(df["dtype"]) == {"float32"} and set(df["device"]) == {"cpu"}


def test_scaling_over_layers_with_real_engine(tiny_loaded):
    config = ExtractionConfig(max_length=16, device="cpu")
    df = overhead.scaling(tiny_loaded, TEXTS[:4], config, "layers", [1, 3])
    assert len(df) == 2 and (df["real_tokens"] == df["real_tokens"].iloc[0]).all()


def test_model_footprint_tiny(tmp_path):
    from layerfusion.testing import tiny_spec

    spec = tiny_spec(tmp_path / "gpt2", arch="gpt2", n_layers=2)
    fp = overhead.model_footprint(spec, device="cpu")
    assert fp["model"] == spec.key and fp["device"] == "cpu" and fp["dtype"] == "float32"
    assert fp["n_parameters"] > 0 and fp["parameter_bytes"] == 4 * fp["n_parameters"]
    assert fp["load_seconds"] > 0 and fp["rss_increase_bytes"] >= 0
