"""Chapter 0: the experimental setup — the datasets as this profile uses them, the models, every setting, and the
power analysis that sized the splits: the smallest accuracy difference between two classifiers (two layers) that
McNemar's test detects on each split (``stats.mcnemar_mde``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from layerfusion import data as data_mod
from layerfusion import stats
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
    """Every setting of the profile, one row per top-level key (blocks written out for reading, not as a dict)."""
    return pd.Series({k: _readable(v) for k, v in config.as_dict().items()}, name="value").to_frame()


def _readable(value: Any) -> str:
    """A setting for reading: a mapping as ``key: value; ...`` (nested ones in parentheses), a list comma-separated,
    None and an empty mapping or list as "none"."""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: " + (f"({_readable(v)})" if isinstance(v, dict) and v else _readable(v))
                         for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(v) for v in value)
    return str(value)


def _split_sizes(study: Study, dataset: str) -> dict[str, int]:
    """Items each comparison is made on: the test split, the validation split, and train and validation pooled (the
    selection items under cross-validation)."""
    dd = study.data(dataset)
    return {"test": len(dd["test"]), "validation": len(dd["validation"]),
            "cross-validation": len(dd["train"]) + len(dd["validation"])}


def _mde_points(n: int, discordance: float, alpha: float, power: float) -> float:
    return stats.mcnemar_mde(n, discordance, alpha, power) * 100 if np.isfinite(discordance) else float("nan")


def power_table(study: Study) -> pd.DataFrame:
    """Per dataset: the items each comparison is made on and the minimum detectable accuracy difference (points) of
    McNemar's test there, at the profile's ``power.alpha`` and ``power.power``, at the planning discordance between
    two layers (``power.discordance``; NaN for a dataset without one). The test split judges the claims; the
    validation split (or, under cross-validation, train and validation pooled) chooses the layer.

    The claims correct for multiplicity, so the test split's MDE is also given at Holm's first-step level: over
    the cells of claim 1's per-cell McNemar tests (models x datasets) and over the datasets of its per-dataset
    tests (``alpha / D``): the difference those corrected tests detect with the target power."""
    cfg = study.config
    pw = cfg.power
    n_cells, n_datasets = len(cfg.models) * len(cfg.datasets), len(cfg.datasets)
    rows = []
    for dataset in cfg.datasets:
        sizes = _split_sizes(study, dataset)
        psi = pw.discordance.get(dataset, float("nan"))
        rows.append({"dataset": dataset, "planning discordance": psi,
                     **{f"{split} items": n for split, n in sizes.items()},
                     **{f"MDE {split} (points)": round(_mde_points(n, psi, pw.alpha, pw.power), 2)
                        for split, n in sizes.items()},
                     f"MDE test, Holm over {n_datasets} datasets (points)":
                         round(_mde_points(sizes["test"], psi, pw.alpha / n_datasets, pw.power), 2),
                     f"MDE test, Holm over {n_cells} cells (points)":
                         round(_mde_points(sizes["test"], psi, pw.alpha / n_cells, pw.power), 2)})
    return pd.DataFrame(rows)


def mde_grid(study: Study) -> pd.DataFrame:
    """The minimum detectable difference (points) over ``power.discordance_grid``, per dataset and split (rows) and
    discordance rate (columns), so the plan does not hinge on one planning rate."""
    pw = study.config.power
    rows = {(dataset, split): {f"ψ = {psi:g}": round(_mde_points(n, psi, pw.alpha, pw.power), 2)
                               for psi in pw.discordance_grid}
            for dataset in study.config.datasets for split, n in _split_sizes(study, dataset).items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["dataset", "items"])


POWER_FORMATS = {key: ".1f" for key in ("mde_test_min", "mde_test_max", "mde_validation_min", "mde_validation_max",
                                        "mde_cv_min", "mde_cv_max", "mde_test_holm_cells_max",
                                        "mde_test_holm_datasets_max")}
"""How the prose shows ``power_facts`` (MDEs to a tenth of a point)."""


def power_facts(table: pd.DataFrame, config: StudyConfig) -> dict[str, Any]:
    """The numbers the setup chapter's prose quotes: the test and validation MDE ranges over datasets (points), the
    level, the power and the planning discordance range."""
    return {"alpha": config.power.alpha, "power_percent": round(config.power.power * 100),
            "discordance_min": float(table["planning discordance"].min()),
            "discordance_max": float(table["planning discordance"].max()),
            "mde_test_min": float(table["MDE test (points)"].min()),
            "mde_test_max": float(table["MDE test (points)"].max()),
            "mde_validation_min": float(table["MDE validation (points)"].min()),
            "mde_validation_max": float(table["MDE validation (points)"].max()),
            "mde_cv_min": float(table["MDE cross-validation (points)"].min()),
            "mde_cv_max": float(table["MDE cross-validation (points)"].max()),
            "mde_test_holm_cells_max": float(table.filter(like="cells (points)").iloc[:, 0].max()),
            "mde_test_holm_datasets_max": float(table.filter(like="datasets (points)").iloc[:, 0].max())}
