"""The embedding cache and ``embed``: content keys, resume after a kill, corruption detection, lazy loading."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from layerfusion import cache, extract, models, testing
from layerfusion import embeddings

TEXTS = ["the movie was good", "bad", "the plot was very boring and the acting was terrible",
         "great film love it", "market shares profit oil", "a very good story", "fun"]
LABELS = [1, 0, 0, 1, 1, 1, 1]
CFG = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=2, max_length=8)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return testing.tiny_spec(tmp_path_factory.mktemp("tiny") / "llama", arch="llama")


@pytest.fixture(scope="module")
def loaded(spec):
    return models.load(spec, device="cpu")


@pytest.fixture
def split():
    return datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})


@pytest.fixture
def rows_seen(loaded):
    """Texts the model ran on (counted by a forward pre-hook on the model)."""
    seen: list[int] = []
    handle = loaded.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(len(kwargs["input_ids"])), with_kwargs=True)
    yield seen
    handle.remove()


def _embed(split, tmp_path, loaded=None, config=CFG, model=None):
    return embeddings.embed(model or loaded.spec, split, config=config, dataset_name="toy", split="train",
                         cache_dir=tmp_path, progress=False, loaded=loaded)


def test_embed_returns_float16_vectors_labels_and_provenance(split, loaded, tmp_path):
    emb = _embed(split, tmp_path, loaded)
    ref = extract.extract_texts(loaded, TEXTS, CFG, progress=False)
    assert emb.vectors["mean"].dtype == np.float16 and emb.vectors["mean"].shape == (7, 3, 32)
    np.testing.assert_allclose(emb.stack("mean"), ref["mean"], atol=1e-2, rtol=1e-2)
    np.testing.assert_allclose(emb.layer("last", 2), ref["last"][:, 2], atol=1e-2, rtol=1e-2)
    assert emb.layer("mean", -1).dtype == np.float32 and emb.labels.tolist() == LABELS
    assert emb.provenance["model"]["fingerprint"] == loaded.fingerprint
    assert emb.provenance["dataset"]["name"] == "toy" and "hardware" in emb.provenance
    manifest = json.loads((emb.path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_shards"] == 4 and len(manifest["shards"]) == 4
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"].values())
    assert {"created", "config", "n_truncated", "runs"} <= set(manifest)
    with pytest.raises(KeyError, match="was not extracted"):
        emb.layer("mean", 7)
    with pytest.raises(KeyError, match="mean_pad"):
        emb.stack("mean_pad")


def test_summary_and_norms(split, loaded, tmp_path):
    emb = _embed(split, tmp_path, loaded, config=extract.ExtractionConfig(max_length=3, shard_size=4))
    summary = emb.summary()
    assert summary["n"] == 7 and summary["layers"] == 3 and summary["dim"] == 32
    assert summary["poolings"] == ["mean", "last"] and summary["bytes_on_disk"] > 7 * 3 * 32 * 2 * 2
    assert summary["n_truncated"] == sum(len(t.split()) + 1 > 3 for t in TEXTS)
    expected = np.linalg.norm(emb.stack("mean"), axis=-1).mean(axis=0)
    np.testing.assert_allclose(emb.norms("mean"), expected, rtol=1e-5)
    assert emb.norms("mean").shape == (3,)


def test_second_call_reads_the_cache_without_loading_the_model(split, spec, loaded, tmp_path, monkeypatch):
    first = _embed(split, tmp_path, loaded)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every shard is cached")

    monkeypatch.setattr(models, "load", no_load)
    again = _embed(split, tmp_path, model=spec)
    np.testing.assert_array_equal(again.vectors["mean"], first.vectors["mean"])
    assert again.path == first.path


def test_model_is_loaded_lazily_when_a_shard_is_missing(split, spec, tmp_path, monkeypatch):
    calls = []
    real_load = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    _embed(split, tmp_path, model=spec)
    assert calls == [1]


def test_resume_after_a_kill_recomputes_no_finished_shard(split, loaded, tmp_path, monkeypatch, rows_seen):
    reference = _embed(split, tmp_path / "ref", loaded)
    real, done = extract.extract_texts, []

    def killed_after_two_shards(*args, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "extract_texts", killed_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        _embed(split, tmp_path / "run", loaded)
    monkeypatch.setattr(extract, "extract_texts", real)
    rows_seen.clear()
    resumed = _embed(split, tmp_path / "run", loaded)
    assert sum(rows_seen) == 3  # shards 2 and 3 hold texts 4-5 and 6; shards 0-1 (texts 0-3) are not redone
    np.testing.assert_array_equal(resumed.vectors["mean"], reference.vectors["mean"])
    assert len(resumed.provenance["runs"]) == 2


def test_kill_between_shard_and_manifest_and_stale_temp_files(split, loaded, tmp_path, monkeypatch, rows_seen):
    real_save = cache.CacheEntry._save_manifest
    shards_written = []

    def crash_on_second_shard(self):
        if len(self.manifest["shards"]) == 2 and not shards_written:
            shards_written.append(1)
            (self.path / ".shard-00003.npy.tmp-999999-deadbeef").write_bytes(b"half a file")
            raise KeyboardInterrupt
        real_save(self)

    monkeypatch.setattr(cache.CacheEntry, "_save_manifest", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        _embed(split, tmp_path, loaded)
    monkeypatch.setattr(cache.CacheEntry, "_save_manifest", real_save)
    rows_seen.clear()
    emb = _embed(split, tmp_path, loaded)
    assert sum(rows_seen) == 5  # shard 1 was on disk but unrecorded: redone with shards 2-3
    assert not list(emb.path.glob(".*.tmp-*"))


def test_flipped_byte_is_detected_and_only_that_shard_rebuilt(split, loaded, tmp_path, rows_seen):
    first = _embed(split, tmp_path, loaded)
    shard = first.path / "shard-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40
    shard.write_bytes(bytes(data))
    rows_seen.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        again = _embed(split, tmp_path, loaded)
    assert sum(rows_seen) == 2
    np.testing.assert_array_equal(again.vectors["mean"], first.vectors["mean"])


def test_deleted_shard_and_broken_manifest_are_rebuilt(split, loaded, tmp_path, rows_seen):
    first = _embed(split, tmp_path, loaded)
    (first.path / "shard-00000.npy").unlink()
    rows_seen.clear()
    with pytest.warns(UserWarning, match="missing"):
        _embed(split, tmp_path, loaded)
    assert sum(rows_seen) == 2
    (first.path / "manifest.json").write_text("{not json")
    rows_seen.clear()
    with pytest.warns(UserWarning, match="unreadable"):
        again = _embed(split, tmp_path, loaded)
    assert sum(rows_seen) == 7
    np.testing.assert_array_equal(again.vectors["last"], first.vectors["last"])


def test_changed_config_or_dataset_gives_a_different_key(split, loaded, tmp_path):
    model = {"key": "m", "hf_id": "org/m", "fingerprint": "abc", "dtype": "float32", "device": "cpu"}
    base = cache.cache_key(model, cache.key_settings(CFG, (0, 1, 2)), "data-1")
    # names are metadata, not identity
    assert cache.cache_key({**model, "key": "other", "hf_id": "x/y"}, cache.key_settings(CFG, (0, 1, 2)),
                           "data-1") == base
    variants = [
        cache.cache_key({**model, "fingerprint": "abd"}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
        cache.cache_key({**model, "dtype": "bfloat16"}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
        cache.cache_key({**model, "device": "cuda"}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
        cache.cache_key({**model, "inputs": {"text_prefix": "q: "}}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
        cache.cache_key(model, cache.key_settings(CFG, (0, 1)), "data-1"),
        cache.cache_key(model, cache.key_settings(extract.ExtractionConfig(max_length=9, shard_size=2,
                                                                           poolings=("mean", "last")),
                                                  (0, 1, 2)), "data-1"),
        cache.cache_key(model, cache.key_settings(extract.ExtractionConfig(poolings=("mean",), shard_size=2,
                                                                           max_length=8), (0, 1, 2)), "data-1"),
        cache.cache_key(model, cache.key_settings(CFG, (0, 1, 2)), "data-2"),
    ]
    assert len({base, *variants}) == len(variants) + 1
    same = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=2, max_length=8, token_budget=7,
                                    max_batch_size=1, stop_at_deepest=False)
    assert cache.cache_key(model, cache.key_settings(same, (0, 1, 2)), "data-1") == base
    first = _embed(split, tmp_path, loaded)
    relabelled = datasets.Dataset.from_dict({"text": TEXTS, "label": [1 - x for x in LABELS]})
    assert _embed(relabelled, tmp_path, loaded).path != first.path
    other = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=2, max_length=5)
    assert _embed(split, tmp_path, loaded, config=other).path != first.path


def test_bad_inputs_to_the_cache_layer(split, loaded, tmp_path):
    with pytest.raises(ValueError, match="dataset_fingerprint"):
        cache.cache_key({"key": "m", "hf_id": "h", "fingerprint": "f", "dtype": "float32", "device": "cpu"}, {}, "")
    with pytest.raises(ValueError, match="lacks"):
        cache.cache_key({"key": "m"}, {}, "data")
    dd = datasets.DatasetDict({"train": split})
    with pytest.raises(ValueError, match="split"):
        embeddings.embed(loaded, dd, config=CFG, cache_dir=tmp_path, progress=False)
    assert embeddings.embed(loaded, dd, "train", CFG, cache_dir=tmp_path, progress=False).summary()["n"] == 7
    with pytest.raises(ValueError, match="indices \\[1\\]"):
        _embed(datasets.Dataset.from_dict({"text": ["good", " "], "label": [0, 1]}), tmp_path, loaded)
    with pytest.raises(ValueError, match="'text' column"):
        _embed(datasets.Dataset.from_dict({"sentence": ["good"]}), tmp_path, loaded)


# storage range: float16 where it holds, float32 where it would not, never NaN/inf ----------------------------------


def _entry(tmp_path, n=6, shard_size=2, layers=(0, 1), hidden=4):
    config = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=shard_size)
    model = {"key": "m", "hf_id": "org/m", "fingerprint": "abc", "dtype": "float32", "device": "cpu"}
    return cache.EmbeddingCache(tmp_path).entry(model, config, layers, "data", n=n, hidden=hidden)


def _shard(rows, value=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, rows, 2, 4)) * value).astype(np.float32)


@pytest.mark.parametrize("value, stored", [
    (1.0, "float16"),   # ordinary values
    (1e-3, "float16"),  # small, in float16's normal range
    (1e4, "float16"),   # large, below 65,504
    (1e-6, "float32"),  # vectors whose largest value is below float16's normal range (2**-14)
    (1e5, "float32"),   # beyond float16's range
])
def test_write_shard_picks_float16_only_when_it_loses_nothing(tmp_path, value, stored):
    entry = _entry(tmp_path)
    array = _shard(2, value)
    assert (np.abs(array).max() <= cache.FLOAT16_MAX) == (value < 1e5)
    with entry.locked():
        entry.write_and_record_shard(0, array, n_truncated=0)
        assert entry.manifest["shards"]["0"]["dtype"] == stored
        back = entry.read_shard(0)
    assert back.dtype == np.dtype(stored)
    scale = np.abs(array).max(axis=-1, keepdims=True)
    assert (np.abs(back.astype(np.float32) - array) <= 2.0 ** -11 * scale).all()
    if stored == "float32":
        np.testing.assert_array_equal(back, array)


def test_float16_range_edge_and_mixed_entry(tmp_path):
    entry = _entry(tmp_path)
    edge = np.full((2, 2, 2, 4), cache.FLOAT16_MAX, dtype=np.float32)
    beyond = edge.copy()
    beyond[1, 1, 1, 3] = np.nextafter(np.float32(cache.FLOAT16_MAX), np.float32(np.inf))
    with entry.locked():
        for i, array in enumerate((edge, beyond, _shard(2))):
            entry.write_and_record_shard(i, array, n_truncated=0)
        entry.finish()
        shards = [entry.read_shard(i) for i in range(3)]
    assert [s.dtype for s in shards] == [np.float16, np.float32, np.float16]
    assert np.concatenate(shards, axis=1).dtype == np.float32  # how embed assembles a mixed entry


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_shard_is_never_written(tmp_path, bad):
    entry = _entry(tmp_path)
    array = _shard(2)
    array[1, 1, 0, 2] = bad
    with entry.locked():
        entry.write_and_record_shard(0, _shard(2), n_truncated=0)
        before = (entry.path / "manifest.json").read_bytes()
        with pytest.raises(ValueError, match=r"shard 1 .* not written: it holds .*pooling 'last', layer 0, text 3"):
            entry.write_and_record_shard(1, array, n_truncated=0)
        assert "1" not in entry.manifest["shards"]
    assert not entry.shard_path(1).exists() and (entry.path / "manifest.json").read_bytes() == before
    assert not list(entry.path.glob(".*.tmp-*"))


def _scaled_model(tmp_path, factor=1e7):
    """A tiny llama whose embedding matrix is scaled so the residual stream is about 1e5 (past float16's 65,504)."""
    import torch
    from transformers import AutoModel

    base = testing.tiny_model_dir(tmp_path / "base", arch="llama")
    model = AutoModel.from_pretrained(base)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(factor)
    model.save_pretrained(tmp_path / "scaled")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tiny.json"):
        if (base / name).exists():
            (tmp_path / "scaled" / name).write_bytes((base / name).read_bytes())
    spec = testing.tiny_spec(tmp_path / "scaled", arch="llama", key="tiny-scaled")
    return models.load(spec, device="cpu")


def test_activations_beyond_float16_come_back_finite_and_exact(split, tmp_path, rows_seen):
    loaded = _scaled_model(tmp_path)
    reference = extract.extract_texts(loaded, TEXTS, CFG, progress=False)
    assert np.isfinite(reference["mean"]).all() and np.abs(reference["mean"]).max() > 1e5
    emb = _embed(split, tmp_path / "cache", loaded)
    manifest = json.loads((emb.path / "manifest.json").read_text())
    assert {s["dtype"] for s in manifest["shards"].values()} == {"float32"}
    for pooling in CFG.poolings:
        assert emb.vectors[pooling].dtype == np.float32
        np.testing.assert_array_equal(emb.stack(pooling), reference[pooling])


def test_old_float16_cache_with_overflow_is_rebuilt_with_a_warning(split, tmp_path):
    """A cache written before the range check: float16 shards, no dtype recorded, inf where values overflowed."""
    loaded = _scaled_model(tmp_path)
    first = _embed(split, tmp_path / "cache", loaded)
    manifest_path = first.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for info in manifest["shards"].values():
        assert info.pop("dtype") == "float32"
        path = first.path / info["file"]
        with np.errstate(over="ignore"):
            old = np.load(path).astype(np.float16)  # what the cache used to do
        assert not np.isfinite(old).all()
        np.save(path, old)
        info["sha256"] = cache.sha256_bytes(path.read_bytes())
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="holds inf or NaN.*overflowed"):
        again = _embed(split, tmp_path / "cache", loaded)
    assert np.isfinite(again.vectors["mean"]).all()
    np.testing.assert_array_equal(again.vectors["mean"], first.vectors["mean"])


