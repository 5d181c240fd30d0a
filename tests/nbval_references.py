"""Reference outputs for nbval: the chapters executed under the ci profile, stored sanitised in tests/notebooks/.

``make test`` runs nbval in its comparing mode on ``tests/notebooks/NN_name.ipynb``: each code cell is executed again
and its outputs must equal the stored ones after both went through the regexes of ``tests/nbval_sanitize.cfg``.
The sources stay in ``notebooks/`` without outputs; ``make references`` executes them with papermill (as
``make notebooks PROFILE=ci`` does) and calls ``write`` here, which turns each executed chapter into its reference:

- papermill's injected-parameters cell is dropped (it sets ``profile = "ci"``, the sources' default), so a
  reference's code cells are exactly its source's, which ``stale`` checks (``tests/test_nbval_references.py``);
- outputs are stored sanitised, so ``git diff tests/notebooks`` after a refresh shows only what really moved;
- code cells named by an ``ignore-output:`` line of the sanitize file (whole outputs that are measurements, such as
  a table of seconds whose rows depend on the timings) are tagged ``nbval-ignore-output``: run, not compared;
- PNG/JPEG bytes are dropped: nbval skips them in its comparison (unless run with ``--nbdime``), the bytes depend on
  the matplotlib and FreeType builds, and every figure's numbers are printed in a table beside it, which is compared;
  the figure's text form (``<Figure size 680x280 with 2 Axes>``) is kept and compared;
- papermill's timing metadata and the kernel's language version are dropped (nbval does not read them).

Command line (the Makefile calls it; ``compare`` is how the determinism runs in the README were checked)::

    python tests/nbval_references.py write EXECUTED_DIR [OUT_DIR]      # executed chapters -> references
    python tests/nbval_references.py compare DIR_A DIR_B                # sanitised outputs of two runs, cell by cell
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "notebooks"
REFERENCES = REPO / "tests" / "notebooks"
SANITIZE = REPO / "tests" / "nbval_sanitize.cfg"
STALE_HINT = "references are stale: run `make references`"
DROPPED_MIME = ("image/png", "image/jpeg")
"""Output types nbval does not compare (``IPyNbFile.skip_compare`` without ``--nbdime``), so not stored."""


def chapters(folder: Path = SOURCES) -> list[Path]:
    """The numbered notebooks of ``folder`` (``NN_name.ipynb``), in file-name order."""
    return sorted(folder.glob("[0-9]*.ipynb"))


def read(path: Path) -> dict[str, Any]:
    """A notebook as plain JSON (nbformat 4); no validation, so a hand-made test notebook reads too."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def _injected(cell: dict[str, Any]) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def code_sources(notebook: dict[str, Any]) -> list[str]:
    """The source of every code cell, papermill's injected-parameters cell left out."""
    return [_text(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code" and not _injected(c)]


def stale(reference: Path, source: Path) -> str | None:
    """Why ``reference`` no longer belongs to ``source`` (first differing code cell), or None when it does."""
    if not reference.is_file():
        return f"{reference.relative_to(REPO) if reference.is_relative_to(REPO) else reference} is missing"
    ref, src = code_sources(read(reference)), code_sources(read(source))
    for number, (old, new) in enumerate(zip(ref, src), start=1):
        if old != new:
            return f"code cell {number} of {source.name} differs from its reference"
    if len(ref) != len(src):
        return f"{source.name} has {len(src)} code cells, its reference {len(ref)}"
    return None


def sanitize_patterns(path: Path = SANITIZE) -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of a sanitize file, parsed by nbval itself so both read it alike."""
    from nbval.plugin import get_sanitize_patterns

    return get_sanitize_patterns(Path(path).read_text(encoding="utf-8"))


IGNORE_OUTPUT = re.compile(r"^ignore-output: (\S+\.ipynb) (.+)$", flags=re.MULTILINE)
IGNORE_TAG = "nbval-ignore-output"


def ignored_cells(path: Path = SANITIZE) -> list[tuple[str, str]]:
    """(chapter file, source fragment) of each ``ignore-output:`` line of the sanitize file: code cells whose whole
    output is a measurement; their references carry nbval's ``nbval-ignore-output`` tag (nbval runs them, compares
    nothing). nbval itself reads only the ``regex:``/``replace:`` pairs of that file."""
    return IGNORE_OUTPUT.findall(Path(path).read_text(encoding="utf-8"))


def ignored_in(chapter: str, notebook: dict[str, Any], ignored: list[tuple[str, str]]) -> list[int]:
    """Indices (in ``notebook["cells"]``) of the code cells that ``ignored`` names for ``chapter``; each fragment
    must match exactly one code cell, else the sanitize file is out of date (ValueError naming the line)."""
    found = []
    for name, fragment in ignored:
        if name != chapter:
            continue
        hits = [i for i, c in enumerate(notebook["cells"])
                if c["cell_type"] == "code" and not _injected(c) and fragment in _text(c["source"])]
        if len(hits) != 1:
            raise ValueError(f"ignore-output: {name} {fragment}: matches {len(hits)} code cells, not 1; "
                             f"update {SANITIZE.name}")
        found.append(hits[0])
    return found


def sanitize(text: str, patterns: list[tuple[str, str]]) -> str:
    """``text`` after every rule in order, as nbval's ``IPyNbCell.sanitize`` applies them."""
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def _sanitize_output(output: dict[str, Any], patterns: list[tuple[str, str]]) -> dict[str, Any]:
    out = copy.deepcopy(output)
    if "text" in out:
        out["text"] = sanitize(_text(out["text"]), patterns)
    if "data" in out:
        out["data"] = {mime: sanitize(_text(value), patterns) if isinstance(value, (str, list)) else value
                       for mime, value in out["data"].items() if mime not in DROPPED_MIME}
    return out


def reference_from_executed(executed: dict[str, Any], patterns: list[tuple[str, str]],
                            ignore: list[int] = ()) -> dict[str, Any]:
    """The reference notebook of one executed chapter (see the module docstring for what changes); the code cells
    at the indices ``ignore`` (``ignored_in``) are tagged ``nbval-ignore-output``."""
    nb = copy.deepcopy(executed)
    cells = []
    for index, cell in enumerate(nb["cells"]):
        if _injected(cell):
            continue
        meta = cell.setdefault("metadata", {})
        meta.pop("papermill", None)
        meta.pop("execution", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = [_sanitize_output(o, patterns) for o in cell.get("outputs", [])]
            if index in ignore and IGNORE_TAG not in meta.get("tags", []):
                meta["tags"] = [*meta.get("tags", []), IGNORE_TAG]
        cells.append(cell)
    nb["cells"] = cells
    meta = nb.get("metadata", {})
    meta.pop("papermill", None)
    if "language_info" in meta:
        meta["language_info"] = {"name": meta["language_info"].get("name", "python")}
    return nb


def write(executed_dir: Path, out_dir: Path = REFERENCES, sources: Path = SOURCES) -> list[Path]:
    """Write the reference of every source chapter from ``executed_dir``; a chapter not executed is an error."""
    patterns, ignored = sanitize_patterns(), ignored_cells()
    missing = [s.name for s in chapters(sources) if not (executed_dir / s.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{executed_dir} lacks executed chapters {missing}; run `make references`")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in chapters(sources):
        executed = read(executed_dir / source.name)
        nb = reference_from_executed(executed, patterns, ignored_in(source.name, executed, ignored))
        target = out_dir / source.name
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        written.append(target)
    for orphan in sorted(set(chapters(out_dir)) - set(written)):
        orphan.unlink()
    return written


def compared_outputs(notebook: dict[str, Any], patterns: list[tuple[str, str]]) -> Iterator[tuple[int, str, str]]:
    """(code cell number, output key, sanitised text) for every output nbval compares, images excluded."""
    number = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code" or _injected(cell):
            continue
        number += 1
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                yield number, output["name"], sanitize(_text(output["text"]), patterns)
            elif output["output_type"] == "error":
                yield number, "error", f"{output['ename']}: {output['evalue']}"
            for mime, value in output.get("data", {}).items():
                if mime not in DROPPED_MIME:
                    yield number, mime, sanitize(_text(value), patterns) if isinstance(value, (str, list)) else value


def compare(dir_a: Path, dir_b: Path, raw: bool = False) -> list[str]:
    """Differences between the outputs of the chapters in two folders (sanitised unless ``raw``), one line each."""
    patterns = [] if raw else sanitize_patterns()
    lines = []
    for path_a in chapters(dir_a):
        path_b = dir_b / path_a.name
        if not path_b.is_file():
            lines.append(f"{path_a.name}: missing in {dir_b}")
            continue
        a = list(compared_outputs(read(path_a), patterns))
        b = list(compared_outputs(read(path_b), patterns))
        if len(a) != len(b):
            lines.append(f"{path_a.name}: {len(a)} outputs vs {len(b)}")
        for (cell, key, one), (_, _, two) in zip(a, b):
            if one != two:
                first = next(i for i, (x, y) in enumerate(zip(f"{one}\n", f"{two}\n")) if x != y)
                lines.append(f"{path_a.name} cell {cell} {key}: {str(one)[max(0, first - 60):first + 40]!r} vs "
                             f"{str(two)[max(0, first - 60):first + 40]!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``write EXECUTED_DIR [OUT_DIR]`` or ``compare DIR_A DIR_B [--raw]``."""
    parser = argparse.ArgumentParser(prog="nbval_references", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="executed chapters -> sanitised references")
    w.add_argument("executed", type=Path)
    w.add_argument("out", type=Path, nargs="?", default=REFERENCES)
    c = sub.add_parser("compare", help="list the outputs that differ between two folders of executed chapters")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--raw", action="store_true", help="compare before sanitising (what varies at all)")
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write(args.executed, args.out):
            print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        return 0
    diffs = compare(args.a, args.b, raw=args.raw)
    print("\n".join(diffs) if diffs else "identical" + (" (raw)" if args.raw else " after sanitising"))
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
