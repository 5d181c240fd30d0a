"""Overhead measurement: wall time, peak memory, throughput and storage, each tagged with hardware and dtype.

Claim 4 of the paper (memory and time grow with the models and layers fused) is tested with these helpers. Every
number carries the hardware it was taken on, because on a shared CPU absolute times vary by ±3x; the book states
ratios measured in one run and whether time scales linearly with the input.

``measure`` times any callable. ``extraction_cost`` and ``scaling`` time the extraction engine
(``layerfusion.extract.extract_texts``); ``model_footprint`` times ``layerfusion.models.load``.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from scipy.stats import linregress

from layerfusion import checks
from layerfusion.provenance import hardware

VARY = ("n_texts", "max_length", "token_budget", "layers")

_HWM_CLEAR = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Measurement:
    """Result of ``measure``: wall times over the repeats, peak memory, and what it was measured on.

    ``peak_bytes`` is the extra memory the call needed (largest over the repeats): on CUDA
    ``max_memory_allocated`` minus the allocation before the call, on CPU the peak resident set size (RSS) minus
    the RSS before the call. ``peak_total_bytes`` is the absolute peak (CUDA allocated, or process RSS).
    """

    seconds_median: float
    seconds_min: float
    seconds_all: tuple[float, ...]
    peak_bytes: int
    peak_total_bytes: int
    memory_kind: str
    device: str
    dtype: str | None
    hardware: dict[str, Any]
    result: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The measurement as a flat dict without ``result`` (one results row)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "result"}
        row["seconds_all"] = list(self.seconds_all)
        return row


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def _device_name(device: Any) -> str:
    return "cpu" if device is None else str(device)


def _is_cuda(device: Any) -> bool:
    return device is not None and str(device).startswith("cuda")


def _read_hwm() -> int | None:
    """The kernel's resident high-water mark (VmHWM) in bytes, or None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        _HWM_CLEAR.write_text("5")
    except OSError:
        return False
    return True


class _RssPeak:
    """Peak RSS during a block: a background thread samples psutil every ``interval`` s; on Linux the kernel's
    high-water mark (reset on entry) also catches peaks shorter than the sampling interval."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.baseline = 0
        self.peak = 0

    def _sample(self) -> None:
        self.peak = max(self.peak, self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> _RssPeak:
        self._hwm = _reset_hwm()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        hwm = _read_hwm() if self._hwm else None
        if hwm is not None:
            self.peak = max(self.peak, hwm)


def _timed_call_cpu(fn: Callable[[], Any]) -> tuple[Any, float, int, int]:
    gc.collect()
    with _RssPeak() as rss:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, max(0, rss.peak - rss.baseline), rss.peak


def _timed_call_cuda(fn: Callable[[], Any], device: Any) -> tuple[Any, float, int, int]:
    import torch

    dev = torch.device(device)
    gc.collect()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    baseline = torch.cuda.memory_allocated(dev)
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev)
    return result, seconds, max(0, peak - baseline), peak


def measure(
    fn: Callable[[], Any],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: Any = None,
    dtype: Any = None,
) -> Measurement:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed, and return a ``Measurement``.

    ``device`` selects the memory that is tracked: a CUDA device tracks ``torch.cuda`` allocations (with
    synchronisation around the timed call); anything else (default) tracks this process's RSS. ``dtype`` only tags
    the measurement. ``result`` holds the return value of the last timed call.
    """
    if not callable(fn):
        raise ValueError(f"measure: fn must be callable, got {type(fn).__name__}")
    if int(repeats) < 1:
        raise ValueError(f"measure: repeats must be >= 1, got {repeats}")
    if int(warmup) < 0:
        raise ValueError(f"measure: warmup must be >= 0, got {warmup}")
    cuda = _is_cuda(device)
    for _ in range(int(warmup)):
        fn()
    seconds: list[float] = []
    peak = peak_total = 0
    result = None
    for _ in range(int(repeats)):
        result = None
        result, sec, inc, total = _timed_call_cuda(fn, device) if cuda else _timed_call_cpu(fn)
        seconds.append(sec)
        peak, peak_total = max(peak, inc), max(peak_total, total)
    return Measurement(
        seconds_median=float(statistics.median(seconds)),
        seconds_min=float(min(seconds)),
        seconds_all=tuple(seconds),
        peak_bytes=int(peak),
        peak_total_bytes=int(peak_total),
        memory_kind="cuda_allocated" if cuda else "rss",
        device=_device_name(device),
        dtype=_dtype_name(dtype),
        hardware=hardware(),
        result=result,
    )