def test_old_float16_cache_without_dtype_records_stays_readable(split, loaded, tmp_path, rows_seen):
    first = _embed(split, tmp_path, loaded)
    manifest_path = first.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for info in manifest["shards"].values():
        assert info.pop("dtype") == "float16"
    manifest_path.write_text(json.dumps(manifest))
    rows_seen.clear()
    again = _embed(split, tmp_path, loaded)
    assert rows_seen == [] and again.vectors["mean"].dtype == np.float16
    np.testing.assert_array_equal(again.vectors["mean"], first.vectors["mean"])


def test_same_weights_reach_the_same_entry_whatever_the_registration_order(spec, tmp_path):
    """Two copies of one model under folders whose short names depend on what was registered first: the names
    differ with the order, the cache entry does not (names are metadata)."""
    import shutil

    a, b = tmp_path / "x" / "llama", tmp_path / "y" / "llama"
    for target in (a, b):
        shutil.copytree(spec.path, target)
    cfg = extract.ExtractionConfig(poolings=("mean",), shard_size=2, max_length=8)
    entries = {}
    for order in ((a, b), (b, a)):
        with testing.registries_restored():
            names = [models.add([str(p)])[0] for p in order]
            for path, name in zip(order, names):
                entry_plan = embeddings.plan(name, TEXTS, config=cfg, cache_dir=tmp_path / "cache", device="cpu")
                entries.setdefault(path, set()).add((name, entry_plan.entry.path))
    assert {name for name, _ in entries[a]} == {"llama", "x/llama"}  # the order changed a's name ...
    assert len({path for pairs in entries.values() for _, path in pairs}) == 1  # ... never its entry


