"""Labelled text as a ``datasets.DatasetDict``: the paper's four datasets, a user's files, or a user's DatasetDict.

``load`` takes a dataset name (SST-2, MR, R8, R52 from the data directory, or a name given by ``add``), a folder with
train and test files (CSV, TSV, JSONL or parquet with ``text`` and ``label`` columns), a single file with a
``test_size`` rule, or a ``DatasetDict``; it returns splits ``train`` / ``validation`` / ``test`` with columns
``text``, ``label`` (a ``ClassLabel``) and ``idx`` (the row's position in its source file).

One module per job: ``registry`` (the four datasets' ``DatasetInfo``, user names, checksums, hub export),
``readers`` (split files and rows, checked), ``splits`` (seeded, stratified splitting), ``dataset`` (``load`` and
what describes a loaded dataset: ``fingerprint``, ``label_names``, ``class_counts``).
"""

from __future__ import annotations

from layerfusion.data.dataset import SPLITS, class_counts, fingerprint, label_names, load
from layerfusion.data.readers import LABELS_FILE
from layerfusion.data.registry import (DATASETS, SPLIT_FILES, TEXTGCN_REPO, DatasetInfo, add, export_from_hub,
                                       get_info, sha256_file)
from layerfusion.data.splits import carve_validation, split_test, subsample

__all__ = ["DATASETS", "LABELS_FILE", "SPLITS", "SPLIT_FILES", "TEXTGCN_REPO", "DatasetInfo", "add",
           "carve_validation", "class_counts", "export_from_hub", "fingerprint", "get_info", "label_names", "load",
           "sha256_file", "split_test", "subsample"]