def parameter_stats(model: Any) -> dict[str, int]:
    """Number of parameters and bytes of parameters and buffers of a torch module."""
    params = list(model.parameters())
    return {
        "n_parameters": int(sum(p.numel() for p in params)),
        "parameter_bytes": int(sum(p.numel() * p.element_size() for p in params)),
        "buffer_bytes": int(sum(b.numel() * b.element_size() for b in model.buffers())),
    }


def model_footprint(key_or_spec: Any, device: Any = None, dtype: Any = None) -> dict[str, Any]:
    """Load a model once and report load time, parameter count and bytes, and the memory the load added.

    ``rss_increase_bytes`` is the process RSS after the load minus before it (with the model still held);
    ``peak_load_bytes`` is the extra peak memory during the load (CUDA allocations on a GPU, else RSS).
    """
    from layerfusion import models

    spec = models.get_spec(key_or_spec)
    dev = models.resolve_device(device)
    proc = psutil.Process()
    gc.collect()
    rss_before = proc.memory_info().rss
    m = measure(lambda: models.load(spec, device=dev, dtype=dtype), repeats=1, warmup=0, device=dev)
    loaded = m.result
    rss_after = proc.memory_info().rss
    row: dict[str, Any] = {
        "model": spec.key,
        "hf_id": spec.hf_id,
        "device": str(loaded.device),
        "dtype": _dtype_name(loaded.dtype),
        "load_seconds": m.seconds_median,
        **parameter_stats(loaded.model),
        "rss_increase_bytes": int(max(0, rss_after - rss_before)),
        "peak_load_bytes": m.peak_bytes,
        "memory_kind": m.memory_kind,
        "hardware": m.hardware,
    }
    del loaded, m
    gc.collect()
    return row


