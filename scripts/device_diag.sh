#!/usr/bin/env bash
# Run one training diagnostic on the GPU machine (device tool; carry .gpu_carry).
# Usage: bash scripts/device_diag.sh SCRIPT.py [ARGS ...]   (SCRIPT from scripts/diagnostics/); log in $OUT/diag.log
set -uo pipefail
pkill -f "python3.*vamba_eval" ; pkill -f "scripts/diagnostics" ; sleep 1
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
OUT=${OUT:-/tmp/out}; script=$(realpath "scripts/diagnostics/$1"); shift
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cd /tmp && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout -s ABRT "${DIAG_LIMIT:-560}" python3 -X faulthandler "$script" "$@" 2>&1 \
  | grep --line-buffered -v "Loading weights" | tee "$OUT/diag.log"
