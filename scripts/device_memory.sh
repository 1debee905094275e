#!/usr/bin/env bash
# VAMBA-7B prefill memory on the GPU (issue 7's "memory ≤ Qwen2-VL's from 256 frames up"): streamed-piece size,
# ViT piece size, the released last-layer mixer; peak of the encode and of the text pass per point
# (benchmarks/vamba_prefill.py, compiled). Device tool: carry .gpu_carry (PyAV's wheel not needed:
# leave it out if the tree + carry pass 64 MiB) and runs/bench_wheels.
# Env: FRAMES (compiled frame counts, default 256,1024,3600), POINTS (extra FRAMES:CHUNK:VIT points),
# KEEP_MIXER=1 (one more run of FRAMES with the last mixer allocated, as before the release), FRAMES_ON (host |
# device: where the input frames are held), KERNEL_TIME=1 (per point, GPU kernel time vs wall under the profiler,
# and the host time by op), MEMORY_TRACE=N (what is live at the peak of one N-frame prefill).
# Writes $OUT/results.tar (JSON lines + console logs) and summary.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=/tmp/mem-results; rm -rf /tmp/bsite "$R"; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bsite .gpu_carry/*.whl runs/bench_wheels/*.whl || exit 1
export PYTHONPATH=/tmp/bsite:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u; } | tee "$R/env.txt"
timeout "${TIMEOUT:-420}" python3 benchmarks/vamba_prefill.py --frames 16 --compile "${FRAMES:-256,1024,3600}" \
  --points "${POINTS:-}" --repeats 3 --frames-on "${FRAMES_ON:-host}" ${KERNEL_TIME:+--kernel-time} \
  ${MEMORY_TRACE:+--memory-trace "$MEMORY_TRACE"} \
  --out "$R/prefill_memory.jsonl" > "$R/prefill_memory.log" 2>&1
grep -A40 "^NVIDIA\|^H100" "$R/prefill_memory.log" | tail -24 || tail -30 "$R/prefill_memory.log"
if [ -n "${KEEP_MIXER:-}" ]; then
  timeout 200 python3 benchmarks/vamba_prefill.py --frames 16 --compile "${KEEP_FRAMES:-256}" --keep-last-mixer \
    --repeats 3 --out "$R/prefill_memory_keep_mixer.jsonl" > "$R/prefill_memory_keep_mixer.log" 2>&1
  tail -4 "$R/prefill_memory_keep_mixer.log"
fi
tar -C "$R" -cf "$OUT/results.tar" . && ls -la "$R" > "$OUT/summary.txt"