def _token_lengths(loaded: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Real (unpadded, truncated) token count of each text, as the engine tokenizes it."""
    if len(texts) == 0:
        return np.zeros(0, dtype=np.int64)
    enc = loaded.tokenizer(list(texts), truncation=True, max_length=int(max_length))
    return np.asarray([len(ids) for ids in enc["input_ids"]], dtype=np.int64)


def padded_tokens(lengths: Sequence[int], token_budget: int, max_batch_size: int, max_padding: float = 1.0) -> int:
    """Token positions computed including padding under the engine's batching plan (``extract.plan_batches``).

    Texts are sorted longest first and packed greedily while ``batch_size * longest_in_batch <= token_budget``,
    ``batch_size <= max_batch_size`` and at most ``max_padding`` of the batch's positions are padding (a single
    text longer than the budget forms its own batch).
    """
    from layerfusion.extract import plan_batches

    if int(token_budget) < 1 or int(max_batch_size) < 1:
        raise ValueError(f"padded_tokens: token_budget ({token_budget}) and max_batch_size ({max_batch_size}) "
                         "must be >= 1")
    lengths = np.asarray([int(x) for x in lengths], dtype=np.int64)
    plan = plan_batches(lengths, int(token_budget), int(max_batch_size), max_padding=max_padding)
    return int(sum(len(batch) * int(lengths[batch].max()) for batch in plan))


def _default_extract() -> Callable[..., Any]:
    from layerfusion.extract import extract_texts

    return extract_texts


def extraction_cost(
    loaded: Any,
    texts: Sequence[str],
    config: Any,
    repeats: int = 1,
    *,
    warmup: int = 0,
    extract_fn: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Time one extraction of ``texts`` with ``config`` and report throughput and peak memory.

    Returns ``seconds`` (median over ``repeats``), ``texts_per_s``, ``tokens_per_s`` (real tokens, padding
    excluded), ``peak_bytes``, ``n_texts``, ``real_tokens``, ``padded_tokens`` (positions computed incl. padding)
    and the device, dtype and hardware tags. ``extract_fn(loaded, texts, config, progress=False)`` defaults to
    ``layerfusion.extract.extract_texts``.
    """
    texts = checks.texts(texts)
    run = extract_fn or _default_extract()
    m = measure(lambda: run(loaded, texts, config, progress=False), repeats=repeats, warmup=warmup,
                device=loaded.device, dtype=loaded.dtype)
    real, padded = _token_counts(loaded, texts, config, m.result)
    seconds = m.seconds_median
    return {
        "seconds": seconds,
        "seconds_min": m.seconds_min,
        "texts_per_s": len(texts) / seconds if seconds > 0 else float("inf"),
        "tokens_per_s": real / seconds if seconds > 0 else float("inf"),
        "peak_bytes": m.peak_bytes,
        "peak_total_bytes": m.peak_total_bytes,
        "memory_kind": m.memory_kind,
        "n_texts": len(texts),
        "real_tokens": real,
        "padded_tokens": padded,
        "model": getattr(getattr(loaded, "spec", None), "key", None),
        "device": m.device,
        "dtype": m.dtype,
        "hardware": m.hardware,
    }


def _token_counts(loaded: Any, texts: list[str], config: Any, result: Any) -> tuple[int, int]:
    """(real, padded) tokens: as the engine counted them when its result carries them (exact even after an
    out-of-memory retry), else recomputed from the tokenizer and the batching rule."""
    real, padded = getattr(result, "real_tokens", None), getattr(result, "padded_tokens", None)
    if real is not None and padded is not None:
        return int(real), int(padded)
    lengths = _token_lengths(loaded, texts, config.max_length)
    return int(lengths.sum()), padded_tokens(lengths, config.token_budget, config.max_batch_size,
                                             getattr(config, "max_padding", 1.0))


def _point(texts: list[str], config: Any, vary: str, value: Any) -> tuple[list[str], Any]:
    """The texts and config for one scaling point."""
    if vary == "n_texts":
        n = int(value)
        if not 1 <= n <= len(texts):
            raise ValueError(f"scaling: n_texts value {value} must be in [1, {len(texts)}] (the number of texts)")
        return texts[:n], config
    if vary == "layers":
        deepest = int(value)
        if deepest < 0:
            raise ValueError(f"scaling: layers value {value} must be a hidden-state index >= 0")
        return texts, dataclasses.replace(config, layers=tuple(range(deepest + 1)), stop_at_deepest=True)
    if int(value) < 1:
        raise ValueError(f"scaling: {vary} value {value} must be >= 1")
    return texts, dataclasses.replace(config, **{vary: int(value)})


