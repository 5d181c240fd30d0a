"""Cached embeddings of a dataset split: plan the missing shards, compute each one, write it, assemble.

``embed`` is the one-call API the notebooks use; ``embed_all`` does the same for several splits of one model in one
go. Both run the same four steps, whoever computes the shards:

1. ``plan``: the content-addressed cache entry of (model, vector-changing settings, dataset) and its texts. Under the
   entry's lock the shards that are absent or corrupt are listed in ``EntryPlan.missing``.
2. ``compute_shard``: one shard's texts through ``extract.extract_texts`` (the same length-sorted batching inside a
   shard wherever it runs, so a shard's bytes do not depend on who computed it), written atomically into the cache.
3. The process that holds the lock records each written shard in the entry's manifest (one manifest writer).
4. The shards are read back, sha256-checked, into ``LayerEmbeddings``.

Without an executor the shards are computed in this process, one after another, with the model loaded once and only
if a shard is missing. ``layerfusion.distributed.RayExecutor`` computes them on Ray workers that write into the same
cache; any executor follows the ``Executor`` protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from layerfusion import cache as cache_mod
from layerfusion import extract, models, paths
from layerfusion.checks import texts as check_texts
from layerfusion.data import fingerprint as data_fingerprint
from layerfusion.devices import dtype_name
from layerfusion.extract import ExtractionConfig
from layerfusion.progress import progress_bar

ShardDone = Callable[[int, int, dict[str, Any], dict[str, Any]], None]
"""``record(plan_index, shard, shard_record, run_record)``: how an executor hands a written shard back."""


@dataclass
class LayerEmbeddings:
    """Pooled vectors of one model on one dataset split: pooling -> (n, n_layers_kept, d) array.

    float16, or float32 when some cache shard needed float32 to keep its values (``layerfusion.cache``).
    """

    vectors: dict[str, np.ndarray]
    layers: tuple[int, ...]
    labels: np.ndarray | None
    n_truncated: int
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def _column(self, layer: int) -> int:
        if layer in self.layers:
            return self.layers.index(layer)
        if -len(self.layers) <= layer < 0:
            return len(self.layers) + layer
        raise KeyError(f"layer {layer} was not extracted; kept hidden-state indices are {list(self.layers)}")

    def _pooled(self, pooling: str) -> np.ndarray:
        if pooling not in self.vectors:
            raise KeyError(f"pooling {pooling!r} was not extracted; available: {sorted(self.vectors)}")
        return self.vectors[pooling]

    def layer(self, pooling: str, layer: int) -> np.ndarray:
        """float32 (n, d) vectors of one hidden-state index (negative = position among the kept layers)."""
        return self._pooled(pooling)[:, self._column(layer)].astype(np.float32)

    def stack(self, pooling: str) -> np.ndarray:
        """float32 (n, n_layers_kept, d) vectors of every kept layer."""
        return self._pooled(pooling).astype(np.float32)

    def norms(self, pooling: str) -> np.ndarray:
        """Mean L2 norm of the vectors per kept layer, (n_layers_kept,) float64 (shows the final-norm jump)."""
        values = self._pooled(pooling)
        totals = np.zeros(len(self.layers), dtype=np.float64)
        for start in range(0, len(values), 4096):
            chunk = values[start:start + 4096].astype(np.float32)
            totals += np.linalg.norm(chunk, axis=-1).sum(axis=0)
        return totals / max(len(values), 1)

    def summary(self) -> dict[str, Any]:
        """n, layers, dim, poolings, bytes on disk and n_truncated (one row of the extraction table)."""
        first = next(iter(self.vectors.values()))
        on_disk = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()) if self.path else 0
        run = self.provenance.get("extraction") or {}
        seconds = float(run.get("seconds", float("nan")))
        return {"n": int(first.shape[0]), "layers": len(self.layers), "dim": int(first.shape[-1]),
                "poolings": list(self.vectors), "bytes_on_disk": int(on_disk), "n_truncated": int(self.n_truncated),
                "extract_seconds": seconds, "real_tokens": float(run.get("real_tokens", float("nan"))),
                "texts_per_s": int(first.shape[0]) / seconds if seconds > 0 else float("nan"),
                "tokens_per_s": float(run.get("real_tokens", float("nan"))) / seconds if seconds > 0
                else float("nan")}


@dataclass
class EntryPlan:
    """One cache entry to fill: its texts, where their shards go, and (under the entry's lock) which are missing.

    ``model`` is the identity in the cache key (key, hf_id, weight fingerprint, dtype); ``dataset`` holds its name,
    split and fingerprint. Built by ``plan``; ``embed_all`` fills ``missing``.
    """

    spec: Any
    config: ExtractionConfig
    model: dict[str, str]
    layers: tuple[int, ...]
    dataset: dict[str, Any]
    entry: Any
    cache_dir: str | Path | None = None
    texts: list[str] = field(default_factory=list, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    missing: list[int] = field(default_factory=list)

    def shard_texts(self, i: int) -> list[str]:
        """The texts of shard ``i``, in input order."""
        return [self.texts[j] for j in self.entry.rows(i)]

    def check(self, loaded: Any) -> None:
        """Raise ValueError if ``loaded`` is not the model this entry's key names (other weights or dtype)."""
        dtype = dtype_name(loaded.dtype)
        if loaded.fingerprint != self.model["fingerprint"] or dtype != self.model["dtype"]:
            raise ValueError(f"model {self.spec.key!r}: loaded weights have fingerprint {loaded.fingerprint} in "
                             f"{dtype}, the cache entry expects {self.model['fingerprint']} in {self.model['dtype']}; "
                             f"load the same weights and dtype, or clear {self.entry.path} and retry")


class Executor(Protocol):
    """Computes the missing shards of some entries (see ``layerfusion.distributed.RayExecutor``)."""

    def device(self, requested: str | None) -> str:
        """The device the shards will run on (it sets the default dtype, which is part of the cache key)."""

    def run(self, plans: list[EntryPlan], record: ShardDone, *, progress: bool) -> None:
        """Compute every ``plan.missing`` shard with ``compute_shard`` and hand each back through ``record``."""


def _texts_labels(dataset: Any, split: str | None) -> tuple[Any, list[str], np.ndarray | None]:
    """The split, its texts and labels from a ``datasets.Dataset``, ``DatasetDict`` + split, or a list of str."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, dict)):
        if split is None or split not in dataset:
            raise ValueError(f"dataset is a DatasetDict with splits {list(dataset.keys())}; pass split=<one of them>")
        dataset = dataset[split]
    if hasattr(dataset, "column_names"):
        if "text" not in dataset.column_names:
            raise ValueError(f"dataset has no 'text' column (columns: {dataset.column_names})")
        labels = np.asarray(dataset["label"]) if "label" in dataset.column_names else None
        return dataset, check_texts(dataset["text"]), labels
    return None, check_texts(dataset), None


def _dataset_fingerprint(split_ds: Any, texts: list[str], labels: np.ndarray | None) -> str:
    """``layerfusion.data.fingerprint`` of a ``datasets.Dataset`` (labelled or not), else, for a list of texts,
    sha256 over the texts (and labels when given)."""
    if split_ds is not None:
        return str(data_fingerprint(split_ds))
    h = hashlib.sha256()
    for i, text in enumerate(texts):
        h.update(text.encode("utf-8"))
        h.update(b"\x00" + (str(int(labels[i])) if labels is not None else "").encode() + b"\x1e")
    return "texts-labels:" + h.hexdigest()


def plan(model: Any, dataset: Any, split: str | None = None, config: ExtractionConfig | None = None, *,
         dataset_name: str | None = None, cache_dir: str | Path | None = None, loaded: Any = None,
         device: str | None = None) -> EntryPlan:
    """The cache entry for ``model`` on a dataset split (arguments as in ``embed``), without reading any shard.

    The cache key holds the compute dtype and device type: taken from ``loaded`` when given, else ``config.dtype``
    (else the default for the device) and ``device`` (where the shards will run; default ``config.device`` or this
    machine's best device). Names (registry key, hub id) are metadata only (``cache.cache_key``).
    """
    config = config or ExtractionConfig()
    if isinstance(model, models.LoadedModel):
        loaded, model = model, model.spec
    spec = loaded.spec if loaded is not None else models.get_spec(model)
    split_ds, texts, labels = _texts_labels(dataset, split)
    if loaded is not None:
        fingerprint, dtype, where = loaded.fingerprint, loaded.dtype, models.resolve_device(loaded.device)
    else:
        fingerprint = models.weights_fingerprint(spec, cache_dir)
        where = models.resolve_device(device or config.device)
        dtype = models.resolve_dtype(config.dtype, where)
    model_info = {"key": spec.key, "hf_id": spec.hf_id, "fingerprint": fingerprint, "dtype": dtype_name(dtype),
                  "device": where.type, **cache_mod.input_conventions(spec)}
    layers = extract.resolve_layers(config.layers, spec.n_layers + 1)
    data_fp = _dataset_fingerprint(split_ds, texts, labels)
    store = cache_mod.EmbeddingCache(paths.cache_dir(cache_dir) / "embeddings")
    entry = store.entry(model_info, config, layers, data_fp, n=len(texts), hidden=spec.hidden_size,
                        dataset_name=dataset_name or "dataset", split=split or "split")
    return EntryPlan(spec=spec, config=config, model=model_info, layers=layers,
                     dataset={"name": dataset_name, "split": split, "fingerprint": data_fp}, entry=entry,
                     cache_dir=cache_dir, texts=texts, labels=labels)


def compute_shard(loaded: Any, plan: EntryPlan, i: int, texts: Sequence[str] | None = None, *,
                  progress: bool = False, bar: Any = None) -> dict[str, Any]:
    """Extract shard ``i`` of ``plan`` and write it atomically into the cache; return its manifest record.

    Needs no lock, so a worker of a distributed run can call it; whoever holds the entry's lock records the result
    (``CacheEntry.record_shard``). ``texts`` are the shard's texts when the plan travelled without them.
    """
    texts = plan.shard_texts(i) if texts is None else list(texts)
    if len(texts) != len(plan.entry.rows(i)):
        raise ValueError(f"shard {i} of {plan.entry.path} holds {len(plan.entry.rows(i))} texts, got {len(texts)}")
    result = extract.extract_texts(loaded, texts, plan.config, progress, bar=bar)
    stacked = np.stack([result[p] for p in plan.config.poolings])
    return plan.entry.write_shard_file(i, stacked, n_truncated=result.n_truncated,
                                       stats={"seconds": result.seconds, "real_tokens": result.real_tokens,
                                              "padded_tokens": result.padded_tokens},
                                       compute=cache_mod.compute_record(loaded))


def run_record(loaded: Any, plan: EntryPlan, **extra: Any) -> dict[str, Any]:
    """Who computes ``plan``'s shards, where and with what (``cache.run_record``), plus ``extra`` keys."""
    info = cache_mod.run_record(loaded, plan.config, plan.dataset["fingerprint"], plan.dataset["name"],
                                plan.dataset["split"])
    return {**info, **extra}


def _compute_here(plans: list[EntryPlan], record: ShardDone, loaded: Any, loader: Callable[[], Any] | None,
                  progress: bool) -> None:
    """The in-process executor: load the model once (unless given), then every missing shard in order."""
    first = plans[0]
    if loaded is None:
        loaded = (loader() if loader is not None
                  else models.load(first.spec, device=first.config.device, dtype=first.config.dtype,
                                   cache_dir=first.cache_dir))
    first.check(loaded)
    total = sum(len(p.entry.rows(i)) for p in plans for i in p.missing)
    where = " ".join(str(x) for x in (first.dataset["name"], first.dataset["split"]) if x)
    desc = f"embed {first.spec.key} {where}".rstrip() if len(plans) == 1 else f"embed {first.spec.key} x{len(plans)}"
    with progress_bar(total, desc, progress) as bar:
        for k, p in enumerate(plans):
            run = run_record(loaded, p)
            for i in p.missing:
                record(k, i, compute_shard(loaded, p, i, progress=progress, bar=bar), run)


def _assemble(plan: EntryPlan, shards: dict[int, np.ndarray]) -> LayerEmbeddings:
    entry = plan.entry
    joined = np.concatenate([shards[i] for i in range(entry.n_shards)], axis=1)
    vectors = {p: joined[k] for k, p in enumerate(plan.config.poolings)}
    return LayerEmbeddings(vectors=vectors, layers=plan.layers, labels=plan.labels, n_truncated=entry.n_truncated,
                           provenance={**entry.describe(), "extraction": entry.extraction_stats()}, path=entry.path)


def embed_all(plans: Sequence[EntryPlan], *, executor: Executor | None = None, loaded: Any = None,
              loader: Callable[[], Any] | None = None, progress: bool = True) -> list[LayerEmbeddings]:
    """Fill the missing shards of ``plans`` (one model, any splits) and return one ``LayerEmbeddings`` per plan.

    Every entry is locked for the whole call and its manifest is written only here, as shards come back. Without
    ``executor`` the shards are computed in this process by ``loaded``, or by the model ``loader()`` returns, or by
    ``models.load`` (each only if a shard is missing); an executor loads the model in its own workers.
    """
    plans = list(plans)
    models_seen = {json.dumps(p.model, sort_keys=True) for p in plans}
    if len(models_seen) > 1:
        raise ValueError(f"embed_all takes plans of one model (each model is loaded on its own); got "
                         f"{sorted({p.model['key'] for p in plans})}: call it once per model")
    owners: dict[Path, EntryPlan] = {}
    for p in plans:
        owners.setdefault(p.entry.path, p)
    unique = sorted(owners.values(), key=lambda p: str(p.entry.path))
    shards: dict[Path, dict[int, np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        for p in unique:
            stack.enter_context(p.entry.locked())
            shards[p.entry.path] = {i: p.entry.read_shard(i) for i in range(p.entry.n_shards)}
            p.missing = [i for i, array in shards[p.entry.path].items() if array is None]
        pending = [p for p in unique if p.missing]
        if pending:
            runs: set[int] = set()

            def record(k: int, i: int, info: dict[str, Any], run: dict[str, Any]) -> None:
                if k not in runs:
                    pending[k].entry.add_run_record(run)
                    runs.add(k)
                pending[k].entry.record_shard(i, info)

            if executor is None:
                _compute_here(pending, record, loaded, loader, progress)
            else:
                executor.run(pending, record, progress=progress)
        for p in unique:
            present = shards[p.entry.path]
            for i in p.missing:
                present[i] = p.entry.read_shard(i)
            gone = [i for i in p.missing if present[i] is None]
            if gone:
                raise RuntimeError(f"shards {gone} of {p.entry.path} were not written; run again to compute them")
            p.entry.finish()
    out = []
    for p in plans:
        owner = owners[p.entry.path]
        emb = _assemble(owner, shards[owner.entry.path])
        emb.labels = p.labels
        out.append(emb)
    return out


def embed(model: Any, dataset: Any, split: str | None = None, config: ExtractionConfig | None = None, *,
          dataset_name: str | None = None, cache_dir: str | Path | None = None, progress: bool = True,
          loaded: Any = None, loader: Callable[[], Any] | None = None,
          executor: Executor | None = None) -> LayerEmbeddings:
    """Pooled vectors of every kept layer for a dataset split, from the cache or extracted (only missing shards).

    ``model`` is a registry key, a hub id, a local folder or ``.gguf`` file (see ``models.get_spec``), a
    ``ModelSpec`` or a ``LoadedModel``; ``dataset`` a ``datasets.Dataset`` (a
    ``DatasetDict`` with ``split``, or a list of texts). The model is loaded (``config.device``/``dtype``) only when a
    shard is missing, by ``loader`` when given (so a caller embedding many splits can load each model once). A killed
    run resumes without recomputing finished shards; a corrupt shard is rebuilt with a warning. Cache root:
    ``<cache_dir>/embeddings``. ``executor`` (e.g. ``distributed.RayExecutor``) computes the missing shards elsewhere
    and writes them into the same cache, byte for byte as this process would.
    """
    config = config or ExtractionConfig()
    if isinstance(model, models.LoadedModel):
        loaded = model
    device = executor.device(config.device) if executor is not None and loaded is None else None
    entry_plan = plan(model, dataset, split, config, dataset_name=dataset_name, cache_dir=cache_dir, loaded=loaded,
                      device=device)
    return embed_all([entry_plan], executor=executor, loaded=loaded, loader=loader, progress=progress)[0]
