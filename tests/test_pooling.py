"""Pooling functions: masked mean, last real token and mean-with-padding, for left and right padding."""

from __future__ import annotations

import pytest
import torch

from layerfusion import pooling

LENGTHS = (3, 5, 1)
T = 6


def _states(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g).to(dtype) for n in LENGTHS]


def _batch(states: list[torch.Tensor], side: str, fill: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.full((len(states), T, states[0].shape[1]), fill, dtype=states[0].dtype)
    mask = torch.zeros(len(states), T, dtype=torch.long)
    for i, s in enumerate(states):
        sl = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        hidden[i, sl] = s
        mask[i, sl] = 1
    return hidden, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_masked_mean_and_last_token_ignore_padding(side):
    states = _states()
    hidden, mask = _batch(states, side)
    mean = pooling.masked_mean(hidden, mask)
    last = pooling.last_token(hidden, mask)
    for i, s in enumerate(states):
        torch.testing.assert_close(mean[i], s.mean(0))
        torch.testing.assert_close(last[i], s[-1])


def test_left_and_right_padding_agree():
    states = _states(1)
    for fn in (pooling.masked_mean, pooling.last_token):
        torch.testing.assert_close(fn(*_batch(states, "left")), fn(*_batch(states, "right")))


def test_mean_with_padding_includes_pad_positions():
    states = _states(2)
    hidden, mask = _batch(states, "right")
    out = pooling.mean_with_padding(hidden, mask)
    torch.testing.assert_close(out, hidden.mean(1))
    assert not torch.allclose(out[0], pooling.masked_mean(hidden, mask)[0])


def test_nan_in_padding_does_not_leak_into_masked_mean():
    states = _states(3)
    hidden, mask = _batch(states, "left", fill=float("nan"))
    assert torch.isfinite(pooling.masked_mean(hidden, mask)).all()
    assert torch.isfinite(pooling.last_token(hidden, mask)).all()


def test_low_precision_input_is_pooled_in_float32():
    g = torch.Generator().manual_seed(4)
    hidden = (torch.randn(2, 4096, 8, generator=g) + 100).to(torch.bfloat16)
    mask = torch.ones(2, 4096, dtype=torch.long)
    out = pooling.masked_mean(hidden, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, hidden.float().mean(1), atol=1e-4, rtol=1e-6)
    assert pooling.last_token(hidden, mask).dtype == torch.float32
    assert pooling.mean_with_padding(hidden).dtype == torch.float32


def test_shape_errors_name_the_input():
    with pytest.raises(ValueError, match="hidden"):
        pooling.masked_mean(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask shape"):
        pooling.last_token(torch.zeros(2, 3, 4), torch.ones(2, 4))


def test_check_poolings():
    assert pooling.check_poolings(["mean", "last"]) == ("mean", "last")
    assert set(pooling.POOLINGS) == {"mean", "last", "mean_pad"}
    for bad, msg in (((), "empty"), (("mean", "cls"), "unknown"), (("mean", "mean"), "twice")):
        with pytest.raises(ValueError, match=msg):
            pooling.check_poolings(bad)


@pytest.mark.parametrize("side", ["left", "right"])
def test_mask_info_gives_the_same_vectors_as_the_mask(side):
    hidden, mask = _batch(_states(5, torch.bfloat16), side, fill=float("nan"))
    info = pooling.mask_info(mask)
    assert info.keep.shape == (3, T, 1) and info.count.flatten().tolist() == list(LENGTHS)
    assert info.last.tolist() == ([T - 1] * 3 if side == "left" else [n - 1 for n in LENGTHS])
    for name, fn in pooling.POOLINGS.items():
        if name != "mean_pad":
            torch.testing.assert_close(fn(hidden, info), fn(hidden, mask), rtol=0, atol=0)
    with pytest.raises(ValueError, match="mask shape"):
        pooling.masked_mean(hidden[:, :4], info)
    with pytest.raises(ValueError, match="mask must be"):
        pooling.mask_info(mask[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("names", [("mean", "last", "mean_pad"), ("last",), ("mean_pad", "mean")])
def test_pool_matches_the_single_poolings(dtype, names):
    hidden, mask = _batch(_states(6, dtype), "right")
    got = pooling.pool(hidden, pooling.mask_info(mask), names)
    assert list(got) == list(names)
    for name in names:
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], pooling.POOLINGS[name](hidden, mask), rtol=0, atol=0)


def test_a_registered_pooling_is_extracted_on_both_paths(tmp_path, monkeypatch):
    """Adding a pooling is one ``register_pooling`` call: settings accept it and the engine pools it on the CPU
    path and on the accelerator path (forced here), matching the hidden states it reduces."""
    import numpy as np

    from layerfusion import extract, models, testing

    def exact(hidden32, info):
        return torch.where(info.keep, hidden32, float("-inf")).amax(dim=1)

    def fast(hidden, info, out):
        out.copy_(torch.where(info.keep, hidden, float("-inf")).amax(dim=1))

    monkeypatch.setattr(pooling, "POOLINGS", dict(pooling.POOLINGS))
    pooling.register_pooling(pooling.Pooling("max", "max over real tokens", exact, fast, lambda info, n: None))
    with pytest.raises(ValueError, match="already registered"):
        pooling.register_pooling(pooling.POOLINGS["max"])
    loaded = models.load(testing.tiny_spec(tmp_path / "m", arch="llama"), device="cpu")
    texts = ["the movie was good", "bad", "a very good story about the market"]
    config = extract.ExtractionConfig(poolings=("mean", "max"), token_budget=64, max_padding=1.0)
    cpu = extract.extract_texts(loaded, texts, config, progress=False)
    monkeypatch.setattr(extract, "_fast_kernels", lambda device: True)
    accel = extract.extract_texts(loaded, texts, config, progress=False)
    for i, text in enumerate(texts):
        enc = loaded.tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            states = loaded.model(**enc, output_hidden_states=True).hidden_states
        expected = torch.stack([h[0].amax(0) for h in states]).numpy()
        np.testing.assert_allclose(cpu["max"][i], expected, atol=1e-5)
        np.testing.assert_allclose(accel["max"][i], expected, atol=1e-5)
