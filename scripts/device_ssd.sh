#!/usr/bin/env bash
# VAMBA-7B prefill speed work on the GPU: our SSD scan kernels (models/vamba/ssd_triton.py), the ViT
# attention backend, the streaming chunk. Device tool: carry .gpu_carry and runs/bench_wheels.
# STEPS (default all): tests parity mixer attn bench profile. Env: BENCH_FRAMES (1024,3600),
# BENCH_SDPA ("flash,efficient,math cudnn": one bench per ViT SDPA setting; after the first, only the
# first frame count), CHUNKS (extra streaming
# chunk sizes for benchmarks/vamba_prefill.py at 1,024 compiled frames), PROFILE_FRAMES (128).
# Everything lands in $OUT/results.tar (the device returns at most 8 files) plus summary.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=/tmp/ssd-results; rm -rf /tmp/bsite "$R"; mkdir -p "$R"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bsite .gpu_carry/*.whl runs/bench_wheels/*.whl || exit 1
export PYTHONPATH=/tmp/bsite:$PWD
STEPS=${STEPS:-tests parity mixer attn bench profile}
on() { [[ " $STEPS " == *" $1 "* ]]; }
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u; git log -1 --format=%H 2>/dev/null; } | tee "$R/env.txt"
on tests && timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_ssd_triton.py 2>&1 | tee "$R/gpu_tests.log" | tail -2
on parity && timeout 100 python3 benchmarks/ssm_parity.py --out "$R/ssm_parity.jsonl" --lengths 4784,153088 \
  --backends fla,ssd_triton 2>&1 | tee "$R/ssm_parity.log" | tail -6
on mixer && timeout 150 python3 benchmarks/mixer_kernels.py --out "$R/mixer_kernels.jsonl" --lengths 153088 --repeats 5 \
  2>&1 | tee "$R/mixer_kernels.log" | tail -24
on attn && timeout 60 python3 benchmarks/vit_attention.py --out "$R/vit_attention.jsonl" 2>&1 | tee "$R/vit_attention.log" | tail -8
if on bench; then
  frames=${BENCH_FRAMES:-1024,3600}
  for sdpa in ${BENCH_SDPA:-flash,efficient,math}; do
    tag=${sdpa%%,*}
    VAMBA_EVAL_VIT_SDPA=$sdpa timeout 200 python3 -m vamba_eval.bench --models vamba --frames "$frames" \
      --mode prefill --compile --repeats 2 --out "$R/bench-$tag" 2>&1 | tee "$R/bench-$tag.log" | grep -E "compiled|ceiling"
    python3 - "$R/bench-$tag/bench.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    ph = {k: round(v, 3) for k, v in (r.get("phase_s") or {}).items()}
    print(r["frames"], r.get("status"), round(r.get("time_s") or 0, 3), ph)
PY
    frames=${frames%%,*}  # further SDPA settings: the first frame count only
  done
fi
if [ -n "${CHUNKS:-}" ]; then
  timeout 200 python3 benchmarks/vamba_prefill.py --frames 64 --compile 1024 --chunks "$CHUNKS" --repeats 2 \
    --out "$R/prefill_chunks.jsonl" > "$R/prefill_chunks.log" 2>&1; tail -5 "$R/prefill_chunks.log"
fi
if on profile; then
  timeout 200 python3 benchmarks/vamba_prefill.py --compile 64 --profile "${PROFILE_FRAMES:-128}" --out "$R/prefill" \
    > "$R/profile.log" 2>&1; grep -E "Name|kernel|nvjet|flash|triton_|Self CUDA" "$R/prefill.profile.txt" | cut -c1-60,150-215 | head -40
fi
tar -C "$R" -cf "$OUT/results.tar" . && ls -la "$R" > "$OUT/summary.txt"
