#!/usr/bin/env bash
# Our SSD scan kernels (models/vamba/ssd_triton.py) on the GPU: GPU tests, scan parity + speed vs fla,
# the mixer per component, the compiled VAMBA-7B prefill (1,024 and 3,600 frames), then a kernel
# profile of the compiled prefill. Device tool: carry .gpu_carry and runs/bench_wheels.
# Writes JSONL + logs under $OUT; BENCH_FRAMES / PROFILE_FRAMES override the defaults.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; rm -rf /tmp/bsite
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bsite .gpu_carry/*.whl runs/bench_wheels/*.whl || exit 1
export PYTHONPATH=/tmp/bsite:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_ssd_triton.py tests/test_triton_ops.py \
  2>&1 | tee "$OUT/gpu_tests.log" | tail -4
timeout 100 python3 benchmarks/ssm_parity.py --out "$OUT/ssm_parity.jsonl" --lengths 4784,153088 \
  --backends fla,ssd_triton 2>&1 | tee "$OUT/ssm_parity.log" | tail -6
timeout 150 python3 benchmarks/mixer_kernels.py --out "$OUT/mixer_kernels.jsonl" --lengths 4784,153088 --repeats 5 \
  2>&1 | tee "$OUT/mixer_kernels.log" | tail -32
timeout 260 python3 -m vamba_eval.bench --models vamba --frames "${BENCH_FRAMES:-1024,3600}" --mode prefill --compile \
  --repeats 2 --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" | grep -v "^\s*$" | tail -6
[ "${PROFILE_FRAMES:-128}" = 0 ] && exit 0
timeout 200 python3 benchmarks/vamba_prefill.py --compile 64 --profile "${PROFILE_FRAMES:-128}" --out "$OUT/prefill" \
  > "$OUT/profile.log" 2>&1; tail -45 "$OUT/profile.log" | cut -c1-150
