#!/usr/bin/env bash
# Run one diagnostic script several times side by side on the GPU machine (tiny models are launch-bound:
# the runs share the GPU at little cost each). Device tool, carry .gpu_carry (+ what the script needs).
# Usage: bash scripts/device_parallel.sh SCRIPT.py "NAME: ARGS" "NAME: ARGS" …   (SCRIPT in scripts/diagnostics/)
# Writes $OUT/NAME.log per run and $OUT/summary.txt (each run's last line). $PRE: a command run first
# (installed package on PYTHONPATH), e.g. PRE="python3 -m vamba_eval.train data --out /tmp/d --device cuda".
set -uo pipefail
pkill -f "scripts/diagnostics" ; sleep 1
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
OUT=${OUT:-/tmp/out}; script=$(realpath "scripts/diagnostics/$1"); shift
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -n "${PRE:-}" ]; then (cd /tmp && PYTHONPATH=/tmp/site bash -c "$PRE") 2>&1 | tail -3 | tee "$OUT/pre.log"; fi
threads=$(( $(nproc) / $# )); [ "$threads" -ge 1 ] || threads=1
names=()
for spec in "$@"; do
  name=${spec%%:*}; names+=("$name")
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$threads PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout -s ABRT "${DIAG_LIMIT:-540}" \
    python3 "$script" --name "$name" ${spec#*:} > "$OUT/$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do tail -n 1 "$OUT/$name.log"; done | tee "$OUT/summary.txt"
