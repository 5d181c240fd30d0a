"""The results store: every notebook writes its tables here with a run record, and the book reads them back.

A result file is ``<results_dir>/<name>.json`` holding ``{"run": <run record>, "rows": [...]}``. Writes are atomic
(temp file + ``os.replace``), so a crashed notebook never leaves half a file for the book to read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import files
from layerfusion.study import workspace
from layerfusion.provenance import git_info, hardware, versions

RESERVED_KEYS = ("run_id", "started_at", "profile", "seed", "git", "versions", "hardware")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SAVE_RE = re.compile(r"""save\(\s*(f?)(['"])(.+?)\2""")
_TABLES_RE = re.compile(r"""save_tables\([^)]*?prefix\s*=\s*(['"])(.+?)\1""")


class TableSet:
    """Mixin for the dataclasses of analysis tables: ``tables()`` lists them by field name for the results store."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """name -> table, for writing to the results store."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def run_info(profile: str, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A run record: run_id (UTC timestamp + short uuid), started_at, profile, seed, git, versions, hardware.

    ``extra`` keys (e.g. ``chapter``, ``config``) are added at the top level; they may not shadow the fields above.
    """
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"run_info: extra keys {clash} clash with the record's own fields {list(RESERVED_KEYS)}")
    now = dt.datetime.now(dt.timezone.utc)
    return {"run_id": f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", "started_at": now.isoformat(timespec="seconds"),
            "profile": profile, "seed": seed, "git": git_info(workspace.repo_root(), exclude=("results", "book/executed")), "versions": versions(), "hardware": hardware(),
            **extra}


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """A JSON-ready copy: numpy scalars/arrays, pandas objects, paths, dataclasses converted; NaN/inf become None."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), where)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(_records(obj), where)
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.tolist(), where)
    if obj is pd.NaT or obj is pd.NA:
        return None
    if isinstance(obj, (dt.datetime, dt.date, pd.Timestamp)):
        return obj.isoformat()
    if isinstance(obj, (pd.Timedelta, dt.timedelta)):
        return obj.total_seconds()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), where)
    raise TypeError(f"{where}: cannot store {type(obj).__name__} in a results file; convert it to numbers, "
                    "strings, lists or dicts first")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a frame; a named or non-integer index becomes columns (an unnamed integer index is dropped)."""
    index = frame.index
    if any(n is not None for n in index.names) or not pd.api.types.is_integer_dtype(index.dtype):
        frame = frame.reset_index()
    return frame.to_dict(orient="records")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"result name {name!r} must be a plain file stem (letters, digits, '_', '-', '.'), "
                         "without a folder or '.json'")
    return name


def write(name: str, rows: list[dict[str, Any]] | pd.DataFrame, run: dict[str, Any],
          results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` = ``{"run": run, "rows": rows}`` atomically; returns the path."""
    _check_name(name)
    if isinstance(rows, pd.DataFrame):
        records = _records(rows)
    elif isinstance(rows, (list, tuple)) and all(isinstance(r, dict) for r in rows):
        records = list(rows)
    else:
        raise TypeError(f"rows for {name!r} must be a pandas DataFrame or a list of dicts, got {type(rows).__name__}")
    if not isinstance(run, dict):
        raise TypeError(f"run for {name!r} must be the dict from results.run_info, got {type(run).__name__}")
    payload = {"run": to_jsonable(run, "run"), "rows": to_jsonable(records, "rows")}
    target = workspace.results_dir(results_dir) / f"{name}.json"
    return files.atomic_write_json(target, payload, ensure_ascii=False, indent=1, allow_nan=False)


def producers(name: str, notebooks_dir: str | os.PathLike | None = None) -> list[str]:
    """Notebooks whose ``save('<name>')`` / ``save(f'..{x}..')`` / ``save_tables(..., prefix='<p>')`` calls can
    write result ``name`` (``save_tables`` writes ``<p>_<table>``).

    ``runtime_<chapter>`` (written by ``report.finish``) maps to the notebook named ``NN_<chapter>.ipynb``.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else workspace.repo_root() / "notebooks"
    found = []
    for nb in sorted(folder.glob("*.ipynb")):
        if name.startswith("runtime_") and nb.stem.split("_", 1)[-1] == name[len("runtime_"):]:
            found.append(nb.name)
            continue
        try:
            text = "".join("".join(c.get("source", "")) + "\n"
                           for c in json.loads(nb.read_text(encoding="utf-8")).get("cells", []))
        except (OSError, ValueError, AttributeError):
            continue
        if any(name.startswith(f"{prefix}_") and len(name) > len(prefix) + 1
               for _, prefix in _TABLES_RE.findall(text)):
            found.append(nb.name)
            continue
        for is_f, _, literal in _SAVE_RE.findall(text):
            parts = re.split(r"\{[^}]*\}", literal) if is_f else [literal]
            if re.fullmatch(".+".join(map(re.escape, parts)), name):
                found.append(nb.name)
                break
    return found


def read(name: str, results_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of ``<results_dir>/<name>.json`` as a DataFrame, and the run record that wrote them."""
    _check_name(name)
    path = workspace.results_dir(results_dir) / f"{name}.json"
    if not path.is_file():
        made_by = producers(name)
        by = f"notebook {', '.join(made_by)}" if made_by else "the notebook that saves it (see notebooks/)"
        raise FileNotFoundError(f"no result {name!r} at {path}; it is produced by {by}: run it first "
                                "(e.g. `make notebooks`)")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"result file {path} is corrupt ({exc}); delete it and re-run the notebook that "
                         "produces it") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list) \
            or not isinstance(payload.get("run"), dict):
        raise ValueError(f"result file {path} is corrupt: expected {{'run': {{...}}, 'rows': [...]}}; delete it "
                         "and re-run the notebook that produces it")
    return pd.DataFrame(payload["rows"]), payload["run"]
