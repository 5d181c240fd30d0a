"""Tests for layerfusion.sweeps (time sweeps with a stand-in extractor and the real engine on a tiny model; memory
in fresh processes), layerfusion.costmodel and layerfusion.tradeoff."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from layerfusion import costmodel, sweeps, tradeoff
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
    """Stand-in with the ExtractionConfig fields the sweeps replace (used only with a stand-in extractor)."""

    max_length: int = 512
    layers: tuple[int, ...] | None = None
    token_budget: int = 16384
    max_batch_size: int = 256
    stop_at_deepest: bool = True


def _fake_loaded():
    return SimpleNamespace(device="cpu", dtype="float32", spec=SimpleNamespace(key="fake"))


def _recording_extract(calls):
    def run(loaded, texts, config, progress=True):
        calls.append((len(texts), config))
        real = sum(min(len(t.split()) + 1, config.max_length) for t in texts)
        return SimpleNamespace(real_tokens=real, padded_tokens=real + 1)

    return run


# padded tokens, storage ----------------------------------------------------------------------------------------


def test_padded_tokens_packs_longest_first_within_budget():
    assert costmodel.padded_tokens([5, 3, 3, 1], token_budget=10, max_batch_size=8) == 5 * 2 + 3 * 2
    assert costmodel.padded_tokens([4, 4, 4], token_budget=100, max_batch_size=2) == 4 * 2 + 4
    assert costmodel.padded_tokens([20, 1], token_budget=8, max_batch_size=8) == 20 + 1
    assert costmodel.padded_tokens([], token_budget=8, max_batch_size=8) == 0
    with pytest.raises(ValueError, match="token_budget"):
        costmodel.padded_tokens([1], token_budget=0, max_batch_size=1)


def test_padded_tokens_matches_the_engine_batching_plan():
    rng = np.random.default_rng(0)
    for budget, max_batch, cap in [(64, 256, 1.0), (100, 3, 1.0), (7, 8, 1.0), (400, 256, 0.1)]:
        lengths = rng.integers(1, 40, size=50)
        plan = list(plan_batches(lengths, budget, max_batch, max_padding=cap))
        expected = sum(len(b) * int(lengths[b].max()) for b in plan)
        assert costmodel.padded_tokens(lengths, budget, max_batch, cap) == expected


def test_storage_bytes_counts_nested_files_exactly(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "b.npy").write_bytes(b"y" * 250)
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    assert costmodel.storage_bytes(tmp_path) == 350 and costmodel.storage_files(tmp_path) == 2
    assert costmodel.storage_bytes(tmp_path / "a.bin") == 100
    with pytest.raises(FileNotFoundError):
        costmodel.storage_bytes(tmp_path / "missing")


# extraction cost and sweeps with a stand-in extractor ------------------------------------------------------------


def test_extraction_cost_fields_with_stand_in_extractor():
    calls = []
    row = sweeps.extraction_cost(_fake_loaded(), TEXTS[:3], _Config(), repeats=5, warmup=1,
                                 extract_fn=_recording_extract(calls))
    assert len(calls) == 6 and row["repeats"] == 5 and len(row["seconds_all"]) == 5
    assert row["n_texts"] == 3 and row["real_tokens"] == (4 + 1) + (4 + 1) + (6 + 1)
    assert row["seconds_low"] <= row["seconds"] <= row["seconds_high"]
    assert row["texts_per_s"] > 0 and row["tokens_per_s"] > 0 and row["model"] == "fake"


def test_extraction_cost_needs_the_engines_token_counts():
    with pytest.raises(ValueError, match="real_tokens"):
        sweeps.extraction_cost(_fake_loaded(), TEXTS[:2], _Config(), repeats=1,
                               extract_fn=lambda loaded, texts, config, progress=True: {})


def test_extraction_cost_rejects_bad_texts():
    with pytest.raises(ValueError, match="empty"):
        sweeps.extraction_cost(_fake_loaded(), [], _Config(), extract_fn=_recording_extract([]))
    with pytest.raises(ValueError, match="single string"):
        sweeps.extraction_cost(_fake_loaded(), "one text", _Config(), extract_fn=_recording_extract([]))


def test_sweep_layers_keeps_layers_up_to_value_and_stops_there():
    calls = []
    df = sweeps.sweep(_fake_loaded(), TEXTS, _Config(stop_at_deepest=False), "layers", [1, 2], repeats=2,
                      warmup=0, extract_fn=_recording_extract(calls))
    assert [c.layers for _, c in calls] == [(0, 1), (0, 1), (0, 1, 2), (0, 1, 2)]
    assert all(c.stop_at_deepest for _, c in calls)
    assert list(df["value"]) == [1, 2] and set(df["vary"]) == {"layers"}


def test_sweep_token_budget_and_max_length_replace_config():
    calls = []
    sweeps.sweep(_fake_loaded(), TEXTS, _Config(), "token_budget", [16, 64], repeats=1, warmup=0,
                 extract_fn=_recording_extract(calls))
    assert [cfg.token_budget for _, cfg in calls] == [16, 64]
    calls.clear()
    df = sweeps.sweep(_fake_loaded(), TEXTS, _Config(), "max_length", [2, 8], repeats=1, warmup=0,
                      extract_fn=_recording_extract(calls))
    assert [cfg.max_length for _, cfg in calls] == [2, 8]
    assert df["real_tokens"].iloc[0] == 2 * len(TEXTS)


def test_sweep_plan_times_each_distinct_extraction_once_and_names_the_repeats():
    calls = []
    loaded = SimpleNamespace(**vars(_fake_loaded()), n_hidden_states=4)
    plan = {"n_texts": [4, 8], "token_budget": [256, 512], "layers": [0, 3]}
    df = sweeps.sweep(loaded, TEXTS, ExtractionConfig(token_budget=512), plan, repeats=1, warmup=0,
                      extract_fn=_recording_extract(calls))
    # token_budget=512 and layers=3 (every one of 4 hidden states kept) are the n_texts=8 extraction again.
    assert [(n, c.token_budget, c.layers) for n, c in calls] == [(4, 512, None), (8, 512, None), (8, 256, None),
                                                                 (8, 512, (0,))]
    assert len(df) == 6 and list(df["vary"]) == ["n_texts"] * 2 + ["token_budget"] * 2 + ["layers"] * 2
    same = df.set_index(["vary", "value"])["same_as"]
    assert same[("token_budget", 512)] == same[("layers", 3)] == "n_texts=8"
    assert same.drop([("token_budget", 512), ("layers", 3)]).isna().all()
    seconds = df.set_index(["vary", "value"])["seconds_all"]
    assert seconds[("layers", 3)] == seconds[("n_texts", 8)]
    # Without the model's depth, "layers 0..3" cannot be known to be "every layer": it is measured.
    calls.clear()
    sweeps.sweep(_fake_loaded(), TEXTS, ExtractionConfig(token_budget=512), plan, repeats=1, warmup=0,
                 extract_fn=_recording_extract(calls))
    assert len(calls) == 5


def test_same_extraction_writes_every_layer_kept_one_way():
    base = ExtractionConfig()
    every = sweeps.same_extraction(TEXTS, base, 4)
    assert sweeps.same_extraction(TEXTS, dataclasses.replace(base, layers=(0, 1, 2, 3), stop_at_deepest=False),
                                  4) == every
    assert sweeps.same_extraction(TEXTS, dataclasses.replace(base, layers=(0, 1, 2, -1)), 4) == every
    assert sweeps.same_extraction(TEXTS, dataclasses.replace(base, layers=(0, 1, 2)), 4) != every
    assert sweeps.same_extraction(TEXTS[:4], base, 4) != every
    assert sweeps.same_extraction(TEXTS, dataclasses.replace(base, token_budget=7), 4) != every


@pytest.mark.parametrize("vary,values,match", [
    ("n_texts", None, "needs values"),
    ({"n_texts": [1]}, [1], "one or the other"),
    ({}, None, "plan is empty"),
    ({"n_texts": [1], "batch": [2]}, None, "batch"),
    ({"layers": []}, None, "empty"),
])
def test_sweep_rejects_bad_plans(vary, values, match):
    with pytest.raises(ValueError, match=match):
        sweeps.sweep(_fake_loaded(), TEXTS, _Config(), vary, values, extract_fn=_recording_extract([]))


@pytest.mark.parametrize("vary,values,match", [
    ("batch", [1], "vary"),
    ("n_texts", [], "empty"),
    ("n_texts", [len(TEXTS) + 1], "n_texts"),
    ("max_length", [0], "max_length"),
    ("layers", [-1], "layers"),
])
def test_sweep_rejects_bad_settings(vary, values, match):
    with pytest.raises(ValueError, match=match):
        sweeps.sweep(_fake_loaded(), TEXTS, _Config(), vary, values, extract_fn=_recording_extract([]))


def test_sample_layers_even_and_includes_last():
    assert sweeps.sample_layers(31, 5) == [1, 8, 16, 23, 30]
    assert sweeps.sample_layers(3, 5) == [1, 2]
    with pytest.raises(ValueError):
        sweeps.sample_layers(1, 3)


# linearity and the Pareto front -----------------------------------------------------------------------------------


def test_linearity_exact_line():
    df = pd.DataFrame({"n_texts": [8, 16, 32, 64], "seconds": [0.5 + 0.25 * n for n in (8, 16, 32, 64)]})
    fit = tradeoff.linearity(df)
    assert fit["r2"] == pytest.approx(1.0) and fit["slope"] == pytest.approx(0.25)
    assert fit["intercept"] == pytest.approx(0.5) and fit["n_points"] == 4
    assert fit["per_unit_ratio"] == pytest.approx((0.5 / 8 + 0.25) / (0.5 / 64 + 0.25))


def test_linearity_quadratic_data_is_flagged():
    xs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = tradeoff.linearity(pd.DataFrame({"x": xs, "y": xs**2}), x="x", y="y")
    assert fit["r2"] < 0.99 and fit["per_unit_ratio"] == pytest.approx(16.0)


def test_linearity_bad_input():
    with pytest.raises(KeyError, match="seconds"):
        tradeoff.linearity(pd.DataFrame({"n_texts": [1, 2]}))
    with pytest.raises(ValueError, match="distinct"):
        tradeoff.linearity(pd.DataFrame({"n_texts": [4, 4], "seconds": [1.0, 2.0]}))


def test_pareto_front_hand_example_with_ties():
    df = pd.DataFrame({"name": ["a", "b", "c", "d", "e", "f", "g"],
                       "cost": [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 1.0],
                       "accuracy": [0.70, 0.80, 0.75, 0.80, 0.90, 0.85, 0.70]})
    front = tradeoff.pareto_front(df)
    # a and g tie exactly (both kept); c is beaten by b at equal cost; d by b (cheaper, equal); f by e.
    assert list(front["name"]) == ["a", "g", "b", "e"] and list(front.index) == [0, 6, 1, 4]


def test_pareto_front_custom_columns_and_errors():
    df = pd.DataFrame({"seconds": [3.0, 1.0], "f1": [0.9, 0.9]})
    assert list(tradeoff.pareto_front(df, cost="seconds", score="f1")["seconds"]) == [1.0]
    with pytest.raises(KeyError, match="accuracy"):
        tradeoff.pareto_front(df, cost="seconds")
    with pytest.raises(ValueError, match="NaN"):
        tradeoff.pareto_front(pd.DataFrame({"cost": [1.0, np.nan], "accuracy": [0.5, 0.6]}))


# the real engine on a tiny model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from layerfusion import models
    from layerfusion.testing import tiny_spec

    spec = tiny_spec(tmp_path_factory.mktemp("tiny") / "llama", arch="llama", n_layers=3)
    return spec, models.load(spec, device="cpu")


def test_sweep_over_n_texts_with_real_engine(tiny):
    config = ExtractionConfig(max_length=16, token_budget=64, device="cpu")
    df = sweeps.sweep(tiny[1], TEXTS, config, "n_texts", [2, 4, 8], repeats=2)
    assert list(df["n_texts"]) == [2, 4, 8]
    assert df["real_tokens"].is_monotonic_increasing and (df["padded_tokens"] >= df["real_tokens"]).all()
    assert (df["seconds"] > 0).all() and set(df["dtype"]) == {"float32"} and set(df["device"]) == {"cpu"}


def test_memory_sweep_runs_each_setting_in_a_fresh_process(tiny):
    config = ExtractionConfig(max_length=16, device="cpu")
    df = sweeps.memory_sweep(tiny[0], TEXTS[:4], config, "layers", [1, 3])
    assert list(df["n_layers_kept"]) == [2, 4] and (df["memory_kind"] == "rss_fresh_process").all()
    assert (df["setup_bytes"] > 0).all() and (df["peak_bytes"] >= 0).all() and (df["n_texts"] == 4).all()
    assert len(set(df["baseline_bytes"])) == 2  # two processes, each with its own baseline


def test_model_footprint_tiny_in_a_fresh_process(tmp_path):
    from layerfusion.testing import tiny_spec

    spec = tiny_spec(tmp_path / "gpt2", arch="gpt2", n_layers=2)
    fp = sweeps.model_footprint(spec, device="cpu")
    assert fp["model"] == spec.key and fp["device"] == "cpu" and fp["dtype"] == "float32"
    assert fp["n_parameters"] > 0 and fp["parameter_bytes"] == 4 * fp["n_parameters"]
    assert fp["load_seconds"] > 0 and fp["resident_bytes"] >= 0 and fp["memory_kind"] == "rss_fresh_process"


@pytest.mark.slow
def test_extraction_peak_grows_with_layers_kept_on_a_real_model():
    """The degenerate chapter reported 4,096 bytes at every depth. Per fresh process, keeping 30 layers instead of
    1 must add at least half of the pooled outputs it holds (64 texts x 29 layers x 3 poolings x 576 x 4 bytes)."""
    from layerfusion import data

    texts = list(data.load("sst2", max_train=10, max_validation=10, max_test=64)["test"]["text"])
    config = ExtractionConfig(max_length=48, token_budget=1024, poolings=("mean", "last", "mean_pad"),
                              device="cpu")
    df = sweeps.memory_sweep("smollm2-135m", texts, config, "layers", [1, 30]).set_index("value")
    assert (df["peak_bytes"] > 2**20).all()
    assert df.loc[30, "peak_bytes"] - df.loc[1, "peak_bytes"] >= 0.5 * 64 * 29 * 3 * 576 * 4
