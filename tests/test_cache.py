"""The embedding cache and ``embed``: content keys, resume after a kill, corruption detection, lazy loading."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from layerfusion import cache, extract, models, testing

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
    return extract.embed(model or loaded.spec, split, config=config, dataset_name="toy", split="train",
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
    model = {"key": "m", "hf_id": "org/m", "fingerprint": "abc", "dtype": "float32"}
    base = cache.cache_key(model, cache.key_settings(CFG, (0, 1, 2)), "data-1")
    variants = [
        cache.cache_key({**model, "fingerprint": "abd"}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
        cache.cache_key({**model, "dtype": "bfloat16"}, cache.key_settings(CFG, (0, 1, 2)), "data-1"),
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
        cache.cache_key({"key": "m", "hf_id": "h", "fingerprint": "f", "dtype": "float32"}, {}, "")
    with pytest.raises(ValueError, match="lacks"):
        cache.cache_key({"key": "m"}, {}, "data")
    dd = datasets.DatasetDict({"train": split})
    with pytest.raises(ValueError, match="split"):
        extract.embed(loaded, dd, config=CFG, cache_dir=tmp_path, progress=False)
    assert extract.embed(loaded, dd, "train", CFG, cache_dir=tmp_path, progress=False).summary()["n"] == 7
    with pytest.raises(ValueError, match="indices \\[1\\]"):
        _embed(datasets.Dataset.from_dict({"text": ["good", " "], "label": [0, 1]}), tmp_path, loaded)
    with pytest.raises(ValueError, match="'text' column"):
        _embed(datasets.Dataset.from_dict({"sentence": ["good"]}), tmp_path, loaded)
