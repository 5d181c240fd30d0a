"""``python -m benchmarks``: run every benchmark module in ``benchmarks/`` and print one table of ratios.

Convention (the only coupling between benchmark modules and this runner): each module ``benchmarks/<name>.py``
exposes ``main(argv=None)``, which runs with small default sizes when given ``[]`` and prints its table. Ratios are
comparisons measured in the same run (ours vs the authors'-style baseline), so they survive a noisy shared machine
where absolute times do not. The runner collects ratio rows from what ``main`` returns (a DataFrame, a list of dicts
or a dict) or else from what it prints: a markdown (``| a | b |``) or whitespace-aligned (pandas ``to_string``) table
with a column whose name contains "ratio", "speedup" or "×", or a ``name: value`` line whose name does.
A module that is absent or has no ``main`` is reported as skipped; one that raises is reported as failed (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import pkgutil
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED = ("extraction", "probing")
_RATIO_WORD = re.compile(r"ratio|speed-?up|×", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:x|×)?\s*$")
_KEY_VALUE = re.compile(r"^\s*([^:=|]*?(?:ratio|speed-?up|×)[^:=|]*?)\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)
_MD_RULE = re.compile(r"^\|?\s*:?-{3,}")


@dataclass
class BenchResult:
    """Outcome of one benchmark module: status is "ok", "skipped" or "failed"."""

    name: str
    status: str
    message: str = ""
    output: str = ""
    returned: Any = None
    ratios: list[dict[str, Any]] = field(default_factory=list)


class _Tee(io.TextIOBase):
    """Write to a buffer and, when ``echo``, to the real stdout too (the module's own table stays visible)."""

    def __init__(self, echo: bool) -> None:
        self.buffer_ = io.StringIO()
        self.echo = echo
        self._out = sys.stdout

    def write(self, s: str) -> int:
        self.buffer_.write(s)
        if self.echo:
            self._out.write(s)
        return len(s)

    def flush(self) -> None:
        if self.echo:
            self._out.flush()


def discover(package: str = "benchmarks", expected: tuple[str, ...] = EXPECTED) -> list[str]:
    """Names of the public modules in ``package`` plus ``expected`` (so a missing one is reported), sorted."""
    pkg = importlib.import_module(package)
    found = {m.name for m in pkgutil.iter_modules(list(pkg.__path__)) if not m.name.startswith("_")}
    return sorted(found | set(expected))


def _parse_number(cell: str) -> float | None:
    match = _NUMBER.match(cell.replace(",", ""))
    return float(match.group(1)) if match else None


def _rows_from_table(header: list[str], rows: list[list[str]]) -> list[dict[str, Any]]:
    ratio_cols = [i for i, h in enumerate(header) if _RATIO_WORD.search(h)]
    out = []
    for cells in rows:
        if len(cells) > len(header):
            cells = cells[len(cells) - len(header):]
        if len(cells) != len(header):
            continue
        label = " / ".join(c for i, c in enumerate(cells) if i not in ratio_cols and c and _parse_number(c) is None)
        for i in ratio_cols:
            value = _parse_number(cells[i])
            if value is not None:
                out.append({"row": label or "-", "metric": header[i], "ratio": value})
    return out


def _split_md(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _markdown_table(lines: list[str], i: int) -> tuple[list[dict[str, Any]], int]:
    """Ratio rows of the pipe table whose header is ``lines[i]``, and the index after the table."""
    header, body, j = _split_md(lines[i]), [], i + 1
    while j < len(lines) and lines[j].strip().startswith("|"):
        if not _MD_RULE.match(lines[j].strip()):
            body.append(_split_md(lines[j]))
        j += 1
    return _rows_from_table(header, body), j


def _whitespace_table(lines: list[str], i: int) -> tuple[list[dict[str, Any]], int]:
    """Ratio rows of the aligned table (pandas ``to_string``) whose header is ``lines[i]``; rows end at a blank
    line or a line with a different number of cells (an index column is allowed)."""
    header, body, j = re.split(r"\s{2,}", lines[i].strip()), [], i + 1
    while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith("|"):
        cells = re.split(r"\s{2,}", lines[j].strip())
        if len(cells) - len(header) not in (0, 1):
            break
        body.append(cells)
        j += 1
    return _rows_from_table(header, body), j


def ratio_rows_from_text(text: str) -> list[dict[str, Any]]:
    """Ratio rows printed in ``text`` (markdown or whitespace tables with a ratio column, or ``name: value``)."""
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or not _RATIO_WORD.search(stripped):
            i += 1
            continue
        if stripped.startswith("|"):
            rows, i = _markdown_table(lines, i)
            out += rows
            continue
        kv = _KEY_VALUE.match(stripped)
        if kv and _parse_number(kv.group(2)) is not None:
            out.append({"row": "-", "metric": kv.group(1).strip(), "ratio": _parse_number(kv.group(2))})
            i += 1
            continue
        rows, j = _whitespace_table(lines, i)
        out += rows
        i = j if rows else i + 1
    return out


def ratio_rows_from_value(value: Any) -> list[dict[str, Any]]:
    """Ratio rows from what ``main`` returned: a DataFrame, a list of dicts, or a dict (else none)."""
    if value is None:
        return []
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        value = value.to_dict(orient="records")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, dict) for r in value):
        return []
    out = []
    for record in value:
        ratio_keys = [k for k in record if _RATIO_WORD.search(str(k))]
        label = " / ".join(str(record[k]) for k in record if k not in ratio_keys and isinstance(record[k], str))
        for k in ratio_keys:
            try:
                number = float(record[k])
            except (TypeError, ValueError):
                continue
            if not math.isnan(number):
                out.append({"row": label or "-", "metric": str(k), "ratio": number})
    return out


