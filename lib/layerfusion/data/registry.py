"""The dataset registry: the paper's four datasets (canonical sizes, file checksums) and the user's folders by name.

The four live in ``<data_dir>/<name>/{train.jsonl,test.jsonl,labels.json}`` (format: the data README) and are checked
against the sha256 of every file and their canonical row counts. A user's folder or file needs no entry; ``add``
gives it a short readable name (its folder name) that every function taking a dataset name then accepts.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerfusion import files, paths

SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
TEXTGCN_REPO = "https://github.com/yao8839836/text_gcn (data/R8/, data/R52/; see the data README for R52's train)"

sha256_file = files.sha256_file


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about one dataset before reading it: canonical sizes and the sha256 of each file.

    A user's dataset (``add``) has a ``path`` (a folder or a file) and no canonical sizes or checksums.
    """

    name: str
    n_train: int | None
    n_test: int | None
    n_classes: int | None
    sha256: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    description: str = ""
    path: str | None = None


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


def _key(name: str) -> str:
    return str(name).lower().replace("-", "")


def find_info(name: str, registry: Mapping[str, DatasetInfo] | None = None) -> DatasetInfo | None:
    """The ``DatasetInfo`` registered as ``name`` (case-insensitive, '-' ignored), else None."""
    return (DATASETS if registry is None else registry).get(_key(name))


def get_info(name: str, registry: Mapping[str, DatasetInfo] | None = None) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name`` (case-insensitive, '-' ignored); ``KeyError`` listing known names."""
    info = find_info(name, registry)
    if info is None:
        known = sorted(k for k, v in (DATASETS if registry is None else registry).items() if v.path is None)
        raise KeyError(f"unknown dataset {name!r}; known datasets are {known}; or pass a folder with train and test "
                       "files (CSV, TSV, JSONL or parquet), one file with test_size=, or a DatasetDict")
    return info


def add(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Register each folder or file under a short readable name and return the names (known names pass through).

    The name is the folder's (or file's) name, with parent folders added only where two sources, or a source and a
    registered dataset, would share it; ``load(name)`` then reads the source.
    """
    paths_in = [i for i, s in enumerate(sources) if find_info(str(s)) is None]
    missing = [str(sources[i]) for i in paths_in if not Path(sources[i]).expanduser().exists()]
    if missing:
        get_info(missing[0])
    resolved = {i: str(Path(sources[i]).expanduser().resolve()) for i in paths_in}
    taken = {key for key, info in DATASETS.items() if info.path not in resolved.values()}
    names = dict(zip(paths_in, paths.short_names([resolved[i] for i in paths_in], taken=taken, key=_key)))
    out = []
    for i, source in enumerate(sources):
        if i not in names:
            out.append(str(source))
            continue
        DATASETS[_key(names[i])] = DatasetInfo(names[i], None, None, None, path=resolved[i],
                                               description=f"user data from {resolved[i]}")
        out.append(names[i])
    return out


def dataset_dir(info: DatasetInfo, data_dir: str | os.PathLike | None) -> Path:
    """The folder of a named dataset under the data directory; missing files raise naming them."""
    root = paths.data_dir(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist. {paths.OBTAIN_DATA_HINT}")
    folder = root / info.name
    missing = [f for f in (*SPLIT_FILES.values(), "labels.json") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {info.name!r}: missing {missing} in {folder}. {paths.OBTAIN_DATA_HINT}")
    return folder


def verify_checksums(info: DatasetInfo, folder: Path) -> None:
    """Raise if any file's sha256 differs from the registry's."""
    for filename, expected in info.sha256.items():
        actual = sha256_file(folder / filename)
        if actual != expected:
            raise ValueError(
                f"checksum mismatch for {folder / filename}: expected sha256 {expected}, got {actual}. The file is "
                f"corrupt or a different version; replace it with the canonical copy ({paths.OBTAIN_DATA_HINT}), "
                f"or pass verify=False to load it anyway.")


def check_classes(info: DatasetInfo, path: Path, names: Sequence[str]) -> None:
    """Raise if ``labels.json`` does not have the dataset's canonical number of classes."""
    if info.n_classes is not None and len(names) != info.n_classes:
        raise ValueError(f"{path}: {len(names)} label names, but dataset {info.name!r} has {info.n_classes} classes")


def check_count(info: DatasetInfo, split: str, n: int, path: Path, strict: bool) -> None:
    """Raise (``strict``) or warn if a split's row count differs from the canonical one."""
    expected = info.n_train if split == "train" else info.n_test
    if expected is None or n == expected:
        return
    msg = f"{path}: {n} rows, but the canonical {info.name} {split} split has {expected}"
    if strict:
        raise ValueError(msg + "; replace the file with the canonical copy or pass verify=False")
    warnings.warn(msg + " (verify=False, loading anyway)", stacklevel=4)


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
    (folder / "labels.json").write_text(json.dumps(names), encoding="utf-8")
    for split, ds in splits.items():
        with (folder / SPLIT_FILES[split]).open("w", encoding="utf-8") as fh:
            for row in ds:
                record: dict[str, Any] = {"text": row[text_col], "label": int(row["label"]),
                                          "label_name": names[int(row["label"])]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return folder
