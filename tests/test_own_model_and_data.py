"""The study on a user's own model and data: a model folder and a CSV folder through Study, the CLI and the README.

The README's worked example is run here command for command (the test reads the commands from README.md), so the
README cannot drift from what works.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from layerfusion import models
from layerfusion.study import Study, StudyConfig, cli
from layerfusion.study.chapters import extraction, setup
from layerfusion.testing import registries_restored, tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Run the study on your model and data"
WORDS = {"positive": ["good", "great", "fun", "love"], "negative": ["bad", "boring", "terrible", "hate"]}


@pytest.fixture
def registries():
    """Both registries, restored after the test (a Study registers the short names of paths)."""
    with registries_restored():
        yield


def _reviews(folder: Path, n_train: int = 24, n_test: int = 8) -> Path:
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["text", "label"])
            for i in range(n):
                label = sorted(WORDS)[i % 2]
                out.writerow([f"the movie was {WORDS[label][i % 4]}", label])
    return folder


def test_study_takes_model_folders_and_data_folders(tmp_path, registries):
    first = tiny_model_dir(tmp_path / "a" / "model", arch="llama")
    second = tiny_model_dir(tmp_path / "b" / "model", arch="bert", seed=1)
    reviews = _reviews(tmp_path / "reviews")
    cfg = StudyConfig.from_profile("ci", models=(str(first), str(second)), datasets=(str(reviews),))
    study = Study(cfg, cache_dir=str(tmp_path / "cache"), progress=False)
    assert study.config.models == ("a/model", "b/model") and study.config.datasets == ("reviews",)
    table = extraction.extract_all(study)
    assert set(table["model"]) == {"a/model", "b/model"} and set(table["dataset"]) == {"reviews"}
    assert list(table["n"]) == [19, 5, 8] * 2  # validation_size 0.2 of 24 train rows
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "embeddings").glob("*/manifest.json")]
    stored = sorted(m["model"]["key"] for m in manifests)
    assert stored == ["a/model"] * 3 + ["b/model"] * 3  # distinct cache entries per model and split
    sizes = setup.dataset_table(study)
    assert list(sizes["rows used"]) == [19, 5, 8] and sizes["canonical train"].isna().all()


def test_papermill_list_parameters_are_parsed():
    """papermill's -p passes a list as its repr; it must not be split into characters."""
    cfg = StudyConfig.from_profile("ci", models="['minilm-l6', 'smollm2-135m']", datasets="sst2")
    assert cfg.models == ("minilm-l6", "smollm2-135m") and cfg.datasets == ("sst2",)


def test_cli_takes_paths_and_input_conventions(tmp_path, registries, capsys):
    model = tiny_model_dir(tmp_path / "my-model")
    reviews = _reviews(tmp_path / "reviews")
    argv = ["extract", "--model", str(model), "--dataset", str(reviews), "--profile", "ci", "--quiet",
            "--cache-dir", str(tmp_path / "cache"), "--text-prefix", "review: "]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"my-model\s+reviews\s+train", out)
    assert models.get_spec("my-model").inputs() == {"text_prefix": "review: "}
    manifest = next(p for p in (tmp_path / "cache" / "embeddings").glob("*/manifest.json")
                    if json.loads(p.read_text())["model"]["key"] == "my-model")
    assert json.loads(manifest.read_text())["model"]["inputs"] == {"text_prefix": "review: "}
    assert cli.main(["extract", "--model", str(tmp_path / "nowhere"), "--profile", "ci"]) == 2
    assert "does not exist" in capsys.readouterr().err


def readme_example() -> str:
    """The bash block of the README's section on running the study on one's own model and data."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    return re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    """Extract, probe and chapter 2 under papermill on a tiny model folder and a CSV folder (about a minute)."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": f"{REPO / 'lib'}:{os.environ.get('PYTHONPATH', '')}",
           "LAYERFUSION_CACHE_DIR": str(tmp_path / "cache"), "LAYERFUSION_RESULTS_DIR": str(tmp_path / "results")}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_example()], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"my-model\s+reviews\s+train\s+48", done.stdout)
    assert re.search(r"my-model\s+reviews\s+mean\s+\d", done.stdout)
    executed = list(tmp_path.glob("tmp*/02_layer_analysis.ipynb"))
    assert len(executed) == 1
    summary = json.loads((tmp_path / "results" / "ci" / "layers_summary.json").read_text())
    assert {(row["model"], row["dataset"]) for row in summary["rows"]} == {("my-model", "reviews")}
