"""Slow tier: the Ray load benchmark in small (issue 10, item 6) — 2,000 synthetic samples through
the Ray executor on CPU (2 actors on fake GPUs, the tiny model, PyAV decoding every sample, the
fsynced store): every record arrives once, nothing fails, and neither the driver's nor a worker's
RSS grows beyond a few MB after the warm-up (``benchmarks/ray_load.py --fixed-question``: one
question text, so the tokenizer's bounded word cache cannot pass for a leak; a decoder that kept
its frames would add ≥ 50 KB per sample, i.e. ≥ 50 MB per worker here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ray_load.py"
GROWTH_MB = 10.0  # per process, between the first and last fifth of the run after the warm-up


@pytest.mark.slow
def test_two_thousand_samples_through_ray_keep_memory_flat(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "load.jsonl"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--samples", "2000", "--interval", "2", "--fixed-question",
                           "--out", str(out)], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    meta, intervals, summary = rows[0], rows[1:-1], rows[-1]
    assert meta["kind"] == "meta" and summary["kind"] == "summary", summary
    assert summary["records"] == 2000 and summary["failed"] == 0 and summary["worker_deaths"] == 0
    assert len(intervals) >= 10 and all(len(r["worker_rss_mb"]) == 2 for r in intervals[:-1])
    assert summary["driver_growth_mb"] < GROWTH_MB, summary
    assert summary["worker_growth_mb"] < GROWTH_MB, summary
    assert summary["rate_last_over_first"] > 0.5, summary  # no slow-down (the machine is shared: lenient)
