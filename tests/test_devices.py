"""Tests for layerfusion.devices: the automatic dtype (CPU flags present / absent, CUDA), explicit overrides, and
that the choice and its reason reach the loaded model and the cache's provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerfusion import devices, extract, models
from layerfusion import embeddings
from layerfusion.testing import tiny_spec


def _flags(monkeypatch, *flags: str) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"fpu", "avx2", *flags}))


@pytest.mark.parametrize("flags, flag", [(("avx512_bf16",), "avx512_bf16"), (("amx_bf16", "amx_tile"), "amx_bf16"),
                                         (("avx512_bf16", "amx_bf16"), "amx_bf16")])
def test_auto_dtype_is_bf16_on_cpus_with_native_bf16(monkeypatch, flags, flag):
    _flags(monkeypatch, *flags)
    choice = devices.choose_dtype(None, "cpu")
    assert choice.dtype == torch.bfloat16 and choice.reason == f"auto: cpu has {flag}"
    assert devices.native_bf16_flag() == flag and choice.name == "bfloat16"


def test_auto_dtype_is_fp32_on_cpus_without_native_bf16(monkeypatch):
    _flags(monkeypatch, "avx512f", "avx512_fp16")
    choice = devices.choose_dtype(None, torch.device("cpu"))
    assert choice.dtype == torch.float32 and choice.reason.startswith("auto: cpu lacks amx_bf16 and avx512_bf16")
    monkeypatch.setattr(devices, "cpu_flags", frozenset)
    assert devices.resolve_dtype(None, "cpu") == torch.float32 and devices.native_bf16_flag() is None


@pytest.mark.parametrize("flags", [(), ("amx_bf16",)])
@pytest.mark.parametrize("given, expected", [("fp32", torch.float32), ("float16", torch.float16),
                                             ("torch.bfloat16", torch.bfloat16), (torch.float32, torch.float32),
                                             ("fp64", torch.float64), ("float64", torch.float64)])
def test_explicit_dtype_wins_whatever_the_cpu(monkeypatch, flags, given, expected):
    _flags(monkeypatch, *flags)
    choice = devices.choose_dtype(given, "cpu")
    assert choice.dtype == expected and choice.reason == f"explicit: {str(expected).replace('torch.', '')}"


def test_cuda_and_other_devices(monkeypatch):
    _flags(monkeypatch)
    assert devices.choose_dtype(None, "cuda") == devices.DtypeChoice(torch.bfloat16, "auto: bfloat16 on cuda")
    assert devices.choose_dtype("float32", "cuda:0").dtype == torch.float32
    assert devices.choose_dtype(None, "meta") == devices.DtypeChoice(torch.float32, "auto: float32 on meta")


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="unknown dtype 'int8'; use one of .*None for the automatic choice"):
        devices.choose_dtype("int8", "cpu")


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device() == torch.device("cuda")
    assert models.resolve_device is devices.resolve_device and models.resolve_dtype is devices.resolve_dtype


def test_native_flag_of_a_given_flag_set():
    assert devices.native_bf16_flag(frozenset({"avx2", "avx512_bf16"})) == "avx512_bf16"
    assert devices.native_bf16_flag(frozenset({"avx2", "avx512f"})) is None
    assert devices.native_bf16_flag(frozenset()) is None


def test_choice_and_reason_reach_the_loaded_model_and_cache_provenance(tmp_path, monkeypatch):
    _flags(monkeypatch, "amx_bf16")
    spec = tiny_spec(tmp_path / "llama")
    loaded = models.load(spec, device="cpu")
    assert loaded.dtype == torch.bfloat16 and loaded.dtype_reason == "auto: cpu has amx_bf16"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    texts = ["the movie was good", "a bad plot", "great fun"]
    emb = embeddings.embed(spec, texts, config=extract.ExtractionConfig(max_length=8), cache_dir=tmp_path / "c",
                        progress=False)
    assert emb.provenance["model"]["dtype"] == "bfloat16"
    assert emb.provenance["runs"][-1]["model"]["dtype_reason"] == "auto: cpu has amx_bf16"
    _flags(monkeypatch)
    fp32 = embeddings.embed(spec, texts, config=extract.ExtractionConfig(max_length=8), cache_dir=tmp_path / "c",
                         progress=False)
    assert fp32.path != emb.path, "dtype is part of the cache key"
    manifest = json.loads((fp32.path / "manifest.json").read_text())
    assert manifest["runs"][-1]["model"]["dtype_reason"].startswith("auto: cpu lacks")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_dtype_loads_bf16_and_agrees_with_cpu_fp32(tmp_path):
    spec = tiny_spec(tmp_path / "llama", n_layers=3)
    gpu = models.load(spec)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    assert gpu.dtype_reason == "auto: bfloat16 on cuda" and next(gpu.model.parameters()).is_cuda
    cpu = models.load(spec, device="cpu", dtype="float32")
    texts = ["the movie was good", "a very boring plot", "great acting and a fun story", "not good"]
    config = extract.ExtractionConfig(max_length=16, poolings=("mean", "last"))
    a = extract.extract_texts(cpu, texts, config, progress=False)
    b = extract.extract_texts(gpu, texts, config, progress=False)
    for pooling in config.poolings:
        x, y = a[pooling], b[pooling]
        cosine = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))
        assert cosine.min() > 0.99, pooling
