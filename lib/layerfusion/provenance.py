"""Where and with what a number was computed: hardware (CPU model and flags, GPU), library versions, git state.

One record for every consumer: the embedding cache's manifests, overhead measurements and the study's results files
all call these functions, so a timing and the vectors it produced name the same machine in the same words.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

VERSION_PACKAGES = {"python": None, "torch": "torch", "transformers": "transformers", "datasets": "datasets",
                    "numpy": "numpy", "sklearn": "scikit-learn", "layerfusion": "layerfusion"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "sve")
"""The CPU flags that decide matmul speed per dtype; ``hardware()`` lists those present."""


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    for line in _cpuinfo():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """Every flag the CPU reports (``flags`` / ``Features`` in ``/proc/cpuinfo``); empty where unreadable."""
    for line in _cpuinfo():
        if line.lower().startswith(("flags", "features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def ram_gib() -> float | None:
    """Physical memory in GiB (None where unknown)."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return None


def hardware() -> dict[str, Any]:
    """CPU model and matmul-relevant flags, logical cores, torch threads, RAM (GiB), GPU name and memory (GiB)."""
    flags = cpu_flags()
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_flags": [f for f in CPU_FLAGS if f in flags],
                            "logical_cores": os.cpu_count(), "torch_threads": None, "ram_gib": ram_gib(),
                            "gpu": None, "gpu_memory_gib": None, "platform": platform.platform()}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries a result depends on (None when one is not installed)."""
    out: dict[str, str | None] = {}
    for key, dist in VERSION_PACKAGES.items():
        if dist is None:
            out[key] = platform.python_version()
            continue
        if dist == "layerfusion":  # the source's own version (an editable install's metadata can be stale)
            import layerfusion

            out[key] = layerfusion.__version__
            continue
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def git_info(root: str | os.PathLike | None = None, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Commit SHA and dirty flag of the git checkout at ``root`` (default: the current folder); both None outside
    git or without a git binary.

    ``dirty`` counts modified and untracked files except under the ``exclude`` paths (a caller's own outputs).
    """
    cwd = Path(root) if root is not None else Path.cwd()

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None}
    status = git("status", "--porcelain", "--", ".", *(f":(exclude){path}" for path in exclude))
    return {"sha": sha.strip(), "dirty": None if status is None else bool(status.strip())}
