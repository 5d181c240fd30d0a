"""Where this project's study finds its inputs and puts its outputs: the checkout, the data, the results.

The engine takes every location as an argument (or its environment variable); this module holds the project's
defaults and passes them in: data in ``$LAYERFUSION_DATA_DIR``, else ``shared/data`` beside or inside the checkout;
results in ``$LAYERFUSION_RESULTS_DIR``, else ``<checkout>/results`` (or ``./results`` outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

from layerfusion import paths

RESULTS_ENV = "LAYERFUSION_RESULTS_DIR"


def repo_root() -> Path:
    """The checkout root when running from a source tree (the folder holding pyproject.toml), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "lib" / "layerfusion").exists():
            return parent
    return Path.cwd()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $LAYERFUSION_DATA_DIR, else ``shared/data`` beside (or in) the
    checkout or the current folder, else the engine's default."""
    if explicit is not None or os.environ.get(paths.DATA_ENV):
        return paths.data_dir(explicit)
    for base in (repo_root(), Path.cwd()):
        for cand in (base / "shared" / "data", base.parent / "shared" / "data"):
            if cand.is_dir():
                return cand.resolve()
    return paths.data_dir()


def results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where notebooks write result files the book reads: argument, $LAYERFUSION_RESULTS_DIR, <checkout>/results."""
    if explicit is not None:
        path = Path(explicit).expanduser()
    else:
        env = os.environ.get(RESULTS_ENV)
        path = Path(env).expanduser() if env else repo_root() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
