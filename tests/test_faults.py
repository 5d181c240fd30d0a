"""Faults tried with real processes (``tests/fault_worker.py``), not mocks: a kill during extraction, two extractions
of one cache entry at once, a cache folder that turns read-only or a disk that fills up mid-run, a damaged manifest,
and a chapter killed while writing its results file. In each, nothing already computed is lost or used damaged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fault_worker
from layerfusion import extract, files, testing
from layerfusion import embeddings
from layerfusion.study import results

WORKER = Path(fault_worker.__file__)
N_SHARDS = fault_worker.N_TEXTS // fault_worker.SHARD_SIZE
TIMEOUT = 300


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return testing.tiny_model_dir(tmp_path_factory.mktemp("fault-model") / "llama", arch="llama")


def _start(*args: str, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*wrap, sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=TIMEOUT)
    lines = out.strip().splitlines()
    assert lines, f"worker printed nothing (exit {proc.returncode}); stderr:\n{err[-3000:]}"
    return json.loads(lines[-1])


def _run(*args: str, wrap: tuple[str, ...] = ()) -> dict:
    return _report(_start(*args, wrap=wrap))


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return fault_worker.load(tiny_dir)


def _embed(loaded, cache: Path) -> tuple[embeddings.LayerEmbeddings, int]:
    """The worker's extraction in this process: the embeddings and how many texts the model ran on."""
    computed: list[int] = []
    hook = loaded.model.register_forward_pre_hook(lambda m, a, kw: computed.append(len(kw["input_ids"])),
                                                  with_kwargs=True)
    try:
        emb = embeddings.embed(loaded, fault_worker.toy_texts(), config=fault_worker.config(), dataset_name="toy",
                            split="train", cache_dir=cache, progress=False)
    finally:
        hook.remove()
    return emb, sum(computed)


@pytest.fixture(scope="module")
def reference(loaded, tmp_path_factory) -> dict[str, np.ndarray]:
    """The vectors of an uninterrupted run."""
    emb, computed = _embed(loaded, tmp_path_factory.mktemp("fault-reference"))
    assert computed == fault_worker.N_TEXTS
    return emb.vectors


def _manifest(cache: Path) -> tuple[Path, dict]:
    found = list(cache.glob("embeddings/*/manifest.json"))
    assert len(found) <= 1, found
    return (found[0].parent, json.loads(found[0].read_text())) if found else (cache, {"shards": {}})


def _wait_for_shards(cache: Path, k: int, proc: subprocess.Popen) -> None:
    """Poll the manifest until at least ``k`` shards are recorded (the worker must still be running)."""
    deadline = time.monotonic() + TIMEOUT
    while len(_manifest(cache)[1]["shards"]) < k:
        assert proc.poll() is None, f"worker exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "worker recorded no shards in time"
        time.sleep(0.01)


