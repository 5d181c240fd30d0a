#!/usr/bin/env bash
# GPU check (issues #14, #21): one run on one CUDA GPU, no network, no shipped models, <= 4 minutes on an H200.
#
#   benchmarks/gpu_check.sh              on the GPU machine, from the repository root or anywhere
#   benchmarks/gpu_check.sh --dry-run    on a CPU: the same steps at toy size (tests/test_benchmarks.py runs this)
#
# Steps, each checked:
#   1. environment: GPU name, driver, torch / transformers versions; a CUDA device must be visible;
#   2. extraction benchmark against the authors' loop on a Llama-2-7B-shaped model with random weights (speed does
#      not depend on the weights), bf16, steady state (one untimed pass, then the median of two timed passes):
#      SST-2-like short texts, then Reuters-like 256-token documents;
#   3. the same on the Qwen2.5-0.5B shape, fp32 against bf16 (issue #21: bf16 >= 1.3x fp32);
#   4. the CUDA unit tests (the tests whose name says cuda; none may be skipped on a GPU);
#   5. a real out-of-memory retry: the allocator capped, one batch too big, halved by the engine until it fits;
#   6. the probe's device check (benchmarks/probe_device_check.py), when that file exists;
#   7. two Ray actors sharing the GPU (skipped when ray is not installed).
# Sizes: the H200 did ~6,000 tok/s on short texts and ~25,000 tok/s on 256-token documents with the old output
# path (issue #21), so each extraction step takes well under a minute. On the GPU each step has a generous time
# limit (a hung step must not eat the machine); the dry run has none, so a busy CPU cannot fail it (issue #25).
# Everything printed also goes to $OUT/gpu_check.log (the benchmark rows to $OUT/extraction_*.json) when OUT is
# set, else to a temporary folder named at the end. Exit code 0 when every step passed.
set -uo pipefail

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.." || exit 2
OUT_DIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/lib:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; SHAPE=tiny; SMALL=tiny; N_SHORT=8; N_LONG=4; N_SMALL=8; AUTHORS_SHORT=4; AUTHORS_LONG=2
  BUDGETS="512"; MATMUL=0.02; MATMUL_SIZES="128 256"; OOM_ARGS="--dry-run"
else
  DEVICE=cuda; SHAPE=llama-2-7b; SMALL=qwen2.5-0.5b; N_SHORT=2048; N_LONG=256; N_SMALL=2048; AUTHORS_SHORT=256
  AUTHORS_LONG=32; BUDGETS="65536"; MATMUL=0.5; MATMUL_SIZES="4096 8192"; OOM_ARGS=""
fi
# Time limits per step on the GPU only (seconds; the expected run is about half of each).
LIMIT_ENV=60; LIMIT_BENCH=120; LIMIT_TESTS=90; LIMIT_OOM=90; LIMIT_PROBE=90; LIMIT_RAY=90

FAILED=()
step() {  # step NAME SECONDS COMMAND...: run, log, and remember a failure
  local name=$1 seconds=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S))" | tee -a "$LOG"
  if [ "$DRY" = 1 ]; then
    "$@" 2>&1 | tee -a "$LOG"  # no wall-clock limit in the dry run: a busy machine must not fail it
  else
    timeout "$seconds" "$@" 2>&1 | tee -a "$LOG"
  fi
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "-- $name FAILED (exit $rc)" | tee -a "$LOG"
    FAILED+=("$name")
  fi
  return "$rc"
}

environment() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" - "$DEVICE" <<'EOF'
import sys, torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, cuda available: "
      f"{torch.cuda.is_available()}" + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
sys.exit(0 if sys.argv[1] == "cpu" or torch.cuda.is_available() else 1)
EOF
}

cuda_tests() {
  local report="$OUT_DIR/cuda_tests.txt"
  "$PY" -m pytest tests/test_devices.py tests/test_overhead.py tests/test_extract.py -k cuda -q -rs -p no:cacheprovider > "$report" 2>&1
  local rc=$?
  cat "$report"
  [ "$rc" -ne 0 ] && return "$rc"
  if [ "$DRY" = 0 ] && grep -qi "skipped" "$report"; then
    echo "CUDA tests were skipped on a machine that should have a GPU"
    return 1
  fi
}

