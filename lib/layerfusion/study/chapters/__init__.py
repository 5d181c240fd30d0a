"""One analysis module per chapter of the book, named after its notebook: ``notebooks/NN_<name>.ipynb`` calls
``layerfusion.study.chapters.<name>``.

Nothing registers a chapter: the chapter list is the numbered notebooks found in ``notebooks/`` (the CLI's
``report`` command and the tests read it from ``notebooks()``), so adding a chapter is a notebook, its module here
and one line in ``_toc.yml``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from layerfusion.study import workspace

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_([a-z][a-z0-9_]*)$")
"""A chapter notebook's stem: two digits (its place in the book), an underscore, the chapter's module name."""


def notebooks(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Chapter notebooks in book order: notebook stem (``02_layer_analysis``) -> chapter name (``layer_analysis``)."""
    folder = Path(folder) if folder is not None else workspace.repo_root() / "notebooks"
    found = {}
    for path in sorted(folder.glob("*.ipynb")):
        match = NOTEBOOK_PATTERN.match(path.stem)
        if match:
            found[path.stem] = match.group(2)
    return found
