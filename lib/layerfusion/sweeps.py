"""Cost sweeps of the extraction engine: time as one setting varies (in this process, repeated, with intervals),
peak memory as one setting varies and per model load (one fresh process per measurement, ``layerfusion.meter``).

``vary`` is one of ``VARY``: ``n_texts`` (the first n texts), ``max_length``, ``token_budget`` or ``layers`` (the
deepest kept hidden state: layers 0..value are kept and the forward pass stops there). A plan (a mapping of such
settings to their values) measures several curves in turn, each distinct extraction once (``measure_plan``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import checks, costmodel, meter

VARY = ("n_texts", "max_length", "token_budget", "layers")


def _default_extract() -> Callable[..., Any]:
    from layerfusion.extract import extract_texts

    return extract_texts


def _token_counts(result: Any) -> tuple[int, int]:
    """(real, padded) tokens as the engine counted them (exact even after an out-of-memory retry)."""
    real, padded = getattr(result, "real_tokens", None), getattr(result, "padded_tokens", None)
    if real is None or padded is None:
        raise ValueError("extraction_cost: the extractor's result lacks real_tokens/padded_tokens; pass an "
                         "extract_fn that returns them (as layerfusion.extract.extract_texts does)")
    return int(real), int(padded)


def extraction_cost(loaded: Any, texts: Sequence[str], config: Any, repeats: int = 5, *, warmup: int = 1,
                    extract_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Time ``repeats`` extractions of ``texts`` with ``config`` after ``warmup`` untimed ones.

    Returns ``seconds`` (median), ``seconds_low`` / ``seconds_high`` (its 95 % percentile-bootstrap interval over
    the repeats), ``seconds_min``, ``seconds_all``, ``repeats``, ``texts_per_s`` and ``tokens_per_s`` (real tokens,
    padding excluded, at the median), ``n_texts``, ``real_tokens``, ``padded_tokens`` and the model, device, dtype
    and hardware tags. Memory is not measured here (``extraction_peak`` measures it in a fresh process).
    ``extract_fn(loaded, texts, config, progress=False)`` defaults to ``layerfusion.extract.extract_texts``.
    """
    texts = checks.texts(texts)
    run = extract_fn or _default_extract()
    m = meter.measure(lambda: run(loaded, texts, config, progress=False), repeats=repeats, warmup=warmup,
                      device=loaded.device, dtype=loaded.dtype)
    real, padded = _token_counts(m.result)
    seconds = m.seconds_median
    return {
        "seconds": seconds, "seconds_low": m.seconds_low, "seconds_high": m.seconds_high,
        "seconds_min": m.seconds_min, "seconds_all": list(m.seconds_all), "repeats": len(m.seconds_all),
        "texts_per_s": len(texts) / seconds if seconds > 0 else float("inf"),
        "tokens_per_s": real / seconds if seconds > 0 else float("inf"),
        "n_texts": len(texts), "real_tokens": real, "padded_tokens": padded,
        "model": getattr(getattr(loaded, "spec", None), "key", None),
        "device": m.device, "dtype": m.dtype, "hardware": m.hardware,
    }


def point(texts: list[str], config: Any, vary: str, value: Any) -> tuple[list[str], Any]:
    """The texts and config of one sweep point."""
    if vary not in VARY:
        raise ValueError(f"sweep: vary={vary!r} is not one of {VARY}")
    if vary == "n_texts":
        n = int(value)
        if not 1 <= n <= len(texts):
            raise ValueError(f"sweep: n_texts value {value} must be in [1, {len(texts)}] (the number of texts)")
        return texts[:n], config
    if vary == "layers":
        deepest = int(value)
        if deepest < 0:
            raise ValueError(f"sweep: layers value {value} must be a hidden-state index >= 0")
        return texts, dataclasses.replace(config, layers=tuple(range(deepest + 1)), stop_at_deepest=True)
    if int(value) < 1:
        raise ValueError(f"sweep: {vary} value {value} must be >= 1")
    return texts, dataclasses.replace(config, **{vary: int(value)})


def _plan(vary: str | Mapping[str, Sequence[Any]], values: Sequence[Any] | None) -> list[tuple[str, list[Any]]]:
    """``(vary, values)`` pairs from one setting and its values, or from a mapping of settings to values."""
    if isinstance(vary, str):
        if values is None:
            raise ValueError(f"sweep: vary={vary!r} needs values; pass the settings to measure")
        plan = [(vary, list(values))]
    elif values is not None:
        raise ValueError("sweep: values is given with a plan (a mapping of setting -> values); pass one or the other")
    else:
        plan = [(str(k), list(v)) for k, v in dict(vary).items()]
    if not plan:
        raise ValueError("sweep: the plan is empty; pass the settings to measure")
    for name, vals in plan:
        if name not in VARY:
            raise ValueError(f"sweep: vary={name!r} is not one of {VARY}")
        if not vals:
            raise ValueError(f"sweep: values of {name!r} is empty; pass the settings to measure")
    return plan


