"""Labelled text as a ``datasets.DatasetDict``: the paper's four datasets, a user's files, or a user's DatasetDict.

``load`` takes a dataset name (SST-2, MR, R8, R52 from the data directory, or a name given by ``add``), a folder with
train and test files (CSV, TSV, JSONL or parquet with ``text`` and ``label`` columns), a single file with a
``test_size`` rule, or a ``DatasetDict``; it returns splits ``train`` / ``validation`` / ``test`` with columns
``text``, ``label`` (a ``ClassLabel``) and ``idx`` (the row's position in its source file). ``fingerprint`` (part of
every embedding cache key), ``label_names`` and ``class_counts`` describe a loaded dataset.

One module per job below this one: ``registry`` (the four datasets' ``DatasetInfo``, user names, checksums, hub
export), ``readers`` (split files and rows, checked), ``splits`` (seeded, stratified splitting).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from layerfusion.data import readers
from layerfusion.data import registry as _registry
from layerfusion.data.readers import LABELS_FILE, Rows
from layerfusion.data.registry import (DATASETS, SPLIT_FILES, TEXTGCN_REPO, DatasetInfo, add, export_from_hub,
                                       get_info, sha256_file)
from layerfusion.data.splits import carve_validation, split_test, subsample

SPLITS = ("train", "validation", "test")

__all__ = ["DATASETS", "LABELS_FILE", "SPLITS", "SPLIT_FILES", "TEXTGCN_REPO", "DatasetInfo", "add",
           "carve_validation", "class_counts", "export_from_hub", "fingerprint", "get_info", "label_names", "load",
           "sha256_file", "split_test", "subsample"]


def _named(info: DatasetInfo, data_dir: str | os.PathLike | None, verify: bool) -> tuple[dict[str, Rows], list[str]]:
    """One of the paper's datasets from the data directory, checked against its checksums and canonical counts."""
    folder = _registry.dataset_dir(info, data_dir)
    if verify:
        _registry.verify_checksums(info, folder)
    names = readers.read_labels(folder / LABELS_FILE)
    _registry.check_classes(info, folder / LABELS_FILE, names)
    rows = {split: readers.read_jsonl(folder / filename) for split, filename in SPLIT_FILES.items()}
    for split, filename in SPLIT_FILES.items():
        _registry.check_count(info, split, len(rows[split].texts), folder / filename, strict=verify)
    return rows, names


def _split_file(rows: Rows, y: np.ndarray, names: list[str], test_size: float | int, seed: int
                ) -> dict[str, np.ndarray]:
    """Train and test positions of one file, stratified and seeded; a class with a single row is named, with it."""
    counts = np.bincount(y, minlength=len(names))
    lonely = np.flatnonzero(counts == 1)
    if len(lonely):
        where = rows.where(int(np.flatnonzero(y == lonely[0])[0]))
        raise ValueError(f"class {names[lonely[0]]!r} has only one row ({where}); a stratified test split needs at "
                         "least two rows of every class: add rows or drop the class")
    train, test = split_test(y, test_size, len(names), seed)
    return {"train": train, "test": test}


def _labels_beside(path: Path) -> list[str] | None:
    return readers.read_labels(path / LABELS_FILE) if (path / LABELS_FILE).is_file() else None


def _read(source: Any, data_dir: str | os.PathLike | None, verify: bool,
          registry: Mapping[str, DatasetInfo] | None, test_size: float | int | None, seed: int
          ) -> tuple[dict[str, tuple[list[str], np.ndarray, np.ndarray]], list[str], dict[str, Rows]]:
    """Raw splits (texts, class ids, positions in the source), label names, and the rows (for error messages)."""
    if isinstance(source, DatasetDict):
        if "train" not in source or "test" not in source:
            raise ValueError(f"the DatasetDict has splits {list(source)}; it needs 'train' and 'test' (and may have "
                             "'validation')")
        rows = {s: readers.read_split(s, source[s]) for s in SPLITS if s in source}
        feature = source["train"].features.get("label")
        given = list(feature.names) if isinstance(feature, ClassLabel) else None
    else:
        info = _registry.find_info(str(source), registry)
        path = Path(info.path) if info is not None and info.path else Path(str(source)).expanduser()
        if info is None and not path.exists():
            get_info(str(source), registry)
        if test_size is not None and not path.is_file():
            raise ValueError(f"test_size applies to a single file; {source!r} has its own train and test splits")
        if info is not None and info.path is None:
            rows, given = _named(info, data_dir, verify)
        elif path.is_dir():
            rows = {split: readers.read_file(file) for split, file in readers.split_files(path).items()}
            given = _labels_beside(path)
        elif test_size is None:
            raise ValueError(f"{path} is one file; pass test_size= (a fraction or a row count) to split it into train "
                             "and test, stratified and seeded, or give a folder with train and test files")
        else:
            rows, given = {"all": readers.read_file(path)}, _labels_beside(path.parent)
    names, ids = readers.to_classes(rows, given)
    if "all" in rows:
        every = rows["all"]
        positions = _split_file(every, ids["all"], names, test_size, seed)
        return ({s: ([every.texts[i] for i in pos], ids["all"][pos], pos) for s, pos in positions.items()}, names,
                {s: every for s in positions})
    return {s: (rows[s].texts, ids[s], np.arange(len(ids[s]))) for s in rows}, names, rows


