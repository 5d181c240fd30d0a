"""The committed executed notebooks and the committed results files come from the same runs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from layerfusion.study.chapters import notebooks

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "book" / "executed"
RESULTS = ROOT / "results" / "default"
CHAPTERS = notebooks(ROOT / "notebooks")


def glued(path: Path) -> dict[str, str]:
    """Values glued (MyST-NB) in an executed notebook, as their text/plain repr evaluated."""
    out = {}
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook", {})
            if scrap.get("name"):
                name = scrap["name"]
                text = output.get("data", {}).get(scrap.get("mime_prefix", "") + "text/plain", "")
                text = "".join(text) if isinstance(text, list) else text
                try:
                    out[name] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    out[name] = text
    return out


@pytest.mark.skipif(not EXECUTED.is_dir(), reason="no executed notebooks committed yet")
@pytest.mark.parametrize("notebook,chapter", sorted(CHAPTERS.items()))
def test_executed_notebook_and_results_share_run_id(notebook: str, chapter: str):
    path = EXECUTED / f"{notebook}.ipynb"
    assert path.is_file(), f"{path} is missing: run `make notebooks` (PROFILE=default) and commit book/executed"
    nb_run = glued(path).get(f"{chapter}_run_id")
    assert nb_run, f"{path} does not glue {chapter}_run_id"
    results = json.loads((RESULTS / f"runtime_{chapter}.json").read_text())
    assert results["run"]["run_id"] == nb_run, (
        f"{path} was executed by run {nb_run} but results/default/runtime_{chapter}.json comes from "
        f"{results['run']['run_id']}: re-run `make notebooks` and commit both")
    for other in RESULTS.glob("*.json"):
        run = json.loads(other.read_text())["run"]
        if run.get("chapter") == chapter:
            assert run["run_id"] == nb_run, f"{other.name} is from another run of chapter {chapter}"


@pytest.mark.skipif(not EXECUTED.is_dir(), reason="no executed notebooks committed yet")
def test_executed_notebooks_ran_the_default_profile_without_errors():
    for notebook in CHAPTERS:
        nb = json.loads((EXECUTED / f"{notebook}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{notebook} has error outputs"
        params = nb["metadata"].get("papermill", {}).get("parameters", {})
        assert params.get("profile") == "default", f"{notebook} was executed with {params}, not profile=default"
