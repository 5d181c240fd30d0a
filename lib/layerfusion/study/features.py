"""The study's feature store: one profile's data and cached features, loaded lazily.

Every chapter starts from a ``StudyConfig`` (``layerfusion.study.settings``: a profile as typed settings) and reads
features through ``Study.features``, which extracts on first use and reads the content-addressed cache afterwards.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from layerfusion import data as data_mod
from layerfusion import embeddings, extract, fitcache, models, paths
from layerfusion.study import workspace
from layerfusion.study.settings import StudyConfig

__all__ = ["Study", "StudyConfig"]


class Study:
    """Data and features of one profile, loaded lazily and memoised for the life of the object.

    ``transform(model, dataset, split, embeddings)``, when given, is applied to every features read before it is
    memoised (only its result is kept): the robustness chapter reruns the analyses on perturbed features this way.
    ``fits`` is the persisted fit cache beside the embeddings (``<cache>/fits``, ``layerfusion.fitcache``): every
    chapter fits through it, so a re-run computes only what its changes invalidate; pass ``fits`` to share one (and
    its hit counts) between studies.
    """

    def __init__(self, config: StudyConfig, *, cache_dir: str | None = None, progress: bool = True,
                 transform: Callable[[str, str, str, Any], Any] | None = None,
                 fits: fitcache.FitCache | None = None) -> None:
        # Hub ids and paths get short names that every engine function accepts, so tables read "my-model".
        names = dict(zip(config.datasets, data_mod.add(config.datasets)))
        self.config = config.replace(
            models=tuple(models.add(config.models)), datasets=tuple(names.values()),
            subsample={names.get(k, k): v for k, v in config.subsample.items()},
            max_length={names.get(k, k): v for k, v in config.max_length.items()})
        self.cache_dir = cache_dir
        self.progress = progress
        self.transform = transform
        self._executor: Any = None
        self._data: dict[str, Any] = {}
        self._features: dict[tuple[str, str, str], Any] = {}
        self._loaded: tuple[str, Any] | None = None
        self.timings: list[dict[str, Any]] = []
        self.fits = fits if fits is not None else fitcache.FitCache(paths.cache_dir(cache_dir) / "fits")

    def _model(self, model: str) -> Any:
        """The loaded model ``model``, loaded once and kept until another model is asked for (one in memory)."""
        if self._loaded is None or self._loaded[0] != model:
            self.release_model()
            cfg = self.config
            self._loaded = (model, models.load(model, device=cfg.device, dtype=cfg.dtype, cache_dir=self.cache_dir))
        return self._loaded[1]

    def release_model(self) -> None:
        """Drop the model kept for extraction (its memory is freed once nothing else holds it)."""
        self._loaded = None
        gc.collect()

    def executor(self) -> Any:
        """The profile's executor for missing shards: None (this process) or a ``distributed.RayExecutor``, started on
        first use and kept until ``close``."""
        settings = self.config.executor
        if settings.kind == "ray" and self._executor is None:
            from layerfusion import distributed

            self._executor = distributed.RayExecutor(settings.address, workers=settings.workers)
        return self._executor

    def close(self) -> None:
        """Shut down the executor this study started (a no-op for the local one)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def extraction_config(self, dataset: str) -> "extract.ExtractionConfig":
        """The profile's extraction config of ``dataset``; with a Ray executor, for the device its workers run on
        (the device decides the dtype, which is part of the cache key)."""
        config = self.config.extraction_config(dataset)
        executor = self.executor()
        return config if executor is None else replace(config, device=executor.device(config.device))

    def fill(self, model: str) -> None:
        """Compute every missing cache shard of ``model`` for all datasets and splits of the profile in one call: one
        model load here, or one actor pool with the Ray executor; later ``features`` calls read the cache."""
        plans = [embeddings.plan(model, self.data(dataset)[split], split, self.extraction_config(dataset),
                                 dataset_name=dataset, cache_dir=self.cache_dir)
                 for dataset in self.config.datasets for split in data_mod.SPLITS]
        embeddings.embed_all(plans, executor=self.executor(), loader=lambda: self._model(model),
                             progress=self.progress)

    def data(self, dataset: str):
        """The profile's ``DatasetDict`` for ``dataset`` (validation carved from train, subsampled, seeded)."""
        if dataset not in self._data:
            sub = self.config.subsample_of(dataset)
            self._data[dataset] = data_mod.load(
                dataset,
                data_dir=workspace.data_dir(),
                validation_size=self.config.validation_size,
                seed=self.config.seed,
                max_train=sub.train,
                max_validation=sub.validation,
                max_test=sub.test,
            )
        return self._data[dataset]

    def labels(self, dataset: str, split: str) -> np.ndarray:
        """Integer labels of one split."""
        return np.asarray(self.data(dataset)[split]["label"])

    def features(self, model: str, dataset: str, split: str) -> "embeddings.LayerEmbeddings":
        """Pooled vectors of every layer for one split (cached on disk and in memory)."""
        key = (model, dataset, split)
        if key not in self._features:
            start = time.perf_counter()
            emb = embeddings.embed(
                model,
                self.data(dataset)[split],
                dataset_name=dataset,
                split=split,
                config=self.extraction_config(dataset),
                cache_dir=self.cache_dir,
                progress=self.progress,
                loader=lambda: self._model(model),
            )
            self.timings.append({"model": model, "dataset": dataset, "split": split,
                                 "seconds_in_call": time.perf_counter() - start})
            self._features[key] = emb if self.transform is None else self.transform(model, dataset, split, emb)
        return self._features[key]

    def layer_matrix(self, model: str, dataset: str, split: str, layer: int, pooling: str | None = None) -> np.ndarray:
        """float32 (n, d) vectors of one layer (``pooling`` defaults to the profile's primary pooling)."""
        return self.features(model, dataset, split).layer(pooling or self.config.primary_pooling, layer)

    def layer_stack(self, model: str, dataset: str, split: str, pooling: str | None = None) -> np.ndarray:
        """The stored (n, layers, d) vectors of every layer of one split, as cached (float16)."""
        return self.features(model, dataset, split).vectors[pooling or self.config.primary_pooling]

    def width(self, model: str, dataset: str) -> int:
        """The vector width of ``model`` (its hidden size), read from the cached train features."""
        return int(self.layer_stack(model, dataset, "train").shape[-1])
