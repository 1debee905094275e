#!/usr/bin/env bash
# Evaluate trained tiny checkpoints on every demo split (device tool; carry .gpu_carry and CKPT_DIR).
# Usage: bash scripts/device_eval.sh CKPT_DIR   (CKPT_DIR holds vamba-tiny/ and qwen2vl-tiny/)
set -uo pipefail
CKPT=$(realpath "$1")
pkill -f "python3.*vamba_eval" ; rm -rf /tmp/site /tmp/eval-* /tmp/vcache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site VAMBA_EVAL_CACHE=/tmp/vcache; OUT=${OUT:-/tmp/out}; cd /tmp
for m in vamba qwen2vl; do
  python3 -m vamba_eval.cli run --tasks lvbench,videomme,mlvu,longvideobench,mvbench --model $m \
    --model-path "$CKPT/$m-tiny" --device cuda --output "/tmp/eval-$m" --no-report 2>&1 | tail -30 > "$OUT/eval-$m.log"
  cp "/tmp/eval-$m/results.json" "$OUT/results-$m.json"
  cp "/tmp/eval-$m/samples.jsonl" "$OUT/samples-$m.jsonl"
  python3 - "$OUT/results-$m.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for name, t in r["tasks"].items():
    o = t["overall"]
    print(f"{sys.argv[1].split('/')[-1]:22s} {name:15s} acc={o['value']:.1f} ci={[round(c, 1) for c in o['ci95'] or []]} "
          f"n={t['n']} failed={t['n_failed']} unparsed={t['n_unparsed']}")
PY
done
