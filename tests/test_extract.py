"""Extraction engine on tiny random models: batch invariance, layer mapping, early stop, OOM halving, input checks."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from layerfusion import extract, models, progress, testing
from layerfusion.models import blocks

ARCHS = {"llama": "right", "gemma3": "left", "bert": "right", "gpt2": "right"}
TEXTS = [
    "the plot was very boring and the acting was terrible not fun at all",
    "bad",
    "the movie was good",
    "great film love it",
    "market shares profit oil price bank rate trade ship grain",
    "a very good story",
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> (loaded with its own padding side, loaded with the same weights and the side flipped)."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch, side in ARCHS.items():
        spec = testing.tiny_spec(root / arch, arch=arch, padding_side=side)
        flipped = dataclasses.replace(spec, padding_side="left" if side == "right" else "right")
        out[arch] = (models.load(spec, device="cpu"), models.load(flipped, device="cpu"))
    return out


def _cfg(**kw) -> extract.ExtractionConfig:
    return extract.ExtractionConfig(poolings=("mean", "last", "mean_pad"), **kw)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_vectors_do_not_depend_on_batching_or_padding_side(tiny, arch):
    loaded, flipped = tiny[arch]
    batched = extract.extract_texts(loaded, TEXTS, _cfg(token_budget=10_000, max_padding=1.0), progress=False)
    alone = [extract.extract_texts(loaded, [t], _cfg(), progress=False) for t in TEXTS]
    variants = [
        extract.extract_texts(flipped, TEXTS, _cfg(token_budget=10_000, max_padding=1.0), progress=False),
        extract.extract_texts(loaded, TEXTS, _cfg(token_budget=20), progress=False),
        extract.extract_texts(loaded, TEXTS, _cfg(max_batch_size=2), progress=False),
    ]
    assert batched.n_batches == 1 and variants[1].n_batches > 2
    for pooling in ("mean", "last"):
        for i, single in enumerate(alone):
            np.testing.assert_allclose(batched[pooling][i], single[pooling][0], atol=ATOL)
        for other in variants:
            np.testing.assert_allclose(batched[pooling], other[pooling], atol=ATOL)
    shortest = 1
    assert not np.allclose(batched["mean_pad"][shortest], alone[shortest]["mean_pad"][0], atol=ATOL)
    np.testing.assert_allclose(alone[shortest]["mean_pad"][0], alone[shortest]["mean"][0], atol=ATOL)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_layers_match_huggingface_hidden_states(tiny, arch):
    loaded, _ = tiny[arch]
    res = extract.extract_texts(loaded, TEXTS[:3], _cfg(), progress=False)
    assert res.layers == tuple(range(loaded.model.config.num_hidden_layers + 1))
    for i, text in enumerate(TEXTS[:3]):
        enc = loaded.tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            states = loaded.model(**enc, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(res["mean"][i], torch.stack([h[0].mean(0) for h in states]).numpy(), atol=ATOL)
        np.testing.assert_allclose(res["last"][i], torch.stack([h[0, -1] for h in states]).numpy(), atol=ATOL)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_stop_at_deepest_layer_equals_full_pass_and_skips_blocks(tmp_path, arch):
    loaded = models.load(testing.tiny_spec(tmp_path / arch, arch=arch, n_layers=4), device="cpu")
    full = extract.extract_texts(loaded, TEXTS, _cfg(), progress=False)
    calls = []
    top = blocks.block_list(loaded.model)[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        for layers in ((0,), (1, 2), (0, 3)):
            for stop in (True, False):
                calls.clear()
                part = extract.extract_texts(loaded, TEXTS, _cfg(layers=layers, stop_at_deepest=stop),
                                             progress=False)
                assert part.layers == layers
                assert bool(calls) == (not stop)
                for pooling in full:
                    np.testing.assert_allclose(part[pooling], full[pooling][:, list(layers)], atol=ATOL)
    finally:
        top.remove()


def test_layer_selection_resolves_negatives_and_rejects_out_of_range(tiny):
    loaded, _ = tiny["llama"]
    res = extract.extract_texts(loaded, TEXTS[:2], extract.ExtractionConfig(layers=(-1, 0, 0)), progress=False)
    assert res.layers == (0, 2) and res["mean"].shape == (2, 2, 32)
    with pytest.raises(ValueError, match="out of range"):
        extract.extract_texts(loaded, TEXTS[:2], extract.ExtractionConfig(layers=(5,)), progress=False)


def test_batches_respect_the_token_budget_and_cover_every_text():
    lengths = np.array([3, 9, 1, 9, 4, 30, 2])
    batches = list(extract.plan_batches(lengths, token_budget=18, max_batch_size=3))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    assert lengths[seen].tolist() == sorted(lengths.tolist(), reverse=True)
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * lengths[b].max() <= 18)


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny, monkeypatch, caplog):
    loaded, _ = tiny["llama"]
    expected = extract.extract_texts(loaded, TEXTS, _cfg(max_padding=1.0), progress=False)
    real_run, ok, failed = extract._Taps.run, [], []

    def flaky(self, input_ids, mask, kwargs):
        if input_ids.numel() > 20:
            failed.append(input_ids.numel())
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        ok.append(input_ids.numel())
        return real_run(self, input_ids, mask, kwargs)

    monkeypatch.setattr(extract._Taps, "run", flaky)
    with caplog.at_level(logging.WARNING, logger="layerfusion.extract"):
        got = extract.extract_texts(loaded, TEXTS, _cfg(max_padding=1.0), progress=False)
    assert 1 <= len(failed) <= 3 and max(ok) <= 20 and "out of memory" in caplog.text
    for pooling in ("mean", "last"):
        np.testing.assert_allclose(got[pooling], expected[pooling], atol=ATOL)


def test_out_of_memory_on_one_text_raises_with_advice(tiny, monkeypatch):
    loaded, _ = tiny["llama"]

    def oom(self, input_ids, mask, kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(extract._Taps, "run", oom)
    with pytest.raises(RuntimeError, match="max_length"):
        extract.extract_texts(loaded, TEXTS[:1], _cfg(), progress=False)


@pytest.mark.parametrize("bad, where", [
    (["good", ""], "[1]"),
    (["  \n\t", "good", None], "[0, 2]"),
    (["good", 3], "[1]"),
])
def test_bad_texts_raise_naming_indices(tiny, bad, where):
    with pytest.raises(ValueError, match=f"indices \\{where[:-1]}\\]"):
        extract.extract_texts(tiny["llama"][0], bad, _cfg(), progress=False)


def test_empty_or_single_string_input_raises(tiny):
    with pytest.raises(ValueError, match="empty"):
        extract.extract_texts(tiny["llama"][0], [], _cfg(), progress=False)
    with pytest.raises(ValueError, match="single string"):
        extract.extract_texts(tiny["llama"][0], "good", _cfg(), progress=False)


def test_over_long_texts_are_truncated_and_counted(tiny):
    loaded, _ = tiny["llama"]
    texts = ["the movie was good bad boring", "fun", "the movie was"]
    res = extract.extract_texts(loaded, texts, _cfg(max_length=4), progress=False)
    assert res.n_truncated == 1 and res.truncated.tolist() == [True, False, False]
    np.testing.assert_allclose(res["mean"][0], res["mean"][2], atol=ATOL)


def test_bf16_model_is_pooled_in_float32(tmp_path):
    spec = testing.tiny_spec(tmp_path / "m", arch="llama")
    fp32 = extract.extract_texts(models.load(spec, device="cpu"), TEXTS, _cfg(), progress=False)
    bf16 = extract.extract_texts(models.load(spec, device="cpu", dtype="bfloat16"), TEXTS, _cfg(), progress=False)
    assert bf16["mean"].dtype == np.float32 and np.isfinite(bf16["mean"]).all()
    np.testing.assert_allclose(bf16["mean"], fp32["mean"], atol=0.1)


@pytest.mark.parametrize("field, value", [("max_length", 0), ("token_budget", -1), ("shard_size", 1.5),
                                          ("layers", ()), ("poolings", ("cls",)), ("max_padding", 1.5),
                                          ("max_padding", "0.1")])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field if field != "poolings" else "pooling"):
        extract.ExtractionConfig(**{field: value})


def test_padding_cap_splits_batches_of_mixed_lengths():
    lengths = np.array([10, 9, 5, 5, 5, 5, 1])
    uncapped = list(extract.plan_batches(lengths, token_budget=100, max_batch_size=8))
    assert [len(b) for b in uncapped] == [7]
    capped = list(extract.plan_batches(lengths, token_budget=100, max_batch_size=8, max_padding=0.1))
    assert [lengths[b].tolist() for b in capped] == [[10, 9], [5, 5, 5, 5], [1]]
    for b in capped:
        assert lengths[b].sum() >= 0.9 * len(b) * lengths[b].max()
    exact = list(extract.plan_batches(lengths, token_budget=100, max_batch_size=8, max_padding=0.0))
    assert [lengths[b].tolist() for b in exact] == [[10], [9], [5, 5, 5, 5], [1]]


def test_padding_cap_does_not_change_the_vectors(tiny):
    loaded, _ = tiny["llama"]
    capped = extract.extract_texts(loaded, TEXTS, _cfg(token_budget=256, max_padding=0.0), progress=False)
    loose = extract.extract_texts(loaded, TEXTS, _cfg(token_budget=256, max_padding=1.0), progress=False)
    assert capped.padded_tokens == capped.real_tokens < loose.padded_tokens and capped.n_batches > loose.n_batches
    for pooling in ("mean", "last"):
        np.testing.assert_allclose(capped[pooling], loose[pooling], atol=ATOL)


def _with_nan_token(tmp_path, word="boring"):
    """A tiny llama whose embedding row for ``word`` is NaN: texts containing it give NaN from layer 0 on."""
    spec = testing.tiny_spec(tmp_path / "nan", arch="llama", key="tiny-nan")
    loaded = models.load(spec, device="cpu")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight[loaded.tokenizer.convert_tokens_to_ids(word)] = float("nan")
    return loaded


def test_nan_from_the_model_names_model_layer_and_text(tmp_path):
    loaded = _with_nan_token(tmp_path)
    texts = ["the movie was good", "fun", "the plot was boring", "great film", "boring"]
    for token_budget in (10_000, 4):  # one batch, or one text per batch: the same text is named
        with pytest.raises(ValueError) as info:
            extract.extract_texts(loaded, texts, _cfg(token_budget=token_budget), progress=False)
        msg = str(info.value)
        assert "model 'tiny-nan'" in msg and "layer 0" in msg and "text 2 ('the plot was boring'" in msg
        assert "float32" in msg and "\n" not in msg
    ok = extract.extract_texts(loaded, ["the movie was good", "fun"], _cfg(), progress=False)
    assert np.isfinite(ok["mean"]).all()


def test_activations_beyond_float16_range_are_extracted_finite(tmp_path):
    spec = testing.tiny_spec(tmp_path / "big", arch="llama")
    loaded = models.load(spec, device="cpu")
    reference = extract.extract_texts(loaded, TEXTS, _cfg(), progress=False)
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(1e7)
    big = extract.extract_texts(loaded, TEXTS, _cfg(), progress=False)
    for pooling in ("mean", "last", "mean_pad"):
        assert np.isfinite(big[pooling]).all()
    assert np.abs(big["mean"][:, :-1]).max() > 1e5  # the residual stream, before the final norm
    assert not np.allclose(big["mean"], reference["mean"])


def test_progress_goes_to_the_side_file_not_the_output(tiny, tmp_path, monkeypatch, capfd):
    """With ``$LAYERFUSION_PROGRESS_FILE`` set (``layerfusion report`` sets it for the kernels), the bar, with
    texts/s and an ETA, goes to that file even with progress=False, and nothing reaches the output."""
    side = tmp_path / "progress.txt"
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(side))
    extract.extract_texts(tiny["llama"][0], TEXTS, _cfg(), progress=False)
    text = side.read_text()
    assert "extract tiny-llama-right" in text and f"{len(TEXTS)}/{len(TEXTS)}" in text
    assert "text/s" in text and "<" in text  # the rate and elapsed<remaining
    out, err = capfd.readouterr()
    assert "extract tiny" not in out + err
    monkeypatch.delenv(progress.PROGRESS_FILE_ENV)
    extract.extract_texts(tiny["llama"][0], TEXTS, _cfg(), progress=False)
    assert side.read_text() == text
