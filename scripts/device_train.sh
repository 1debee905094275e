#!/usr/bin/env bash
# Train the bundled tiny checkpoints on the GPU machine and evaluate them on every demo split.
# Usage (device tool, carry .gpu_carry): bash scripts/device_train.sh [extra --set KEY=VALUE ...]
# Writes under $OUT: train.log, log.jsonl, histories, checkpoints.tar, eval-<model>.log + results.
set -uo pipefail
export PYTHONUNBUFFERED=1
pkill -f "python3.*vamba_eval" ; sleep 1  # a timed-out earlier call can leave its processes on a warm machine
rm -rf /tmp/site /tmp/eval-* /tmp/vcache  # a warm machine keeps /tmp: never run a stale copy
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1  # maps tasks/ into the package
TEACHER=$( [ -n "${TEACHER_DIR:-}" ] && realpath "$TEACHER_DIR" )
export PYTHONPATH=/tmp/site; cd /tmp  # run the installed copy, not the source tree
OUT=${OUT:-/tmp/out}; RUN=/tmp/train-run; rm -rf "$RUN"
# TEACHER_DIR (carried): a teacher from an earlier call, for STAGES="data continue" or "data convert stage1 …"
if [ -n "$TEACHER" ]; then mkdir -p "$RUN" && cp -r "$TEACHER" "$RUN/teacher" || exit 1; fi
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# ABRT after TRAIN_LIMIT s (default 540: the teacher's round 1 is ≈ 480 s with its pair rendering): faulthandler prints every thread's stack instead of a silent kill
# STAGES="data teacher": only those stages (default: all — with the gpu preset's 6 teacher rounds that is
# more than one 10-minute call: split it, e.g. "data teacher", then TEACHER_DIR=… "data continue continue", …)
for stage in ${STAGES:-all}; do
  timeout -s ABRT "${TRAIN_LIMIT:-540}" python3 -X faulthandler -m vamba_eval.train "$stage" --out "$RUN" --device cuda "$@" 2>&1 \
    | grep --line-buffered -v "Loading weights" | tee -a "$OUT/train.log"
done
cp "$RUN/log.jsonl" "$RUN/recipe.json" "$OUT/" 2>/dev/null
for s in teacher stage1 stage2; do cp "$RUN/$s/history.json" "$OUT/history-$s.json" 2>/dev/null; done
tar -C "$RUN" -cf "$OUT/checkpoints.tar" $(cd "$RUN" && ls -d checkpoints 2>/dev/null || echo teacher)
[ -n "${SKIP_EVAL:-}" ] && exit 0  # evaluate in a later call: bash scripts/device_eval.sh DIR
export VAMBA_EVAL_CACHE=/tmp/vcache
for m in vamba qwen2vl; do
  VAMBA_EVAL_FUSED_OPS=${EVAL_FUSED_OPS:-1} python3 -m vamba_eval.cli run --tasks lvbench,videomme,mlvu,longvideobench,mvbench --model $m \
    --model-path "$RUN/checkpoints/$m-tiny" --device cuda --output "/tmp/eval-$m" --no-report 2>&1 | tail -30 > "$OUT/eval-$m.log"
  cp "/tmp/eval-$m/results.json" "$OUT/results-$m.json" 2>/dev/null
  python3 - "$OUT/results-$m.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for name, t in r["tasks"].items():
    o = t["overall"]
    print(f"{sys.argv[1].split('/')[-1]:22s} {name:15s} acc={o['value']} ci={o['ci95'] or '-'} n={t['n']} "
          f"failed={t['n_failed']} unparsed={t['n_unparsed']}")
PY
done
