"""Meters: how long a call takes (repeats with an interval) and how much memory it needs (in a fresh process).

Peak memory is measured in a **new Python process per measurement** (``peak_in_fresh_process``). Measured inside a
process that has already done similar work, the resident set (RSS) only grows by the pages the call touches for
the first time: memory freed by earlier calls stays with the process (glibc's heap and arenas, torch's and
Python's allocators) and is reused, so a second extraction of a 135M-parameter model measured a 0.02 MiB increase
where the first measured 6.5 MiB, and a 45 MB model loaded after three larger ones measured 0 bytes. The fresh
child imports, runs the caller's *setup* (e.g. loading a model), resets the kernel's high-water mark, runs the
*work* once and reports the high-water mark above its level before the work. On CUDA it also reports torch's
allocator peak (``torch.cuda.max_memory_allocated``), which does not depend on the process's history.

``measure`` times a call in this process (warm-up, repeats, median with a percentile-bootstrap interval); its
memory field is the in-process RSS growth, valid only as a lower bound, or the CUDA allocator's peak on a GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from scipy.stats import bootstrap

from layerfusion.provenance import hardware

_HWM_CLEAR = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
CONFIDENCE = 0.95
"""Confidence level of the timing intervals."""


# -- intervals ------------------------------------------------------------------------------------------------------

def median_interval(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0,
                    n_resamples: int = 2000) -> tuple[float, float, float]:
    """Median of ``values`` and its percentile-bootstrap interval (``scipy.stats.bootstrap``, seeded).

    One value gives (v, nan, nan); identical values give (v, v, v). With few repeats the percentile interval lies
    between the smallest and largest value and covers less than ``confidence``: read it with the repeat count.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"median_interval: values must be a non-empty 1-d list of finite numbers, got {values!r}")
    med = float(np.median(x))
    if len(x) == 1:
        return med, float("nan"), float("nan")
    if np.ptp(x) == 0:
        return med, med, med
    ci = bootstrap((x,), np.median, confidence_level=confidence, method="percentile", n_resamples=n_resamples,
                   random_state=np.random.default_rng(seed), vectorized=True, axis=-1).confidence_interval
    return med, float(ci.low), float(ci.high)


def sum_interval(samples: Sequence[Sequence[float]], confidence: float = CONFIDENCE, seed: int = 0,
                 n_resamples: int = 2000) -> tuple[float, float, float]:
    """Sum of the medians of several independent samples (e.g. the repeats of each model fused) and a percentile
    interval from resampling each sample separately: the cost of a pipeline that runs each part once."""
    xs = [np.asarray(s, dtype=float) for s in samples]
    if not xs or any(len(x) == 0 or not np.isfinite(x).all() for x in xs):
        raise ValueError("sum_interval: every sample must be a non-empty list of finite numbers")
    total = float(sum(np.median(x) for x in xs))
    if all(len(x) == 1 for x in xs):
        return total, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_resamples)
    for x in xs:
        sums += np.median(rng.choice(x, size=(n_resamples, len(x)), replace=True), axis=1)
    alpha = (1 - confidence) / 2
    return total, float(np.quantile(sums, alpha)), float(np.quantile(sums, 1 - alpha))


# -- in-process timing -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """Result of ``measure``: wall times of the repeats, their median and interval, and what they ran on.

    ``peak_bytes``: on CUDA the allocator's peak above its level before the call (largest over the repeats); on CPU
    the in-process RSS growth, a lower bound only (see the module docstring): use ``peak_in_fresh_process``.
    """

    seconds_median: float
    seconds_low: float
    seconds_high: float
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


def dtype_name(dtype: Any) -> str | None:
    """``torch.bfloat16`` -> ``"bfloat16"`` (None stays None)."""
    return None if dtype is None else str(dtype).replace("torch.", "")


def _is_cuda(device: Any) -> bool:
    return device is not None and str(device).startswith("cuda")


def read_hwm() -> int | None:
    """This process's resident high-water mark (Linux VmHWM) in bytes, or None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        _HWM_CLEAR.write_text("5")
    except OSError:
        return False
    return True