def scaling(
    loaded: Any,
    texts: Sequence[str],
    config: Any,
    vary: str,
    values: Sequence[Any],
    repeats: int = 1,
    *,
    extract_fn: Callable[..., Any] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Extraction cost as one setting varies: one row per value with the ``extraction_cost`` fields.

    ``vary`` is ``n_texts`` (the first n texts), ``max_length``, ``token_budget`` or ``layers`` (the deepest kept
    layer: layers 0..value are kept and extraction stops there, so the saving of stopping early is measured).
    One untimed warm-up extraction on a few texts runs first so the first point does not carry start-up cost.
    """
    from tqdm.auto import tqdm

    if vary not in VARY:
        raise ValueError(f"scaling: vary={vary!r} is not one of {VARY}")
    values = list(values)
    if not values:
        raise ValueError("scaling: values is empty; pass the settings to measure")
    texts = checks.texts(texts)
    points = [_point(texts, config, vary, v) for v in values]
    run = extract_fn or _default_extract()
    run(loaded, texts[: min(4, len(texts))], points[0][1], progress=False)
    rows = []
    for value, (sub, cfg) in tqdm(list(zip(values, points)), desc=f"scaling {vary}", disable=not progress):
        row = extraction_cost(loaded, sub, cfg, repeats=repeats, extract_fn=run)
        rows.append({"vary": vary, "value": value, **row})
    return pd.DataFrame(rows)


def sample_layers(n_hidden_states: int, k: int) -> list[int]:
    """``k`` evenly spaced deepest-layer indices in ``1..n_hidden_states-1`` (always including the last),
    for ``scaling(..., vary="layers")``."""
    if n_hidden_states < 2 or k < 1:
        raise ValueError(f"sample_layers: need n_hidden_states >= 2 and k >= 1, got {n_hidden_states}, {k}")
    top = n_hidden_states - 1
    return sorted({int(round(x)) for x in np.linspace(1, top, num=min(k, top))})


def linearity(df: pd.DataFrame, x: str = "n_texts", y: str = "seconds") -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` with R² (``scipy.stats.linregress``), and how constant the
    per-unit cost is.

    ``per_unit_ratio`` is max(y/x) / min(y/x) over the rows: 1.0 means perfectly proportional; the book calls
    scaling linear when R² is near 1 and this ratio is small.
    """
    _require_columns(df, (x, y), "linearity")
    xs = df[x].to_numpy(dtype=float)
    ys = df[y].to_numpy(dtype=float)
    if np.isnan(xs).any() or np.isnan(ys).any():
        raise ValueError(f"linearity: columns {x!r}/{y!r} contain NaN; drop those rows first")
    if len(np.unique(xs)) < 2:
        raise ValueError(f"linearity: column {x!r} needs at least two distinct values")
    fit = linregress(xs, ys)
    r2 = fit.rvalue**2 if np.ptp(ys) > 0 else 1.0  # a flat line fits constant times exactly
    if (xs <= 0).any():
        ratio = float("nan")
    else:
        per = ys / xs
        ratio = float(per.max() / per.min()) if per.min() > 0 else float("inf")
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(r2),
            "per_unit_ratio": ratio, "n_points": int(len(xs))}


def pareto_front(df: pd.DataFrame, cost: str = "cost", score: str = "accuracy") -> pd.DataFrame:
    """Rows not dominated by another (another row is no costlier and no worse, and strictly better in one).

    Rows with identical cost and score are all kept. Returned sorted by cost (then score descending), with the
    original index.
    """
    _require_columns(df, (cost, score), "pareto_front")
    c = df[cost].to_numpy(dtype=float)
    s = df[score].to_numpy(dtype=float)
    if np.isnan(c).any() or np.isnan(s).any():
        raise ValueError(f"pareto_front: columns {cost!r}/{score!r} contain NaN; drop those rows first")
    no_worse = (c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])
    strictly = (c[None, :] < c[:, None]) | (s[None, :] > s[:, None])
    dominated = (no_worse & strictly).any(axis=1)
    front = df.loc[~dominated]
    return front.sort_values([cost, score], ascending=[True, False], kind="stable")


def _require_columns(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [col for col in cols if col not in df.columns]
    if missing:
        raise KeyError(f"{where}: column(s) {missing} not in the frame; available: {list(df.columns)}")


def storage_bytes(path: str | Path) -> int:
    """Total size in bytes of the regular files under ``path`` (a file counts itself; symlinks are not followed)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"storage_bytes: {root} does not exist")
    if root.is_file():
        return root.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return int(total)
