#!/usr/bin/env bash
# The first minutes on a GPU, as one command that cannot waste them (benchmarks/README.md has
# the exact device tool call). Needs nothing from a package registry: the wheels the image
# lacks travel in .whl/ (bash benchmarks/device_wheels.sh makes them here); hpstudy runs from
# this source tree with the image's own torch; the data is a CIFAR-shaped archive made on the
# spot. Steps, ordered by how much they decide, each under its own timeout and all within
# $DEVICE_CHECK_SECONDS (default 480): prepare, the CUDA tests, a real 3-epoch run at 1, 2
# and 4 runs at once, the eager grid, a smoke seed-report with its cost block, compile then
# compile + CUDA graphs. Each finding is appended to $OUT/device_check.jsonl and
# $OUT/device_check.md the moment it is measured; a step that times out or fails adds a line
# saying so and the next step runs.
#
#   OUT=DIR bash benchmarks/device_check.sh             # on the GPU machine
#   OUT=DIR bash benchmarks/device_check.sh --dry-run   # its CPU form: same steps, tiny sizes
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")}
TOTAL=${DEVICE_CHECK_SECONDS:-480}
MIN_STEP=${DEVICE_CHECK_MIN_STEP:-10}  # a step given fewer seconds than this is skipped
START=$SECONDS
mkdir -p "$OUT" "$WORK"
LOG="$OUT/device_check.log"
export PYTHONUNBUFFERED=1
# a dry run measures nothing worth a second thread, and idle OpenMP threads spin on a shared CPU
[ -n "$DRY" ] && export OMP_NUM_THREADS=1

line() {  # one JSON line from bash itself: a step that left none (timed out, crashed)
  printf '{"step": "%s", "what": "%s", "time": "%s", %s}\n' "$1" "$2" "$(date +%T)" "$3" \
    >>"$OUT/device_check.jsonl"
  [ -f "$OUT/device_check.md" ] || printf '| step | what | figures |\n|---|---|---|\n' \
    >"$OUT/device_check.md"
  printf '| %s | %s | %s |\n' "$1" "$2" "$3" >>"$OUT/device_check.md"
  echo "device_check: $1 $2: $3" >&2
}

if [ -z "$DRY" ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/hpstudy-site .whl/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH=/tmp/hpstudy-site${PYTHONPATH:+:$PYTHONPATH} \
    || line wheels install '"error": "pip install of .whl/ failed: see device_check.log"'
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}

step() {  # NAME CAP_SECONDS: the step, under min(CAP, what is left of TOTAL)
  local name=$1 cap=$2 left=$((TOTAL - (SECONDS - START))) rc
  ((left < cap)) && cap=$left
  if ((cap < MIN_STEP)); then
    line "$name" skipped "\"error\": \"out of time: ${left} s left of ${TOTAL}\""
    return
  fi
  echo "device_check: $name (at most ${cap} s)" >&2
  timeout -k 5 "$cap" "$PYTHON" benchmarks/device_steps.py $DRY --out "$OUT" --work "$WORK" \
    --limit "$((cap - 5))" "$name" 2>>"$LOG"
  rc=$?
  if ((rc == 124 || rc == 137)); then
    line "$name" "timed out" "\"error\": \"killed after ${cap} s\""
  elif ((rc != 0)); then
    line "$name" failed "\"error\": \"exit code ${rc}: $(tail -n 1 "$LOG" | tr -d '"\\' | cut -c1-200)\""
  fi
}

command -v nvidia-smi >/dev/null \
  && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
step prepare 60
step tests 75
step runs 120
step grid 90
step study 90
if [ -n "$DRY" ]; then
  line compile skipped '"error": "dry run: Inductor compiles for about a minute on a CPU"'
else
  step compile 240
fi
line done total "\"seconds\": $((SECONDS - START)), \"limit\": $TOTAL"
