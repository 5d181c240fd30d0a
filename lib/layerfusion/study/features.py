"""The study's configuration and its feature store: one profile -> data, extraction configs and cached features.

Every chapter starts from a ``StudyConfig`` (a profile from ``params/<name>.yaml``) and reads features through
``Study.features``, which extracts on first use and reads the content-addressed cache afterwards.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import yaml

from layerfusion import data as data_mod
from layerfusion import extract, models
from layerfusion.study import profiles

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class StudyConfig:
    """All knobs of one profile; part of every results row through ``run``."""

    profile: str
    seed: int
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    validation_size: float
    subsample: dict[str, dict[str, int]] = field(default_factory=dict)
    max_length: dict[str, int] = field(default_factory=dict)
    poolings: tuple[str, ...] = ("mean", "last", "mean_pad")
    token_budget: int = 4096
    dtype: str | None = None
    device: str | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    authors_protocol: dict[str, Any] = field(default_factory=dict)
    greedy: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "StudyConfig":
        """Read ``params/<name>.yaml``; keyword overrides (e.g. papermill parameters) win when not None."""
        raw = dict(profiles.load(name))
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"profile {name!r}: unknown keys {unknown}; known keys are {sorted(known)}")
        for key in ("models", "datasets", "poolings"):
            if key in raw:
                value = raw[key]
                if isinstance(value, str):  # papermill's -p passes "['a', 'b']" (or "a") as one string
                    value = yaml.safe_load(value)
                raw[key] = tuple([value] if isinstance(value, str) else value)
        return cls(**raw)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (recorded with every result file)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def extraction_config(self, dataset: str) -> "extract.ExtractionConfig":
        """The extraction config for one dataset (max_length is per dataset)."""
        return extract.ExtractionConfig(
            max_length=int(self.max_length.get(dataset, 512)),
            poolings=tuple(self.poolings),
            token_budget=int(self.token_budget),
            dtype=self.dtype,
            device=self.device,
        )


class Study:
    """Data and features of one profile, loaded lazily and memoised for the life of the object."""

    def __init__(self, config: StudyConfig, *, cache_dir: str | None = None, progress: bool = True) -> None:
        # Hub ids and paths get short names that every engine function accepts, so tables read "my-model".
        self.config = replace(config, models=tuple(models.add(config.models)),
                              datasets=tuple(data_mod.add(config.datasets)))
        self.cache_dir = cache_dir
        self.progress = progress
        self._data: dict[str, Any] = {}
        self._features: dict[tuple[str, str, str], Any] = {}
        self._loaded: tuple[str, Any] | None = None
        self.timings: list[dict[str, Any]] = []

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

    def data(self, dataset: str):
        """The profile's ``DatasetDict`` for ``dataset`` (validation carved from train, subsampled, seeded)."""
        if dataset not in self._data:
            sub = self.config.subsample.get(dataset, {})
            self._data[dataset] = data_mod.load(
                dataset,
                validation_size=self.config.validation_size,
                seed=self.config.seed,
                max_train=sub.get("train"),
                max_validation=sub.get("validation"),
                max_test=sub.get("test"),
            )
        return self._data[dataset]

    def labels(self, dataset: str, split: str) -> np.ndarray:
        """Integer labels of one split."""
        return np.asarray(self.data(dataset)[split]["label"])

    def features(self, model: str, dataset: str, split: str) -> "extract.LayerEmbeddings":
        """Pooled vectors of every layer for one split (cached on disk and in memory)."""
        key = (model, dataset, split)
        if key not in self._features:
            start = time.perf_counter()
            emb = extract.embed(
                model,
                self.data(dataset)[split],
                dataset_name=dataset,
                split=split,
                config=self.config.extraction_config(dataset),
                cache_dir=self.cache_dir,
                progress=self.progress,
                loader=lambda: self._model(model),
            )
            self.timings.append({"model": model, "dataset": dataset, "split": split,
                                 "seconds_in_call": time.perf_counter() - start})
            self._features[key] = emb
        return self._features[key]

    def layer_matrix(self, model: str, dataset: str, split: str, layer: int, pooling: str = "mean") -> np.ndarray:
        """float32 (n, d) vectors of one layer."""
        return self.features(model, dataset, split).layer(pooling, layer)

    def extract_all(self) -> pd.DataFrame:
        """Extract (or read from cache) every model x dataset x split of the profile; one summary row each.

        Model by model, so each model is loaded at most once and only one is in memory.
        """
        rows = {}
        for model in self.config.models:
            for dataset in self.config.datasets:
                for split in SPLITS:
                    emb = self.features(model, dataset, split)
                    rows[model, dataset, split] = {"model": model, "dataset": dataset, "split": split,
                                                   **emb.summary()}
            self.release_model()
        return pd.DataFrame([rows[m, d, s] for d in self.config.datasets for m in self.config.models
                             for s in SPLITS])

    def norms(self, pooling: str = "mean") -> pd.DataFrame:
        """Mean vector norm per layer (train split) for every model x dataset, with relative depth."""
        rows = []
        for dataset in self.config.datasets:
            for model in self.config.models:
                emb = self.features(model, dataset, "train")
                norms = emb.norms(pooling)
                depth = max(len(emb.layers) - 1, 1)
                for i, (layer, value) in enumerate(zip(emb.layers, norms)):
                    rows.append({"model": model, "dataset": dataset, "layer": int(layer),
                                 "rel_depth": i / depth, "norm": float(value)})
        return pd.DataFrame(rows)

    def dataset_table(self) -> pd.DataFrame:
        """Per dataset and split: rows used by this profile beside the canonical counts, and the class count."""
        rows = []
        for dataset in self.config.datasets:
            info = data_mod.get_info(dataset)
            dd = self.data(dataset)
            n_classes = len(data_mod.label_names(dd))
            for split in SPLITS:
                rows.append({"dataset": dataset, "split": split, "rows used": len(dd[split]),
                             "classes": n_classes,
                             "canonical train": info.n_train, "canonical test": info.n_test})
        return pd.DataFrame(rows)

    def class_counts(self) -> pd.DataFrame:
        """Long table (dataset, split, label, count) of the profile's class histograms."""
        frames = []
        for dataset in self.config.datasets:
            counts = data_mod.class_counts(self.data(dataset))
            long = counts.reset_index().melt(id_vars=counts.index.name or "index", var_name="label",
                                             value_name="count")
            long = long.rename(columns={counts.index.name or "index": "split"})
            long.insert(0, "dataset", dataset)
            frames.append(long)
        return pd.concat(frames, ignore_index=True)
