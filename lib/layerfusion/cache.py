"""Content-addressed, crash-safe store of extracted embeddings that never loses range silently.

An entry's key is the sha256 of what determines its bytes: the model's weight fingerprint, its input conventions
(text prefix, template), the compute dtype and device type, the extraction settings that change the vectors
(max_length, poolings, kept layers, shard_size) and the dataset fingerprint. Names (the registry key, the hub id) are
metadata in the manifest, not identity, so the same weights reach the same entry under any name and whatever order
models were registered in. Batching settings (token budget, batch size, early stop) are left out: the vectors do not
depend on them (tested); so is the CPU thread count (1 and 2 threads gave byte-identical shards for SmolLM2 fp32 and
bf16 and MiniLM fp32), which each shard records instead.

Entries written under the earlier key (which held the registry key and hub id, and no device) are adopted on first
use: the new entry hard-links their shards (checked by sha256 as always) and records where they came from, so a warm
cache stays warm (``legacy_key``).

An entry is a folder with ``.npy`` shards (``shard_size`` texts each, in input order, every pooling and layer:
shape (n_poolings, rows, n_layers, d)) and a ``manifest.json`` (config, provenance, per-shard sha256, dtype and
n_truncated, creation time). Every file is written to a temp file and moved into place with ``os.replace``, shard
first and manifest second, so a run killed at any point leaves only finished, recorded shards; the next run resumes
from them. A shard whose sha256, shape or dtype does not match the manifest is rebuilt with a warning; so is a
manifest that cannot be parsed or does not describe this entry.

Storage dtype, decided per shard by ``CacheEntry.write_shard_file`` from the float32
vectors it is given:

- float16 (half the disk and memory) when every value is finite, within float16's range (``|x| <= 65504``) and
  the float16 round trip keeps each value within float16's relative precision (2**-11) of its vector's largest
  value, which fails only for vectors whose largest value is below float16's normal range (2**-14);
- float32 otherwise, which is lossless for what the engine computes (it pools in float32). Models with "massive
  activations" (Gemma-2-2B, some 7B models) put a few coordinates of the residual stream past 65,504, so their
  shards are stored here instead of turning into ``inf``.

The shard's dtype is recorded in the manifest and ``read_shard`` returns each shard in its stored dtype, so an
entry's assembled vectors are float16 when all its shards are float16 and float32 otherwise. Why not the
alternatives: bfloat16 keeps the range but only 8 significant bits (up to 0.4 % error on every value, also in the
layers float16 stores well), and numpy has no bfloat16 ``.npy`` type; a per-layer scale would keep float16's
precision, but then the stored numbers are not the vectors: every reader (the probes' float16 path, diagnostics,
``np.load`` by a user) must apply the scales, shards written at different times need different scales, and a reader
that forgets one is silently wrong. float32 for just the affected shards keeps "what is on disk is the vector" and
costs disk only where float16 would lose data.

A shard holding NaN or inf is never written (``write_shard_file`` raises; ``extract.extract_texts`` names the model,
layer and text first). Caches written before this check stored float16 without looking: a recorded float16 shard
that reads back with inf/NaN (an overflow of that time) is rebuilt with a warning that says so.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from layerfusion import provenance
from layerfusion.devices import dtype_name
from layerfusion.files import atomic_write_bytes, locked, remove_temp_files, sha256_bytes

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FLOAT16_MAX = float(np.finfo(np.float16).max)
"""65504: the largest finite float16; a shard with any larger magnitude is stored as float32."""
STORED_DTYPES = ("float16", "float32")
_CHECK_ROWS = 256
"""Texts per chunk when a shard is checked and converted, so the temporaries stay small beside the shard."""
_WRITE_REASONS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is exceeded",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "the folder is not writable",
                  errno.EPERM: "the folder is not writable"}


class NonFiniteError(ValueError):
    """A NaN or inf where only finite vectors may go; ``index`` and ``value`` locate the first one."""

    def __init__(self, index: tuple[int, ...], value: float) -> None:
        super().__init__(f"non-finite value {value} at index {index}")
        self.index = index
        self.value = value


def first_nonfinite(array: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or inf in ``array`` (C order), or None when every value is finite."""
    bad = ~np.isfinite(array)
    return tuple(int(k) for k in np.argwhere(bad)[0]) if bad.any() else None


