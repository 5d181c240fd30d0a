"""The four text-classification datasets (SST-2, MR, R8, R52), read offline from the data directory.

Files live in ``<data_dir>/<name>/{train.jsonl,test.jsonl,labels.json}`` (format: the data README). ``load`` checks
them (sha256, canonical row counts, every line's fields) where they enter, carves a seeded stratified validation
split from train and optionally subsamples every split, and returns a ``datasets.DatasetDict``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from layerfusion import files, paths

SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
LABELS_FILE = "labels.json"
SPLITS = ("train", "validation", "test")
TEXTGCN_REPO = "https://github.com/yao8839836/text_gcn (data/R8/, data/R52/; see the data README for R52's train)"


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about one dataset before reading it: canonical sizes and the sha256 of each file."""

    name: str
    n_train: int
    n_test: int
    n_classes: int
    sha256: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "sst2": DatasetInfo("sst2", 67_349, 872, 2, {
        "train.jsonl": "9ece7ead0adc25eb2aa78a44fda612c61b3fa4330605797b375c210dd59f31c9",
        "test.jsonl": "4c91b253ce7c7b4979388979c02356291396a916862409c0c06afa99b463bca8",
        "labels.json": "047cde4ba79b8a7ba8a62b70ab859c60b5ec2619c0defe8ab883565b3e174790",
    }, "GLUE SST-2 sentences/phrases; test is the GLUE validation set"),
    "mr": DatasetInfo("mr", 7_108, 3_554, 2, {
        "train.jsonl": "985c87a0c22dc443870c2f5e2fbde414390a36c29eb0de74e84e75babcc28211",
        "test.jsonl": "ecaeffeaddc731f348d3a48b64e394ee605cdd5e779f518862690f5a89efb684",
        "labels.json": "047cde4ba79b8a7ba8a62b70ab859c60b5ec2619c0defe8ab883565b3e174790",
    }, "rt-polarity v1.0 movie-review sentences in the TextGCN split"),
    "r8": DatasetInfo("r8", 5_485, 2_189, 8, {
        "train.jsonl": "b2e9ff8d3130879f37375397afbef2ffeea6afc031343138fd5aa0f1e9602292",
        "test.jsonl": "04ff3fcb0c8883ff79c18bb10dfbe924fd419be0fa869a19135eb4853e176d78",
        "labels.json": "38721ef0f62a0e84bfccc2c0ddd89c5dfc899d96c80d922f4b09ffde0cd23855",
    }, "Reuters-21578 ModApte, 8 single-topic classes, all-terms preprocessing"),
    "r52": DatasetInfo("r52", 6_532, 2_568, 52, {
        "train.jsonl": "94432f468534efe87ad817f72f00701463ced8c19c2dba6e39afa24f7fd59a8c",
        "test.jsonl": "cbe3e697068a6e87cd383e61e094eebc8cdfbc30af199dcca2abcf39fb0cab1f",
        "labels.json": "c5e332d1d58d1cc3d4661d1c4c6457e911c468980af1bb66bc51bac9661e3292",
    }, "Reuters-21578 ModApte, 52 single-topic classes, all-terms preprocessing"),
}

sha256_file = files.sha256_file


