"""Tests for benchmarks/: the ``python -m benchmarks`` runner (on fake modules) and the benchmark modules
themselves at toy sizes (their timings mean nothing there; they must run end to end and report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfusion.testing import tiny_spec

# python -m benchmarks: the runner ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

_FAKE_MODULES = {
    "md": (
        "def main(argv=None):\n"
        "    print('| setting | seconds | speed-up ratio |')\n"
        "    print('|---|---:|---:|')\n"
        "    print('| authors style | 2.0 | 1.00 |')\n"
        "    print('| ours | 0.5 | 4.0x |')\n"
    ),
    "frame": (
        "import pandas as pd\n"
        "def main(argv=None):\n"
        "    df = pd.DataFrame({'model': ['tiny'], 'memory ratio': [0.25], 'seconds': [1.0]})\n"
        "    print(df.to_string())\n"
        "    return df\n"
    ),
    "plain": (
        "import pandas as pd\n"
        "def main(argv=None):\n"
        "    print(pd.DataFrame({'setting': ['authors style', 'ours all layers'], 'time ratio': [1.0, 0.3]})"
        ".to_string())\n"
        "    print('overall speedup: 3.5')\n"
    ),
    "argv": "def main(argv=None):\n    assert argv == []\n    print('nothing to compare')\n",
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


def test_bench_collects_markdown_ratio_rows(bench):
    res = bench.run_module("md", package="fakebench_lf", echo=False)
    assert res.status == "ok"
    assert [(r["row"], r["ratio"]) for r in res.ratios] == [("authors style", 1.0), ("ours", 4.0)]
    assert {r["metric"] for r in res.ratios} == {"speed-up ratio"}


def test_bench_prefers_returned_frame(bench):
    res = bench.run_module("frame", package="fakebench_lf", echo=False)
    assert res.ratios == [{"row": "tiny", "metric": "memory ratio", "ratio": 0.25}]


def test_bench_parses_whitespace_table_and_key_value(bench):
    res = bench.run_module("plain", package="fakebench_lf", echo=False)
    got = [(r["row"], r["metric"], r["ratio"]) for r in res.ratios]
    assert got == [("authors style", "time ratio", 1.0), ("ours all layers", "time ratio", 0.3),
                   ("-", "overall speedup", 3.5)]


def test_bench_statuses(bench):
    assert bench.run_module("nomain", package="fakebench_lf", echo=False).status == "skipped"
    assert bench.run_module("absent", package="fakebench_lf", echo=False).status == "skipped"
    boom = bench.run_module("boom", package="fakebench_lf", echo=False)
    assert boom.status == "failed" and "kaput" in boom.message
    assert bench.run_module("badimport", package="fakebench_lf", echo=False).status == "failed"
    quiet = bench.run_module("argv", package="fakebench_lf", echo=False)
    assert quiet.status == "ok" and quiet.ratios == [] and "no ratio" in quiet.message


def test_bench_summary_table_has_ratio_and_status_rows(bench):
    results = [bench.run_module(n, package="fakebench_lf", echo=False) for n in ("md", "nomain", "boom")]
    table = bench.summary_table(results)
    assert "| md | ours | speed-up ratio | 4 |" in table
    assert "| nomain | (skipped) | no main(argv) | |" in table
    assert "| boom | (failed) |" in table


# the benchmark modules themselves, at toy sizes (their timings mean nothing here; they must run and report) -------

def test_extraction_benchmark_runs_on_a_tiny_decoder(tmp_path, monkeypatch, capsys):
    import importlib

    from layerfusion import models

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(models, "REGISTRY", dict(models.REGISTRY))
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
    assert "| layerfusion (3 layers x 3 poolings) | bfloat16 | 64 |" in out and "CPU flags: avx2" in out
    assert "target matmul fraction in bfloat16 >= 0.70" in out
    assert "target bf16 speed-up: not applicable" in out


def test_extraction_benchmark_random_shape_and_targets(monkeypatch, capsys):
    import importlib

    from layerfusion import devices

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    extraction = importlib.import_module("benchmarks.extraction")
    rows = extraction.main(["--shape", "tiny", "--synthetic", "long", "--n", "4", "--token-budget", "512",
                            "--max-length", "24", "--device", "cpu", "--matmul-seconds", "0.01"])
    assert [r["dtype"] for r in rows] == ["float32", "float32", "bfloat16"]
    assert rows[0]["model"] == "random tiny" and rows[0]["native_bf16"] == "amx_bf16"
    assert rows[1]["real_tokens"] == 4 * 24, "long synthetic texts are truncated to --max-length"
    out = capsys.readouterr().out
    assert "target bf16 speed-up over the authors' loop >= 5:" in out
    fake = [{**rows[0], "loop": "layerfusion", "dtype": "bfloat16", "speedup": 6.0, "matmul_fraction_ratio": 0.5}]
    assert extraction.targets(rows[:1] + fake) == [
        "target bf16 speed-up over the authors' loop >= 5: 6.00 (met)",
        "target matmul fraction in bfloat16 >= 0.70: 0.500 (not met)"]


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


def test_oom_check_dry_run_retries_and_passes(monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    oom = importlib.import_module("benchmarks._oom_check")
    assert oom.main(["--dry-run", "--n", "8"]) == 0
    out = capsys.readouterr().out
    assert "retries: 2" in out and "out-of-memory retry: PASS" in out


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "gpu_check.log").read_text()
    for step in ("environment", "short texts", "256-token documents", "CUDA unit tests", "out-of-memory retry"):
        assert f"== {step}" in log or f"== extraction benchmark, {step}" in log
    assert "gpu check: all steps passed" in log and "out-of-memory retry: PASS" in log
    assert (tmp_path / "extraction_short.json").is_file() and (tmp_path / "extraction_long.json").is_file()


def test_profile_attributes_the_whole_call(monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    profile = importlib.import_module("benchmarks._profile")
    shares = profile.main(["--shape", "tiny", "--dataset", "mr", "--n", "12", "--max-length", "16", "--top", "3"])
    assert {"linear matmul", "pooling (hook)", "untracked (engine loop, model glue)"} <= set(shares)
    assert 0.98 <= sum(shares.values()) <= 1.02 and all(v >= 0 for v in shares.values())
    assert "| kind of work | operation | share of wall time |" in capsys.readouterr().out