class RssPeak:
    """Peak RSS during a block: the kernel's high-water mark (reset on entry) where Linux allows it, and a thread
    sampling psutil every ``interval`` s (which misses peaks shorter than the interval) elsewhere."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.baseline = 0
        self.peak = 0
        self.hwm_reset = False

    def _sample(self) -> None:
        self.peak = max(self.peak, self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssPeak:
        self.hwm_reset = reset_hwm()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        hwm = read_hwm() if self.hwm_reset else None
        if hwm is not None:
            self.peak = max(self.peak, hwm)


def _timed_call_cpu(fn: Callable[[], Any]) -> tuple[Any, float, int, int]:
    gc.collect()
    with RssPeak() as rss:
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


def measure(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, device: Any = None,
            dtype: Any = None) -> Measurement:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed; median time with its percentile
    interval (``median_interval``). ``device`` selects the memory tracked (CUDA allocator, else in-process RSS);
    ``dtype`` only tags the measurement; ``result`` holds the return value of the last timed call."""
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
    med, low, high = median_interval(seconds)
    return Measurement(seconds_median=med, seconds_low=low, seconds_high=high, seconds_min=float(min(seconds)),
                       seconds_all=tuple(seconds), peak_bytes=int(peak), peak_total_bytes=int(peak_total),
                       memory_kind="cuda_allocated" if cuda else "rss_in_process", device=str(device or "cpu"),
                       dtype=dtype_name(dtype), hardware=hardware(), result=result)