def get_info(name: str, registry: Mapping[str, DatasetInfo] | None = None) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name`` (case-insensitive, '-' ignored); ``KeyError`` listing known names."""
    registry = DATASETS if registry is None else registry
    key = str(name).lower().replace("-", "")
    if key not in registry:
        raise KeyError(f"unknown dataset {name!r}; known datasets are {sorted(registry)}")
    return registry[key]


def _dataset_dir(info: DatasetInfo, data_dir: str | os.PathLike | None) -> Path:
    root = paths.data_dir(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist. {paths.OBTAIN_DATA_HINT}")
    folder = root / info.name
    missing = [f for f in (*SPLIT_FILES.values(), LABELS_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {info.name!r}: missing {missing} in {folder}. {paths.OBTAIN_DATA_HINT}")
    return folder


def _verify_checksums(info: DatasetInfo, folder: Path) -> None:
    for filename, expected in info.sha256.items():
        actual = sha256_file(folder / filename)
        if actual != expected:
            raise ValueError(
                f"checksum mismatch for {folder / filename}: expected sha256 {expected}, got {actual}. The file is "
                f"corrupt or a different version; replace it with the canonical copy ({paths.OBTAIN_DATA_HINT}), "
                f"or pass verify=False to load it anyway.")


def _read_labels(path: Path, info: DatasetInfo) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); it must be a list of label names") from exc
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: must be a non-empty JSON list of non-empty label-name strings")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: label names must be unique, got {names}")
    if len(names) != info.n_classes:
        raise ValueError(f"{path}: {len(names)} label names, but dataset {info.name!r} has {info.n_classes} classes")
    return names


def _read_jsonl(path: Path, names: Sequence[str]) -> tuple[list[str], list[int]]:
    """Texts and labels of one split file, every line checked; errors name the file and 1-based line number."""
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: malformed JSON ({exc.msg}); each line must be one JSON object "
                                 '{"text": ..., "label": ..., "label_name": ...}') from exc
            if not isinstance(row, dict) or not {"text", "label"} <= set(row):
                raise ValueError(f"{where}: expected an object with 'text' and 'label' keys")
            text, label = row["text"], row["label"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: empty or whitespace-only text; every row needs a non-empty 'text'")
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(names):
                raise ValueError(f"{where}: label {label!r} out of range; labels are integers 0..{len(names) - 1} "
                                 f"indexing labels.json")
            if "label_name" in row and row["label_name"] != names[label]:
                raise ValueError(f"{where}: label_name {row['label_name']!r} disagrees with labels.json, where "
                                 f"label {label} is {names[label]!r}")
            texts.append(text)
            labels.append(label)
    return texts, labels


def _check_count(info: DatasetInfo, split: str, n: int, path: Path, strict: bool) -> None:
    expected = info.n_train if split == "train" else info.n_test
    if n == expected:
        return
    msg = f"{path}: {n} rows, but the canonical {info.name} {split} split has {expected}"
    if strict:
        raise ValueError(msg + "; replace the file with the canonical copy or pass verify=False")
    warnings.warn(msg + " (verify=False, loading anyway)", stacklevel=3)


def _allocate(counts: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-class sizes summing to ``total``: ``low`` first, the rest proportional to what is left of each class
    (largest remainder, ties to the lower class id), never above ``high``."""
    weight = np.maximum(counts - low, 0).astype(np.float64)
    target = (total - low.sum()) * weight / max(weight.sum(), 1.0)
    alloc = low + np.minimum(np.floor(target).astype(np.int64), high - low)
    while alloc.sum() < total:
        room = np.flatnonzero(alloc < high)
        alloc[room[np.argmax((low + target - alloc)[room])]] += 1
    return alloc


def _stratified_pick(labels: np.ndarray, alloc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn without replacement, ``alloc[c]`` of class ``c``, returned sorted (source order kept)."""
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate(alloc) if k > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _validation_count(validation_size: float | int, n_train: int) -> int:
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"validation_size must be a fraction in [0, 1) or a row count, got {validation_size!r}")
    if isinstance(validation_size, (float, np.floating)):
        if not 0.0 <= validation_size < 1.0:
            raise ValueError(f"validation_size={validation_size} as a fraction must be in [0, 1); pass an int for a "
                             "row count")
        return int(round(validation_size * n_train))
    if validation_size < 0:
        raise ValueError(f"validation_size={validation_size} must be >= 0")
    return int(validation_size)


def carve_validation(labels: Sequence[int] | np.ndarray, validation_size: float | int, n_classes: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split train positions into (train, validation), stratified by label and seeded.

    Each class gives the validation split its proportional share (largest remainder), but always keeps at least one
    row in train, so a class with a single train row (R52's ``platinum``) stays in train instead of failing.
    """
    y = np.asarray(labels, dtype=np.int64)
    n_val = _validation_count(validation_size, len(y))
    counts = np.bincount(y, minlength=n_classes)
    high = np.maximum(counts - 1, 0)
    if n_val > high.sum():
        raise ValueError(f"validation_size={validation_size} asks for {n_val} validation rows, but at most "
                         f"{int(high.sum())} can be taken while keeping every class in train; pass a smaller value")
    rng = np.random.default_rng([int(seed), 0])
    val = _stratified_pick(y, _allocate(counts, n_val, np.zeros_like(counts), high), rng)
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def subsample(labels: Sequence[int] | np.ndarray, max_rows: int | None, n_classes: int, seed: int = 0,
              stream: int = 1) -> np.ndarray:
    """Positions of a stratified, seeded subsample of at most ``max_rows`` rows (all positions when it fits).

    Class sizes are proportional (largest remainder) with at least one row of every class present whenever
    ``max_rows`` is at least the number of classes present; otherwise the largest classes get the rows.
    ``stream`` separates the random streams of different splits under one seed.
    """
    y = np.asarray(labels, dtype=np.int64)
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer))
                                 or max_rows < 1):
        raise ValueError(f"max_train/max_validation/max_test must be a positive int or None, got {max_rows!r}")
    if max_rows is None or max_rows >= len(y):
        return np.arange(len(y))
    counts = np.bincount(y, minlength=n_classes)
    present = counts > 0
    low = present.astype(np.int64) if max_rows >= present.sum() else np.zeros_like(counts)
    rng = np.random.default_rng([int(seed), int(stream)])
    return _stratified_pick(y, _allocate(counts, int(max_rows), low, counts), rng)


def _features(names: Sequence[str]) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(names)), "idx": Value("int64")})


def _build(texts: Sequence[str], labels: np.ndarray, idx: np.ndarray, features: Features) -> Dataset:
    return Dataset.from_dict({"text": [texts[i] for i in idx], "label": labels[idx].tolist(),
                              "idx": idx.astype(np.int64).tolist()}, features=features)


