"""Tests for benchmarks/: the ``python -m benchmarks`` runner (on fake modules: ratios come from the rows ``main``
returns, hardware from ``layerfusion.provenance``) and the benchmark modules themselves at toy sizes (their timings
mean nothing there; they must run end to end and report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerfusion.testing import tiny_spec

# python -m benchmarks: the runner ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

_FAKE_MODULES = {
    "rows": (
        "def main(argv=None):\n"
        "    print('| setting | speed-up ratio |')\n"
        "    print('| printed only | 99.0 |')\n"
        "    return [{'setting': 'authors style', 'seconds': 2.0, 'speedup': 1.0},\n"
        "            {'setting': 'ours', 'seconds': 0.5, 'speedup': 4.0, 'memory ratio': float('nan')}]\n"
    ),
    "frame": (
        "import pandas as pd\n"
        "def main(argv=None):\n"
        "    df = pd.DataFrame({'model': ['tiny'], 'memory ratio': [0.25], 'seconds': [1.0]})\n"
        "    print(df.to_string())\n"
        "    return df\n"
    ),
    "printed": (
        "def main(argv=None):\n"
        "    print('| setting | speed-up ratio |')\n"
        "    print('| ours | 4.0 |')\n"
        "    print('overall speedup: 3.5')\n"
    ),
    "argv": "def main(argv=None):\n    assert argv == []\n    return {'what': 'nothing to compare'}\n",
    "nomain": "X = 1\n",
    "boom": "def main(argv=None):\n    raise RuntimeError('kaput')\n",
    "badimport": "import layerfusion_no_such_module\ndef main(argv=None):\n    pass\n",
}


@pytest.fixture()
def bench(tmp_path, monkeypatch):
    import importlib
    import sys

    pkg = tmp_path / "fakebench_lf"
    pkg.mkdir()
    for name, src in _FAKE_MODULES.items():
        (pkg / f"{name}.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(REPO))
    yield importlib.import_module("benchmarks.__main__")
    for mod in [m for m in sys.modules if m.startswith("fakebench_lf")]:
        del sys.modules[mod]


def test_bench_discover_lists_public_modules_and_expected(bench):
    assert bench.discover("fakebench_lf", expected=("missing",)) == sorted([*_FAKE_MODULES, "missing"])


def test_bench_reads_ratios_from_the_returned_rows_not_the_printed_table(bench, capsys):
    res = bench.run_module("rows", package="fakebench_lf", echo=True)
    assert res.status == "ok"
    assert res.ratios == [{"row": "authors style", "metric": "speedup", "ratio": 1.0},
                          {"row": "ours", "metric": "speedup", "ratio": 4.0}]
    assert "| printed only | 99.0 |" in capsys.readouterr().out
    frame = bench.run_module("frame", package="fakebench_lf", echo=False)
    assert frame.ratios == [{"row": "tiny", "metric": "memory ratio", "ratio": 0.25}]
    printed = bench.run_module("printed", package="fakebench_lf", echo=False)
    assert printed.status == "ok" and printed.ratios == [] and "returned no ratio rows" in printed.message
    assert capsys.readouterr().out == ""


def test_bench_statuses(bench):
    assert bench.run_module("nomain", package="fakebench_lf", echo=False).status == "skipped"
    assert bench.run_module("absent", package="fakebench_lf", echo=False).status == "skipped"
    boom = bench.run_module("boom", package="fakebench_lf", echo=False)
    assert boom.status == "failed" and "kaput" in boom.message
    assert bench.run_module("badimport", package="fakebench_lf", echo=False).status == "failed"
    quiet = bench.run_module("argv", package="fakebench_lf", echo=False)
    assert quiet.status == "ok" and quiet.ratios == [] and "no ratio" in quiet.message


def test_bench_summary_table_has_ratio_and_status_rows(bench):
    results = [bench.run_module(n, package="fakebench_lf", echo=False) for n in ("rows", "nomain", "boom")]
    table = bench.summary_table(results)
    assert "| rows | ours | speedup | 4 |" in table
    assert "| nomain | (skipped) | no main(argv) | |" in table
    assert "| boom | (failed) |" in table


def test_bench_hardware_line_reads_the_provenance_record(bench, monkeypatch):
    from layerfusion import provenance

    assert bench.hardware_line().startswith(f"hardware: {provenance.cpu_model()}, ")
    monkeypatch.setattr(provenance, "hardware", lambda: {
        "cpu": "Test CPU", "cpu_flags": ["avx2", "avx512f"], "logical_cores": 2, "torch_threads": 2,
        "ram_gib": 8.0, "gpu": None, "gpu_memory_gib": None, "platform": "test"})
    monkeypatch.setattr(provenance, "versions", lambda: {"torch": "9.9"})
    assert bench.hardware_line() == "hardware: Test CPU, 2 cores, flags avx2 avx512f, GPU none, torch 9.9"


# the benchmark modules themselves, at toy sizes (their timings mean nothing here; they must run and report) -------

def test_extraction_benchmark_runs_on_a_tiny_decoder(tmp_path, monkeypatch, capsys):
    import importlib

    from layerfusion import models

    monkeypatch.syspath_prepend(str(REPO))
    models.register(tiny_spec(tmp_path / "llama", key="tiny-bench"))
    extraction = importlib.import_module("benchmarks.extraction")
    monkeypatch.setattr(extraction, "matmul_flops", lambda size, seconds, dtype, device: 1e9)
    rows = extraction.main(["--model", "tiny-bench", "--dataset", "mr", "--n", "6", "--token-budget", "32", "64",
                            "--max-length", "16", "--dtypes", "fp32", "bf16", "--device", "cpu"])
    assert [(r["loop"], r["dtype"], r["token_budget"]) for r in rows] == [
        ("authors", "float32", None), ("layerfusion", "float32", 32), ("layerfusion", "float32", 64),
        ("layerfusion", "bfloat16", 32), ("layerfusion", "bfloat16", 64)]
    assert all(r["speedup"] > 0 and r["real_tokens"] > 0 and r["matmul_gflops"] == 1.0 for r in rows)
    assert all(r["layers_pooled"] == 3 for r in rows[1:]) and rows[0]["speedup"] == 1.0
    out = capsys.readouterr().out
    assert "| layerfusion (3 layers x 3 poolings, <= 256 texts a batch) | bfloat16 | 64 |" in out
    assert "CPU flags: avx2" in out
    assert "target matmul fraction in bfloat16 >= 0.70" in out
    assert "target bf16 speed-up: not applicable" in out


def test_extraction_benchmark_random_shape_and_targets(monkeypatch, capsys):
    import importlib

    from layerfusion import devices

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    extraction = importlib.import_module("benchmarks.extraction")
    rows = extraction.main(["--shape", "tiny", "--synthetic", "long", "--n", "4", "--token-budget", "512",
                            "--max-length", "24", "--device", "cpu", "--matmul-seconds", "0.01",
                            "--matmul-sizes", "64", "128"])
    assert [r["dtype"] for r in rows] == ["float32", "float32", "bfloat16"]
    assert rows[0]["model"] == "random tiny" and rows[0]["native_bf16"] == "amx_bf16"
    assert rows[1]["real_tokens"] == 4 * 24, "long synthetic texts are truncated to --max-length"
    assert all(r["matmul_gflops"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "target bf16 speed-up over the authors' loop >= 5:" in out
    fake = [{**rows[0], "loop": "layerfusion", "dtype": "bfloat16", "speedup": 6.0, "matmul_fraction_ratio": 0.5}]
    assert extraction.targets(rows[:1] + fake) == [
        "target bf16 speed-up over the authors' loop >= 5: 6.00 (met)",
        "target matmul fraction in bfloat16 >= 0.70: 0.500 (not met)"]
    emulated = [{**r, "native_bf16": "", "loop": "layerfusion", "matmul_fraction_ratio": 0.5, "tokens_per_s": 1.0}
                for r in (rows[0], {**rows[0], "dtype": "bfloat16"})]
    assert extraction.targets(emulated)[0].startswith("target bf16 speed-up: not applicable")
    assert extraction.targets(emulated)[-1].startswith(
        "target bf16 over fp32 (our engine) >= 1.3: not applicable (bf16 is emulated")


def test_probing_benchmark_runs_on_a_toy_stack(monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    probing = importlib.import_module("benchmarks.probing")
    rows = probing.main(["--n-train", "60", "--n-val", "30", "--layers", "4", "--dim", "8", "--repeats", "1",
                         "--Cs", "0.1", "1"])
    assert len(rows) == 1 and rows[0]["ours_layers"] == 4 and rows[0]["speedup"] > 0
    assert "2 Cs" in rows[0]["shape"]
    assert rows[0]["val_acc_max_abs_diff"] <= 0.1
    assert "synthetic" in capsys.readouterr().out


@pytest.mark.slow  # starts a local Ray instance and two actor pools (~30-60 s on two cores)
def test_distributed_benchmark_runs_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    import importlib

    from layerfusion import models

    pytest.importorskip("ray")
    monkeypatch.syspath_prepend(str(REPO))
    models.register(tiny_spec(tmp_path / "llama", key="tiny-bench-ray"))
    distributed = importlib.import_module("benchmarks.distributed")
    rows = distributed.main(["--model", "tiny-bench-ray", "--dataset", "mr", "--n", "12", "--shard-size", "4",
                             "--workers", "1", "2", "--max-length", "16"])
    assert [r["workers"] for r in rows] == [1, 1, 2] and rows[0]["path"] == "single process"
    assert all(r["identical"] and r["speedup"] > 0 and r["shards"] == 3 for r in rows)
    assert rows[1]["ray_init_s"] > 0 and "| ray, 2 workers | 2 |" in capsys.readouterr().out


def test_oom_check_dry_run_retries_and_passes(monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    oom = importlib.import_module("benchmarks._oom_check")
    assert oom.main(["--dry-run", "--n", "8"]) == 0
    out = capsys.readouterr().out
    assert "retries: 2" in out and "out-of-memory retry: PASS" in out


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """The GPU check's every step at toy size on a CPU, with no wall-clock limit anywhere (issue #25: a busy machine
    must not fail it; the script's per-step limits apply only on the GPU)."""
    import os
    import subprocess
    import sys

    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    dry_branch = script[script.index('if [ "$DRY" = 1 ]; then\n    "$@"'):]
    assert "timeout" not in dry_branch.split("else")[0]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "gpu_check.log").read_text()
    for step in ("environment", "extraction benchmark, short texts", "extraction benchmark, 256-token documents",
                 "extraction benchmark, Qwen2.5-0.5B shape, bf16 vs fp32", "CUDA unit tests", "out-of-memory retry",
                 "probe device check", "ray actors on the device"):
        assert f"== {step} (" in log, step
    assert "gpu check: all steps passed" in log and "out-of-memory retry: PASS" in log
    assert "steady state: median of 2 timed passes after one full untimed pass" in log
    assert "target bf16 over fp32 (our engine) >= 1.3:" in log  # a ratio where bf16 is native, else "not applicable"
    for name in ("short", "long", "small"):
        rows = json.loads((tmp_path / f"extraction_{name}.json").read_text())
        assert all(len(r["seconds_passes"]) == 2 and r["repeats"] == 2 for r in rows)
    assert {r["dtype"] for r in json.loads((tmp_path / "extraction_small.json").read_text())} == {"float32",
                                                                                                  "bfloat16"}


