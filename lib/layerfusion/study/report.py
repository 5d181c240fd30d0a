"""Glue between the library and the book: per-profile result files, run cards and glued numbers.

Results of profile ``p`` live in ``results/<p>/``; the book is built from ``results/default/``. A chapter's notebook
opens itself with one call, ``report.open_chapter(name, profile, ...)``, which reads the profile, builds the study,
starts the run and returns a ``Chapter``; ``Chapter.save`` / ``save_tables`` write its tables and ``Chapter.glue``
every number the prose quotes, so no number in the book is typed by hand.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layerfusion.study import results, settings, workspace
from layerfusion.study.features import Study
from layerfusion.study.settings import StudyConfig


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
    base = workspace.results_dir(results_dir) / profile
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


MEASURED_PROFILE = "ci"
"""The profile whose chapters nbval compares with stored outputs (``make test``): there, measured values are marked."""
MEASURED = re.compile(r"seconds|runtime|_per_s$|rss|peak|bytes_on_disk|cost_ratio|\((MiB|GiB|s)\b|per 1k texts"
                      r"|time saved|^bytes per text$|^overhead_(slope|intercept|r2|per_unit_ratio)$|^git commit$|^hardware$|^cpu$")
"""Column and glue names whose values are measurements of the machine and the moment (wall times and what is
derived from them, such as the share of time saved by stopping early; resident memory; the size of cache folders
whose manifests record timings and the machine, also per text) or of the checkout and the machine (the commit and hardware columns of ``run_records``, the CPU that wrote a cache
entry), not results: they cannot reproduce on another run, so in the
``ci`` profile they are shown marked (``MEASURED_MARK``) and the nbval sanitize file (``tests/nbval_sanitize.cfg``)
replaces every marked value. A new measured column missing here fails ``make test`` (its value differs from the
reference), so it never passes silently."""
MEASURED_MARK = "≈"


def is_measured(name: Any) -> bool:
    """Whether a column (any level of a tuple column) or glue name holds a measurement (``MEASURED``)."""
    labels = name if isinstance(name, tuple) else (name,)
    return any(isinstance(label, str) and MEASURED.search(label) is not None for label in labels)


def mark(value: Any) -> str:
    """A measured value as text behind ``MEASURED_MARK`` (numbers to 4 significant digits), its spaces no-break
    spaces, so the sanitize file's rule can take a marked value to its end in a text table too."""
    if isinstance(value, float):
        return f"{MEASURED_MARK}{value:.4g}"
    return f"{MEASURED_MARK}{value}".replace(" ", "\u00a0")


def mark_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every measured column (``is_measured``) as marked text; ``frame`` itself when it has none."""
    columns = [c for c in frame.columns if is_measured(c)]
    if not columns:
        return frame
    marked = frame.copy()
    for column in columns:
        marked[column] = marked[column].map(mark).astype(object)
    return marked


_MARKING = False
"""Whether this kernel marks measurements (set by ``_notebook_display`` under the ci profile)."""


def mark_rows(frame: pd.DataFrame, rows: Any, keep: tuple[str, ...] = ("claim",)) -> pd.DataFrame:
    """``frame`` with every cell of the boolean ``rows`` marked (``mark``) but the columns in ``keep``, when this
    kernel marks measurements (the ci profile); ``frame`` itself otherwise. For rows, not columns, that are
    measurements: a claim judged from timings and memory (``claims.MEASURED_CLAIMS``) in a table shown as a Styler,
    which the DataFrame display hook never sees."""
    rows = pd.Series(rows, index=frame.index).astype(bool)
    if not _MARKING or not rows.any():
        return frame
    marked = frame.astype(object)
    for column in marked.columns:
        if column not in keep:
            marked.loc[rows, column] = marked.loc[rows, column].map(mark)
    return marked


def glue(name: str, value: Any, fmt: str | None = None) -> Any:
    """Glue a number or text for the book's prose (MyST-NB); formatted with ``fmt`` when given."""
    from myst_nb import glue as _glue

    shown = format(value, fmt) if fmt else value
    _glue(name, shown, display=False)
    return shown


def finish(run: Run, extra: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Record the chapter's wall time (with ``extra`` columns, e.g. the fit cache's hits and misses) as its own
    results table (``runtime_<chapter>``) and return the run card."""
    run.info["runtime_s"] = run.elapsed()
    chapter = run.info.get("chapter")
    run.save(f"runtime_{chapter}", [{"chapter": chapter, "runtime_s": run.info["runtime_s"], **(extra or {})}])
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


def chapter_runtimes(results_dir: str | Path) -> pd.DataFrame:
    """One row per chapter from its ``runtime_<chapter>`` table: wall time, the fit cache's hits and misses, and
    the run's commit and CPU, in the order the chapters ran. Where a warm re-run spends its time."""
    rows = []
    for path in sorted(Path(results_dir).glob("runtime_*.json")):
        frame, info = results.read(path.stem, results_dir=results_dir)
        row = frame.iloc[0].to_dict()
        hw, git = info.get("hardware") or {}, info.get("git") or {}
        rows.append({"chapter": row.get("chapter", path.stem[len("runtime_"):]),
                     "runtime_s": round(float(row["runtime_s"]), 1),
                     "fit_cache_hits": row.get("fit_cache_hits"), "fit_cache_misses": row.get("fit_cache_misses"),
                     "fit_cache_hit_rate": row.get("fit_cache_hit_rate"), "started": info.get("started_at"),
                     "commit": (git.get("sha") or "unknown")[:12] + ("+dirty" if git.get("dirty") else ""),
                     "cpu": hw.get("cpu"), "cpu_flags": " ".join(hw.get("cpu_flags") or [])})
    return pd.DataFrame(rows, columns=["chapter", "runtime_s", "fit_cache_hits", "fit_cache_misses",
                                       "fit_cache_hit_rate", "started", "commit", "cpu", "cpu_flags"]
                        ).sort_values(["started", "chapter"], kind="stable").reset_index(drop=True)