def _snapshot(cache: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every recorded shard, checked against the manifest's sha256."""
    folder, manifest = _manifest(cache)
    out = {}
    for info in manifest["shards"].values():
        path = folder / info["file"]
        data = path.read_bytes()
        assert files.sha256_bytes(data) == info["sha256"], f"{path} does not match its manifest record"
        out[info["file"]] = (data, path.stat().st_mtime_ns)
    return out


def _assert_untouched(cache: Path, before: dict[str, tuple[bytes, int]]) -> None:
    folder, _ = _manifest(cache)
    for name, (data, mtime) in before.items():
        assert (folder / name).read_bytes() == data and (folder / name).stat().st_mtime_ns == mtime, name


def _rows(snapshot: dict) -> int:
    """Texts held by the shards of a snapshot."""
    return sum(np.load(io.BytesIO(data)).shape[1] for data, _ in snapshot.values())


def _assert_equal(got: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert set(got) == set(reference)
    for pooling, vectors in reference.items():
        np.testing.assert_array_equal(got[pooling], vectors)


def _rerun(loaded, cache: Path, reference: dict[str, np.ndarray], before: dict[str, tuple[bytes, int]]) -> None:
    """A later run on a healthy disk: computes only what is missing, leaves finished shards alone, same result."""
    emb, computed = _embed(loaded, cache)
    assert computed == fault_worker.N_TEXTS - _rows(before)
    _assert_untouched(cache, before)
    _assert_equal(emb.vectors, reference)
    _assert_clean(cache)
    assert _manifest(cache)[1]["complete"]


def _assert_clean(cache: Path, failed: bool = False) -> None:
    """No temp file (no half-written shard) left behind, every recorded shard intact; after a run that completed,
    every shard file is recorded. After a failed run a shard written just before its manifest update failed may be
    unrecorded: it must be whole (the next run deletes and recomputes it)."""
    folder, manifest = _manifest(cache)
    assert not list(folder.glob(f".*{files.TMP_MARK}*"))
    recorded = {info["file"] for info in manifest["shards"].values()}
    for path in folder.glob("shard-*.npy"):
        assert path.name in recorded or (failed and np.load(path).shape[1] == fault_worker.SHARD_SIZE), path
    _snapshot(cache)


def test_sigkill_during_extraction_then_rerun_reuses_finished_shards(tiny_dir, loaded, reference, tmp_path):
    cache = tmp_path / "cache"
    proc = _start("embed", tiny_dir, cache, "--delay", "0.3")
    _wait_for_shards(cache, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    done = _snapshot(cache)
    assert 3 <= len(done) < N_SHARDS
    _rerun(loaded, cache, reference, done)


def test_two_processes_extracting_one_entry_compute_each_shard_once(tiny_dir, reference, tmp_path):
    cache, go = tmp_path / "cache", tmp_path / "go"
    procs = [_start("embed", tiny_dir, cache, "--delay", "0.2", "--go-file", go, "--out", tmp_path / f"{i}.npz")
             for i in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.communicate()
    go.touch()
    reports = [_report(proc) for proc in procs]
    assert all("error" not in r for r in reports), reports
    assert sum(r["texts_computed"] for r in reports) == fault_worker.N_TEXTS  # no shard was computed twice
    for i in range(2):
        with np.load(tmp_path / f"{i}.npz") as got:
            _assert_equal(dict(got), reference)
    _assert_clean(cache)


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    return ok.returncode == 0


@contextlib.contextmanager
def _disk(how: str, tmp_path: Path):
    """(cache dir, extra worker args, fill(), free()): a disk that can be filled up and freed again.

    ``tmpfs``: a real 1 MiB tmpfs (root only), filled with a file until the kernel answers ENOSPC. ``fsync``: the
    worker's ``os.fsync`` answers ENOSPC while a marker file exists (where nothing can be mounted).
    """
    if how == "tmpfs":
        mount = tmp_path / "disk"
        if not _can_mount_tmpfs(mount):
            pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN; the fsync variant covers this case")
        filler = mount / "filler"

        def fill() -> None:
            with open(filler, "wb", buffering=0) as fh:
                for size in (65536, 4096, 1):  # down to the last byte, so not one more page is free
                    with contextlib.suppress(OSError):
                        while True:
                            fh.write(b"\0" * size)

        try:
            yield mount / "cache", (), fill, lambda: filler.unlink()
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    else:
        marker = tmp_path / "disk-full"
        yield tmp_path / "cache", ("--enospc-while", marker), marker.touch, marker.unlink


@pytest.mark.parametrize("how", ["tmpfs", "fsync"])
def test_full_disk_mid_run_fails_clearly_and_keeps_finished_shards(tiny_dir, loaded, reference, tmp_path, how):
    with _disk(how, tmp_path) as (cache, extra, fill, free):
        proc = _start("embed", tiny_dir, cache, "--delay", "0.3", *extra)
        _wait_for_shards(cache, 3, proc)
        fill()
        report = _report(proc)
        assert report["error"].startswith("OSError: [Errno 28] cannot write the embedding cache at "), report
        assert "no space left on the disk" in report["error"] and "\n" not in report["error"]
        assert report["texts_computed"] < fault_worker.N_TEXTS
        done = _snapshot(cache)
        assert 3 <= len(done) < N_SHARDS
        _assert_clean(cache, failed=True)
        free()
        _rerun(loaded, cache, reference, done)


def _unprivileged() -> tuple[str, ...]:
    """A command prefix under which file permissions bind (root ignores them unless its capabilities are dropped)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated without a mount")
    return ("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--")


def test_cache_folder_turning_read_only_fails_clearly_and_keeps_finished_shards(tiny_dir, loaded, reference,
                                                                                 tmp_path):
    cache, wrap = tmp_path / "cache", _unprivileged()
    proc = _start("embed", tiny_dir, cache, "--delay", "0.3", wrap=wrap)
    _wait_for_shards(cache, 3, proc)
    folder = _manifest(cache)[0]
    folder.chmod(0o555)
    try:
        report = _report(proc)
    finally:
        folder.chmod(0o755)
    assert report["error"].startswith("PermissionError: [Errno 13] cannot write the embedding cache at "), report
    assert "the folder is not writable" in report["error"] and "\n" not in report["error"]
    done = _snapshot(cache)
    assert 3 <= len(done) < N_SHARDS
    _assert_clean(cache, failed=True)
    _rerun(loaded, cache, reference, done)


def test_read_only_cache_root_fails_before_any_work(tiny_dir, tmp_path):
    cache, wrap = tmp_path / "cache", _unprivileged()
    cache.mkdir()
    cache.chmod(0o555)
    try:
        report = _run("embed", tiny_dir, cache, wrap=wrap)
    finally:
        cache.chmod(0o755)
    assert report["error"].startswith("PermissionError: [Errno 13] cannot write the embedding cache at "), report
    assert report["texts_computed"] == 0 and "\n" not in report["error"]


# a damaged manifest (in-process: the fault is the file, not the process) -------------------------------------------


def _damage(kind: str, text: str) -> str:
    manifest = json.loads(text)
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "binary":
        return "\x00\x9f garbage"
    if kind == "list":
        return "[]"
    if kind == "shards-not-a-dict":
        manifest["shards"] = "0,1,2"
    elif kind == "wrong-rows":
        manifest["shards"]["0"]["rows"] = [0, 99]
    elif kind == "bad-dtype":
        manifest["shards"]["1"]["dtype"] = "float64"
    elif kind == "other-shard-size":
        manifest["shard_size"] = 4
    return json.dumps(manifest)


@pytest.mark.parametrize("kind", ["truncated", "binary", "list", "shards-not-a-dict", "wrong-rows", "bad-dtype",
                                  "other-shard-size"])
def test_damaged_manifest_is_detected_rebuilt_and_never_used(loaded, reference, tmp_path, kind):
    first, _ = _embed(loaded, tmp_path)
    path = first.path / "manifest.json"
    path.write_text(_damage(kind, path.read_text()), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"manifest\.json .*rebuilding the entry \(its shards are not used\)"):
        again, computed = _embed(loaded, tmp_path)
    assert computed == fault_worker.N_TEXTS
    _assert_equal(again.vectors, reference)
    manifest = json.loads(path.read_text())
    assert manifest["complete"] and len(manifest["shards"]) == N_SHARDS


# a chapter killed while writing its results file --------------------------------------------------------------------


def test_chapter_killed_while_writing_results_leaves_the_last_complete_file(tmp_path):
    """The writer is killed while its temp file exists (mid-write); the reader sees a whole earlier version."""
    proc = subprocess.Popen([sys.executable, str(WORKER), "results", str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("written 0")
        deadline = time.monotonic() + TIMEOUT
        while not list(tmp_path.glob(f".big.json{files.TMP_MARK}*")):
            assert time.monotonic() < deadline and proc.poll() is None, "never caught the writer mid-write"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    leftovers = list(tmp_path.glob(f".big.json{files.TMP_MARK}*"))
    assert leftovers, "the kill did not land mid-write"
    frame, run = results.read("big", results_dir=tmp_path)
    assert len(frame) == 50_000 and frame["round"].nunique() == 1 and run["run_id"] == "fault-test"
    assert [p.name for p in tmp_path.glob("*.json")] == ["big.json"]  # the temp file is never taken for a result


def test_half_written_results_file_is_refused_with_a_message(tmp_path):
    results.write("table", [{"a": i} for i in range(100)], {"run_id": "r"}, results_dir=tmp_path)
    path = tmp_path / "table.json"
    path.write_bytes(path.read_bytes()[:-40])  # what a non-atomic copy killed half-way would leave
    with pytest.raises(ValueError, match=r"table\.json is corrupt .*delete it and re-run the notebook") as info:
        results.read("table", results_dir=tmp_path)
    assert "\n" not in str(info.value)