def test_extraction_benchmark_times_steady_state_passes(monkeypatch):
    """One untimed pass before the timed ones, and the median of the timed ones."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    extraction = importlib.import_module("benchmarks.extraction")
    calls = []
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 22.0])
    monkeypatch.setattr(extraction.time, "perf_counter", lambda: next(clock))
    result, seconds = extraction.steady_seconds(lambda: calls.append(1) or len(calls), "cpu", repeats=3)
    assert len(calls) == 4 and result == 4 and seconds == [5.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="repeats"):
        extraction.steady_seconds(lambda: None, "cpu", repeats=0)


@pytest.mark.slow  # builds toy versions of the five paper architectures (~1 min on two busy cores)
def test_gpu_overhead_dry_run_writes_a_tidy_table(tmp_path, monkeypatch, capsys):
    """The claim-4 script at toy size on a CPU: every architecture, every layers-kept and size configuration with
    three repeats, fusion rows summing the per-model costs, and the table on disk; no wall-clock limit."""
    import csv
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    overhead = importlib.import_module("benchmarks.gpu_overhead")
    rows = overhead.main(["--dry-run", "--out", str(tmp_path)])
    table = list(csv.DictReader((tmp_path / "gpu_overhead.csv").open()))
    assert len(table) == len(rows) > 0 and set(table[0]) == set(overhead.COLUMNS)
    meta = json.loads((tmp_path / "gpu_overhead.json").read_text())["meta"]
    assert meta["finished"] and not meta["skipped"] and meta["torch"] and meta["gpu"].startswith("none")
    extracts = [r for r in rows if r["kind"] == "extract"]
    assert {r["model_shape"] for r in extracts} == set(overhead.PAPER_SHAPES)
    per_config = {}
    for r in extracts:
        per_config.setdefault((r["model_shape"], r["layers_kept"], r["n_texts"], r["tokens"]), []).append(r["repeat"])
    assert all(sorted(v) == [0, 1, 2] for v in per_config.values())
    kept = {k[1] for k in per_config}
    assert {1, 4, 8} < kept and len(kept) == 4
    assert all(r["real_tokens"] == r["n_texts"] * r["tokens"] for r in extracts)
    fused = [r for r in rows if r["kind"] == "fused"]
    assert {r["model_shape"].count("+") + 1 for r in fused} == {2, 3, 4, 5}
    first = fused[0]
    parts = [r["seconds"] for r in rows if r["repeat"] == first["repeat"] and r["n_texts"] == first["n_texts"]
             and r["tokens"] == first["tokens"] and r["kind"] in ("extract", "fusion_fit")
             and (r["model_shape"] == first["model_shape"]
                  or (r["kind"] == "extract" and r["model_shape"] in first["model_shape"].split("+")
                      and r["layers_kept"] == max(kept)))]
    assert first["seconds"] == pytest.approx(sum(parts))
    assert "| fused | llama-2-7b+mistral-7b |" in capsys.readouterr().out


def test_gpu_overhead_stops_before_its_budget(tmp_path, monkeypatch):
    """With no time left the script measures nothing, says what it skipped and still writes a (header-only) table."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    overhead = importlib.import_module("benchmarks.gpu_overhead")
    run = overhead.Run(tmp_path, budget_s=10.0, meta={"gpu": "test"})
    assert run.fits(5.0, "small") and not run.fits(50.0, "big one")
    assert len(run.skipped) == 1 and run.skipped[0].startswith("big one (needs ~50 s, ")
    run.add({"kind": "extract", "seconds": 1.0})
    assert (tmp_path / "gpu_overhead.csv").read_text().splitlines()[1].startswith("extract,test,")
    assert overhead.kept_layers(33, 4) == (8, 16, 24, 32) and overhead.kept_layers(33, 1) == (32,)
    assert overhead.kept_layers(5, 8) == overhead.kept_layers(5, None) == (0, 1, 2, 3, 4)


