"""Where things live: the data directory, the user cache, the results directory.

Each location is a setting with an environment variable, so nothing is hard-coded to this checkout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

DATA_ENV = "LAYERFUSION_DATA_DIR"
CACHE_ENV = "LAYERFUSION_CACHE_DIR"
RESULTS_ENV = "LAYERFUSION_RESULTS_DIR"

OBTAIN_DATA_HINT = (
    "Point LAYERFUSION_DATA_DIR (or data_dir=...) at a folder holding sst2/ mr/ r8/ r52/, each with "
    "train.jsonl, test.jsonl and labels.json (format: README 'Data'). In this project's workspace that folder is "
    "../shared/data; elsewhere, `layerfusion.data.export_from_hub(name, out_dir)` writes the same files from the "
    "Hugging Face hub copies (needs internet)."
)


def repo_root() -> Path:
    """The checkout root when running from a source tree (the folder holding pyproject.toml), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "lib" / "layerfusion").exists():
            return parent
    return Path.cwd()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $LAYERFUSION_DATA_DIR, else ../shared/data beside the checkout."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    for base in (repo_root(), Path.cwd()):
        for cand in (base / "shared" / "data", base.parent / "shared" / "data"):
            if cand.is_dir():
                return cand.resolve()
    return (repo_root().parent / "shared" / "data").resolve()


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Root of the user cache (converted models, embeddings): argument, $LAYERFUSION_CACHE_DIR, ~/.cache/layerfusion."""
    if explicit is not None:
        path = Path(explicit).expanduser()
    else:
        env = os.environ.get(CACHE_ENV)
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = Path(env).expanduser() if env else (Path(xdg) if xdg else Path.home() / ".cache") / "layerfusion"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where notebooks write result files the book reads: argument, $LAYERFUSION_RESULTS_DIR, <repo>/results."""
    if explicit is not None:
        path = Path(explicit).expanduser()
    else:
        env = os.environ.get(RESULTS_ENV)
        path = Path(env).expanduser() if env else repo_root() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def short_names(items: Sequence[str | os.PathLike], taken: Collection[str] = (),
                key: Callable[[str], str] = str) -> list[str]:
    """Readable, distinct names for paths (tables, cache folders): each path's last part, with parent folders added
    only where two different paths would share a name, or where the name (compared as ``key(name)``) is in ``taken``.

    ``["/a/x/model", "/b/y/model", "/c/data"]`` -> ``["x/model", "y/model", "data"]``. The same path twice gets the
    same name.
    """
    parts = [Path(p).expanduser().resolve().parts for p in items]
    names = []
    for mine in parts:
        others = {q for q in parts if q != mine}
        for k in range(1, len(mine) + 1):
            name = str(Path(*mine[-k:]))
            if key(name) not in taken and not any(q[-k:] == mine[-k:] for q in others):
                break
        names.append(name)
    return names
