#!/usr/bin/env bash
# The full `vamba-eval bench` sweep on the GPU for one model (issue 7's committed results), then optionally
# a kernel profile of the SSD scans. Device tool: carry .gpu_carry (PyAV's wheel not needed:
# leave it out if the tree + carry pass 64 MiB) and runs/bench_wheels.
# The device's copy of the tree may carry a stale .git: put GIT_SHA=<the commit> in the command so that the
# rows' git_sha is right (vamba_eval.bench reads it first).
# Usage: MODEL=vamba|qwen2vl [FRAMES=…] [MODES=prefill,decode,train] [BUDGET=420] [SSD_PROFILE=1] [SSD_TUNE=1] [GPU_TESTS=1] bash scripts/device_sweep.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=/tmp/sweep-results; rm -rf /tmp/bsite "$R"; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bsite .gpu_carry/*.whl runs/bench_wheels/*.whl || exit 1
export PYTHONPATH=/tmp/bsite:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u; } | tee "$R/env.txt"
[ -n "${GPU_TESTS:-}" ] && timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_ssd_triton.py \
  2>&1 | tee "$R/gpu_tests.log" | tail -2
MODEL=${MODEL:-vamba}
extra=$([ "$MODEL" = vamba ] && echo --compile)
timeout "${TIMEOUT:-520}" python3 -m vamba_eval.bench --size 7b --models "$MODEL" $extra --mode "${MODES:-prefill,decode,train}" \
  --frames "${FRAMES:-64,256,512,1024,3600}" --repeats 3 --budget-s "${BUDGET:-420}" --out "$R/sweep-$MODEL" \
  2>&1 | tee "$R/sweep-$MODEL.log" | grep -v "^\s*$" | tail -24
if [ -n "${SSD_PROFILE:-}" ]; then
  timeout 90 python3 benchmarks/ssm_parity.py --out "$R/ssm_profile.jsonl" --lengths 153088 --backends fla,ssd_triton \
    --repeats 5 --profile > "$R/ssm_profile.log" 2>&1; grep -E "^---|_kernel|chunk|Self CUDA" "$R/ssm_profile.log" | cut -c1-52,100-170
fi
if [ -n "${SSD_TUNE:-}" ]; then
  timeout 150 python3 benchmarks/ssd_tuning.py --out "$R/ssd_tuning.jsonl" > "$R/ssd_tuning.log" 2>&1; tail -30 "$R/ssd_tuning.log" | cut -c1-220
fi
tar -C "$R" -cf "$OUT/results.tar" . && ls -laR "$R" > "$OUT/summary.txt"
