"""Tests for layerfusion.data: reading and checking the files, carving validation, subsampling, fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset

from layerfusion import data, files, paths
from layerfusion.study import workspace
from layerfusion.testing import registries_restored

LABELS = ["alpha", "beta", "gamma"]
# train: 20 alpha, 9 beta, 1 gamma (a class too small to give validation a row); test: 6/4/2
TRAIN_LABELS = [0] * 20 + [1] * 9 + [2]
TEST_LABELS = [0] * 6 + [1] * 4 + [2] * 2


def _rows(labels: list[int], prefix: str) -> list[dict]:
    return [{"text": f"{prefix} text {i} ", "label": y, "label_name": LABELS[y]} for i, y in enumerate(labels)]


def _write_split(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, dict[str, data.DatasetInfo]]:
    """A 30/12-row dataset 'toy' in tmp_path with a matching registry (checksums included)."""
    folder = tmp_path / "toy"
    folder.mkdir()
    _write_split(folder / "train.jsonl", _rows(TRAIN_LABELS, "train"))
    _write_split(folder / "test.jsonl", _rows(TEST_LABELS, "test"))
    (folder / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    sha = {f: data.sha256_file(folder / f) for f in ("train.jsonl", "test.jsonl", "labels.json")}
    return tmp_path, {"toy": data.DatasetInfo("toy", len(TRAIN_LABELS), len(TEST_LABELS), 3, sha)}


def _load(toy, **kwargs):
    root, registry = toy
    return data.load("toy", root, registry=registry, **kwargs)


def _edit_line(path: Path, lineno: int, raw: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[lineno - 1] = raw + "\n"
    path.write_text("".join(lines), encoding="utf-8")


def test_load_columns_features_and_carving(toy):
    dd = _load(toy, validation_size=0.2, seed=0)
    assert list(dd) == ["train", "validation", "test"]
    for split in dd.values():
        assert split.column_names == ["text", "label", "idx"]
        assert isinstance(split.features["label"], ClassLabel)
        assert list(split["idx"]) == sorted(split["idx"])
    assert data.label_names(dd) == LABELS
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (24, 6, 12)
    train_idx, val_idx = set(dd["train"]["idx"]), set(dd["validation"]["idx"])
    assert not train_idx & val_idx and train_idx | val_idx == set(range(30))
    # texts are verbatim and idx points at the source line
    assert all(t == f"train text {i} " for t, i in zip(dd["validation"]["text"], dd["validation"]["idx"]))
    # stratified: 20% of alpha (4) and of beta (~2); gamma's single row stays in train
    assert sorted(dd["validation"]["label"]) == [0, 0, 0, 0, 1, 1]
    assert 2 in dd["train"]["label"]


def test_load_is_deterministic_for_a_seed(toy):
    a, b, c = (_load(toy, validation_size=0.3, seed=s) for s in (7, 7, 8))
    for split in data.SPLITS:
        assert data.fingerprint(a[split]) == data.fingerprint(b[split])
    assert list(a["validation"]["idx"]) != list(c["validation"]["idx"])


def test_validation_size_int_zero_and_bad_values(toy):
    assert len(_load(toy, validation_size=5)["validation"]) == 5
    empty = _load(toy, validation_size=0)
    assert len(empty["validation"]) == 0 and len(empty["train"]) == 30
    with pytest.raises(ValueError, match="validation_size=28 .* keeping every class in train"):
        _load(toy, validation_size=28)
    with pytest.raises(ValueError, match=r"validation_size=1.5 .*\[0, 1\)"):
        _load(toy, validation_size=1.5)
    with pytest.raises(TypeError, match="validation_size"):
        _load(toy, validation_size="0.1")


def test_subsampling_is_stratified_nested_and_keeps_every_class(toy):
    full = _load(toy, validation_size=0.2, seed=3)
    small = _load(toy, validation_size=0.2, seed=3, max_train=6, max_validation=2, max_test=5)
    assert (len(small["train"]), len(small["validation"]), len(small["test"])) == (6, 2, 5)
    assert set(small["train"]["label"]) == {0, 1, 2}
    assert set(small["test"]["label"]) == {0, 1, 2}
    for split in data.SPLITS:
        assert set(small[split]["idx"]) <= set(full[split]["idx"])
    # the test subsample has its own random stream: it does not depend on validation_size
    other = _load(toy, validation_size=0.1, seed=3, max_test=5)
    assert list(other["test"]["idx"]) == list(small["test"]["idx"])
    # a budget at least the split size leaves the split unchanged
    assert len(_load(toy, max_test=100)["test"]) == 12
    with pytest.raises(ValueError, match="max_train/max_validation/max_test must be a positive int"):
        _load(toy, max_train=0)


def test_subsample_with_fewer_rows_than_classes_takes_the_largest():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    picked = data.subsample(labels, 2, 3, seed=0)
    assert len(picked) == 2 and set(labels[picked]) == {0, 1}


def test_missing_directory_says_how_to_obtain(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        data.load("sst2", tmp_path / "nowhere")
    assert paths.OBTAIN_DATA_HINT in str(info.value)


def test_missing_file_is_named(toy):
    (toy[0] / "toy" / "test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['test.jsonl'\]"):
        _load(toy)


def test_unknown_dataset_lists_known():
    with pytest.raises(KeyError, match=r"unknown dataset 'imdb'; known datasets are \['mr', 'r52', 'r8', 'sst2'\]"):
        data.load("imdb")
    assert data.get_info("SST-2").name == "sst2"


def test_checksum_mismatch_names_file_and_both_hashes(toy):
    path = toy[0] / "toy" / "test.jsonl"
    expected = toy[1]["toy"].sha256["test.jsonl"]
    _edit_line(path, 1, json.dumps({"text": "changed ", "label": 0, "label_name": "alpha"}))
    actual = data.sha256_file(path)
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        _load(toy)
    msg = str(info.value)
    assert str(path) in msg and expected in msg and actual in msg and "verify=False" in msg
    assert _load(toy, verify=False)["test"][0]["text"] == "changed "


def test_hash_is_cached_per_path_size_and_mtime(toy):
    path = toy[0] / "toy" / "train.jsonl"
    old = path.stat().st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))  # settled an hour ago: memoised
    first = data.sha256_file(path)
    stat = path.stat()
    assert files._HASH_CACHE[(str(path.resolve()), stat.st_size, stat.st_mtime_ns)] == first
    _write_split(path, _rows(list(reversed(TRAIN_LABELS)), "train"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert data.sha256_file(path) != first


def test_hash_of_a_fresh_file_is_not_memoised(tmp_path):
    """A same-size rewrite that keeps the mtime (a coarse file-system clock) must still change the hash."""
    path = tmp_path / "f.txt"
    path.write_text("aaaa")
    stat = path.stat()
    first = files.sha256_file(path)
    path.write_text("bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and files.sha256_file(path) != first


@pytest.mark.parametrize(("raw", "message"), [
    ('{"text": "broken", "label": 0', r"test.jsonl, line 3: malformed JSON"),
    ('{"text": "x ", "label": 3, "label_name": "alpha"}', r"test.jsonl, line 3: label 3 out of range; .* 0\.\.2"),
    ('{"text": "x ", "label": -1, "label_name": "alpha"}', r"test.jsonl, line 3: label -1 out of range"),
    ('{"text": "x ", "label": 1, "label_name": "alpha"}',
     r"test.jsonl, line 3: label_name 'alpha' disagrees with labels.json, where label 1 is 'beta'"),
    ('{"text": "", "label": 0, "label_name": "alpha"}', r"test.jsonl, line 3: empty or whitespace-only text"),
    ('{"text": "  \\t ", "label": 0, "label_name": "alpha"}', r"test.jsonl, line 3: empty or whitespace-only text"),
    ('{"label": 0}', r"test.jsonl, line 3: expected an object with 'text' and 'label'"),
])
def test_bad_lines_name_file_and_line(toy, raw, message):
    _edit_line(toy[0] / "toy" / "test.jsonl", 3, raw)
    with pytest.raises(ValueError, match=message):
        _load(toy, verify=False)


def test_row_count_mismatch_is_an_error_or_a_warning(toy):
    root, registry = toy
    wrong = {"toy": data.DatasetInfo("toy", 30, 13, 3)}
    with pytest.raises(ValueError, match="12 rows, but the canonical toy test split has 13"):
        data.load("toy", root, registry=wrong)
    with pytest.warns(UserWarning, match="12 rows, but the canonical toy test split has 13"):
        data.load("toy", root, registry=wrong, verify=False)


def test_labels_file_must_match_class_count(toy):
    (toy[0] / "toy" / "labels.json").write_text(json.dumps(["alpha", "beta"]), encoding="utf-8")
    with pytest.raises(ValueError, match="2 label names, but dataset 'toy' has 3 classes"):
        _load(toy, verify=False)


def test_fingerprint_is_stable_and_sensitive():
    base = {"text": ["a ", "b "], "label": [0, 1], "idx": [0, 1]}
    fp = data.fingerprint(Dataset.from_dict(base))
    # = sha256 of the lines '[0, "a ", 0]\n[1, "b ", 1]\n'; a change invalidates every embedding cache
    assert fp == "1c5bc51fed1ad4939b89b4b18548261e200ef90059d9c8cf30c7cfb951e97586"
    for key, value in (("text", ["a", "b "]), ("label", [1, 1]), ("idx", [0, 2])):
        assert data.fingerprint(Dataset.from_dict({**base, key: value})) != fp
    with pytest.raises(ValueError, match="lacks a 'text' column"):
        data.fingerprint(Dataset.from_dict({"label": [0]}))
    # an unlabelled split hashes null labels: it differs from every labelled one and is stable
    unlabelled = data.fingerprint(Dataset.from_dict({"text": ["a ", "b "], "idx": [0, 1]}))
    assert unlabelled != fp
    assert unlabelled == data.fingerprint(Dataset.from_dict({"text": ["a ", "b "], "label": [None, None], "idx": [0, 1]}))


def test_class_counts_table(toy):
    dd = _load(toy, validation_size=0.2)
    counts = data.class_counts(dd)
    assert list(counts.index) == ["train", "validation", "test"] and counts.index.name == "split"
    assert list(counts.columns) == LABELS
    assert counts.loc["validation", "gamma"] == 0
    assert counts.sum(axis=1).tolist() == [len(dd[s]) for s in data.SPLITS]


def test_label_names_needs_a_classlabel():
    with pytest.raises(ValueError, match="not a ClassLabel"):
        data.label_names(Dataset.from_dict({"text": ["a"], "label": [0]}))


def test_export_from_hub_has_no_reuters_copy(tmp_path):
    with pytest.raises(NotImplementedError, match="text_gcn"):
        data.export_from_hub("r52", tmp_path)


needs_data = pytest.mark.skipif(not (workspace.data_dir() / "sst2").is_dir(),
                                reason=f"real data not found at {workspace.data_dir()}")


# data.fingerprint of each split of data.load(name) with the defaults, as computed by the single-module data.py this
# package replaced (commit 3f0d78a): the embedding cache keys depend on them, so the same rows must come out in the
# same order.
FINGERPRINTS = {
    "sst2": ("a9987caf4139ad51b476231353847b6c1201e08aa947d79ea9aaac4c1b1073af",
             "d61973b2818c465b702cf32c59081d14b4b6010e776e6515611a290117187996",
             "3412a82e659cdac8074c2cae5c87da3bf825dab5d244b066126827d0f1288c99"),
    "mr": ("91ab3e4f27797f00bac055b88f6138b5178451fa6a9563fbbc99160d3661dd47",
           "8795358f7866e6a6078d28b45a9a2509b128d35125a2ad8ddd7f7edaaca49e82",
           "f5a7be2c7ff9e1e41c3b7853b47c1d165c5f8a4ab8f7ffc48cd0b6ef9dcd28d4"),
    "r8": ("3c6012e36013aab5654971457086f77228554472bedce6eb6e3bfc9a86a97070",
           "dd4526554a569e19b82b0f338097763331280b8bca8a8498648223a3d1b0c9b5",
           "67ef860510446a4715885f63522b3215a4061cc36236a8c709c1a1becde19fe9"),
    "r52": ("99d767eb8c6393719b9d8c9af1d097a975f35c130b0eb68698f6d5ae97f8c315",
            "12ab046b58c0245d162aa39ee9556d6653f2f4222ef4abbf7f3f0c5d2ea44227",
            "1339298a45fef8e5393f6ac8ccf6d60f2ce3951728f7607f518abb4795f5b234"),
}
# The same for validation_size=0.2, seed=1, max_train=96, max_validation=48, max_test=64 (a profile-like subsample).
SMALL = dict(validation_size=0.2, seed=1, max_train=96, max_validation=48, max_test=64)
SMALL_FINGERPRINTS = {
    "sst2": ("4ef1ba30b9e8ebcda738b5bc5f8c04e3f76359e0fb54042b922dc8b3853be2bb",
             "313c3967b13bb88944e48c96be554540fa2d4fdc7e0b749c35c88e131619c225",
             "0bcbde834190bcad793f71f2e1dbb8153cd235ebf73b2bf3c668b1cbcfb81040"),
    "mr": ("b820ac060c6ce51a701433e7e672505273c6fc9a6ad8d31fbd0f67f19ca10083",
           "242c93255ab1abf45f9c0d99fe4b2524ed288f55b7539eb3a927a0617f2b3b36",
           "59c01132e24644b77ddf7ad7938d4ddddd1eabfbd72cce97ea7aa0a90d2c642e"),
    "r8": ("b10729b9448928cf96bff630703d5cfcd950b14144efce750031f61b16cd14fe",
           "317d3ddf9663c7ad5d96c4491d50430aa67b39a8a6246cea12774d59260ee062",
           "38b391dc14c1d0943409e6b4b86aaef3e2e488fe1ac85b19018693df06e5cc44"),
    "r52": ("20db325ef3569b5c08f1912fa353404d5cf0cf148ffd753ebfbf0a4e74c3fce9",
            "500f188ab8c2d02e362b31c13d77deeecde9d78557fbf5709a3a283c4ec05023",
            "69eb64853268c7a8d7153718de0e2eaffa69bf3e59d2c69788d81f15b6a37598"),
}


@needs_data
@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_real_datasets_load_with_canonical_counts_and_unchanged_rows(name):
    info = data.DATASETS[name]
    dd = data.load(name)
    assert len(dd["train"]) + len(dd["validation"]) == info.n_train
    assert len(dd["test"]) == info.n_test
    assert len(data.label_names(dd)) == info.n_classes
    assert tuple(data.fingerprint(dd[s]) for s in data.SPLITS) == FINGERPRINTS[name]


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_real_datasets_subsample_unchanged_and_load_the_same_as_a_folder(name):
    dd = data.load(name, **SMALL)
    assert tuple(data.fingerprint(dd[s]) for s in data.SPLITS) == SMALL_FINGERPRINTS[name]
    by_path = data.load(workspace.data_dir() / name, **SMALL)
    assert tuple(data.fingerprint(by_path[s]) for s in data.SPLITS) == SMALL_FINGERPRINTS[name]
    assert data.label_names(by_path) == data.label_names(dd)


@needs_data
def test_real_r52_keeps_rare_classes_and_subsamples():
    dd = data.load("r52", max_train=100, max_validation=60, max_test=60)
    assert len(data.label_names(dd)) == 52
    counts = data.class_counts(dd)
    assert (counts.loc["train"] > 0).all() and (counts.loc["test"] > 0).all()
    full = data.load("r52")
    assert len(full["train"]) + len(full["validation"]) == 6_532 and len(full["test"]) == 2_568
    assert data.class_counts(full).loc["train", "platinum"] == 1


def test_export_from_hub_writes_loadable_files_from_a_stubbed_hub(tmp_path, monkeypatch):
    import datasets

    def fake_load_dataset(path, name=None):
        assert (path, name) == ("nyu-mll/glue", "sst2")
        make = lambda n, off: Dataset.from_dict({"sentence": [f"text {off + i}" for i in range(n)],  # noqa: E731
                                                 "label": [i % 2 for i in range(n)]})
        return datasets.DatasetDict({"train": make(20, 0), "validation": make(6, 100), "test": make(4, 200)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    folder = data.export_from_hub("sst2", tmp_path)
    assert folder == tmp_path / "sst2"
    with pytest.warns(UserWarning):
        dd = data.load("sst2", tmp_path, verify=False, validation_size=4)
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (16, 4, 6)
    assert data.label_names(dd) == ["negative", "positive"]
    assert sorted(dd["test"]["text"])[0] == "text 100"
    with pytest.raises(NotImplementedError, match="no canonical Hugging Face copy"):
        data.export_from_hub("r8", tmp_path)


# --- a user's folder, file or DatasetDict --------------------------------------------------------------------------

REVIEWS = {"train": [("a good film ", "pos"), ("dull, dull, dull", "neg"), ("loved it", "pos"), ("meh", "neg"),
                     ("great cast", "pos"), ("too long", "neg"), ("fun", "pos"), ("boring", "neg"),
                     ("a delight", "pos"), ("sleepy", "neg")],
           "test": [("superb", "pos"), ("awful", "neg"), ("nice", "pos"), ("flat", "neg")]}


def _write(path: Path, rows: list[tuple], fmt: str) -> Path:
    import csv

    import pandas as pd

    if fmt in ("csv", "tsv"):
        with path.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh, delimiter="," if fmt == "csv" else "\t")
            out.writerow(["id", "text", "label"])
            out.writerows([(i, text, label) for i, (text, label) in enumerate(rows)])
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows, columns=["text", "label"]).to_parquet(path)
    return path


def _folder(root: Path, fmt: str, splits: dict = REVIEWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        _write(root / f"{split}.{fmt}", rows, fmt)
    return root


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_folder_in_each_format_loads_the_same(tmp_path, fmt):
    dd = data.load(_folder(tmp_path / fmt, fmt), validation_size=2, seed=0)
    reference = data.load(_folder(tmp_path / "ref", "csv"), validation_size=2, seed=0)
    assert data.label_names(dd) == ["neg", "pos"]  # string labels, sorted
    assert [len(dd[s]) for s in data.SPLITS] == [8, 2, 4]
    assert sorted(list(dd["validation"]["label"])) == [0, 1]
    assert list(dd["test"]["text"]) == [t for t, _ in REVIEWS["test"]] and list(dd["test"]["idx"]) == [0, 1, 2, 3]
    assert [data.fingerprint(dd[s]) for s in data.SPLITS] == [data.fingerprint(reference[s]) for s in data.SPLITS]


def test_labels_json_orders_the_names_and_numbers_index_them(tmp_path):
    folder = _folder(tmp_path / "named", "csv")
    (folder / "labels.json").write_text(json.dumps(["pos", "neg"]))
    assert data.label_names(data.load(folder)) == ["pos", "neg"]
    assert list(data.load(folder)["test"]["label"]) == [0, 1, 0, 1]
    numeric = {s: [(t, {"neg": 0, "pos": 1}[y]) for t, y in rows] for s, rows in REVIEWS.items()}
    by_index = data.load(_folder(tmp_path / "ids", "jsonl", numeric))
    assert data.label_names(by_index) == ["0", "1"] and list(by_index["test"]["label"]) == [1, 0, 1, 0]
    (tmp_path / "ids" / "labels.json").write_text(json.dumps(["negative", "positive"]))
    assert data.label_names(data.load(tmp_path / "ids")) == ["negative", "positive"]


def test_a_folder_in_the_named_format_loads_like_the_name(toy):
    root, registry = toy
    by_name = _load(toy, validation_size=0.2, seed=3, max_test=5)
    by_path = data.load(root / "toy", validation_size=0.2, seed=3, max_test=5)
    assert [data.fingerprint(by_path[s]) for s in data.SPLITS] == [data.fingerprint(by_name[s]) for s in data.SPLITS]
    assert data.label_names(by_path) == LABELS


def test_a_validation_file_is_used_as_is(tmp_path):
    splits = {**REVIEWS, "validation": [("okay", "pos"), ("poor", "neg")]}
    dd = data.load(_folder(tmp_path / "v", "csv", splits), validation_size=0.5)
    assert list(dd["validation"]["text"]) == ["okay", "poor"] and len(dd["train"]) == 10


def test_one_file_is_split_stratified_and_seeded(tmp_path):
    rows = REVIEWS["train"] + REVIEWS["test"]
    path = _write(tmp_path / "all.csv", rows, "csv")
    a = data.load(path, test_size=0.25, validation_size=2, seed=0)
    b = data.load(path, test_size=0.25, validation_size=2, seed=0)
    c = data.load(path, test_size=0.25, validation_size=2, seed=1)
    assert [data.fingerprint(a[s]) for s in data.SPLITS] == [data.fingerprint(b[s]) for s in data.SPLITS]
    assert list(a["test"]["idx"]) != list(c["test"]["idx"])
    assert len(a["test"]) == 4 and sorted(list(a["test"]["label"])) == [0, 0, 1, 1]
    every = sorted(list(a["train"]["idx"]) + list(a["validation"]["idx"]) + list(a["test"]["idx"]))
    assert every == list(range(len(rows)))  # idx indexes the file, nothing lost or repeated
    assert all(rows[i][0] == t for i, t in zip(list(a["test"]["idx"]), list(a["test"]["text"])))
    with pytest.raises(ValueError, match="is one file; pass test_size="):
        data.load(path)
    with pytest.raises(ValueError, match="test_size applies to a single file"):
        data.load(_folder(tmp_path / "f", "csv"), test_size=0.2)


def test_a_class_too_small_to_stratify_is_named_with_its_row(tmp_path):
    path = _write(tmp_path / "all.csv", REVIEWS["train"] + [("odd one", "other")], "csv")
    with pytest.raises(ValueError, match=r"class 'other' has only one row \(.*all.csv, line 12\)"):
        data.load(path, test_size=0.3)


def test_datasetdict_is_accepted(tmp_path):
    from datasets import DatasetDict

    make = lambda rows: Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})  # noqa: E731
    dd = data.load(DatasetDict({s: make(rows) for s, rows in REVIEWS.items()}), validation_size=2)
    reference = data.load(_folder(tmp_path / "ref", "csv"), validation_size=2)
    assert [data.fingerprint(dd[s]) for s in data.SPLITS] == [data.fingerprint(reference[s]) for s in data.SPLITS]
    labelled = DatasetDict({s: make(rows).cast_column("label", ClassLabel(names=["pos", "neg"]))
                            for s, rows in REVIEWS.items()})
    assert data.label_names(data.load(labelled)) == ["pos", "neg"]
    with pytest.raises(ValueError, match="needs 'train' and 'test'"):
        data.load(DatasetDict({"train": make(REVIEWS["train"])}))


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: (f / "train.csv").write_text("body,label\nx,pos\n"), r"train.csv: no 'text' column \(it has body, label\)"),
    (lambda f: (f / "test.csv").write_text("text,label\nfine,pos\n  ,neg\n"),
     r"test.csv, line 3: empty or whitespace-only text"),
    (lambda f: (f / "test.csv").write_text("text,label\nfine,pos\nno label,\n"), r"test.csv, line 3: no label"),
    (lambda f: (f / "train.csv").write_text("text,label\na,pos\nb,pos\nc,pos\n"),
     r"train.csv: every train row has label 'pos'; a classifier needs at least two classes"),
    (lambda f: (f / "test.csv").write_bytes(b"text,label\nfine,pos\ncaf\xe9,neg\n"),
     r"test.csv, line 3: not UTF-8 text \(byte 0xe9\); re-save the file as UTF-8"),
    (lambda f: (f / "labels.json").write_text(json.dumps(["neg"])), r"train.csv, line 2: label 'pos' out of range"),
    (lambda f: (f / "test.csv").unlink(), r"no test file; a dataset folder holds train and test files"),
    (lambda f: _write(f / "train.jsonl", REVIEWS["train"], "jsonl"), "train.csv and train.jsonl both hold"),
])
def test_bad_user_files_name_the_file_and_line(tmp_path, corrupt, message):
    folder = _folder(tmp_path / "bad", "csv")
    corrupt(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.load(folder, validation_size=0)


def test_unknown_source_lists_what_is_accepted(tmp_path):
    with pytest.raises(KeyError, match="or pass a folder with train and test files"):
        data.load(tmp_path / "nowhere")


@pytest.fixture
def registries():
    """The registries, restored after the test (``add`` registers names globally)."""
    with registries_restored():
        yield


def test_add_names_folders_and_load_reads_them(tmp_path, registries):
    a = _folder(tmp_path / "x" / "reviews", "csv")
    b = _folder(tmp_path / "y" / "reviews", "tsv")
    clash = _folder(tmp_path / "z" / "SST-2", "jsonl")
    assert data.add(["sst2", str(a), str(b), str(clash)]) == ["sst2", "x/reviews", "y/reviews", "z/SST-2"]
    assert data.get_info("y/reviews").path == str(b)
    assert data.label_names(data.load("x/reviews")) == ["neg", "pos"]
    assert data.get_info("sst2").path is None
    with pytest.raises(KeyError, match="unknown dataset"):
        data.add([str(tmp_path / "nowhere")])
