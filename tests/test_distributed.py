"""Extraction on a local Ray instance: same shard bytes as one process, retries, kills, re-runs, Ray missing."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from layerfusion import embeddings, extract, models, testing

TEXTS = ["the movie was good", "bad", "the plot was very boring and the acting was terrible", "great film love it",
         "market shares profit oil", "a very good story", "fun", "not very fun at all", "the acting was great",
         "oil price rate"]
CFG = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=3, max_length=8, token_budget=16)
N_SHARDS = 4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    """A local two-CPU Ray instance for this module; this file's helpers travel to the workers by value."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return testing.tiny_spec(tmp_path_factory.mktemp("tiny") / "llama", arch="llama")


@pytest.fixture
def split():
    return datasets.Dataset.from_dict({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]})


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    """The single-process result and its shard files' bytes."""
    root = tmp_path_factory.mktemp("single")
    split = datasets.Dataset.from_dict({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]})
    emb = _embed(spec, split, root)
    return emb, _shard_bytes(emb.path)


def _embed(spec, split, cache_dir, executor=None):
    return embeddings.embed(spec, split, "train", CFG, dataset_name="toy", cache_dir=cache_dir, progress=False,
                         executor=executor)


def _ray(**kwargs):
    from layerfusion.distributed import RayExecutor

    return RayExecutor(**kwargs)


def _shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard-*.npy"))}


def _load_failing_once(spec, *, markers: dict[str, str], **kwargs):
    """``models.load``, but the first forward pass anywhere raises and the second kills its worker process (each
    fault happens once in the whole run: a marker file records it)."""
    loaded = models.load(spec, **kwargs)

    def hook(module, args, kw):
        for how, marker in markers.items():
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            if how == "exit":
                os._exit(1)
            raise RuntimeError("injected failure")

    loaded.model.register_forward_pre_hook(hook, with_kwargs=True)
    return loaded


def _load_forbidden(spec, **kwargs):
    raise AssertionError("a worker loaded the model although every shard is cached")


def _load_failing_on(spec, *, word: str, **kwargs):
    """``models.load``, but every batch holding a text with ``word`` raises (a shard that never succeeds)."""
    loaded = models.load(spec, **kwargs)
    bad = loaded.tokenizer.convert_tokens_to_ids(word)

    def hook(module, args, kw):
        if (kw["input_ids"] == bad).any():
            raise RuntimeError(f"injected permanent failure on {word!r}")

    loaded.model.register_forward_pre_hook(hook, with_kwargs=True)
    return loaded


@pytest.fixture(scope="module")
def on_ray(ray_local, spec, tmp_path_factory):
    """The same split embedded by two Ray workers into a cache of its own."""
    root = tmp_path_factory.mktemp("ray")
    split = datasets.Dataset.from_dict({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]})
    return _embed(spec, split, root, _ray(workers=2)), root


