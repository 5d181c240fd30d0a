"""``python -m benchmarks``: run every benchmark module in ``benchmarks/`` and print one table of ratios.

Convention (the only coupling between benchmark modules and this runner): each module ``benchmarks/<name>.py``
exposes ``main(argv=None)``, which runs with small default sizes when given ``[]``, prints its own table for people
and returns its measurements as rows (a list of dicts, a DataFrame or one dict). The runner reads the ratios from
those rows, never from the printed text: every key whose name contains "ratio", "speedup" or "×" is a ratio, and a
row's string fields name it. Ratios are comparisons measured in the same run (ours vs the authors'-style baseline),
so they survive a noisy shared machine where absolute times do not. A module that is absent or has no ``main`` is
reported as skipped; one that raises is reported as failed (exit 1).
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
from typing import Any

EXPECTED = ("extraction", "probing")
_RATIO_WORD = re.compile(r"ratio|speed-?up|×", re.IGNORECASE)


@dataclass
class BenchResult:
    """Outcome of one benchmark module: status is "ok", "skipped" or "failed"."""

    name: str
    status: str
    message: str = ""
    returned: Any = None
    ratios: list[dict[str, Any]] = field(default_factory=list)


def discover(package: str = "benchmarks", expected: tuple[str, ...] = EXPECTED) -> list[str]:
    """Names of the public modules in ``package`` plus ``expected`` (so a missing one is reported), sorted."""
    pkg = importlib.import_module(package)
    found = {m.name for m in pkgutil.iter_modules(list(pkg.__path__)) if not m.name.startswith("_")}
    return sorted(found | set(expected))


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
    """Import ``package.name``, call its ``main(argv)`` (its printed table shown when ``echo``), collect its ratios."""
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
    quiet = contextlib.nullcontext() if echo else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            returned = main(list(argv or []))
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return BenchResult(name, "failed", f"exited with {exc.code}")
        returned = None
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        return BenchResult(name, "failed", f"{type(err).__name__}: {err}")
    ratios = ratio_rows_from_value(returned)
    message = "" if ratios else "ran, but returned no ratio rows"
    return BenchResult(name, "ok", message, returned, ratios)


def summary_table(results: list[BenchResult]) -> str:
    """One markdown table: a row per collected ratio, and a row per skipped or failed module."""
    lines = ["| benchmark | row | metric | ratio |", "|---|---|---|---:|"]
    for res in results:
        for r in res.ratios:
            lines.append(f"| {res.name} | {r['row']} | {r['metric']} | {r['ratio']:.3g} |")
        if res.status != "ok" or not res.ratios:
            lines.append(f"| {res.name} | ({res.status}) | {res.message or '-'} | |")
    return "\n".join(lines)


def hardware_line() -> str:
    """The machine the ratios were measured on, from ``layerfusion.provenance`` (the record results files carry)."""
    from layerfusion.provenance import hardware, versions

    hw = hardware()
    parts = [hw["cpu"], f"{hw['logical_cores']} cores", f"flags {' '.join(hw['cpu_flags']) or 'none'}",
             f"GPU {hw['gpu'] or 'none'}", f"torch {versions()['torch']}"]
    return "hardware: " + ", ".join(str(p) for p in parts)


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
    print(hardware_line())
    print(summary_table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
