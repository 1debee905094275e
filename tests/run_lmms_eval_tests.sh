#!/usr/bin/env bash
# The lmms-eval extra's tests, in their own venv (lmms-eval 0.7.3 pins av<16 and brings ~810 MB of
# dependencies; none of it goes into the main environment). Reuses the venv when it is already there.
#
#   bash tests/run_lmms_eval_tests.sh            # from the repo root, after the main install
#
# The venv sees the main environment's packages (--system-site-packages: torch, transformers …) and
# adds lmms-eval's. torchvision is pinned to torch 2.13's release so pip keeps torch (a newer one would
# pull torch 2.14 + CUDA, ~6 GB), then removed: PyPI's torchvision is a CUDA build whose operators do not
# register on torch+cpu, which breaks `transformers` image utils; lmms-eval's video tasks and the
# vamba-eval plugin do not use it (timm, which needs it, goes too).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LMMS_EVAL_VENV:-.venv/lmms-eval}
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('lmms-eval') == '0.7.3'" 2>/dev/null; then
  python -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q 'lmms-eval==0.7.3' 'torch==2.13.0' 'torchvision==0.28.0'
  "$VENV/bin/pip" uninstall -q -y torchvision timm
fi
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_lmms_eval_plugin.py tests/test_lmms_import.py tests/test_parity.py
