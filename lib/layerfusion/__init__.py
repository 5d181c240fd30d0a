"""layerfusion: layer-aware embedding fusion for frozen LLMs.

Pipeline, one direction: data -> models -> extract -> cache -> probe/select -> fusion -> report.
Submodules are imported lazily so ``import layerfusion`` stays cheap (no torch import until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "paths", "data", "models", "pooling", "extract", "cache", "probe", "select", "stats",
    "fusion", "diagnostics", "overhead", "results", "plots", "profiles", "cli", "testing",
    "study", "layer_analysis", "fusion_analysis", "overhead_analysis", "claims", "report",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
