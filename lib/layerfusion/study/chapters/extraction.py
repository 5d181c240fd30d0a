"""Chapter 1: extract every layer of every model once into the cache, and look at the scale of each layer."""

from __future__ import annotations

import pandas as pd

from layerfusion import data as data_mod
from layerfusion.study.features import Study


def extract_all(study: Study) -> pd.DataFrame:
    """Extract (or read from the cache) every model x dataset x split of the profile; one summary row each.

    Model by model, so each model is loaded at most once and only one is in memory; rows are listed dataset by
    dataset.
    """
    rows = {}
    for model in study.config.models:
        for dataset in study.config.datasets:
            for split in data_mod.SPLITS:
                emb = study.features(model, dataset, split)
                rows[model, dataset, split] = {"model": model, "dataset": dataset, "split": split, **emb.summary()}
        study.release_model()
    return pd.DataFrame([rows[m, d, s] for d in study.config.datasets for m in study.config.models
                         for s in data_mod.SPLITS])


def norms(study: Study, pooling: str | None = None) -> pd.DataFrame:
    """Mean vector norm per layer (train split) for every model x dataset, with relative depth.

    ``pooling`` defaults to the profile's primary pooling.
    """
    rows = []
    for dataset in study.config.datasets:
        for model in study.config.models:
            emb = study.features(model, dataset, "train")
            values = emb.norms(pooling or study.config.primary_pooling)
            depth = max(len(emb.layers) - 1, 1)
            for i, (layer, value) in enumerate(zip(emb.layers, values)):
                rows.append({"model": model, "dataset": dataset, "layer": int(layer),
                             "rel_depth": i / depth, "norm": float(value)})
    return pd.DataFrame(rows)


def facts(extracted: pd.DataFrame) -> dict[str, float | int]:
    """The numbers the chapter's prose quotes: vectors cached, their size on disk (MiB), truncated texts."""
    return {"n_vectors": int(extracted["n"].sum()), "mb": float(extracted["bytes_on_disk"].sum()) / 2**20,
            "truncated": int(extracted["n_truncated"].sum())}
