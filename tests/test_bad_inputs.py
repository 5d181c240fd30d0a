"""Bad input, swept through the Python API, the command line and papermill parameters.

Each bad input must fail where it enters with one line that names the input and says what is allowed or how to fix
it; the command line answers usage errors with exit status 2 and no traceback; nothing already computed is lost.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerfusion import data, extract, models, paths, testing
from layerfusion.study import workspace
from layerfusion import embeddings
from layerfusion.study import cli

TEXTS = ["the movie was good", "bad plot", "great acting and a fun story", "not good"]
LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return models.load(testing.tiny_spec(tmp_path_factory.mktemp("bad-inputs") / "llama", arch="llama"),
                       device="cpu")


@pytest.fixture
def toy(tmp_path) -> tuple[Path, dict[str, data.DatasetInfo]]:
    """A 3-class dataset 'toy' (train 20/9/1, test 6/4/2) with a registry holding its checksums."""
    folder = tmp_path / "toy"
    folder.mkdir()
    for split, counts in (("train", (20, 9, 1)), ("test", (6, 4, 2))):
        rows = [{"text": f"{split} text {y} {j}", "label": y, "label_name": LABELS[y]}
                for y, n in enumerate(counts) for j in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    sha = {f.name: data.sha256_file(f) for f in folder.iterdir()}
    return tmp_path, {"toy": data.DatasetInfo("toy", 30, 12, 3, sha)}


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _check(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = _message(exc_info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# the Python API --------------------------------------------------------------------------------------------------


def _embeddings(tiny, tmp_path):
    return embeddings.embed(tiny, TEXTS, config=extract.ExtractionConfig(max_length=8), cache_dir=tmp_path,
                         progress=False)


API_CASES = {
    "unknown model": (lambda tiny, tmp: models.get_spec("bogus"), KeyError, ("'bogus'", "known models: ")),
    "unknown model in embed": (lambda tiny, tmp: embeddings.embed("bogus", TEXTS, cache_dir=tmp, progress=False),
                               KeyError, ("'bogus'", "known models: ", "smollm2-135m")),
    "unknown dataset": (lambda tiny, tmp: data.load("bogus"), KeyError, ("'bogus'", "known datasets are ", "sst2")),
    "unknown pooling in the config": (lambda tiny, tmp: extract.ExtractionConfig(poolings=("mean", "bogus")),
                                      ValueError, ("['bogus']", "choose from ['last', 'mean', 'mean_pad']")),
    "unknown pooling of the embeddings": (lambda tiny, tmp: _embeddings(tiny, tmp).stack("bogus"), KeyError,
                                          ("'bogus'", "available: ['last', 'mean']")),
    "unknown layer in the config": (
        lambda tiny, tmp: extract.extract_texts(tiny, TEXTS, extract.ExtractionConfig(layers=(0, 99)),
                                                progress=False),
        ValueError, ("[99]", "0..2, or negative from the end")),
    "unknown layer of the embeddings": (lambda tiny, tmp: _embeddings(tiny, tmp).layer("mean", 99), KeyError,
                                        ("layer 99", "kept hidden-state indices are [0, 1, 2]")),
    "max_length 0": (lambda tiny, tmp: extract.ExtractionConfig(max_length=0), ValueError,
                     ("max_length", "positive integer", "got 0")),
    "model path that does not exist": (
        lambda tiny, tmp: models.load(dataclasses.replace(tiny.spec, path=str(tmp / "no-such-model"))),
        FileNotFoundError, ("no-such-model", "is not a directory")),
    "model named by a path that does not exist": (
        lambda tiny, tmp: models.get_spec(str(tmp / "no-such-model")), FileNotFoundError,
        ("no-such-model' does not exist", "pass an existing folder")),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_names_the_bad_input_in_one_line(case, tiny, tmp_path):
    call, error, fragments = API_CASES[case]
    with pytest.raises(error) as info:
        call(tiny, tmp_path)
    _check(info, *fragments)


def _corrupt(folder: Path, kind: str) -> None:
    if kind == "non-UTF-8 line":
        path = folder / "train.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = lines[1].replace(b"train", b"tr\xe9in")  # latin-1, not UTF-8
        path.write_bytes(b"".join(lines))
    elif kind == "non-UTF-8 labels":
        (folder / "labels.json").write_bytes(json.dumps(LABELS).encode("utf-16"))
    elif kind == "truncated mid-line":
        path = folder / "test.jsonl"
        path.write_bytes(path.read_bytes()[:-20])
    elif kind == "truncated at a line end":
        path = folder / "test.jsonl"
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-3]))


@pytest.mark.parametrize("kind, fragments", [
    ("non-UTF-8 line", ("train.jsonl, line 2: not UTF-8 text (byte 0xe9)", "re-save the file as UTF-8")),
    ("non-UTF-8 labels", ("labels.json, line 1: not UTF-8 text", "re-save the file as UTF-8")),
    ("truncated mid-line", ("test.jsonl, line 12: malformed JSON", "each line must be one JSON object")),
])
def test_damaged_data_files_are_named_with_their_line(toy, kind, fragments):
    root, registry = toy
    _corrupt(root / "toy", kind)
    with pytest.raises(ValueError) as info:  # the canonical checksums catch every change first ...
        data.load("toy", root, registry=registry)
    _check(info, "checksum mismatch for", "or pass verify=False")
    with pytest.raises(ValueError) as info:  # ... and without them the reader names the file and line
        data.load("toy", root, registry=registry, verify=False)
    _check(info, *fragments)


def test_data_file_truncated_at_a_line_end_is_caught_by_its_row_count(toy):
    root, registry = toy
    _corrupt(root / "toy", "truncated at a line end")
    with pytest.raises(ValueError) as info:
        data.load("toy", root, registry=registry)
    _check(info, "checksum mismatch for")
    with pytest.warns(UserWarning, match=r"test\.jsonl: 9 rows, but the canonical toy test split has 12"):
        data.load("toy", root, registry=registry, verify=False)


@pytest.mark.parametrize("limits, fragment", [
    ({"max_train": 2}, "max_train=2 leaves 1 of the 3 classes of the train split without a row (e.g. 'gamma'); "
                       "pass max_train >= 3 or None"),
    ({"max_test": 1}, "max_test=1 leaves 2 of the 3 classes of the test split without a row"),
])
def test_subsample_that_empties_a_class_is_refused(toy, limits, fragment):
    root, registry = toy
    with pytest.raises(ValueError) as info:
        data.load("toy", root, registry=registry, validation_size=0, **limits)
    _check(info, fragment)
    assert len(data.load("toy", root, registry=registry, validation_size=0, max_train=3, max_test=3)["test"]) == 3


def test_a_bad_request_after_work_loses_nothing(tiny, tmp_path):
    first = _embeddings(tiny, tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        embeddings.embed(tiny, TEXTS, config=extract.ExtractionConfig(max_length=8, layers=(99,)), cache_dir=tmp_path,
                      progress=False)
    calls = []
    hook = tiny.model.register_forward_pre_hook(lambda *a, **k: calls.append(1), with_kwargs=True)
    try:
        again = _embeddings(tiny, tmp_path)
    finally:
        hook.remove()
    assert calls == [] and again.path == first.path and (again.vectors["mean"] == first.vectors["mean"]).all()


# the command line ------------------------------------------------------------------------------------------------

CLI_CASES = {
    "unknown pooling": (["probe", "--profile", "ci", "--pooling", "bogus"],
                        ("argument --pooling: unknown pooling 'bogus'; choose from mean, last, mean_pad",)),
    "unknown model": (["extract", "--profile", "ci", "--model", "smollm2-135m", "--model", "bogus"],
                      ("unknown model 'bogus'; known models: ",)),
    "model path that does not exist": (["extract", "--profile", "ci", "--model", "/no/such/model"],
                                       ("'/no/such/model'",)),
    "unknown dataset": (["extract", "--profile", "ci", "--dataset", "bogus"],
                        ("unknown dataset 'bogus'; known datasets are ",)),
    "unknown profile": (["extract", "--profile", "nope"], ("unknown profile 'nope'; available profiles in ",)),
    "unknown chapter": (["report", "--chapter", "99_x"], ("unknown chapter '99_x'; chapters are 00_setup",)),
    "unknown dtype": (["extract", "--profile", "ci", "--dtype", "int8"],
                      ("argument --dtype: unknown dtype 'int8'; use one of ['bfloat16', 'float16', 'float32', "
                       "'float64']",)),
    "unknown device": (["extract", "--profile", "ci", "--device", "tpu"],
                       ("argument --device: unknown device 'tpu'; use cpu, cuda or cuda:N",)),
    "unknown option": (["probe", "--profile", "ci", "--layers", "3"], ("unrecognized arguments: --layers 3",)),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_usage_errors_exit_2_with_one_line_and_no_work(case, capsys, tmp_path, monkeypatch):
    argv, fragments = CLI_CASES[case]
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("layerfusion") and ": error: " in last
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} not in {last!r}"
    assert not (tmp_path / "cache").exists()  # failed before any work


def test_cli_usage_error_in_a_real_process():
    done = subprocess.run([sys.executable, "-m", "layerfusion.study.cli", "probe", "--pooling", "bogus"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == ("layerfusion probe: error: argument --pooling: unknown pooling "
                                                    "'bogus'; choose from mean, last, mean_pad")


# papermill parameters ---------------------------------------------------------------------------------------------

NOTEBOOKS = workspace.repo_root() / "notebooks"


@pytest.mark.slow
@pytest.mark.skipif(not workspace.data_dir().is_dir(), reason="needs the datasets (LAYERFUSION_DATA_DIR)")
@pytest.mark.parametrize("notebook, parameters, fragments", [
    ("00_setup", {"profile": "nope"}, ("unknown profile 'nope'",)),
    ("00_setup", {"datasets": ["bogus"]}, ("unknown dataset 'bogus'", "known datasets are")),
    ("01_extraction", {"models": ["bogus"]}, ("unknown model 'bogus'", "known models")),
])
def test_papermill_parameters_fail_in_the_cell_with_one_line(notebook, parameters, fragments, tmp_path):
    pm = pytest.importorskip("papermill")
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOKS / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"cache_dir": str(tmp_path / "cache"), **parameters}, cwd=str(NOTEBOOKS),
                            progress_bar=False, kernel_name="python3")
    evalue = info.value.evalue.strip().strip("'\"")
    assert "\n" not in evalue
    for fragment in fragments:
        assert fragment in evalue, f"{fragment!r} not in {evalue!r}"
    assert not list((tmp_path / "cache").rglob("shard-*.npy"))
