#!/usr/bin/env bash
# Fused Mamba-2 mixer ops on the GPU: parity + microbenchmark, then VAMBA-7B prefill A/B (fused on/off).
# Device tool: carry .gpu_carry and runs/bench_wheels. Writes JSONL + logs under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; rm -rf /tmp/bsite
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bsite .gpu_carry/*.whl runs/bench_wheels/*.whl || exit 1
export PYTHONPATH=/tmp/bsite:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 200 python3 benchmarks/mixer_kernels.py --out "$OUT/mixer_kernels.jsonl" --lengths 38272,153088 --repeats 5 \
  2>&1 | tee "$OUT/mixer_kernels.log" | tail -40
for fused in 1 0; do
  frames=$([ $fused = 1 ] && echo 1024,3600 || echo 1024)
  VAMBA_EVAL_FUSED_OPS=$fused timeout 200 python3 -m vamba_eval.bench --models vamba --frames $frames --mode prefill \
    --no-compile --repeats 2 --out "$OUT/bench-fused$fused.jsonl" 2>&1 | tee "$OUT/bench-fused$fused.log" | grep -v "^\s*$" | tail -6
done