def test_entries_under_the_old_key_are_adopted_without_recomputing(split, loaded, tmp_path, rows_seen):
    first = _embed(split, tmp_path, loaded)
    n_computed = sum(rows_seen)
    manifest = json.loads((first.path / cache.MANIFEST).read_text())
    old = cache.legacy_key(manifest["model"], manifest["settings"], manifest["dataset"]["fingerprint"])
    legacy = first.path.parent / cache._slug(manifest["model"]["key"]) / old[:24]
    legacy.parent.mkdir(parents=True)
    first.path.rename(legacy)
    (legacy / cache.MANIFEST).write_text(json.dumps({**manifest, "key": old}))
    again = _embed(split, tmp_path, loaded)
    assert sum(rows_seen) == n_computed  # nothing recomputed
    assert again.path == first.path and again.provenance.get("key") == manifest["key"]
    assert json.loads((again.path / cache.MANIFEST).read_text())["adopted_from"] == str(legacy)
    np.testing.assert_array_equal(again.vectors["mean"], first.vectors["mean"])


def test_shards_record_device_dtype_and_threads(split, loaded, tmp_path):
    import torch

    emb = _embed(split, tmp_path, loaded)
    manifest = json.loads((emb.path / cache.MANIFEST).read_text())
    for record in manifest["shards"].values():
        assert record["compute"] == {"device": "cpu", "dtype": "float32", "torch_threads": torch.get_num_threads()}
    assert emb.provenance["hardware"]["torch_threads"] == torch.get_num_threads()
    assert emb.provenance["versions"]["layerfusion"] == __import__("layerfusion").__version__


def test_embed_takes_an_unlabelled_dataset(loaded, tmp_path):
    unlabelled = datasets.Dataset.from_dict({"text": TEXTS})
    emb = _embed(unlabelled, tmp_path, loaded)
    assert emb.labels is None and emb.vectors["mean"].shape[0] == len(TEXTS)
