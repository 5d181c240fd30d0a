"""Chapter 0: the experimental setup — the datasets as this profile uses them, the models and every setting."""

from __future__ import annotations

import pandas as pd

from layerfusion import data as data_mod
from layerfusion.study.features import Study
from layerfusion.study.settings import StudyConfig


def dataset_table(study: Study) -> pd.DataFrame:
    """Per dataset and split: rows used by this profile beside the canonical counts, and the class count."""
    rows = []
    for dataset in study.config.datasets:
        info = data_mod.get_info(dataset)
        dd = study.data(dataset)
        n_classes = len(data_mod.label_names(dd))
        for split in data_mod.SPLITS:
            rows.append({"dataset": dataset, "split": split, "rows used": len(dd[split]),
                         "classes": n_classes,
                         "canonical train": info.n_train, "canonical test": info.n_test})
    return pd.DataFrame(rows)


def class_counts(study: Study) -> pd.DataFrame:
    """Long table (dataset, split, label, count) of the profile's class histograms."""
    frames = []
    for dataset in study.config.datasets:
        counts = data_mod.class_counts(study.data(dataset))
        long = counts.reset_index().melt(id_vars=counts.index.name or "index", var_name="label",
                                         value_name="count")
        long = long.rename(columns={counts.index.name or "index": "split"})
        long.insert(0, "dataset", dataset)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


def settings_table(config: StudyConfig) -> pd.DataFrame:
    """Every setting of the profile, one row per top-level key (blocks shown as their mapping)."""
    return pd.Series({k: str(v) for k, v in config.as_dict().items()}, name="value").to_frame()
