"""Tests for layerfusion.meter: timing with intervals, and peak memory measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from layerfusion import meter

MIB = 2**20


def test_measure_returns_times_interval_result_and_tags():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
        return "done"

    m = meter.measure(fn, repeats=5, warmup=1, dtype="float32")
    assert len(calls) == 6 and m.result == "done"
    assert len(m.seconds_all) == 5 and all(s >= 0.009 for s in m.seconds_all)
    assert min(m.seconds_all) <= m.seconds_low <= m.seconds_median <= m.seconds_high <= max(m.seconds_all)
    assert m.device == "cpu" and m.dtype == "float32" and m.memory_kind == "rss_in_process"
    row = m.as_dict()
    assert "result" not in row and row["seconds_all"] == list(m.seconds_all)


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}])
def test_measure_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="measure"):
        meter.measure(lambda: None, **kwargs)


def test_measure_rejects_non_callable():
    with pytest.raises(ValueError, match="callable"):
        meter.measure(3)


def test_median_interval_matches_scipy_bootstrap_and_edge_cases():
    from scipy.stats import bootstrap

    x = [1.0, 1.2, 0.9, 1.5, 1.1, 1.3, 1.05]
    med, low, high = meter.median_interval(x, seed=3)
    ref = bootstrap((np.asarray(x),), np.median, method="percentile", n_resamples=2000,
                    random_state=np.random.default_rng(3)).confidence_interval
    assert med == np.median(x) and (low, high) == pytest.approx((ref.low, ref.high))
    assert meter.median_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    one = meter.median_interval([2.0])
    assert one[0] == 2.0 and np.isnan(one[1]) and np.isnan(one[2])
    with pytest.raises(ValueError, match="median_interval"):
        meter.median_interval([])


def test_sum_interval_adds_medians_and_widens_with_noise():
    total, low, high = meter.sum_interval([[1.0, 1.1, 0.9, 1.0, 1.05], [2.0, 2.2, 1.8, 2.1, 1.9]])
    assert total == pytest.approx(3.0) and low < total < high
    tight = meter.sum_interval([[1.0, 1.01, 0.99, 1.0, 1.0], [2.0, 2.01, 1.99, 2.0, 2.0]])
    assert tight[2] - tight[1] < high - low


# fresh-process memory ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_fresh_process_meter_sees_a_known_200_mib_allocation(kind):
    m = meter.peak_in_fresh_process("layerfusion.meter:allocation", {"n_bytes": 200 * MIB, "kind": kind})
    assert m.result == 200 * MIB
    assert 0.95 * 200 * MIB <= m.peak_bytes <= 1.10 * 200 * MIB
    assert m.memory_kind == "rss_fresh_process" and m.baseline_bytes > 0
    assert m.peak_total_bytes >= m.peak_bytes - MIB and m.maxrss_bytes >= m.peak_bytes


def test_fresh_process_meter_grows_with_the_allocation():
    small, large = (meter.peak_in_fresh_process("layerfusion.meter:allocation", {"n_bytes": n, "kind": "numpy"})
                    for n in (50 * MIB, 150 * MIB))
    assert large.peak_bytes - small.peak_bytes == pytest.approx(100 * MIB, rel=0.1)


_REUSED = """
import ctypes, json
from layerfusion import meter
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD: 1 MiB blocks come from the heap and stay there when freed
libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: do not hand the top of the heap back

def work():
    blocks = [libc.malloc(2**20) for _ in range(200)]
    for b in blocks:
        ctypes.memset(b, 1, 2**20)
    for b in blocks:
        libc.free(b)

first = meter.measure(work, repeats=1, warmup=0).peak_bytes
warmed = meter.measure(work, repeats=1, warmup=2).peak_bytes
print(json.dumps({"first": first, "warmed": warmed}))
"""


def test_in_process_rss_misses_memory_the_process_already_holds():
    """The degenerate measurement of the earlier chapter, reproduced: after two identical calls, a third measured in
    the same process shows one page (4,096 bytes), because the freed blocks stay resident and are reused. The fresh-process
    meter is immune (the known-allocation tests above) and the chapter uses it for every memory figure."""
    import json

    done = subprocess.run([sys.executable, "-c", _REUSED], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["first"] >= 190 * MIB
    assert got["warmed"] < MIB


def test_fresh_process_errors_name_the_target():
    with pytest.raises(ValueError, match="module:function"):
        meter.peak_in_fresh_process("nomodule", {})
    with pytest.raises(RuntimeError, match="layerfusion.meter:allocation"):
        meter.peak_in_fresh_process("layerfusion.meter:allocation", {"n_bytes": 1, "kind": "torch"})
    with pytest.raises(ValueError, match="JSON"):
        meter.peak_in_fresh_process("layerfusion.meter:allocation", {"n_bytes": object()})