def _check_classes(raw: Mapping[str, tuple[list[str], np.ndarray, np.ndarray]], names: list[str],
                   rows: Mapping[str, Rows]) -> None:
    present = np.unique(raw["train"][1])
    if len(present) < 2:
        only = names[int(present[0])] if len(present) else None
        raise ValueError(f"{rows['train'].source}: every train row has label {only!r}; a classifier needs at least "
                         "two classes")


def _features(names: list[str]) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(names)), "idx": Value("int64")})


def load(source: str | os.PathLike | DatasetDict, data_dir: str | os.PathLike | None = None, *,
         validation_size: float | int = 0.1, seed: int = 0, max_train: int | None = None,
         max_validation: int | None = None, max_test: int | None = None, verify: bool = True,
         registry: Mapping[str, DatasetInfo] | None = None, test_size: float | int | None = None) -> DatasetDict:
    """One dataset as a ``DatasetDict`` (``train`` / ``validation`` / ``test``; columns ``text``, ``label``, ``idx``).

    ``source`` is a dataset name, a folder with train and test files (and optionally validation and labels.json),
    one file split by ``test_size`` (a fraction or a row count; stratified, seeded by ``seed``), or a
    ``DatasetDict`` with ``train`` and ``test``. Checks: for the paper's datasets every file's sha256 against
    ``DATASETS`` (skipped with ``verify=False``) and the canonical row counts (an error, or a warning with
    ``verify=False``); for every source every row (non-empty text, a label that is a class), and at least two
    classes in train. Errors name the file and the line or row.

    Splitting, deterministic for a ``seed``:

    1. validation is carved from train, stratified (see ``carve_validation``), unless the source has its own;
       ``validation_size`` is a fraction of train (float) or a row count (int); 0 leaves validation empty;
    2. ``max_train`` / ``max_validation`` / ``max_test`` then subsample each split, stratified, keeping one row of
       every class present (see ``subsample``); a budget smaller than the number of classes present in the split is
       an error, since it would leave a class without a row. Each stage and split has its own random stream, so
       e.g. the test subsample does not depend on ``validation_size``.

    Rows keep source order (``idx`` is the 0-based row of the split's file; carved validation rows index the train
    file; for one file split by ``test_size``, every ``idx`` indexes that file). Texts are verbatim (trailing spaces
    kept). ``registry`` replaces ``DATASETS`` (tests).
    """
    raw, names, rows = _read(source, data_dir, verify, registry, test_size, seed)
    _check_classes(raw, names, rows)
    train_texts, train_y, train_idx = raw["train"]
    if "validation" in raw:
        train_pos, val_pos = np.arange(len(train_y)), np.arange(len(raw["validation"][1]))
    else:
        train_pos, val_pos = carve_validation(train_y, validation_size, len(names), seed)
        raw["validation"] = raw["train"]
    positions = {"train": train_pos, "validation": val_pos, "test": np.arange(len(raw["test"][1]))}
    limits = {"train": max_train, "validation": max_validation, "test": max_test}
    features = _features(names)
    out = {}
    for stream, split in enumerate(SPLITS, start=1):
        texts, y, idx = raw[split]
        whole = positions[split]
        pos = whole[subsample(y[whole], limits[split], len(names), seed, stream=stream)]
        lost = sorted(set(y[whole].tolist()) - set(y[pos].tolist()))
        if lost:
            present = len(set(y[whole].tolist()))
            raise ValueError(f"max_{split}={limits[split]} leaves {len(lost)} of the {present} classes of the {split} "
                             f"split without a row (e.g. {names[lost[0]]!r}); pass max_{split} >= {present} or None")
        out[split] = Dataset.from_dict({"text": [texts[i] for i in pos], "label": y[pos].tolist(),
                                        "idx": idx[pos].astype(np.int64).tolist()}, features=features)
    return DatasetDict(out)


def fingerprint(split: Dataset) -> str:
    """sha256 over (idx, text, label) of every row, in order; stable across processes (part of cache keys).

    An unlabelled split (no ``label`` column) hashes ``null`` as every label, so it can be embedded too.
    """
    if "text" not in split.column_names:
        raise ValueError(f"dataset split lacks a 'text' column (has {split.column_names})")
    texts = list(split["text"])
    labels = list(split["label"]) if "label" in split.column_names else [None] * len(texts)
    idx = list(split["idx"]) if "idx" in split.column_names else list(range(len(texts)))
    h = hashlib.sha256()
    for i, text, label in zip(idx, texts, labels):
        h.update(json.dumps([int(i), text, None if label is None else int(label)], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def label_names(dd: DatasetDict | Dataset) -> list[str]:
    """The class names of a dataset (from its ``label`` ``ClassLabel``)."""
    ds = next(iter(dd.values())) if isinstance(dd, DatasetDict) else dd
    feature = ds.features.get("label")
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"column 'label' is {feature!r}, not a ClassLabel; load the data with layerfusion.data.load")
    return list(feature.names)


def class_counts(dd: DatasetDict) -> pd.DataFrame:
    """Rows per split (index ``split``) and class (columns, every class even when 0): the book's class histograms."""
    names = label_names(dd)
    rows = {split: np.bincount(np.asarray(ds["label"], dtype=np.int64), minlength=len(names))
            for split, ds in dd.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=names)
    frame.index.name = "split"
    frame.columns.name = "label"
    return frame
