"""Tests for layerfusion.study.results: run records, atomic JSON result files, reading them back."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerfusion import files
from layerfusion.study import results, workspace


@pytest.fixture
def run() -> dict:
    return results.run_info("ci", seed=3, chapter="test", config={"n": np.int64(4)})


def test_hardware_and_versions_fields():
    hw = results.hardware()
    assert {"cpu", "logical_cores", "torch_threads", "ram_gib", "gpu", "gpu_memory_gib"} <= set(hw)
    assert isinstance(hw["cpu"], str) and hw["cpu"]
    assert hw["logical_cores"] >= 1 and hw["ram_gib"] > 0
    assert (hw["gpu"] is None) == (hw["gpu_memory_gib"] is None)
    v = results.versions()
    assert set(v) == {"python", "torch", "transformers", "datasets", "numpy", "sklearn", "layerfusion"}
    assert v["numpy"] == np.__version__ and v["layerfusion"] is not None


def test_git_info_inside_and_outside_a_checkout(tmp_path):
    info = results.git_info()
    if info["sha"] is not None:
        assert re.fullmatch(r"[0-9a-f]{40}", info["sha"]) and isinstance(info["dirty"], bool)
    assert results.git_info(tmp_path) == {"sha": None, "dirty": None}


def test_run_info_record(run):
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run["run_id"])
    started = dt.datetime.fromisoformat(run["started_at"])
    assert started.utcoffset() == dt.timedelta(0)
    assert (run["profile"], run["seed"], run["chapter"]) == ("ci", 3, "test")
    assert {"git", "versions", "hardware"} <= set(run)
    assert results.run_info("ci")["run_id"] != results.run_info("ci")["run_id"]
    with pytest.raises(ValueError, match=r"extra keys \['versions'\] clash"):
        results.run_info("ci", versions={})


def test_write_read_roundtrip_with_numpy_and_nan(tmp_path, run):
    rows = [{"model": "m", "layer": np.int64(3), "acc": np.float32(0.5), "vec": np.arange(3), "missing": np.nan,
             "flag": np.bool_(True), "path": Path("/x")},
            {"model": "n", "layer": 4, "acc": 0.75, "vec": [1, 2], "missing": 1.5, "flag": False, "path": "y"}]
    path = results.write("probe_scores", rows, run, results_dir=tmp_path)
    assert path == tmp_path / "probe_scores.json"
    payload = json.loads(path.read_text())
    assert set(payload) == {"run", "rows"} and payload["rows"][0]["missing"] is None
    frame, info = results.read("probe_scores", results_dir=tmp_path)
    assert list(frame.columns) == ["model", "layer", "acc", "vec", "missing", "flag", "path"]
    assert frame["layer"].tolist() == [3, 4] and frame["vec"].tolist() == [[0, 1, 2], [1, 2]]
    assert math.isnan(frame["missing"].iloc[0]) and frame["missing"].iloc[1] == 1.5
    assert frame["path"].tolist() == ["/x", "y"] and frame["flag"].tolist() == [True, False]
    assert info["run_id"] == run["run_id"] and info["config"] == {"n": 4}
    assert not list(tmp_path.glob(".*.tmp"))


def test_dataframe_index_handling(tmp_path, run):
    named = pd.DataFrame({"a": [1, 2]}, index=pd.Index(["train", "test"], name="split"))
    results.write("named", named, run, results_dir=tmp_path)
    assert results.read("named", results_dir=tmp_path)[0].to_dict("list") == {"split": ["train", "test"], "a": [1, 2]}
    filtered = pd.DataFrame({"a": [1, 2, 3]}).iloc[[0, 2]]
    results.write("filtered", filtered, run, results_dir=tmp_path)
    assert results.read("filtered", results_dir=tmp_path)[0].to_dict("list") == {"a": [1, 3]}
    results.write("empty", pd.DataFrame(), run, results_dir=tmp_path)
    assert results.read("empty", results_dir=tmp_path)[0].empty


def test_write_overwrites_atomically_and_keeps_old_file_on_failure(tmp_path, run, monkeypatch):
    results.write("t", [{"x": 1}], run, results_dir=tmp_path)
    results.write("t", [{"x": 2}], run, results_dir=tmp_path)
    assert results.read("t", results_dir=tmp_path)[0]["x"].tolist() == [2]

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", explode)
    with pytest.raises(OSError, match="disk full"):
        results.write("t", [{"x": 3}], run, results_dir=tmp_path)
    monkeypatch.undo()
    assert results.read("t", results_dir=tmp_path)[0]["x"].tolist() == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_write_rejects_bad_input(tmp_path, run):
    with pytest.raises(ValueError, match="plain file stem"):
        results.write("../escape", [], run, results_dir=tmp_path)
    with pytest.raises(ValueError, match="plain file stem"):
        results.write("x.json/", [], run, results_dir=tmp_path)
    with pytest.raises(TypeError, match="DataFrame or a list of dicts"):
        results.write("x", {"a": 1}, run, results_dir=tmp_path)
    with pytest.raises(TypeError, match="dict from results.run_info"):
        results.write("x", [], "run", results_dir=tmp_path)
    with pytest.raises(TypeError, match=r"rows\[0\]\['obj'\]: cannot store object"):
        results.write("x", [{"obj": object()}], run, results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_to_jsonable_converts_dataclasses_and_times():
    @dataclass
    class Point:
        x: np.float64
        when: pd.Timestamp

    out = results.to_jsonable({"p": Point(np.float64(1.5), pd.Timestamp("2024-01-02")), "s": {3, 1},
                               "inf": float("inf"), "td": pd.Timedelta(seconds=2)})
    assert out == {"p": {"x": 1.5, "when": "2024-01-02T00:00:00"}, "s": [1, 3], "inf": None, "td": 2.0}


def test_read_missing_names_the_producing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result 'nothing_here' at .*run it first"):
        results.read("nothing_here", results_dir=tmp_path)
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    cells = [{"cell_type": "code", "source": ["run.save('setup_sizes', t)\n", "run.save(f'layers_{name}', x)"]}]
    (nb_dir / "00_setup.ipynb").write_text(json.dumps({"cells": cells}))
    (nb_dir / "01_other.ipynb").write_text(json.dumps({"cells": []}))
    assert results.producers("setup_sizes", nb_dir) == ["00_setup.ipynb"]
    assert results.producers("layers_mean", nb_dir) == ["00_setup.ipynb"]
    assert results.producers("layers_", nb_dir) == []
    assert results.producers("runtime_other", nb_dir) == ["01_other.ipynb"]


def test_read_missing_uses_the_repo_notebooks(tmp_path):
    if not results.producers("runtime_setup"):
        pytest.skip("no notebooks/00_setup.ipynb in this checkout")
    with pytest.raises(FileNotFoundError, match="produced by notebook 00_setup.ipynb"):
        results.read("runtime_setup", results_dir=tmp_path)


def test_read_corrupt_files(tmp_path):
    (tmp_path / "bad.json").write_text('{"run": {}, "rows": [')
    with pytest.raises(ValueError, match="bad.json is corrupt .*re-run the notebook"):
        results.read("bad", results_dir=tmp_path)
    (tmp_path / "shape.json").write_text('{"rows": {}}')
    with pytest.raises(ValueError, match="shape.json is corrupt: expected"):
        results.read("shape", results_dir=tmp_path)


def test_results_dir_defaults_to_env(tmp_path, monkeypatch, run):
    monkeypatch.setenv(workspace.RESULTS_ENV, str(tmp_path / "res"))
    path = results.write("envtest", [{"a": 1}], run)
    assert path == (tmp_path / "res" / "envtest.json").resolve()
    assert results.read("envtest")[0]["a"].tolist() == [1]