def as_stored(array: np.ndarray) -> np.ndarray:
    """``array`` (float, shape (n_poolings, rows, ..., d)) in the dtype the cache stores it in: float16 when that
    keeps every value within float16's precision of its vector's largest value, else float32 (module docstring).

    Raises ``NonFiniteError`` (a ValueError) at the first NaN or inf: a non-finite value is never stored.
    """
    values = np.asarray(array)
    if values.ndim < 2:
        raise ValueError(f"a shard has shape (n_poolings, rows, ..., d); got shape {values.shape}")
    half = np.empty(values.shape, dtype=np.float16)
    fits = True
    for start in range(0, values.shape[1], _CHECK_ROWS):
        chunk = np.asarray(values[:, start:start + _CHECK_ROWS], dtype=np.float32)
        where = first_nonfinite(chunk)
        if where is not None:
            raise NonFiniteError((where[0], where[1] + start, *where[2:]), float(chunk[where]))
        if not fits:
            continue
        scale = np.abs(chunk).max(axis=-1, keepdims=True)
        if scale.size and scale.max() > FLOAT16_MAX:
            fits = False
            continue
        rounded = chunk.astype(np.float16)
        if (np.abs(rounded.astype(np.float32) - chunk) > 2.0 ** -11 * scale).any():
            fits = False
            continue
        half[:, start:start + _CHECK_ROWS] = rounded
    return half if fits else np.ascontiguousarray(values, dtype=np.float32)


def write_error(err: OSError, folder: Path) -> OSError:
    """A one-line error of the same type for a failed cache write: where, why and what to do."""
    reason = _WRITE_REASONS.get(err.errno, err.strerror or str(err))
    return type(err)(err.errno, f"cannot write the embedding cache at {folder}: {reason}; finished shards are "
                                "kept and the next run resumes from them. Free space or make the folder writable, "
                                "or point cache_dir (or $LAYERFUSION_CACHE_DIR) at another disk")


IDENTITY = ("fingerprint", "dtype", "device")
"""The model fields of a cache key: the weights, the compute dtype and the device type (``cpu``, ``cuda``)."""


def cache_key(model: dict[str, Any], settings: dict[str, Any], dataset_fingerprint: str) -> str:
    """sha256 over the canonical JSON of what determines an entry's bytes: the model's weight fingerprint, compute
    dtype, device type and input conventions (``inputs``), the vector-changing settings and the dataset.

    Names (``key``, ``hf_id``) are not part of it: they are metadata of the entry.
    """
    if not dataset_fingerprint or not isinstance(dataset_fingerprint, str):
        raise ValueError(f"dataset_fingerprint must be a non-empty string, got {dataset_fingerprint!r}")
    missing = [k for k in IDENTITY if not model.get(k)]
    if missing:
        raise ValueError(f"model identity lacks {missing}; pass {', '.join(IDENTITY)} (and inputs, if any)")
    identity = {k: str(model[k]) for k in IDENTITY}
    if model.get("inputs"):
        identity["inputs"] = model["inputs"]
    payload = {"format": FORMAT_VERSION, "scheme": 2, "model": identity, "settings": settings,
               "dataset": dataset_fingerprint}
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


def legacy_key(model: dict[str, Any], settings: dict[str, Any], dataset_fingerprint: str) -> str | None:
    """The key the same entry had before names left the identity (registry key, hub id, fingerprint, dtype and
    inputs; no device), or None when ``model`` lacks a name. Used only to adopt entries written then."""
    if not (model.get("key") and model.get("hf_id")):
        return None
    identity = {k: model[k] for k in ("key", "hf_id", "fingerprint", "dtype")}
    if model.get("inputs"):
        identity["inputs"] = model["inputs"]
    payload = {"format": FORMAT_VERSION, "model": identity, "settings": settings, "dataset": dataset_fingerprint}
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


def key_settings(config: Any, layers: tuple[int, ...]) -> dict[str, Any]:
    """The parts of an ``ExtractionConfig`` that change the stored vectors (with layers resolved)."""
    return {"max_length": int(config.max_length), "poolings": list(config.poolings), "layers": list(layers),
            "shard_size": int(config.shard_size)}


def compute_record(loaded: Any) -> dict[str, Any]:
    """Where a shard was computed: device, compute dtype and torch's CPU thread count (kept with every shard)."""
    import torch

    return {"device": str(loaded.device), "dtype": dtype_name(loaded.dtype), "torch_threads": torch.get_num_threads()}


