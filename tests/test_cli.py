"""The command line: progress of the notebook kernels streamed to the terminal by ``layerfusion report``."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import nbformat
import pytest

from layerfusion import progress
from layerfusion.study import cli

BAR = ("from layerfusion import progress\n"
       "with progress.progress_bar(5, 'embed tiny toy train', progress=False) as bar:\n"
       "    for _ in range(5):\n"
       "        bar.update(1)\n")


def test_progress_from_a_child_process_is_copied_to_the_stream():
    stream = io.StringIO()
    before = os.environ.get(progress.PROGRESS_FILE_ENV)
    with cli.progress_from_kernel(stream) as side:
        assert os.environ[progress.PROGRESS_FILE_ENV] == str(side)
        subprocess.run([sys.executable, "-c", BAR], check=True, timeout=300)
    shown = stream.getvalue()
    assert "embed tiny toy train" in shown and "5/5" in shown and "text/s" in shown
    assert os.environ.get(progress.PROGRESS_FILE_ENV) == before and not side.exists()


def test_report_shows_progress_on_the_terminal_and_none_in_the_notebook(tmp_path):
    """What ``layerfusion report`` does per chapter: papermill inside ``progress_from_kernel``."""
    pm = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(BAR), nbformat.v4.new_code_cell("print('cell output')")]
    source, out = tmp_path / "chapter.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(nb, source)
    stream = io.StringIO()
    with cli.progress_from_kernel(stream):
        pm.execute_notebook(str(source), str(out), progress_bar=False, kernel_name="python3", cwd=str(tmp_path))
    assert "embed tiny toy train" in stream.getvalue() and "5/5" in stream.getvalue()
    outputs = [o for cell in nbformat.read(out, as_version=4).cells for o in cell.get("outputs", [])]
    text = " ".join(str(o.get("text", "")) + str(o.get("data", "")) for o in outputs)
    assert "cell output" in text and "embed tiny" not in text and "text/s" not in text
