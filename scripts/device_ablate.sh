#!/usr/bin/env bash
# One part of an ablation on the lent GPU machine (device tool; carry .gpu_carry and, from the second
# part on, runs/ablate-paper). Usage: bash scripts/device_ablate.sh SPEC.yaml MINUTES [ablate options …]
# Continues runs/ablate-paper when carried; writes under $OUT what the next part needs — one tar per
# teacher and one of the rest, without the scored cells' checkpoints (not needed to reuse them) — and
# the ablation's log.jsonl, ablation.html and ablation.json.
set -uo pipefail
SPEC=$(realpath "$1"); MIN=$2; shift 2
pkill -f "python3 -m vamba_eval" ; sleep 1
rm -rf /tmp/site /tmp/ablate
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
OUT=${OUT:-/tmp/out}; A=/tmp/ablate
[ -d runs/ablate-paper ] && cp -a runs/ablate-paper "$A"
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
start=$(date +%s)
( cd /tmp && python3 -m vamba_eval.cli ablate "$SPEC" --device cuda --out "$A" --max-minutes "$MIN" "$@" 2>&1 \
  | grep --line-buffered -v "Loading weights" > "$OUT/ablate-console.log" ); rc=$?
echo "ablate exit ${PIPESTATUS[0]:-$rc} after $(( $(date +%s) - start )) s"
grep -E "\] (teacher|cell) .*(done|trained|evaluated)|time budget|failed|Error" "$OUT/ablate-console.log" | tail -40
cp "$A"/log.jsonl "$A"/ablation.html "$A"/ablation.json "$OUT/" 2>/dev/null
for t in "$A"/teachers/*/; do tar -C "$A" -cf "$OUT/teacher-$(basename "$t").tar" "teachers/$(basename "$t")"; done
tar -C "$A" --exclude='*/train/converted' --exclude='*/train/stage1' --exclude='*/train/stage2' \
  --exclude='teachers' -cf "$OUT/rest.tar" .
ls -la "$OUT"