def same_extraction(texts: Sequence[str], config: Any, n_hidden_states: int | None = None) -> tuple[Any, ...]:
    """What an extraction computes, as a key: the texts and the settings, with the kept layers resolved against
    ``n_hidden_states`` (when given) and "every layer kept" written one way (``layers=None``) however it was asked
    for: above the deepest kept layer there is nothing to skip, so ``stop_at_deepest`` no longer matters."""
    settings = dataclasses.asdict(config)
    layers = settings.get("layers")
    if layers is not None and n_hidden_states is not None:
        from layerfusion.extract import resolve_layers

        layers = resolve_layers(layers, n_hidden_states)
        if tuple(sorted(layers)) == tuple(range(n_hidden_states)):
            layers = None
    if layers is None:
        settings["stop_at_deepest"] = True
    settings["layers"] = None if layers is None else tuple(layers)
    return tuple(texts), repr(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in settings.items()))


def measure_plan(plan: Sequence[tuple[str, Sequence[Any]]], texts: Sequence[str], config: Any,
                 measure: Callable[[list[str], Any], dict[str, Any]], *, n_hidden_states: int | None = None,
                 desc: str = "sweep", progress: bool = False) -> pd.DataFrame:
    """One row per point ``(vary, value)`` of ``plan`` (``point`` builds each), each distinct extraction measured
    once by ``measure(texts, config)``.

    Curves of one plan meet: a layer curve's last point keeps every layer, a token-budget curve passes through the
    base budget, both the same extraction as the largest point of a text-count curve. Measuring it again costs the
    same and tells nothing new, so such a point repeats the first measurement of that extraction and names it in
    ``same_as`` (``"vary=value"``); every other point has ``same_as`` None."""
    from tqdm.auto import tqdm

    texts = checks.texts(texts)
    points = [(vary, value, *point(texts, config, vary, value)) for vary, values in plan for value in values]
    rows, first = [], {}
    for vary, value, sub, cfg in tqdm(points, desc=desc, disable=not progress):
        key = same_extraction(sub, cfg, n_hidden_states)
        if key in first:
            label, row = first[key]
            rows.append({"vary": vary, "value": value, **row, "same_as": label})
        else:
            row = measure(sub, cfg)
            first[key] = (f"{vary}={value}", row)
            rows.append({"vary": vary, "value": value, **row, "same_as": None})
    return pd.DataFrame(rows)


def sweep(loaded: Any, texts: Sequence[str], config: Any, vary: str | Mapping[str, Sequence[Any]],
          values: Sequence[Any] | None = None, repeats: int = 5, *, warmup: int = 1,
          extract_fn: Callable[..., Any] | None = None, progress: bool = False) -> pd.DataFrame:
    """Extraction time as one setting varies (``vary`` and its ``values``) or as several do in turn (``vary`` a
    mapping of setting -> values): one row per point with the ``extraction_cost`` fields (warmed up ``warmup``
    times, then timed ``repeats`` times) and ``same_as`` (``measure_plan``: each distinct extraction timed once)."""
    run = extract_fn or _default_extract()
    return measure_plan(
        _plan(vary, values), texts, config,
        lambda sub, cfg: extraction_cost(loaded, sub, cfg, repeats=repeats, warmup=warmup, extract_fn=run),
        n_hidden_states=getattr(loaded, "n_hidden_states", None), desc="sweep", progress=progress)


def sample_layers(n_hidden_states: int, k: int) -> list[int]:
    """``k`` evenly spaced deepest-layer indices in ``1..n_hidden_states-1`` (always including the last)."""
    if n_hidden_states < 2 or k < 1:
        raise ValueError(f"sample_layers: need n_hidden_states >= 2 and k >= 1, got {n_hidden_states}, {k}")
    top = n_hidden_states - 1
    return sorted({int(round(x)) for x in np.linspace(1, top, num=min(k, top))})


# -- peak memory, one fresh process per measurement ------------------------------------------------------------------

def model_arg(model: Any) -> dict[str, Any]:
    """A model as JSON for a child process: its full spec (a child has none of this process's registrations)."""
    from layerfusion import models

    return dataclasses.asdict(models.get_spec(model))


def _spec(model: dict[str, Any]) -> Any:
    from layerfusion.models import ModelSpec

    return ModelSpec(**model)