def run_module(name: str, argv: list[str] | None = None, *, package: str = "benchmarks",
               echo: bool = True) -> BenchResult:
    """Import ``package.name``, call its ``main(argv)`` with stdout captured, and collect its ratio rows."""
    qualified = f"{package}.{name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as err:
        if err.name == qualified:
            return BenchResult(name, "skipped", "module not present")
        return BenchResult(name, "failed", f"import failed: {err}")
    except Exception as err:  # noqa: BLE001 - a broken benchmark must not stop the others
        return BenchResult(name, "failed", f"import failed: {type(err).__name__}: {err}")
    main = getattr(module, "main", None)
    if not callable(main):
        return BenchResult(name, "skipped", "no main(argv)")
    tee = _Tee(echo)
    try:
        with contextlib.redirect_stdout(tee):
            returned = main(list(argv or []))
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return BenchResult(name, "failed", f"exited with {exc.code}", tee.buffer_.getvalue())
        returned = None
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        return BenchResult(name, "failed", f"{type(err).__name__}: {err}", tee.buffer_.getvalue())
    output = tee.buffer_.getvalue()
    ratios = ratio_rows_from_value(returned) or ratio_rows_from_text(output)
    message = "" if ratios else "ran, but printed no ratio rows"
    return BenchResult(name, "ok", message, output, returned, ratios)


def summary_table(results: list[BenchResult]) -> str:
    """One markdown table: a row per collected ratio, and a row per skipped or failed module."""
    lines = ["| benchmark | row | metric | ratio |", "|---|---|---|---:|"]
    for res in results:
        for r in res.ratios:
            lines.append(f"| {res.name} | {r['row']} | {r['metric']} | {r['ratio']:.3g} |")
        if res.status != "ok" or not res.ratios:
            lines.append(f"| {res.name} | ({res.status}) | {res.message or '-'} | |")
    return "\n".join(lines)


def _hardware_line() -> str:
    try:
        from layerfusion.overhead import hardware
    except ImportError:
        return ""
    hw = hardware()
    parts = [str(hw.get(k)) for k in ("cpu", "cpu_count", "gpu", "torch") if hw.get(k) is not None]
    return "hardware: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or ``--only NAME ...``) and print the ratio summary; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmark modules")
    parser.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not each module's output")
    args = parser.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in args.only]
    results = []
    for name in names:
        print(f"== benchmark {name} ==", flush=True)
        res = run_module(name, [], echo=not args.quiet)
        if res.status != "ok":
            print(f"{name}: {res.status} ({res.message})")
        results.append(res)
    print("\n== summary: ratios measured in this run ==")
    hw = _hardware_line()
    if hw:
        print(hw)
    print(summary_table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
