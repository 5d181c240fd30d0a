"""Where things live: the data directory and the user cache.

Each location is an argument, else an environment variable, else a plain default (``./data``, ``~/.cache``); the
engine knows no checkout or workspace (the study passes its own locations in).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

DATA_ENV = "LAYERFUSION_DATA_DIR"
CACHE_ENV = "LAYERFUSION_CACHE_DIR"

OBTAIN_DATA_HINT = (
    "Point LAYERFUSION_DATA_DIR (or data_dir=...) at a folder holding sst2/ mr/ r8/ r52/, each with "
    "train.jsonl, test.jsonl and labels.json (format: README 'Data'); "
    "`layerfusion.data.export_from_hub(name, out_dir)` writes the same files from the Hugging Face hub copies "
    "(needs internet)."
)


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $LAYERFUSION_DATA_DIR, else ``data`` in the current folder."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else (Path.cwd() / "data").resolve()


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