def extraction_work(model: dict[str, Any], texts: list[str], config: dict[str, Any], device: str | None = None,
                    dtype: str | None = None, cache_dir: str | None = None) -> Callable[[], dict[str, int]]:
    """Fresh-process target: loads the model and extracts the first text once (setup: imports, one-time caches),
    returns the work: one extraction of ``texts``."""
    from layerfusion import models
    from layerfusion.extract import ExtractionConfig, extract_texts

    loaded = models.load(_spec(model), device=device, dtype=dtype, cache_dir=cache_dir)
    cfg = ExtractionConfig(**config)
    extract_texts(loaded, texts[:1], cfg, progress=False)

    def work() -> dict[str, int]:
        out = extract_texts(loaded, texts, cfg, progress=False)
        return {"real_tokens": int(out.real_tokens), "padded_tokens": int(out.padded_tokens),
                "n_layers_kept": len(out.layers)}

    return work


def load_work(model: dict[str, Any], device: str | None = None, dtype: str | None = None,
              cache_dir: str | None = None) -> Callable[[], dict[str, Any]]:
    """Fresh-process target: the setup loads the model once and drops it (imports and one-time caches), the work
    loads it again and keeps it while the meter reads."""
    from layerfusion import models

    spec = _spec(model)
    models.load(spec, device=device, dtype=dtype, cache_dir=cache_dir)
    held: list[Any] = []

    def work() -> dict[str, Any]:
        start = time.perf_counter()
        loaded = models.load(spec, device=device, dtype=dtype, cache_dir=cache_dir)
        held.append(loaded)
        return {"load_seconds": time.perf_counter() - start, "dtype": meter.dtype_name(loaded.dtype),
                "device": str(loaded.device), **costmodel.parameter_stats(loaded.model)}

    return work


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _child_settings(device: Any, dtype: Any) -> tuple[str, str]:
    """Device and dtype decided here (``layerfusion.devices``), so the child loads what this process would."""
    from layerfusion import devices

    dev = devices.resolve_device(device)
    return str(dev), str(meter.dtype_name(devices.resolve_dtype(dtype, dev)))


def extraction_peak(model: Any, texts: Sequence[str], config: Any, *, device: Any = None, dtype: Any = None,
                    cache_dir: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Peak memory of one extraction of ``texts`` with ``config``, measured in a fresh process after the model is
    loaded there (``meter.PeakMemory`` fields, plus the tokens and layers the child extracted)."""
    texts = checks.texts(texts)
    device, dtype = _child_settings(device if device is not None else config.device, dtype)
    config_dict = {**config.as_dict(), "device": device}
    m = meter.peak_in_fresh_process(
        "layerfusion.sweeps:extraction_work",
        {"model": model_arg(model), "texts": texts, "config": config_dict, "device": device, "dtype": dtype,
         "cache_dir": cache_dir}, device=device if _is_cuda(device) else None, timeout=timeout)
    row = m.as_dict()
    row.update(row.pop("result") or {})
    return {**row, "n_texts": len(texts)}


def memory_sweep(model: Any, texts: Sequence[str], config: Any, vary: str | Mapping[str, Sequence[Any]],
                 values: Sequence[Any] | None = None, *, device: Any = None, dtype: Any = None,
                 cache_dir: str | None = None, progress: bool = False) -> pd.DataFrame:
    """Peak memory of one extraction as one setting varies, or several in turn (as ``sweep``): one fresh process per
    distinct extraction (``extraction_peak``), ``same_as`` naming the first measurement of a repeated one."""
    from layerfusion import models

    return measure_plan(
        _plan(vary, values), texts, config,
        lambda sub, cfg: extraction_peak(model, sub, cfg, device=device, dtype=dtype, cache_dir=cache_dir),
        n_hidden_states=models.get_spec(model).n_layers + 1, desc="memory", progress=progress)


def model_footprint(model: Any, *, device: Any = None, dtype: Any = None, cache_dir: str | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
    """Load ``model`` in a fresh process: load time, parameters and their bytes, ``resident_bytes`` (RSS the loaded
    model holds) and ``peak_load_bytes`` (RSS high-water during the load), above the child's RSS after imports."""
    spec = model_arg(model)
    device, dtype = _child_settings(device, dtype)
    m = meter.peak_in_fresh_process("layerfusion.sweeps:load_work",
                                    {"model": spec, "device": device, "dtype": dtype, "cache_dir": cache_dir},
                                    device=device if _is_cuda(device) else None, timeout=timeout)
    info = m.result or {}
    return {"model": spec["key"], "hf_id": spec["hf_id"], **info, "resident_bytes": m.retained_bytes,
            "peak_load_bytes": m.peak_bytes, "cuda_peak_bytes": m.cuda_peak_bytes, "memory_kind": m.memory_kind,
            "hwm_reset": m.hwm_reset}