def run_record(loaded: Any, config: Any, dataset_fingerprint: str, dataset_name: str | None,
               split: str | None) -> dict[str, Any]:
    """One run's record for an entry's manifest: the model (and why its dtype), the config, the dataset, and the
    machine, library versions and git commit from ``layerfusion.provenance`` (the record every consumer uses)."""
    return {
        "model": {"key": loaded.spec.key, "hf_id": loaded.spec.hf_id, "fingerprint": loaded.fingerprint,
                  "dtype": dtype_name(loaded.dtype),
                  "dtype_reason": getattr(loaded, "dtype_reason", None), **input_conventions(loaded.spec)},
        "config": config.as_dict(),
        "dataset": {"name": dataset_name, "split": split, "fingerprint": dataset_fingerprint},
        "git_sha": provenance.git_info()["sha"],
        "hardware": {**provenance.hardware(), **compute_record(loaded)},
        "versions": provenance.versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def input_conventions(spec: Any) -> dict[str, Any]:
    """``{"inputs": {...}}`` for a model with a text prefix or template (part of its identity), else ``{}``."""
    inputs = spec.inputs() if hasattr(spec, "inputs") else {}
    return {"inputs": inputs} if inputs else {}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


class CacheEntry:
    """One key's folder: its manifest and shards. Use inside ``locked()``."""

    def __init__(self, path: Path, key: str, meta: dict[str, Any], n: int, shard_size: int, shape: tuple[int, ...],
                 legacy: tuple[Path, str] | None = None) -> None:
        self.path = path
        self.legacy = legacy
        self.key = key
        self.meta = meta
        self.n = n
        self.shard_size = shard_size
        self.shape = shape
        self.n_shards = -(-n // shard_size)
        self.manifest: dict[str, Any] = {}

    def rows(self, i: int) -> range:
        """Input positions held by shard ``i``."""
        return range(i * self.shard_size, min(self.n, (i + 1) * self.shard_size))

    def shard_path(self, i: int) -> Path:
        return self.path / f"shard-{i:05d}.npy"

    @contextlib.contextmanager
    def locked(self) -> Iterator["CacheEntry"]:
        """Hold an exclusive lock on the entry (one writer at a time), clear dead temp files, load the manifest."""
        with contextlib.ExitStack() as stack:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                stack.enter_context(locked(self.path / ".lock"))
            except OSError as err:
                raise write_error(err, self.path) from err
            remove_temp_files(self.path)
            if self.legacy is not None and not (self.path / MANIFEST).is_file():
                self._adopt(*self.legacy)
            self._load_manifest()
            yield self

    def _adopt(self, folder: Path, old_key: str) -> None:
        """Take over the shards of the entry written under the earlier key scheme (``legacy_key``), if any.

        Shard files are hard-linked (copied where links fail) under the old entry's lock and the manifest is
        rewritten with this key and ``adopted_from``; every shard is still checked by sha256 when read. An old entry
        computed on another device type is left alone (the device is part of the key now).
        """
        if not (folder / MANIFEST).is_file():
            return
        with locked(folder / ".lock"):
            try:
                manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return
            if not isinstance(manifest, dict) or manifest.get("key") != old_key:
                return
            devices = {str((run.get("hardware") or {}).get("device", "cpu")).split(":")[0]
                       for run in manifest.get("runs") or [] if isinstance(run, dict)}
            if devices - {self.meta["model"].get("device", "cpu")}:
                return
            for name in list((manifest.get("shards") or {})):
                source, target = folder / f"shard-{int(name):05d}.npy", self.shard_path(int(name))
                try:
                    os.link(source, target)
                except FileExistsError:
                    pass
                except OSError:
                    try:
                        atomic_write_bytes(target, source.read_bytes())
                    except OSError:
                        manifest["shards"].pop(name)
            manifest.update({"key": self.key, "model": self.meta["model"], "adopted_from": str(folder)})
            try:
                atomic_write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
            except OSError as err:
                raise write_error(err, self.path) from err

    def _fresh_manifest(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "key": self.key, **self.meta, "n": self.n, "shard_size": self.shard_size,
                "n_shards": self.n_shards, "shape_per_text": list(self.shape), "dtype": "float16",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False, "shards": {}, "runs": []}

    def _load_manifest(self) -> None:
        path = self.path / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                reason: str | None = f"is unreadable ({err})"
            else:
                reason = self._manifest_problem(manifest)
            if reason is None:
                self.manifest = manifest
                return
            warnings.warn(f"cache manifest {path} {reason}; rebuilding the entry (its shards are not used)",
                          stacklevel=3)
        self.manifest = self._fresh_manifest()
        self._save_manifest()

    def _manifest_problem(self, manifest: Any) -> str | None:
        """Why a parsed manifest cannot be trusted for this entry (None when it can): every field read is checked."""
        if not isinstance(manifest, dict):
            return f"is not a JSON object but {type(manifest).__name__}"
        if manifest.get("key") != self.key or manifest.get("n") != self.n:
            return "belongs to another key or size"
        expected = {"format": FORMAT_VERSION, "shard_size": self.shard_size, "n_shards": self.n_shards,
                    "shape_per_text": list(self.shape)}
        wrong = [k for k, v in expected.items() if manifest.get(k) != v]
        shards = manifest.get("shards")
        if wrong or not isinstance(shards, dict) or not isinstance(manifest.get("runs", []), list):
            return f"has wrong or missing fields {wrong or ['shards/runs']}"
        for name, info in shards.items():
            i = int(name) if name.isdigit() else -1
            if not 0 <= i < self.n_shards or not isinstance(info, dict) \
                    or not isinstance(info.get("sha256"), str) or len(info["sha256"]) != 64 \
                    or info.get("rows") != [self.rows(i).start, self.rows(i).stop] \
                    or info.get("dtype", "float16") not in STORED_DTYPES \
                    or not isinstance(info.get("n_truncated"), int):
                return f"has a malformed record for shard {name!r}"
        return None

    def _save_manifest(self) -> None:
        try:
            atomic_write_bytes(self.path / MANIFEST, json.dumps(self.manifest, indent=1, default=str).encode())
        except OSError as err:
            raise write_error(err, self.path) from err

    def _drop(self, i: int, reason: str | None) -> None:
        if reason:
            warnings.warn(f"cache shard {self.shard_path(i)} {reason}; rebuilding it", stacklevel=3)
        self.shard_path(i).unlink(missing_ok=True)
        if self.manifest["shards"].pop(str(i), None) is not None:
            self.manifest["complete"] = False
            self._save_manifest()

    def read_shard(self, i: int) -> np.ndarray | None:
        """Shard ``i`` (n_poolings, rows, n_layers, d) in its stored dtype if recorded and intact, else None.

        None means "rebuild it": a recorded shard with a wrong sha256, shape or dtype, a recorded shard whose file is
        gone, or a float16 shard holding inf/NaN (written before the range check) is dropped with a warning; an
        unrecorded file (a run killed between shard and manifest) is dropped silently.
        """
        info = self.manifest["shards"].get(str(i))
        path = self.shard_path(i)
        if info is None:
            path.unlink(missing_ok=True)
            return None
        if not path.is_file():
            self._drop(i, "is recorded in the manifest but missing")
            return None
        data = path.read_bytes()
        digest = sha256_bytes(data)
        if digest != info["sha256"]:
            self._drop(i, f"is corrupt (sha256 {digest[:12]}..., manifest says {info['sha256'][:12]}...)")
            return None
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as err:
            self._drop(i, f"cannot be read ({err})")
            return None
        expected, dtype = (self.shape[0], len(self.rows(i)), *self.shape[1:]), info.get("dtype", "float16")
        if array.shape != expected or array.dtype != np.dtype(dtype):
            self._drop(i, f"has shape {array.shape} {array.dtype}, expected {expected} {dtype}")
            return None
        if first_nonfinite(array) is not None:
            self._drop(i, f"holds inf or NaN: it was stored as {dtype} before the cache checked values, and "
                          f"values beyond float16's range (|x| > {FLOAT16_MAX:.0f}) overflowed")
            return None
        return array

    def write_and_record_shard(self, i: int, array: np.ndarray, *, n_truncated: int,
                               stats: dict[str, Any] | None = None) -> None:
        """Store shard ``i`` (shard file first, then the manifest that records it).

        ``array`` holds float32 vectors; the stored dtype is float16 where that loses nothing beyond float16's
        precision, else float32 (module docstring), and is recorded in the manifest; ``read_shard`` returns it in
        that dtype. A NaN or inf raises ValueError and nothing is written. ``stats`` (seconds, real_tokens,
        padded_tokens of the extraction that produced it) is kept with the shard so the throughput of the run that
        filled the cache can be reported later. A failed write (full disk, read-only folder) raises a one-line
        ``OSError`` and leaves the shards already recorded as they were.
        """
        self.record_shard(i, self.write_shard_file(i, array, n_truncated=n_truncated, stats=stats))

    def write_shard_file(self, i: int, array: np.ndarray, *, n_truncated: int, stats: dict[str, Any] | None = None,
                         compute: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write shard ``i``'s file atomically and return its manifest record, leaving the manifest alone.

        The first half of ``write_and_record_shard``, for workers of a distributed run: they write shards without
        the lock and the process that holds it records them with ``record_shard`` (one manifest writer). The storage
        dtype is decided here (see ``write_and_record_shard``) and is part of the record, as is ``compute`` (device,
        dtype and thread count of the run that produced it, ``compute_record``).
        """
        expected = (self.shape[0], len(self.rows(i)), *self.shape[1:])
        if np.shape(array) != expected:
            raise ValueError(f"shard {i} has shape {np.shape(array)}, expected {expected}")
        try:
            stored = as_stored(array)
        except NonFiniteError as err:
            pooling, row, column = err.index[:3]
            raise ValueError(f"shard {i} of cache entry {self.path} is not written: it holds {err.value} (pooling "
                             f"{self.meta['poolings'][pooling]!r}, layer {self.meta['layers'][column]}, text "
                             f"{self.rows(i).start + row}); only finite vectors are cached, so check the model's "
                             "output (extract.extract_texts names the model, layer and text)") from err
        buffer = io.BytesIO()
        np.save(buffer, stored, allow_pickle=False)
        data = buffer.getvalue()
        try:
            atomic_write_bytes(self.shard_path(i), data)
        except OSError as err:
            raise write_error(err, self.path) from err
        return {"file": self.shard_path(i).name, "sha256": sha256_bytes(data), "dtype": str(stored.dtype),
                "rows": [self.rows(i).start, self.rows(i).stop], "n_truncated": int(n_truncated),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **({"compute": compute} if compute else {}),
                **{k: float(v) for k, v in (stats or {}).items()}}

    def record_shard(self, i: int, record: dict[str, Any]) -> None:
        """Record a shard written by ``write_shard_file`` in the manifest (the second half of
        ``write_and_record_shard``).

        If the manifest cannot be saved (full disk, read-only folder) the record is taken back, so the manifest in
        memory and on disk agree; the unrecorded shard file is deleted and recomputed by the next run.
        """
        self.manifest["shards"][str(i)] = record
        try:
            self._save_manifest()
        except OSError:
            del self.manifest["shards"][str(i)]
            raise

    def add_run_record(self, info: dict[str, Any]) -> None:
        """Append one run's record (``run_record``; a resumed entry lists every run that wrote shards)."""
        self.manifest.setdefault("runs", []).append(info)
        self._save_manifest()

    def finish(self) -> None:
        """Mark the entry complete once every shard is recorded."""
        done = all(str(i) in self.manifest["shards"] for i in range(self.n_shards))
        if done and not self.manifest.get("complete"):
            self.manifest["complete"] = True
            self.manifest["completed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.manifest["n_truncated"] = self.n_truncated
            self._save_manifest()

    @property
    def n_truncated(self) -> int:
        """Texts truncated to max_length, summed over recorded shards."""
        return int(sum(s.get("n_truncated", 0) for s in self.manifest.get("shards", {}).values()))

    def extraction_stats(self) -> dict[str, float]:
        """Seconds, real and padded tokens summed over the recorded shards (NaN where a shard kept none)."""
        shards = list(self.manifest.get("shards", {}).values())
        return {k: float(sum(s.get(k, float("nan")) for s in shards)) if shards else float("nan")
                for k in ("seconds", "real_tokens", "padded_tokens")}

    def describe(self) -> dict[str, Any]:
        """Key, model, settings, dataset and the runs that wrote this entry (with the last run's machine on top)."""
        keys = ("key", "model", "settings", "config", "dataset", "created", "completed", "runs")
        out = {k: self.manifest[k] for k in keys if k in self.manifest}
        if out.get("runs"):
            last = out["runs"][-1]
            out.update({k: last[k] for k in ("git_sha", "hardware", "versions") if k in last})
        return out


class EmbeddingCache:
    """Content-addressed store under ``root``: ``<root>/<sha256 key[:24]>/`` (no name in the path: names are
    metadata, in the manifest)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry(self, model: dict[str, Any], config: Any, layers: tuple[int, ...], dataset_fingerprint: str, *,
              n: int, hidden: int, dataset_name: str = "dataset", split: str = "split") -> CacheEntry:
        """The entry for this model identity, config and dataset (created on first ``locked()``)."""
        if n < 1:
            raise ValueError(f"cache entry needs at least one text, got n={n}")
        settings = key_settings(config, layers)
        key = cache_key(model, settings, dataset_fingerprint)
        meta = {"model": dict(model), "settings": settings, "config": config.as_dict(),
                "dataset": {"name": dataset_name, "split": split, "fingerprint": dataset_fingerprint},
                "poolings": list(config.poolings), "layers": list(layers)}
        shape = (len(config.poolings), len(layers), int(hidden))
        old = legacy_key(model, settings, dataset_fingerprint)
        legacy = None if old is None else (self.root / _slug(str(model["key"])) / old[:24], old)
        return CacheEntry(self.root / key[:24], key, meta, n, int(config.shard_size), shape, legacy)
