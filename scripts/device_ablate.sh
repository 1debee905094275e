#!/usr/bin/env bash
# One part of an ablation on the lent GPU machine (device tool; carry .gpu_carry and, from the second
# part on, runs/ablate-state: the files the previous part wrote under $OUT named state-*). Usage:
#   bash scripts/device_ablate.sh SPEC.yaml MINUTES [ablate options …]
# Continues from runs/ablate-state when carried; writes under $OUT what the next part needs — the ablation
# tree as an xz tar split into 15 MiB pieces (state-rest.tar.xz.part-aa, -ab, …: a file coming back is at most
# 16 MiB), without checkpoints (a scored cell needs none; an unscored one retrains), and a tar per trained
# teacher (none when the spec names its teachers) — plus the ablation's log.jsonl, ablation.html and
# ablation.json. Before the next part: mkdir runs/ablate-state and copy the state-* files in.
set -uo pipefail
SPEC=$(realpath "$1"); MIN=$2; shift 2
pkill -f "python3 -m vamba_eval" ; sleep 1
rm -rf /tmp/site /tmp/ablate
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
OUT=${OUT:-/tmp/out}; A=/tmp/ablate
mkdir -p "$A"  # the previous part's state
if [ -d runs/ablate-state ]; then
  cat runs/ablate-state/state-rest.tar.xz.part-* | xz -dc | tar -C "$A" -xf - || exit 1
  for t in runs/ablate-state/state-teacher-*.tar; do [ -f "$t" ] && tar -C "$A" -xf "$t"; done
fi
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
start=$(date +%s)
( cd /tmp && python3 -m vamba_eval.cli ablate "$SPEC" --device cuda --out "$A" --max-minutes "$MIN" "$@" 2>&1 \
  | grep --line-buffered -v "Loading weights" > "$OUT/ablate-console.log" ); rc=$?
echo "ablate exit $rc (3: stopped at --max-minutes, run again) after $(( $(date +%s) - start )) s"  # pipefail: the python status
grep -E "\] (teacher|cell) .*(done|trained|evaluated)|time budget|failed|Error" "$OUT/ablate-console.log" | tail -40
cp "$A"/log.jsonl "$A"/ablation.html "$A"/ablation.json "$OUT/" 2>/dev/null
for t in "$A"/teachers/*/; do
  [ -d "$t" ] && tar -C "$A" -cf "$OUT/state-teacher-$(basename "$t").tar" "teachers/$(basename "$t")"
done
# no checkpoint travels: a scored cell is reused from its run directory, an unscored one restarts its training
# (≈ 20–60 s; runner.train_cell). The carry limit (64 MiB with the tracked tree and .gpu_carry's 39 MB) has no
# room for the three 9 MB stage checkpoints an interrupted part leaves (2026-11-24: refused at 87 MB)
# nor a run's thumbnails and report.html (≈ 3.6 MB per cell with 135 demo questions: 15 scored cells made a 17 MB
# state, over the carry limit with the wheels; resuming reads results.json, the page links the run folders)
printf '%s\n' './cells/*/seed*/train/converted' './cells/*/seed*/train/stage1' './cells/*/seed*/train/stage2' \
  './cells/*/seed*/run/thumbs' './cells/*/seed*/run/report.html' > /tmp/ablate-exclude
tar -C "$A" -X /tmp/ablate-exclude --exclude='./teachers' -cf - . | xz -1 -T8 | split -b 15M - "$OUT/state-rest.tar.xz.part-"
ls -la "$OUT"