def slowest_cells(executed_dir: str | Path, top: int = 5) -> pd.DataFrame:
    """The ``top`` slowest code cells of the executed chapters in ``executed_dir`` (papermill's per-cell durations):
    chapter, cell number, seconds and the cell's first line."""
    import nbformat

    rows = []
    for path in sorted(Path(executed_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for number, cell in enumerate(nb.cells):
            seconds = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
            if cell.cell_type == "code" and seconds is not None:
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                rows.append({"chapter": path.stem, "cell": number, "seconds": round(float(seconds), 1),
                             "source": first[:80]})
    frame = pd.DataFrame(rows, columns=["chapter", "cell", "seconds", "source"])
    return frame.sort_values("seconds", ascending=False, kind="stable").head(top).reset_index(drop=True)


@dataclass
class Chapter:
    """One chapter being executed: its settings, its study, its run, and the calls that publish its results."""

    name: str
    config: StudyConfig
    study: Study
    run: Run

    @property
    def card(self) -> pd.DataFrame:
        """The run card shown at the top of the chapter."""
        return run_card(self.run.info)

    def save(self, name: str, table: pd.DataFrame) -> pd.DataFrame:
        """Write ``table`` as result ``name`` of this run and return it (so a cell can save and show at once)."""
        self.run.save(name, table)
        return table

    def save_tables(self, tables: results.TableSet | Mapping[str, pd.DataFrame], prefix: str) -> list[str]:
        """Write every table of an analysis as ``<prefix>_<table>``; returns the names written."""
        named = tables.tables() if isinstance(tables, results.TableSet) else dict(tables)
        for name, table in named.items():
            self.run.save(f"{prefix}_{name}", table)
        return [f"{prefix}_{name}" for name in named]

    def glue(self, facts: Mapping[str, Any], prefix: str = "", formats: Mapping[str, str] | None = None
             ) -> dict[str, Any]:
        """Glue every value of ``facts`` for the prose as ``<prefix>_<key>`` (formatted by ``formats[key]``); under the
        ci profile a measured one (``is_measured``) is glued marked (``mark``)."""
        formats = formats or {}
        marking = self.config.profile == MEASURED_PROFILE
        shown = {}
        for key, value in facts.items():
            name = f"{prefix}_{key}" if prefix else key
            if marking and is_measured(name):  # a measurement under ci: glued marked, for the nbval comparison
                shown[key] = glue(name, mark(format(value, formats[key]) if key in formats else value))
            else:
                shown[key] = glue(name, value, formats.get(key))
        return shown

    def load(self, name: str) -> pd.DataFrame:
        """A table an earlier chapter wrote under the same profile."""
        return self.run.load(name)

    def finish(self) -> pd.DataFrame:
        """Record the chapter's runtime and its fit-cache hits and misses; return the run card (the last cell)."""
        return finish(self.run, self.study.fits.stats())


def _notebook_display(mark_measurements: bool = False) -> None:
    """Figures inline and whole tables, when running in a Jupyter kernel: no cell, row or column cut with "…" (a
    long table goes behind a ``hide-output`` toggle in its notebook instead); with ``mark_measurements`` (the ci
    profile) tables show their measured columns marked (``mark_measured``), so the nbval comparison can leave them
    out."""
    global _MARKING
    _MARKING = mark_measurements
    # matplotlib logs "findfont: ... not found" for each mathtext family while it rebuilds its font list (a new
    # environment, or a cache written by another one): noise on the reader's page and a stderr output nbval would
    # compare; real font problems still show at ERROR.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    pd.set_option("display.max_columns", None, "display.max_rows", None, "display.max_colwidth", None,
                  "display.width", 200, "display.precision", 4)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        shell.run_line_magic("matplotlib", "inline")
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    if mark_measurements:
        formatters["text/html"].for_type(pd.DataFrame, lambda frame: mark_measured(frame)._repr_html_())
        formatters["text/plain"].for_type(pd.DataFrame,
                                          lambda frame, printer, cycle: printer.text(repr(mark_measured(frame))))
    else:
        for mime in ("text/html", "text/plain"):
            formatters[mime].pop(pd.DataFrame, None)


def open_chapter(name: str, profile: str, *, models: Any = None, datasets: Any = None, cache_dir: str | None = None,
                 results_dir: str | Path | None = None, progress: bool = False) -> Chapter:
    """Everything a chapter's first cell used to do, in one call: read the profile (a name in ``params/`` or a YAML
    path; ``models`` / ``datasets`` override it when not None), build the study over ``cache_dir``, start the run
    under ``results/<profile>/`` and glue ``<name>_run_id`` so the book can tie the page to its results files."""
    config = StudyConfig.from_profile(profile, models=models, datasets=datasets)
    study = Study(config, cache_dir=cache_dir, progress=progress)
    run = start(config.profile, name, seed=config.seed, results_dir=results_dir, config=config.as_dict(),
                profile_file=str(settings.locate(profile)))
    _notebook_display(mark_measurements=config.profile == MEASURED_PROFILE)
    glue(f"{name}_run_id", run.run_id)
    return Chapter(name=name, config=config, study=study, run=run)