def load(name: str, data_dir: str | os.PathLike | None = None, *, validation_size: float | int = 0.1, seed: int = 0,
         max_train: int | None = None, max_validation: int | None = None, max_test: int | None = None,
         verify: bool = True, registry: Mapping[str, DatasetInfo] | None = None) -> DatasetDict:
    """One dataset as a ``DatasetDict`` (``train`` / ``validation`` / ``test``; columns ``text``, ``label``, ``idx``).

    Checks: every file's sha256 against ``DATASETS`` (skipped with ``verify=False``), the canonical row counts (an
    error, or a warning with ``verify=False``), and every line (JSON, label range, label_name, non-empty text).

    Splitting, deterministic for a ``seed``:

    1. validation is carved from train, stratified (see ``carve_validation``); ``validation_size`` is a fraction of
       train (float) or a row count (int); 0 leaves validation empty;
    2. ``max_train`` / ``max_validation`` / ``max_test`` then subsample each split, stratified, keeping one row of
       every class present when the budget allows (see ``subsample``). Each stage and split has its own random
       stream, so e.g. the test subsample does not depend on ``validation_size``.

    Rows keep source-file order (``idx`` is the 0-based line number in the split's file; validation rows index
    ``train.jsonl``). Texts are verbatim (trailing spaces kept). ``registry`` replaces ``DATASETS`` (tests).
    """
    info = get_info(name, registry)
    folder = _dataset_dir(info, data_dir)
    if verify:
        _verify_checksums(info, folder)
    names = _read_labels(folder / LABELS_FILE, info)
    features = _features(names)
    raw: dict[str, tuple[list[str], np.ndarray]] = {}
    for split, filename in SPLIT_FILES.items():
        texts, labels = _read_jsonl(folder / filename, names)
        _check_count(info, split, len(texts), folder / filename, strict=verify)
        raw[split] = (texts, np.asarray(labels, dtype=np.int64))

    train_texts, train_y = raw["train"]
    train_pos, val_pos = carve_validation(train_y, validation_size, len(names), seed)
    test_texts, test_y = raw["test"]
    positions = {"train": train_pos, "validation": val_pos, "test": np.arange(len(test_y))}
    limits = {"train": max_train, "validation": max_validation, "test": max_test}
    out = {}
    for stream, split in enumerate(SPLITS, start=1):
        texts, y = (test_texts, test_y) if split == "test" else (train_texts, train_y)
        pos = positions[split]
        pos = pos[subsample(y[pos], limits[split], len(names), seed, stream=stream)]
        out[split] = _build(texts, y, pos, features)
    return DatasetDict(out)


def fingerprint(split: Dataset) -> str:
    """sha256 over (idx, text, label) of every row, in order; stable across processes (part of cache keys)."""
    missing = {"text", "label"} - set(split.column_names)
    if missing:
        raise ValueError(f"dataset split lacks columns {sorted(missing)} (has {split.column_names})")
    texts = list(split["text"])
    labels = list(split["label"])
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


def export_from_hub(name: str, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<name>/`` in this library's format from the Hugging Face hub (needs internet).

    * sst2: ``nyu-mll/glue`` ``sst2``; train -> train.jsonl, validation -> test.jsonl (the canonical split).
    * mr: ``cornell-movie-review-data/rotten_tomatoes`` is a **different split** from TextGCN's (8,530 / 1,066 /
      1,066 rows); train+validation -> train.jsonl, test -> test.jsonl. Scores are not comparable with the paper's.
    * r8, r52: no canonical hub copy exists; ``NotImplementedError`` points to the TextGCN repository.

    Checksums will not match ``DATASETS`` (the hub texts differ in whitespace), so load the result with
    ``verify=False``.
    """
    info = get_info(name)
    if info.name in ("r8", "r52"):
        raise NotImplementedError(f"{info.name}: no canonical Hugging Face copy; take the all-terms files from "
                                  f"{TEXTGCN_REPO} and convert label<TAB>text lines to the format in the data README")
    from datasets import concatenate_datasets, load_dataset

    if info.name == "sst2":
        hub = load_dataset("nyu-mll/glue", "sst2")
        splits = {"train": hub["train"], "test": hub["validation"]}
        text_col = "sentence"
    else:
        hub = load_dataset("cornell-movie-review-data/rotten_tomatoes")
        splits = {"train": concatenate_datasets([hub["train"], hub["validation"]]), "test": hub["test"]}
        text_col = "text"
    names = ["negative", "positive"]
    folder = Path(out_dir) / info.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LABELS_FILE).write_text(json.dumps(names), encoding="utf-8")
    for split, ds in splits.items():
        with (folder / SPLIT_FILES[split]).open("w", encoding="utf-8") as fh:
            for row in ds:
                record: dict[str, Any] = {"text": row[text_col], "label": int(row["label"]),
                                          "label_name": names[int(row["label"])]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return folder