ray_check() {  # two Ray actors sharing the GPU write the same shards as one process (needs ray, which this
  # machine's image may lack: its wheel is then reported missing rather than counted as a failure)
  if ! "$PY" -c "import ray, ray.data" >/dev/null 2>&1; then
    echo "ray is not installed here: skipped (pip install 'layerfusion[distributed]', or carry its wheels)"
    return 0
  fi
  "$PY" -m benchmarks.gpu_ray_check --device "$DEVICE"
}

probe_check() {  # the batched probe on the device against the CPU (written by another change; skipped if absent)
  if [ ! -f benchmarks/probe_device_check.py ]; then
    echo "benchmarks/probe_device_check.py is not in this checkout: skipped"
    return 0
  fi
  if [ "$DRY" = 1 ]; then
    if grep -q -- "--dry-run" benchmarks/probe_device_check.py; then
      "$PY" -m benchmarks.probe_device_check --dry-run
    else
      echo "benchmarks/probe_device_check.py has no --dry-run: not run on a CPU"
    fi
  else
    "$PY" -m benchmarks.probe_device_check
  fi
}

export -f environment cuda_tests ray_check probe_check
export DEVICE DRY OUT_DIR PY
step environment "$LIMIT_ENV" bash -c environment || { echo "no usable device; stopping" | tee -a "$LOG"; exit 1; }
# shellcheck disable=SC2086  # BUDGETS is a list of numbers
step "extraction benchmark, short texts" "$LIMIT_BENCH" "$PY" -m benchmarks.extraction --shape "$SHAPE" \
  --device "$DEVICE" --dtypes bfloat16 --synthetic short --n "$N_SHORT" --authors-n "$AUTHORS_SHORT" --max-length 64 \
  --token-budget $BUDGETS --matmul-seconds "$MATMUL" --matmul-sizes $MATMUL_SIZES --target-fraction 0.4 \
  --json "$OUT_DIR/extraction_short.json"
# shellcheck disable=SC2086
step "extraction benchmark, 256-token documents" "$LIMIT_BENCH" "$PY" -m benchmarks.extraction --shape "$SHAPE" \
  --device "$DEVICE" --dtypes bfloat16 --synthetic long --n "$N_LONG" --authors-n "$AUTHORS_LONG" --max-length 256 \
  --token-budget $BUDGETS --matmul-seconds "$MATMUL" --matmul-sizes $MATMUL_SIZES --target-fraction 0.6 \
  --json "$OUT_DIR/extraction_long.json"
# shellcheck disable=SC2086
step "extraction benchmark, Qwen2.5-0.5B shape, bf16 vs fp32" "$LIMIT_BENCH" "$PY" -m benchmarks.extraction \
  --shape "$SMALL" --device "$DEVICE" --dtypes float32 bfloat16 --synthetic short --n "$N_SMALL" \
  --authors-n "$AUTHORS_SHORT" --max-length 64 --token-budget $BUDGETS --matmul-seconds "$MATMUL" \
  --matmul-sizes $MATMUL_SIZES --json "$OUT_DIR/extraction_small.json"
step "CUDA unit tests" "$LIMIT_TESTS" bash -c cuda_tests
# shellcheck disable=SC2086  # OOM_ARGS is empty or one flag
step "out-of-memory retry" "$LIMIT_OOM" "$PY" -m benchmarks._oom_check $OOM_ARGS
step "probe device check" "$LIMIT_PROBE" bash -c probe_check
step "ray actors on the device" "$LIMIT_RAY" bash -c ray_check

echo "== summary" | tee -a "$LOG"
grep "^target" "$LOG" > "$OUT_DIR/targets.txt"
tee -a "$LOG" < "$OUT_DIR/targets.txt"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "gpu check: FAILED: ${FAILED[*]} (log: $LOG)" | tee -a "$LOG"
  exit 1
fi
echo "gpu check: all steps passed (log: $LOG)" | tee -a "$LOG"
