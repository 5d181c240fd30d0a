"""A persisted, content-keyed cache of fitted estimators, beside the embedding cache.

A study re-run repeats the same fits: the layer chapter's probes, the greedy search's probes, the fusion heads, the
robustness chapter's refits of unperturbed cells. ``FitCache.fit(estimator, *args, **kwargs)`` returns
``estimator.fit(*args, **kwargs)`` — computed once, then read back from disk on every later call with the same
inputs. Why not ``joblib.Memory``: it keys a *function* by its own source only, so a change in the solver the
estimator calls would return stale fits; here the key holds everything a fit depends on:

- the estimator's class (module and qualified name) and ``get_params(deep=True)``;
- the fit's positional and keyword arguments (arrays hashed by content with ``joblib.hash``);
- the source of the code the fit can run: the module defining the estimator's class (and those of any estimator in
  its parameters) and every ``layerfusion`` module they import, transitively (imports read from the source with
  ``ast``, at any depth in a function, relative or absolute, with each package's ``__init__``). Python code runs
  only what was imported, so an edit that changes a fit changes the key; an edit elsewhere (the extraction, the
  cache, the sweeps, a caller's analysis code) leaves every probe and fusion head fitted before valid. Code outside
  the package (numpy, scipy, scikit-learn, torch) is keyed by its version below; a user's estimator module is hashed
  itself, its own imports outside ``layerfusion`` are not followed;
- the versions of Python, numpy, scipy, scikit-learn and torch, the device the estimator resolves to and torch's
  CPU thread count (floating-point reductions may depend on it), so a cached fit equals the fit this process would
  compute.

Estimators must be deterministic given their parameters (their seeds in ``random_state``; none of the engine's reads
or advances a global random state), so a hit is the same object a fit would produce. The original fit's wall time
is stored with it (``fit_timed``), so tables that report fit cost print the same number warm and cold, and so are
the warnings the fit raised (replayed on every hit, so warning tables count the same warm and cold).

Entries are ``<root>/<key[:2]>/<key>.joblib``, written to a temporary file and moved into place with
``os.replace`` (a killed run leaves no half-written entry). An entry that cannot be read is a miss, reported with a
one-line warning, and rewritten. ``LAYERFUSION_FIT_CACHE=0`` turns the cache off (every call fits).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import joblib

__all__ = ["FitCache", "ENV", "enabled_by_env"]

ENV = "LAYERFUSION_FIT_CACHE"


def enabled_by_env() -> bool:
    """False when ``$LAYERFUSION_FIT_CACHE`` is ``0``/``false``/``no``/``off``; True otherwise (also when unset)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


_PACKAGE = __name__.partition(".")[0]


def _source_file(module: str) -> Path | None:
    """The ``.py`` file of ``module`` (None for a builtin, a namespace package or a module that does not exist)."""
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _source_bytes(module: str) -> bytes:
    return _source_file(module).read_bytes()  # type: ignore[union-attr]


def _is_module(name: str) -> bool:
    return _source_file(name) is not None


def _imported(module: str, path: Path) -> set[str]:
    """The ``layerfusion`` modules that ``module`` (source at ``path``) imports anywhere in its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != _PACKAGE:
                continue  # asking find_spec about ``numpy.linalg`` would import numpy: only our modules matter
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == _PACKAGE:
            names = [f"{_PACKAGE}.{node.attr}"]  # ``layerfusion.solver`` through the package's lazy attributes
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == _PACKAGE and _is_module(name))
    return found


def source_closure(modules: tuple[str, ...]) -> tuple[str, ...]:
    """``modules`` and every ``layerfusion`` module they import, transitively, with each package's ``__init__``
    (sorted names). A module with no source file (builtin, compiled) is left out."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = _source_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        todo.extend(_imported(module, path))
        parent = module.rpartition(".")[0]
        if parent.split(".")[0] == _PACKAGE:
            todo.append(parent)
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=64)
def code_fingerprint(modules: tuple[str, ...]) -> str:
    """sha256 over the names and source bytes of ``source_closure(modules)``: what a fit by a class defined in
    ``modules`` can run of this package's code (module docstring)."""
    digest = hashlib.sha256()
    for module in source_closure(modules):
        digest.update(module.encode() + b"\0")
        digest.update(_source_bytes(module))
    return digest.hexdigest()


