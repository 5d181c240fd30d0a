"""Tests for layerfusion.data: reading and checking the files, carving validation, subsampling, fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset

from layerfusion import data, files, paths

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
    first = data.sha256_file(path)
    stat = path.stat()
    assert files._HASH_CACHE[(str(path.resolve()), stat.st_size, stat.st_mtime_ns)] == first
    _write_split(path, _rows(list(reversed(TRAIN_LABELS)), "train"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert data.sha256_file(path) != first


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
    with pytest.raises(ValueError, match="lacks columns"):
        data.fingerprint(Dataset.from_dict({"text": ["a"]}))


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


needs_data = pytest.mark.skipif(not (paths.data_dir() / "sst2").is_dir(),
                                reason=f"real data not found at {paths.data_dir()}")


@needs_data
@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_real_datasets_load_with_canonical_counts(name):
    info = data.DATASETS[name]
    dd = data.load(name)
    assert len(dd["train"]) + len(dd["validation"]) == info.n_train
    assert len(dd["test"]) == info.n_test
    assert len(data.label_names(dd)) == info.n_classes


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
