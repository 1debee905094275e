#!/usr/bin/env bash
# One part of an ablation on the lent GPU machine (device tool; carry .gpu_carry and, from the second
# part on, runs/ablate-paper.tar.xz: the parts' outputs unpacked into one tree, re-packed). Usage: bash scripts/device_ablate.sh SPEC.yaml MINUTES [ablate options …]
# Continues runs/ablate-paper when carried; writes under $OUT what the next part needs — one tar per
# teacher and one xz tar of the rest, without the scored cells' checkpoints (not needed to reuse them) — and
# the ablation's log.jsonl, ablation.html and ablation.json.
set -uo pipefail
SPEC=$(realpath "$1"); MIN=$2; shift 2
pkill -f "python3 -m vamba_eval" ; sleep 1
rm -rf /tmp/site /tmp/ablate
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
OUT=${OUT:-/tmp/out}; A=/tmp/ablate
mkdir -p "$A"  # the previous part's state: runs/ablate-paper.tar.xz (carry limits favour one compressed file)
[ -f runs/ablate-paper.tar.xz ] && xz -dc runs/ablate-paper.tar.xz | tar -C "$A" -xf -
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
start=$(date +%s)
( cd /tmp && python3 -m vamba_eval.cli ablate "$SPEC" --device cuda --out "$A" --max-minutes "$MIN" "$@" 2>&1 \
  | grep --line-buffered -v "Loading weights" > "$OUT/ablate-console.log" ); rc=$?
echo "ablate exit $rc (3: stopped at --max-minutes, run again) after $(( $(date +%s) - start )) s"  # pipefail: the python status
grep -E "\] (teacher|cell) .*(done|trained|evaluated)|time budget|failed|Error" "$OUT/ablate-console.log" | tail -40
cp "$A"/log.jsonl "$A"/ablation.html "$A"/ablation.json "$OUT/" 2>/dev/null
for t in "$A"/teachers/*/; do tar -C "$A" -cf "$OUT/teacher-$(basename "$t").tar" "teachers/$(basename "$t")"; done
# the checkpoints of scored cells stay behind (a scored cell is reused from its run directory);
# an unscored cell keeps them, so the next part evaluates it instead of training it again
python3 - "$A" > /tmp/ablate-exclude <<'PY'
import json, pathlib, sys
for state in pathlib.Path(sys.argv[1]).glob("cells/*/seed*/state.json"):
    if "eval" in json.loads(state.read_text()).get("steps", {}):
        for stage in ("converted", "stage1", "stage2"):
            print(f"./{state.parent.relative_to(sys.argv[1])}/train/{stage}")
PY
tar -C "$A" -X /tmp/ablate-exclude --exclude='./teachers' -cf - . | xz -1 -T8 > "$OUT/rest.tar.xz"
ls -la "$OUT"