def _estimator_modules(estimator: Any, params: dict[str, Any]) -> tuple[str, ...]:
    """The modules defining the estimator's class and the class of every estimator among its parameters."""
    nested = (type(value).__module__ for value in params.values() if hasattr(value, "get_params"))
    return tuple(sorted({type(estimator).__module__, *nested}))


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn
    import torch

    return {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "sklearn": sklearn.__version__, "torch": torch.__version__}


def _environment(estimator: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What outside the estimator's parameters decides its fit: its code, versions, resolved device, CPU threads."""
    import torch

    from layerfusion import devices

    device = params.get("device", "cpu")
    resolved = devices.resolve_device(None if device in (None, "auto") else device)
    return {**_versions(), "code": code_fingerprint(_estimator_modules(estimator, params)), "device": str(resolved),
            "threads": torch.get_num_threads()}


def _replay(raised: list[tuple[type[Warning], str]]) -> None:
    """Raise again the warnings a fit raised (recorded on a miss, stored with the entry), under the caller's
    filters: a hit warns exactly as the fit it replaces did."""
    for category, message in raised:
        warnings.warn(message, category, stacklevel=4)


class FitCache:
    """Fitted estimators on disk under ``root``, keyed by everything their fit depends on (module docstring).

    ``hits`` and ``misses`` count this object's lookups (``stats``); ``enabled=None`` reads
    ``$LAYERFUSION_FIT_CACHE``. When disabled, ``fit`` fits and nothing is read or written.
    """

    def __init__(self, root: str | os.PathLike, *, enabled: bool | None = None) -> None:
        self.root = Path(root)
        self.enabled = enabled_by_env() if enabled is None else bool(enabled)
        self.hits = 0
        self.misses = 0

    def key(self, estimator: Any, *args: Any, **kwargs: Any) -> str:
        """The entry's key: ``joblib.hash`` of class, parameters, fit arguments and environment."""
        params = estimator.get_params(deep=True)
        cls = type(estimator)
        return joblib.hash({"class": f"{cls.__module__}.{cls.__qualname__}", "params": params,
                            "args": args, "kwargs": kwargs, "environment": _environment(estimator, params)})

    def path(self, key: str) -> Path:
        """Where the entry ``key`` lives."""
        return self.root / key[:2] / f"{key}.joblib"

    def _read(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            entry = joblib.load(path)
            if not isinstance(entry, dict) or "estimator" not in entry or "seconds" not in entry:
                raise ValueError("not a fit-cache entry")
            return entry
        except Exception as err:  # any unreadable entry is a miss; it is rewritten below
            warnings.warn(f"fit cache: entry {path} unreadable ({type(err).__name__}: {err}); refitting",
                          RuntimeWarning, stacklevel=3)
            return None

    def _write(self, path: Path, entry: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                joblib.dump(entry, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def fit_timed(self, estimator: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """``(fitted estimator, seconds its fit took)``; on a hit the stored estimator and the original fit's time.
        The estimator passed in is fitted only on a miss; use the returned one."""
        if not self.enabled:
            start = time.perf_counter()
            fitted = estimator.fit(*args, **kwargs)
            return fitted, time.perf_counter() - start
        path = self.path(self.key(estimator, *args, **kwargs))
        entry = self._read(path)
        if entry is not None:
            self.hits += 1
            _replay(entry.get("warnings", []))
            return entry["estimator"], float(entry["seconds"])
        self.misses += 1
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted = estimator.fit(*args, **kwargs)
        seconds = time.perf_counter() - start
        raised = [(item.category, str(item.message)) for item in caught]
        self._write(path, {"estimator": fitted, "seconds": seconds, "warnings": raised, "created": time.time()})
        _replay(raised)
        return fitted, seconds

    def fit(self, estimator: Any, *args: Any, **kwargs: Any) -> Any:
        """``estimator.fit(*args, **kwargs)``, read from the cache when this fit was computed before."""
        return self.fit_timed(estimator, *args, **kwargs)[0]

    def stats(self) -> dict[str, Any]:
        """Lookups so far: hits, misses and the hit rate (None before the first)."""
        total = self.hits + self.misses
        return {"fit_cache_hits": self.hits, "fit_cache_misses": self.misses,
                "fit_cache_hit_rate": self.hits / total if total else None, "fit_cache_enabled": self.enabled}
