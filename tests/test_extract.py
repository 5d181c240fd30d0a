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


# the output path: CPU vectors bit-identical to the reference path, the accelerator kernels close to it -----------

def _reference_extract(loaded, texts, config):
    """The engine as it was before the batch buffer (issue #21), written out: the same batches, a full forward pass
    with ``output_hidden_states`` (the very tensors the hooks see), each kept layer pooled with the float32 kernels
    as they were, results copied to the host per batch. Bit-identity with it is what keeps CPU caches unchanged."""
    ids, _ = extract.tokenize(loaded.tokenizer, list(texts), config.max_length)
    lengths = np.array([len(x) for x in ids])
    n_states = loaded.model.config.num_hidden_layers + 1
    layers = extract.resolve_layers(config.layers, n_states)
    out = {p: np.empty((len(texts), len(layers), loaded.model.config.hidden_size), np.float32)
           for p in config.poolings}
    side = loaded.tokenizer.padding_side
    for batch in extract.plan_batches(lengths, config.token_budget, config.max_batch_size,
                                      max_padding=config.max_padding):
        input_ids, mask = (torch.from_numpy(a) for a in extract._pad([ids[i] for i in batch],
                                                                    loaded.tokenizer.pad_token_id, side))
        kwargs = {"use_cache": False} if "use_cache" in extract._forward_kwargs(loaded.model) else {}
        if "position_ids" in extract._forward_kwargs(loaded.model):
            arange = torch.arange(mask.shape[1]).expand_as(mask)
            kwargs["position_ids"] = torch.where(mask.bool(), mask.cumsum(dim=1) - 1, arange)
        with torch.inference_mode():
            states = loaded.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                                  **kwargs).hidden_states
        keep = mask.bool().unsqueeze(-1)
        count = keep.sum(dim=1).clamp(min=1).float()
        last = torch.where(mask.bool(), torch.arange(mask.shape[1]).expand_as(mask), -1).max(dim=1).values
        flat_last = torch.arange(len(batch)) * mask.shape[1] + last.clamp(min=0)
        for col, layer in enumerate(layers):
            h32 = states[layer].float()
            kernels = {"mean": lambda: torch.where(keep, h32, 0.0).sum(dim=1) / count,
                       "last": lambda: h32.flatten(0, 1).index_select(0, flat_last).float(),
                       "mean_pad": lambda: h32.mean(dim=1)}
            for name in config.poolings:
                out[name][batch, col] = kernels[name]().numpy()
    return out


@pytest.mark.parametrize("arch, dtype", [("llama", "float32"), ("llama", "bfloat16"), ("gemma3", "float32"),
                                         ("bert", "float32")])
def test_cpu_vectors_are_bit_identical_to_the_reference_path(tmp_path, arch, dtype):
    side = ARCHS[arch]
    loaded = models.load(testing.tiny_spec(tmp_path / arch, arch=arch, padding_side=side, n_layers=3),
                         device="cpu", dtype=dtype)
    texts = TEXTS * 3
    for config in (_cfg(token_budget=40), _cfg(token_budget=10_000, max_padding=1.0), _cfg(layers=(0, 2, -1))):
        got = extract.extract_texts(loaded, texts, config, progress=False)
        expected = _reference_extract(loaded, texts, config)
        for name in config.poolings:
            assert got[name].dtype == np.float32
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{arch} {dtype} {name} {config}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", ["left", "right"])
def test_accelerator_kernels_match_the_exact_ones(dtype, side):
    """The ``fast`` kernels the engine uses on an accelerator (compute-dtype reads, float32 accumulation, one
    division per batch) give the exact kernels' numbers up to float32 summation order, padding on either side."""
    from layerfusion import pooling

    g = torch.Generator().manual_seed(7)
    lengths, width, d = [5, 1, 9, 3], 9, 16
    hidden = (torch.randn(len(lengths), width, d, generator=g) * 3 + 1).to(dtype)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, slice(width - n, width) if side == "left" else slice(0, n)] = 1
    info = pooling.mask_info(mask)
    names = tuple(pooling.POOLINGS)
    exact = torch.empty(len(names), len(lengths), 2, d)
    fast = torch.empty(len(names), len(lengths), 2, d)
    for col in range(2):
        pooling.pool_into(hidden, info, names, exact[:, :, col], fast=False)
        pooling.pool_into(hidden, info, names, fast[:, :, col], fast=True)
    pooling.finish_fast(fast, info, names, width)
    torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-6)
    assert not torch.equal(exact[names.index("mean")], exact[names.index("mean_pad")])


def test_engine_on_the_accelerator_path_matches_the_cpu_path(tiny, monkeypatch):
    """The engine with the accelerator kernels (forced on a CPU) gives the CPU path's vectors to float32 rounding."""
    loaded, _ = tiny["llama"]
    expected = extract.extract_texts(loaded, TEXTS, _cfg(token_budget=40), progress=False)
    from layerfusion import pooling

    finished = []
    real_finish = pooling.finish_fast
    monkeypatch.setattr(extract, "_fast_kernels", lambda device: True)
    monkeypatch.setattr(pooling, "finish_fast", lambda *a: finished.append(1) or real_finish(*a))
    got = extract.extract_texts(loaded, TEXTS, _cfg(token_budget=40), progress=False)
    assert len(finished) == got.n_batches > 1
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_output_path_matches_the_cpu_path(tmp_path, dtype):
    """On a GPU (pinned buffers, copies landed one batch later, compute-dtype kernels) the engine gives the CPU's
    vectors in input order, over many batches and with an out-of-order length mix (fp32: to 1e-3; bf16, whose
    matrix products round differently on the two devices: cosine >= 0.99 per vector)."""
    spec = testing.tiny_spec(tmp_path / "m", arch="llama", n_layers=3)
    texts = [TEXTS[i % len(TEXTS)] + " good" * (i % 7) for i in range(40)]
    cfg = _cfg(token_budget=48)
    on_cpu = extract.extract_texts(models.load(spec, device="cpu", dtype=dtype), texts, cfg, progress=False)
    on_gpu = extract.extract_texts(models.load(spec, device="cuda", dtype=dtype), texts, cfg, progress=False)
    assert on_gpu.n_batches == on_cpu.n_batches > 5
    for name in cfg.poolings:
        a, b = on_gpu[name], on_cpu[name]
        assert a.dtype == np.float32 and np.isfinite(a).all()
        if dtype == "float32":
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
        else:
            cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            assert cosine.min() >= 0.99, (name, cosine.min())