def test_ray_writes_the_same_shard_bytes_as_one_process(on_ray, split, reference):
    (emb, root), (single, single_bytes) = on_ray, reference
    assert emb.path.relative_to(root) == single.path.relative_to(single.path.parents[1])
    assert len(single_bytes) == N_SHARDS and _shard_bytes(emb.path) == single_bytes
    for pooling in CFG.poolings:
        np.testing.assert_array_equal(emb.vectors[pooling], single.vectors[pooling])
    manifest = json.loads((emb.path / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["shards"], key=int) == [str(i) for i in range(N_SHARDS)]
    assert [run["executor"] for run in manifest["runs"]] == ["ray"]
    assert emb.labels.tolist() == split["label"] and emb.n_truncated == single.n_truncated
    assert not list(emb.path.glob(".*.tmp-*"))


@pytest.mark.slow  # a Ray Data run of its own (actor start-up and model load): ~10-40 s
def test_a_failed_shard_is_retried_and_a_killed_worker_s_shard_recomputed(ray_local, spec, split, reference,
                                                                           tmp_path):
    markers = {how: tmp_path / f"{how}-once" for how in ("raise", "exit")}
    load = functools.partial(_load_failing_once, markers={how: str(m) for how, m in markers.items()})
    emb = _embed(spec, split, tmp_path / "cache", _ray(workers=2, load=load))
    assert all(m.exists() for m in markers.values())
    assert _shard_bytes(emb.path) == reference[1]


def test_a_rerun_reuses_every_shard_without_loading_the_model(on_ray, spec, split, reference, monkeypatch):
    first, root = on_ray
    stamps = {p.name: p.stat().st_mtime_ns for p in first.path.glob("shard-*.npy")}
    again = _embed(spec, split, root, _ray(workers=2, load=_load_forbidden))
    monkeypatch.setattr(models, "load", _load_forbidden)
    here = _embed(spec, split, root)
    for emb in (again, here):
        assert emb.path == first.path and _shard_bytes(emb.path) == reference[1]
        assert {p.name: p.stat().st_mtime_ns for p in emb.path.glob("shard-*.npy")} == stamps
        np.testing.assert_array_equal(emb.vectors["mean"], first.vectors["mean"])
    assert len(json.loads((first.path / "manifest.json").read_text())["runs"]) == 1


@pytest.mark.slow  # a Ray Data run of its own (actor start-up and model load): ~10-40 s
def test_a_shard_that_keeps_failing_stops_the_run_and_keeps_the_others(ray_local, spec, split, reference, tmp_path,
                                                                        monkeypatch):
    load = functools.partial(_load_failing_on, word="rate")  # only the last text: shard 3
    with pytest.raises(RuntimeError, match="finished shards are in the cache"):
        _embed(spec, split, tmp_path, _ray(workers=1, max_retries=1, load=load))
    manifest = next(tmp_path.rglob("manifest.json"))
    kept = {int(i) for i in json.loads(manifest.read_text())["shards"]}
    assert kept and 3 not in kept
    seen = []
    real = extract.extract_texts
    monkeypatch.setattr(extract, "extract_texts", lambda loaded, texts, *a, **k: seen.extend(texts) or
                        real(loaded, texts, *a, **k))
    emb = _embed(spec, split, tmp_path)
    redone = [i for i in range(N_SHARDS) if i not in kept]
    assert sorted(seen) == sorted(t for i in redone for t in TEXTS[3 * i:3 * i + 3])
    assert _shard_bytes(emb.path) == reference[1]


@pytest.mark.slow  # a Ray Data run of its own (actor start-up and model load): ~10-40 s
def test_embed_all_fills_several_splits_in_one_ray_run(ray_local, spec, reference, tmp_path):
    executor = _ray(workers=2)
    parts = {"a": TEXTS[:4], "b": TEXTS[4:]}
    plans = [embeddings.plan(spec, texts, name, CFG, dataset_name="toy", cache_dir=tmp_path, device="cpu")
             for name, texts in parts.items()]
    out = embeddings.embed_all(plans, executor=executor, progress=False)
    for (name, texts), emb in zip(parts.items(), out):
        alone = extract.extract_texts(models.load(spec, device="cpu"), texts, CFG, progress=False)
        np.testing.assert_allclose(emb.stack("mean"), alone["mean"], atol=1e-2)
        assert emb.summary()["n"] == len(texts)
    other = embeddings.plan(testing.tiny_spec(tmp_path / "bert", arch="bert"), TEXTS, "x", CFG, cache_dir=tmp_path,
                            device="cpu")
    with pytest.raises(ValueError, match="one model"):
        embeddings.embed_all([plans[0], other], executor=executor)


def test_executor_settings_are_checked_where_they_enter(ray_local):
    for bad in ({"workers": 0}, {"threads_per_worker": 1.5}, {"gpus_per_worker": -1}, {"max_retries": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _ray(**bad)
    res = _ray().resources()
    assert res.device == "cpu" and res.gpus == 0 and res.workers == 1 and 0 < res.cpus <= 1
    assert _ray(workers=2).resources().cpus < 1  # leaves room for Ray Data's own tasks
    with pytest.raises(ValueError, match="GPUs"):
        _ray(gpus_per_worker=1).resources()


def test_ray_missing_gives_one_clear_message(monkeypatch, capsys):
    from layerfusion import distributed
    from layerfusion.study import cli

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "layerfusion\[distributed\]"'):
        distributed.RayExecutor()
    assert cli.main(["extract", "--profile", "ci", "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerfusion: error: Ray is not installed") and "Traceback" not in err


@pytest.mark.slow
def test_cli_extract_with_ray_writes_the_same_shards(tmp_path):
    """The issue's done-when check: ``--ray`` (a local Ray instance of its own) against the same command without."""
    command = [sys.executable, "-m", "layerfusion.study.cli", "extract", "--model", "minilm-l6", "--dataset", "mr",
               "--profile", "ci", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    for name, extra in (("single", []), ("ray", ["--ray"])):
        subprocess.run([*command, "--cache-dir", str(tmp_path / name), *extra], check=True, env=env, timeout=1200)
    single = sorted((tmp_path / "single" / "embeddings").rglob("shard-*.npy"))
    ray = sorted((tmp_path / "ray" / "embeddings").rglob("shard-*.npy"))
    assert single and [p.relative_to(tmp_path / "single") for p in single] == [
        p.relative_to(tmp_path / "ray") for p in ray]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(single, ray))
