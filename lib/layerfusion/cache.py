"""Content-addressed, crash-safe store of extracted embeddings.

An entry's key is the sha256 of the model (key, hf_id, weight fingerprint, dtype), the extraction settings that
change the vectors (max_length, poolings, kept layers, shard_size) and the dataset fingerprint. Batching settings
(token budget, batch size, device, early stop) are left out: the vectors do not depend on them (tested).

An entry is a folder with float16 ``.npy`` shards (``shard_size`` texts each, in input order, every pooling and
layer: shape (n_poolings, rows, n_layers, d)) and a ``manifest.json`` (config, provenance, per-shard sha256 and
n_truncated, creation time). Every file is written to a temp file and moved into place with ``os.replace``, shard
first and manifest second, so a run killed at any point leaves only finished, recorded shards; the next run resumes
from them. A shard whose sha256, shape or dtype does not match the manifest is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from layerfusion.files import atomic_write_bytes, locked, remove_temp_files, sha256_bytes
from layerfusion.provenance import git_info

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def cache_key(model: dict[str, Any], settings: dict[str, Any], dataset_fingerprint: str) -> str:
    """sha256 over the canonical JSON of the model identity, the vector-changing settings and the dataset."""
    if not dataset_fingerprint or not isinstance(dataset_fingerprint, str):
        raise ValueError(f"dataset_fingerprint must be a non-empty string, got {dataset_fingerprint!r}")
    missing = [k for k in ("key", "hf_id", "fingerprint", "dtype") if not model.get(k)]
    if missing:
        raise ValueError(f"model identity lacks {missing}; pass key, hf_id, fingerprint and dtype")
    identity = {k: model[k] for k in ("key", "hf_id", "fingerprint", "dtype")}
    if model.get("inputs"):  # a model's text prefix / template; absent for plain models, so their keys stay put
        identity["inputs"] = model["inputs"]
    payload = {"format": FORMAT_VERSION, "model": identity, "settings": settings, "dataset": dataset_fingerprint}
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


def key_settings(config: Any, layers: tuple[int, ...]) -> dict[str, Any]:
    """The parts of an ``ExtractionConfig`` that change the stored vectors (with layers resolved)."""
    return {"max_length": int(config.max_length), "poolings": list(config.poolings), "layers": list(layers),
            "shard_size": int(config.shard_size)}


def model_fingerprint(spec: Any, cache_dir: str | Path | None = None) -> str:
    """The weight fingerprint ``models.load`` would report, computed without loading (or converting) the model."""
    from layerfusion import models

    return models.weights_fingerprint(spec, cache_dir)


def provenance(loaded: Any, config: Any, dataset_fingerprint: str, dataset_name: str | None,
               split: str | None) -> dict[str, Any]:
    """Who computed an entry, where and with what: git sha, hardware, library versions, device, dtype and why
    (``LoadedModel.dtype_reason``), time."""
    import torch
    import transformers

    import layerfusion

    device = loaded.device
    name = torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else platform.processor()
    return {
        "model": {"key": loaded.spec.key, "hf_id": loaded.spec.hf_id, "fingerprint": loaded.fingerprint,
                  "dtype": str(loaded.dtype).replace("torch.", ""),
                  "dtype_reason": getattr(loaded, "dtype_reason", None), **input_conventions(loaded.spec)},
        "config": config.as_dict(),
        "dataset": {"name": dataset_name, "split": split, "fingerprint": dataset_fingerprint},
        "git_sha": git_info()["sha"],
        "hardware": {"platform": platform.platform(), "device": str(device), "device_name": name,
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"layerfusion": layerfusion.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
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

    def __init__(self, path: Path, key: str, meta: dict[str, Any], n: int, shard_size: int, shape: tuple[int, ...]
                 ) -> None:
        self.path = path
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
        self.path.mkdir(parents=True, exist_ok=True)
        with locked(self.path / ".lock"):
            remove_temp_files(self.path)
            self._load_manifest()
            yield self

    def _fresh_manifest(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "key": self.key, **self.meta, "n": self.n, "shard_size": self.shard_size,
                "n_shards": self.n_shards, "shape_per_text": list(self.shape), "dtype": "float16",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False, "shards": {}, "runs": []}

    def _load_manifest(self) -> None:
        path = self.path / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                warnings.warn(f"cache manifest {path} is unreadable ({err}); rebuilding the entry", stacklevel=3)
                manifest = None
            if manifest is not None and manifest.get("key") == self.key and manifest.get("n") == self.n:
                self.manifest = manifest
                return
            if manifest is not None:
                warnings.warn(f"cache manifest {path} belongs to another key or size; rebuilding the entry",
                              stacklevel=3)
        self.manifest = self._fresh_manifest()
        self._save_manifest()

    def _save_manifest(self) -> None:
        atomic_write_bytes(self.path / MANIFEST, json.dumps(self.manifest, indent=1, default=str).encode())

    def _drop(self, i: int, reason: str | None) -> None:
        if reason:
            warnings.warn(f"cache shard {self.shard_path(i)} {reason}; rebuilding it", stacklevel=3)
        self.shard_path(i).unlink(missing_ok=True)
        if self.manifest["shards"].pop(str(i), None) is not None:
            self.manifest["complete"] = False
            self._save_manifest()

    def read_shard(self, i: int) -> np.ndarray | None:
        """Shard ``i`` as float16 (n_poolings, rows, n_layers, d) if recorded and intact, else None (to rebuild).

        A recorded shard with a wrong sha256, shape or dtype, or a recorded shard whose file is gone, is dropped
        with a warning; an unrecorded file (a run killed between shard and manifest) is dropped silently.
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
        if digest != info.get("sha256"):
            self._drop(i, f"is corrupt (sha256 {digest[:12]}..., manifest says {str(info.get('sha256'))[:12]}...)")
            return None
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as err:
            self._drop(i, f"cannot be read ({err})")
            return None
        expected = (self.shape[0], len(self.rows(i)), *self.shape[1:])
        if array.shape != expected or array.dtype != np.float16:
            self._drop(i, f"has shape {array.shape} {array.dtype}, expected {expected} float16")
            return None
        return array

    def write_shard(self, i: int, array: np.ndarray, *, n_truncated: int, stats: dict[str, Any] | None = None
                    ) -> None:
        """Store shard ``i`` (float16, shard file first, then the manifest that records its sha256).

        ``stats`` (seconds, real_tokens, padded_tokens of the extraction that produced it) is kept with the shard so
        the throughput of the run that filled the cache can be reported later.
        """
        self.record_shard(i, self.store_shard(i, array, n_truncated=n_truncated, stats=stats))

    def store_shard(self, i: int, array: np.ndarray, *, n_truncated: int, stats: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        """Write shard ``i``'s file atomically and return its manifest record, leaving the manifest alone.

        The first half of ``write_shard``, for workers of a distributed run: they write shards without the lock and
        the process that holds it records them with ``record_shard`` (one manifest writer).
        """
        expected = (self.shape[0], len(self.rows(i)), *self.shape[1:])
        if array.shape != expected:
            raise ValueError(f"shard {i} has shape {array.shape}, expected {expected}")
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float16), allow_pickle=False)
        data = buffer.getvalue()
        atomic_write_bytes(self.shard_path(i), data)
        return {"file": self.shard_path(i).name, "sha256": sha256_bytes(data),
                "rows": [self.rows(i).start, self.rows(i).stop], "n_truncated": int(n_truncated),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{k: float(v) for k, v in (stats or {}).items()}}

    def record_shard(self, i: int, record: dict[str, Any]) -> None:
        """Record a shard written by ``store_shard`` in the manifest (the second half of ``write_shard``)."""
        self.manifest["shards"][str(i)] = record
        self._save_manifest()

    def record_provenance(self, info: dict[str, Any]) -> None:
        """Append one run's provenance (a resumed entry lists every run that wrote shards)."""
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

    def provenance(self) -> dict[str, Any]:
        """Key, model, settings, dataset and the runs that wrote this entry."""
        keys = ("key", "model", "settings", "config", "dataset", "created", "completed", "runs")
        out = {k: self.manifest[k] for k in keys if k in self.manifest}
        if out.get("runs"):
            last = out["runs"][-1]
            out.update({k: last[k] for k in ("git_sha", "hardware", "versions") if k in last})
        return out


class EmbeddingCache:
    """Content-addressed store under ``root``: ``<root>/<model key>/<sha256 key[:24]>/``."""

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
        return CacheEntry(self.root / _slug(str(model["key"])) / key[:24], key, meta, n, int(config.shard_size),
                          shape)
