#!/usr/bin/env bash
# Train several teacher variants side by side on ONE GPU from one data build (the tiny teachers are
# launch-bound: three processes share an H100 at almost no cost per step), then print each one's
# held-out lettered / open accuracy. Device tool, carry .gpu_carry.
# Usage: bash scripts/device_teachers.sh "NAME: --set K=V --set K=V" "NAME: …" …   (common --set via $COMMON)
# CARRY_DTYPE=float16: the saved teachers are cast (half the bytes to carry into a continuation call).
# Writes under $OUT: data.log, teacher-NAME.log, history-NAME.json, teacher-NAME.tar, summary.txt
set -uo pipefail
export PYTHONUNBUFFERED=1
pkill -f "python3.*vamba_eval" ; sleep 1  # a timed-out earlier call can leave its processes on a warm machine
rm -rf /tmp/site /tmp/teachers
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_carry/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site; cd /tmp
OUT=${OUT:-/tmp/out}; ROOT=/tmp/teachers; mkdir -p "$ROOT"
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# shellcheck disable=SC2086
python3 -m vamba_eval.train data --out "$ROOT/data-run" --data "$ROOT/data" --device cuda ${COMMON:-} 2>&1 | tail -3 \
  | tee "$OUT/data.log"
names=(); THREADS=$(( $(nproc) / (2 * $#) )); [ "$THREADS" -ge 1 ] || THREADS=1
for spec in "$@"; do
  name=${spec%%:*}; sets=${spec#*:}; names+=("$name")
  # shellcheck disable=SC2086
  # CPU threads split between the trainers (each also runs stream workers): 16 threads each oversubscribe the
  # cores and a teacher step took 1.9 s instead of ~0.1
  OMP_NUM_THREADS=$THREADS timeout -s ABRT "${TEACHER_LIMIT:-480}" python3 -X faulthandler -m vamba_eval.train teacher \
    --out "$ROOT/$name" --data "$ROOT/data" --device cuda --threads "$THREADS" ${COMMON:-} $sets \
    > "$OUT/teacher-$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do
  cp "$ROOT/$name/teacher/history.json" "$OUT/history-$name.json" 2>/dev/null
  if [ -n "${CARRY_DTYPE:-}" ]; then  # e.g. float16: a teacher of a few M parameters then fits the next call's carry
    PYTHONPATH=/tmp/site python3 -c "import sys; from pathlib import Path; from vamba_eval.train import ckpt, stages
f = Path(sys.argv[1]); ckpt.save_qwen2vl(ckpt.load_qwen2vl(f), f, stages.load_tokenizer_from(f), sys.argv[2])" \
      "$ROOT/$name/teacher" "$CARRY_DTYPE" || echo "cast of $name failed"
  fi
  tar -C "$ROOT/$name" -cf "$OUT/teacher-$name.tar" teacher recipe.json 2>/dev/null
done
python3 - "$OUT" "${names[@]}" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in sys.argv[2:]:
    try:
        hist = json.loads((out / f"history-{name}.json").read_text())
    except OSError:
        print(f"{name:12s} no history (see teacher-{name}.log)"); continue
    steps = {h["stage"]: h["step"] for h in hist if "step" in h}
    last = {h["stage"]: h for h in hist if "step" not in h}
    b, t = last.get("binding", {}), last.get("teacher", {})
    print(f"{name:12s} steps {steps} | drills letter {b.get('val_drill_letter_acc')} | lettered first "
          f"{t.get('val_first_token_acc')} exact {t.get('val_exact')} | open first {t.get('val_open_first_token_acc')}")
PY
