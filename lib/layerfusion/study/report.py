"""Glue between the library and the book: per-profile result files, run cards and glued numbers.

Results of profile ``p`` live in ``results/<p>/``; the book is built from ``results/default/``. A notebook calls
``report.start(profile, ...)`` once, ``report.save(name, table)`` for every table it produces, and ``report.glue``
for every number the prose quotes, so no number in the book is typed by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layerfusion import paths
from layerfusion.study import results


@dataclass
class Run:
    """One notebook execution: its run record, where it writes, and when it started."""

    profile: str
    info: dict[str, Any]
    results_dir: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def run_id(self) -> str:
        return str(self.info["run_id"])

    def save(self, name: str, table: pd.DataFrame | list[dict[str, Any]]) -> Path:
        """Write one results table (with this run's record) to ``results/<profile>/<name>.json``."""
        return results.write(name, table, self.info, results_dir=self.results_dir)

    def load(self, name: str) -> pd.DataFrame:
        """Read a table another chapter wrote under the same profile."""
        frame, _ = results.read(name, results_dir=self.results_dir)
        return frame

    def load_run(self, name: str) -> dict[str, Any]:
        """The run record of the chapter that wrote ``name``."""
        _, info = results.read(name, results_dir=self.results_dir)
        return info

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started


def start(profile: str, chapter: str, seed: int | None = None, results_dir: str | Path | None = None,
          **extra: Any) -> Run:
    """Open a run for one chapter under ``profile``; results go to ``results/<profile>/``."""
    base = paths.results_dir(results_dir) / profile
    base.mkdir(parents=True, exist_ok=True)
    info = results.run_info(profile, seed=seed, chapter=chapter, **extra)
    return Run(profile=profile, info=info, results_dir=base)


def run_card(info: dict[str, Any]) -> pd.DataFrame:
    """A two-column table of a run record (shown at the top and bottom of every chapter)."""
    hw = info.get("hardware") or {}
    git = info.get("git") or {}
    versions = info.get("versions") or {}
    rows = [
        ("run id", info.get("run_id")),
        ("chapter", info.get("chapter", "")),
        ("profile", info.get("profile")),
        ("seed", info.get("seed")),
        ("started (UTC)", info.get("started_at")),
        ("git commit", (git.get("sha") or "unknown")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("CPU", f"{hw.get('cpu', '?')} · {hw.get('logical_cores', '?')} cores · torch threads "
                f"{hw.get('torch_threads', '?')}"),
        ("GPU", hw.get("gpu") or "none"),
        ("RAM (GiB)", hw.get("ram_gib")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    if "runtime_s" in info:
        rows.append(("chapter runtime (s)", f"{info['runtime_s']:.0f}"))
    return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")


def glue(name: str, value: Any, fmt: str | None = None) -> Any:
    """Glue a number or text for the book's prose (MyST-NB); formatted with ``fmt`` when given."""
    from myst_nb import glue as _glue

    shown = format(value, fmt) if fmt else value
    _glue(name, shown, display=False)
    return shown


def finish(run: Run) -> pd.DataFrame:
    """Record the chapter's wall time as its own results table (``runtime_<chapter>``) and return the run card."""
    run.info["runtime_s"] = run.elapsed()
    chapter = run.info.get("chapter")
    run.save(f"runtime_{chapter}", [{"chapter": chapter, "runtime_s": run.info["runtime_s"]}])
    return run_card(run.info)


def run_records(results_dir: str | Path) -> pd.DataFrame:
    """One row per chapter run found in a profile's results folder (for the reproducibility appendix)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        _, info = results.read(path.stem, results_dir=results_dir)
        chapter = info.get("chapter", "?")
        runtime = None
        if path.stem.startswith("runtime_"):
            frame, _ = results.read(path.stem, results_dir=results_dir)
            runtime = float(frame["runtime_s"].iloc[0])
        row = rows.setdefault(chapter, {
            "chapter": chapter, "run id": info.get("run_id"), "profile": info.get("profile"),
            "git commit": ((info.get("git") or {}).get("sha") or "unknown")[:12],
            "started (UTC)": info.get("started_at"),
            "hardware": f"{(info.get('hardware') or {}).get('cpu', '?')}; GPU: "
                        f"{(info.get('hardware') or {}).get('gpu') or 'none'}",
            "result files": 0, "runtime (s)": None})
        row["result files"] += 1
        if runtime is not None:
            row["runtime (s)"] = round(runtime)
    return pd.DataFrame(list(rows.values()))