# -- peak memory in a fresh process ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeakMemory:
    """One fresh-process memory measurement (bytes).

    ``baseline_bytes``: the child's RSS after its imports. ``setup_bytes``: RSS after the setup (e.g. the loaded
    model) minus the baseline. ``peak_bytes``: the RSS high-water mark during the work minus the RSS just before it
    (what the work itself needed). ``peak_total_bytes``: that high-water mark minus the baseline (setup + work).
    ``retained_bytes``: RSS after the work (its result still held) minus before it. ``maxrss_bytes``: the child's
    ``ru_maxrss`` over its whole life (imports included). ``cuda_peak_bytes`` / ``cuda_setup_bytes``: torch's CUDA
    allocator peak above its level before the work, and what the setup left allocated (None off CUDA).
    ``hwm_reset``: whether the kernel's high-water mark could be reset (else a 2 ms sampler gave the peak).
    ``trimmed``: whether memory freed during the setup was handed back before the work (``release_free_memory``),
    so the work cannot reuse it unseen.
    """

    baseline_bytes: int
    setup_bytes: int
    peak_bytes: int
    peak_total_bytes: int
    retained_bytes: int
    maxrss_bytes: int
    cuda_peak_bytes: int | None
    cuda_setup_bytes: int | None
    hwm_reset: bool
    trimmed: bool
    seconds: float
    memory_kind: str
    result: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The measurement as a flat dict (``result`` included when it is a JSON value)."""
        return dataclasses.asdict(self)


def release_free_memory() -> bool:
    """Hand memory the process has freed back to the system (glibc ``malloc_trim(0)``), so that the next
    allocations show in the resident set again; False where the C library has no ``malloc_trim``."""
    import ctypes
    import ctypes.util

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _split_target(target: str) -> tuple[str, str]:
    module, _, name = str(target).partition(":")
    if not module or not name:
        raise ValueError(f"peak_in_fresh_process: target {target!r} must be 'package.module:function'")
    return module, name


def _resolve(target: str) -> Callable[..., Callable[[], Any]]:
    module, name = _split_target(target)
    return getattr(importlib.import_module(module), name)


def _child(request: Mapping[str, Any]) -> dict[str, Any]:
    """What runs inside the fresh process: setup, reset, the work once, the readings."""
    proc = psutil.Process()
    factory = _resolve(request["target"])
    cuda = _is_cuda(request.get("device"))
    release_free_memory()
    baseline = proc.memory_info().rss
    work = factory(**request.get("kwargs", {}))
    if not callable(work):
        raise ValueError(f"peak_in_fresh_process: {request['target']} must return the work as a callable")
    trimmed = release_free_memory()
    cuda_setup = cuda_peak = None
    if cuda:
        import torch

        dev = torch.device(request["device"])
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_setup = int(torch.cuda.memory_allocated(dev))
    with RssPeak() as rss:
        start = time.perf_counter()
        result = work()
        if cuda:
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    after = proc.memory_info().rss
    if cuda:
        cuda_peak = max(0, int(torch.cuda.max_memory_allocated(dev)) - cuda_setup)
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline_bytes": int(baseline), "setup_bytes": int(max(0, rss.baseline - baseline)),
            "peak_bytes": int(max(0, rss.peak - rss.baseline)), "peak_total_bytes": int(max(0, rss.peak - baseline)),
            "retained_bytes": int(max(0, after - rss.baseline)), "maxrss_bytes": int(maxrss),
            "cuda_peak_bytes": cuda_peak, "cuda_setup_bytes": cuda_setup, "hwm_reset": bool(rss.hwm_reset),
            "trimmed": trimmed, "seconds": float(seconds), "memory_kind": "cuda_allocated" if cuda else "rss_fresh_process",
            "result": result}


def peak_in_fresh_process(target: str, kwargs: Mapping[str, Any] | None = None, *, device: Any = None,
                          timeout: float | None = None, env: Mapping[str, str] | None = None) -> PeakMemory:
    """Run one measurement in a new Python process and return its ``PeakMemory``.

    ``target`` names a function ``"package.module:function"`` importable in the child (this interpreter, same
    ``sys.path``); it is called with ``kwargs`` (JSON values) and does the setup, then returns the work as a
    zero-argument callable, which runs once while the high-water mark is watched. ``device`` (a CUDA device) adds
    the allocator's peak. A failing child raises ``RuntimeError`` with the end of its error output.
    """
    _split_target(target)
    request = {"target": str(target), "kwargs": dict(kwargs or {}), "device": None if device is None else str(device)}
    try:
        payload = json.dumps(request)
    except (TypeError, ValueError) as err:
        raise ValueError(f"peak_in_fresh_process: kwargs must be JSON values ({err}); pass names, not objects") \
            from err
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "layerfusion.meter"], input=payload, capture_output=True,
                          text=True, timeout=timeout, env=child_env)
    if done.returncode != 0:
        raise RuntimeError(f"peak_in_fresh_process: {target} failed in the child (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"peak_in_fresh_process: {target} printed no result; stderr: {done.stderr[-2000:]}")
    return PeakMemory(**json.loads(lines[-1]))


def allocation(n_bytes: int, kind: str = "torch", device: str | None = None) -> Callable[[], int]:
    """A known allocation to check a memory meter with (a ``peak_in_fresh_process`` target): the work allocates
    ``n_bytes`` as one ``torch`` tensor (on ``device``) or ``numpy`` array, writes every element, and returns the
    bytes allocated."""
    n = int(n_bytes) // 8
    if n < 1 or kind not in ("torch", "numpy"):
        raise ValueError(f"allocation: need n_bytes >= 8 and kind 'torch' or 'numpy', got {n_bytes}, {kind!r}")

    if kind == "torch":
        import torch  # imported during the setup, so the import is not counted

        torch.ones(1, device=device)

    def work() -> int:
        if kind == "numpy":
            block = np.ones(n, dtype=np.float64)
        else:
            block = torch.ones(n, dtype=torch.float64, device=device)
        return int(block.nbytes if kind == "numpy" else block.numel() * block.element_size())

    return work


def main() -> int:
    """Entry point of the child (``python -m layerfusion.meter``): a JSON request on stdin, one JSON line out."""
    request = json.loads(sys.stdin.read())
    out = _child(request)
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
