"""Command line: ``layerfusion extract|probe|fuse|overhead|report|models``, thin wrappers over the library."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pandas as pd

from layerfusion.progress import PROGRESS_FILE_ENV

PROFILE_HELP = "a profile name in params/ (ci, default, paper) or the path of a profile YAML file"


def _pooling(name: str) -> str:
    """argparse type of ``--pooling``: a known pooling, else a usage error listing them."""
    from layerfusion.pooling import POOLINGS

    if name not in POOLINGS:
        raise argparse.ArgumentTypeError(f"unknown pooling {name!r}; choose from {', '.join(POOLINGS)}")
    return name


def _dtype(name: str) -> str:
    """argparse type of ``--dtype``: a dtype ``models.resolve_dtype`` knows, else a usage error listing them."""
    from layerfusion import models

    try:
        models.resolve_dtype(name, "cpu")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return name


def _device(name: str) -> str:
    """argparse type of ``--device``: a torch device string, else a usage error."""
    import torch

    try:
        torch.device(name)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from err
    return name


def _study(args: argparse.Namespace, **overrides: object):
    from layerfusion.study.features import Study, StudyConfig

    names = tuple(args.model) if getattr(args, "model", None) else None
    if names and (getattr(args, "text_prefix", None) is not None or getattr(args, "template", None) is not None):
        from layerfusion import models

        names = tuple(models.add(names, text_prefix=args.text_prefix, template=args.template))
    cfg = StudyConfig.from_profile(
        args.profile,
        models=names,
        datasets=tuple(args.dataset) if getattr(args, "dataset", None) else None,
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
        **overrides,
    )
    return Study(cfg, cache_dir=args.cache_dir, progress=not args.quiet)


def _show(frame: pd.DataFrame, out: str | None) -> None:
    with pd.option_context("display.max_rows", 200, "display.max_columns", 30, "display.width", 160):
        print(frame.to_string(index=False))
    if out:
        frame.to_csv(out, index=False)
        print(f"wrote {out}")


def cmd_extract(args: argparse.Namespace) -> int:
    from layerfusion.study.chapters import extraction

    if args.ray is not None:
        return _extract_on_ray(args)
    _show(extraction.extract_all(_study(args)), args.out)
    return 0


def _extract_on_ray(args: argparse.Namespace) -> int:
    """``extract --ray [ADDRESS]``: the profile with ``executor: {kind: ray, address: ADDRESS}``; missing shards
    are computed on Ray workers (one actor pool per model) and the table is read from the same cache."""
    from layerfusion import distributed
    from layerfusion.study.chapters import extraction

    try:
        distributed.require_ray()
    except ImportError as exc:
        print(f"layerfusion: error: {exc}", file=sys.stderr)
        return 2
    study = _study(args, executor={"kind": "ray", "address": args.ray or None})
    try:
        _show(extraction.extract_all(study), args.out)
    finally:
        study.close()
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from layerfusion.study.chapters.layer_analysis import analyse_layers

    analysis = analyse_layers(_study(args), poolings=tuple(args.pooling) if args.pooling else None)
    cols = ["model", "dataset", "pooling", "best_layer", "n_layers", "best_test_accuracy", "last_test_accuracy",
            "p_best_vs_last_holm"]
    _show(analysis.summary[cols], args.out)
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from layerfusion.study.chapters.fusion import analyse_fusion
    from layerfusion.study.chapters.layer_analysis import analyse_layers

    study = _study(args)
    layers = analyse_layers(study, poolings=(study.config.primary_pooling,))
    fused = analyse_fusion(study, layers.summary, layers.per_layer)
    cols = ["dataset", "models", "operator", "test_mean", "test_std", "best_single", "gain", "p_holm"]
    _show(fused.comparisons[cols], args.out)
    return 0


def cmd_overhead(args: argparse.Namespace) -> int:
    from layerfusion.study.chapters import overhead as overhead_analysis

    _show(overhead_analysis.footprints(_study(args)), args.out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from layerfusion import models

    _show(models.describe(), None)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Execute the chapters with papermill under a profile into the folder the book is built from."""
    import papermill as pm

    from layerfusion.study import chapters, settings
    from layerfusion.study.workspace import repo_root
    from layerfusion.study.features import StudyConfig

    root = repo_root()
    known = list(chapters.notebooks(root / "notebooks"))
    names = args.chapter or known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown chapter {unknown[0]!r}; chapters are {', '.join(known)} (notebooks/NN_name.ipynb)")
    # A path travels to papermill absolute (the notebooks run in notebooks/); either way it is validated first.
    profile = str(settings.locate(args.profile)) if settings.is_path(args.profile) else args.profile
    StudyConfig.from_profile(profile)
    out_dir = Path(args.out_dir or root / "book" / "executed")
    out_dir.mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(names, start=1):
        start = time.perf_counter()
        print(f"[{number}/{len(names)} {name}] executing with profile {args.profile} ...", flush=True)
        out = out_dir / f"{name}.ipynb"
        with progress_from_kernel(sys.stderr):
            pm.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(out),
                                parameters={"profile": profile}, cwd=str(root / "notebooks"),
                                progress_bar=False, kernel_name="python3",
                                kernel_manager_class=ipc_kernel_manager())
        hide_injected_parameters(out)
        print(f"[{number}/{len(names)} {name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def cmd_runtimes(args: argparse.Namespace) -> int:
    """Where a run of the chapters spent its time: per chapter (with the fit cache's hit rate) and the slowest cells."""
    from layerfusion.study import report, workspace

    results = Path(args.results_dir) if args.results_dir else workspace.results_dir() / args.profile
    if not any(results.glob("runtime_*.json")):
        raise FileNotFoundError(f"no chapter runtimes (runtime_*.json) in {results}; run the chapters first "
                                f"(layerfusion report --profile {args.profile}) or pass --results-dir")
    table = report.chapter_runtimes(results)
    _show(table, args.out)
    hits, misses = table["fit_cache_hits"].fillna(0).sum(), table["fit_cache_misses"].fillna(0).sum()
    rate = f"{hits / (hits + misses):.1%}" if hits + misses else "no fits"
    print(f"total {table['runtime_s'].sum():.0f} s over {len(table)} chapters; fit cache {int(hits)} hits, "
          f"{int(misses)} misses ({rate})")
    if args.executed_dir:
        print(f"\nslowest cells in {args.executed_dir}:")
        _show(report.slowest_cells(args.executed_dir, args.top), None)
    return 0


def ipc_kernel_manager() -> type:
    """A jupyter kernel manager that talks to its kernel over IPC (Unix sockets in a private temp folder), not TCP.

    ipykernel 7 warns "Kernel is running over TCP without encryption" for every TCP kernel, which a reader takes for
    a security problem; over IPC the warning does not apply, and the sockets are files in the user's Jupyter runtime
    folder (removed when the kernel shuts down).
    """
    import uuid

    from jupyter_client import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            Path(jupyter_runtime_dir()).mkdir(parents=True, exist_ok=True)
            return str(Path(jupyter_runtime_dir()) / f"lf-kernel-{uuid.uuid4().hex[:12]}-ipc")

    return IPCKernelManager


@contextlib.contextmanager
def progress_from_kernel(stream: TextIO) -> Iterator[Path]:
    """While the block runs, let notebook kernels started in it write extraction progress bars to a side file
    (``progress.PROGRESS_FILE_ENV``, inherited through the environment) and copy that file to ``stream``.

    The terminal then shows a live bar with texts/s and an ETA during a long extraction, while the executed notebook,
    which becomes the book, holds no progress output. Yields the side file's path.
    """

    stop = threading.Event()

    def follow(path: Path) -> None:
        with open(path, encoding="utf-8", errors="replace") as fh:
            while True:
                chunk = fh.read()
                if chunk:
                    stream.write(chunk)
                    stream.flush()
                elif stop.is_set():
                    return
                else:
                    stop.wait(0.2)

    previous = os.environ.get(PROGRESS_FILE_ENV)
    with tempfile.TemporaryDirectory(prefix="layerfusion-progress-") as folder:
        path = Path(folder) / "progress.txt"
        path.touch()
        os.environ[PROGRESS_FILE_ENV] = str(path)
        thread = threading.Thread(target=follow, args=(path,), name="progress-follower", daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join()
            if previous is None:
                os.environ.pop(PROGRESS_FILE_ENV, None)
            else:
                os.environ[PROGRESS_FILE_ENV] = previous


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell ``remove-cell`` so the book shows the run card, not the plumbing."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(nb, path)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="layerfusion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, data: bool = True) -> None:
        p.add_argument("--profile", default="default", help=PROFILE_HELP)
        p.add_argument("--cache-dir", default=None, help="cache root (default $LAYERFUSION_CACHE_DIR or ~/.cache)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if data:
            p.add_argument("--model", action="append", help="registry key, hub id (org/name[@revision]), model folder "
                           "or .gguf file (repeatable; default: the profile's)")
            p.add_argument("--dataset", action="append", help="dataset name, or a folder with train and test files "
                           "(repeatable; default: the profile's)")
            p.add_argument("--text-prefix", default=None, help="prepend this to every text (hub ids and paths; "
                           "e.g. 'query: ')")
            p.add_argument("--template", default=None, help="instruction template holding {text}, or 'chat' for "
                           "the tokenizer's chat template (hub ids and paths)")
            p.add_argument("--device", default=None, type=_device, help="cpu, cuda, cuda:1 ... (default: auto)")
            p.add_argument("--dtype", default=None, type=_dtype,
                           help="float32, bfloat16, float16, float64 (default: auto)")
            p.add_argument("--out", default=None, help="also write the table as CSV here")

    p = sub.add_parser("extract", help="extract pooled vectors of every layer into the cache")
    common(p)
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="compute the missing shards on Ray workers (no ADDRESS: $RAY_ADDRESS, a cluster started "
                   "on this machine, else a new local Ray instance)")
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("probe", help="probe every layer, select on validation, report test once")
    common(p)
    p.add_argument("--pooling", action="append", type=_pooling, help="mean, last, mean_pad (repeatable)")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("fuse", help="fuse models at their validation-best layers")
    common(p)
    p.set_defaults(func=cmd_fuse)
    p = sub.add_parser("overhead", help="memory and load time per model")
    common(p)
    p.set_defaults(func=cmd_overhead)
    p = sub.add_parser("models", help="list the model registry")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("runtimes", help="per-chapter wall time and fit-cache hit rate of a profile's last run")
    p.add_argument("--profile", default="default", help="whose results/<profile>/ to read")
    p.add_argument("--results-dir", default=None, help="a results folder instead (e.g. $LAYERFUSION_RESULTS_DIR/ci)")
    p.add_argument("--executed-dir", default=None, help="also list the slowest cells of the executed notebooks here "
                                                       "(e.g. book/executed)")
    p.add_argument("--top", type=int, default=8, help="how many slowest cells (default 8)")
    p.add_argument("--out", default=None, help="also write the chapter table as CSV here")
    p.set_defaults(func=cmd_runtimes)
    p = sub.add_parser("report", help="execute the book's chapters with papermill under a profile")
    p.add_argument("--profile", default="default", help=PROFILE_HELP)
    p.add_argument("--chapter", action="append", help="a notebook of notebooks/, e.g. 02_layer_analysis (repeatable; "
                                                      "default: all, in order)")
    p.add_argument("--out-dir", default=None, help="default: book/executed")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``layerfusion`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"layerfusion: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk: not a usage error, but no traceback either
        print(f"layerfusion: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