def test_profile_attributes_the_whole_call(monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    profile = importlib.import_module("benchmarks._profile")
    shares = profile.main(["--shape", "tiny", "--dataset", "mr", "--n", "12", "--max-length", "16", "--top", "3"])
    assert {"linear matmul", "pooling (hook)", "untracked (engine loop, model glue)"} <= set(shares)
    assert 0.98 <= sum(shares.values()) <= 1.02 and all(v >= 0 for v in shares.values())
    assert "| kind of work | operation | share of wall time |" in capsys.readouterr().out


def test_fingerprint_needs_the_pins_and_lists_what_differs(tmp_path, monkeypatch, capsys):
    import importlib

    fingerprint = importlib.import_module("benchmarks._fingerprint")
    # Pins are read once by the libraries of this process, so the test names a pin of its own instead of setting
    # the real ones (that could change other tests' kernels).
    monkeypatch.setattr(fingerprint, "PINS", ("LAYERFUSION_TEST_PIN",))
    monkeypatch.delenv("LAYERFUSION_TEST_PIN", raising=False)
    assert fingerprint.main(["--out", str(tmp_path / "here.json")]) == 2
    assert "make fingerprint" in capsys.readouterr().err and not (tmp_path / "here.json").exists()
    monkeypatch.setenv("LAYERFUSION_TEST_PIN", "1")
    monkeypatch.setattr(fingerprint, "MODELS", ())  # the kernels only: no model to load
    assert fingerprint.main(["--out", str(tmp_path / "here.json")]) == 0
    assert fingerprint.main(["--compare", str(tmp_path / "here.json")]) == 0  # the same process, the same bits
    record = json.loads((tmp_path / "here.json").read_text())
    record["fingerprints"]["op:cos"] = "0" * 16
    (tmp_path / "there.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert fingerprint.main(["--compare", str(tmp_path / "there.json")]) == 1
    assert "1 of" in capsys.readouterr().out


@pytest.mark.slow
def test_float64_models_give_the_same_float32_vectors_whatever_the_kernels(tmp_path):
    """The ci profile's reason for float64 (params/ci.yaml): its vectors must not move with the last bits of the
    CPU's kernels. Two child processes with other kernels (torch's scalar code instead of AVX2, MKL's AVX2 branch
    instead of its reproducible one) must give the same vector bytes in float64, while in float32 they do not
    (else the two settings would not be two kernels, and the test would show nothing)."""
    import os
    import subprocess
    import sys

    pins = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",
            "OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    kernels = {"pinned": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
               "other": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}}

    def models(kind: str, dtype: str) -> dict[str, str]:
        out = tmp_path / f"{kind}-{dtype}.json"
        env = {**os.environ, **pins, **kernels[kind]}
        subprocess.run([sys.executable, "-m", "benchmarks._fingerprint", "--dtype", dtype, "--out", str(out)],
                       env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        prints = json.loads(out.read_text())["fingerprints"]
        return {name: value for name, value in prints.items() if name.startswith("model:")}

    assert models("pinned", "float32") != models("other", "float32")
    pinned, other = models("pinned", "float64"), models("other", "float64")
    assert len(pinned) == 114 and pinned == other
