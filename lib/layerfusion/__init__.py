"""layerfusion: layer-aware embedding fusion for frozen LLMs.

Two tiers. The engine (the modules of this package: data, models, pooling, extract, cache, probe, select, fusion,
stats, diagnostics, meter, sweeps, ...) is a library for anyone's models and data and knows nothing of the book. The study
(``layerfusion.study``: profiles, one analysis per chapter, claims, results store, report, plots, CLI) is this
project's use of the engine. Data flows one way: the study imports the engine, never the reverse.

Submodules are imported lazily, so ``import layerfusion`` stays cheap (no torch import until needed).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__version__ = "0.2.0"

_SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
