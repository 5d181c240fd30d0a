#!/usr/bin/env bash
# GPU check (issue #14): one run on one CUDA GPU, no network, no shipped models, <= 8 minutes on an H200.
#
#   benchmarks/gpu_check.sh              on the GPU machine, from the repository root or anywhere
#   benchmarks/gpu_check.sh --dry-run    on a CPU: the same steps at toy size (tests/test_benchmarks.py runs this)
#
# Steps, each with its own time limit, each checked:
#   1. environment: GPU name, driver, torch / transformers versions; a CUDA device must be visible;
#   2. extraction benchmark against the authors' loop on a Llama-2-7B-shaped model with random weights (speed does
#      not depend on the weights): SST-2-like short texts, then Reuters-like 256-token documents;
#   3. the CUDA unit tests (the tests whose name says cuda; none may be skipped on a GPU);
#   4. a real out-of-memory retry: the allocator capped, one batch too big, halved by the engine until it fits.
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
  DEVICE=cpu; SHAPE=tiny; N_SHORT=8; N_LONG=4; BUDGETS="512"; MATMUL=0.02; OOM_ARGS="--dry-run"
else
  DEVICE=cuda; SHAPE=llama-2-7b; N_SHORT=1024; N_LONG=128; BUDGETS="16384 65536"; MATMUL=0.5; OOM_ARGS=""
fi
# Time limits per step add up to 8 minutes; the expected run is about half of that.
LIMIT_ENV=60; LIMIT_BENCH=120; LIMIT_TESTS=60; LIMIT_OOM=60; LIMIT_RAY=60

FAILED=()
step() {  # step NAME SECONDS COMMAND...: run, log, and remember a failure
  local name=$1 seconds=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S))" | tee -a "$LOG"
  timeout "$seconds" "$@" 2>&1 | tee -a "$LOG"
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
  "$PY" -m pytest tests/test_devices.py tests/test_overhead.py -k cuda -q -rs -p no:cacheprovider > "$report" 2>&1
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

export -f environment cuda_tests ray_check
export DEVICE DRY OUT_DIR PY
step environment "$LIMIT_ENV" bash -c environment || { echo "no usable device; stopping" | tee -a "$LOG"; exit 1; }
# shellcheck disable=SC2086  # BUDGETS is a list of numbers
step "extraction benchmark, short texts" "$LIMIT_BENCH" "$PY" -m benchmarks.extraction --shape "$SHAPE" --device "$DEVICE" \
  --synthetic short --n "$N_SHORT" --max-length 64 --token-budget $BUDGETS --matmul-seconds "$MATMUL" \
  --json "$OUT_DIR/extraction_short.json"
# shellcheck disable=SC2086
step "extraction benchmark, 256-token documents" "$LIMIT_BENCH" "$PY" -m benchmarks.extraction --shape "$SHAPE" \
  --device "$DEVICE" --synthetic long --n "$N_LONG" --max-length 256 --token-budget $BUDGETS \
  --matmul-seconds "$MATMUL" --json "$OUT_DIR/extraction_long.json"
step "CUDA unit tests" "$LIMIT_TESTS" bash -c cuda_tests
# shellcheck disable=SC2086  # OOM_ARGS is empty or one flag
step "out-of-memory retry" "$LIMIT_OOM" "$PY" -m benchmarks._oom_check $OOM_ARGS
step "ray actors on the device" "$LIMIT_RAY" bash -c ray_check

echo "== summary" | tee -a "$LOG"
grep "^target" "$LOG" > "$OUT_DIR/targets.txt"
tee -a "$LOG" < "$OUT_DIR/targets.txt"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "gpu check: FAILED: ${FAILED[*]} (log: $LOG)" | tee -a "$LOG"
  exit 1
fi
echo "gpu check: all steps passed (log: $LOG)" | tee -a "$LOG"
