"""Makespan of 8 GPU workers: dynamic longest-first dispatch vs the strided split of other harnesses.

Per-sample time = decode (∝ video length, seeking) + model time (∝ frames, VAMBA is linear), for an
LVBench-like mix: 103 hour-long videos (lognormal around 68 min) × ~15 questions at 1,024 frames,
plus Video-MME-like (short/medium/long) at 512 frames and MVBench-like clips at 16 frames, in dataset
order (as a strided split sees them). Pure CPU simulation through the real dispatcher; run once with
identical GPUs and once with one GPU at half speed (shared, throttled or older).

    python benchmarks/schedule_makespan.py [--workers 8] [--seeds 5] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba_eval.run.process import WorkUnit  # noqa: E402
from vamba_eval.run.simulate import lower_bound, simulate_dispatcher, simulate_strided  # noqa: E402
from vamba_eval.types import Sample, VideoRef  # noqa: E402
from vamba_eval.video import FrameSpec  # noqa: E402

PREFILL_S_PER_FRAME = 5.65 / 1024  # VAMBA-7B on an H100, --compile (benchmarks/README.md)
DECODE_S_PER_VIDEO_MIN = 0.25  # seek-decoding 1,024 frames of an hour-long 720p file: a few s per hour


def workload(rng: np.random.Generator) -> list[tuple[str, str, float, int]]:
    """(task, id, video minutes, frames) in release order."""
    items = []
    for v in range(103):  # LVBench: hour-long, ~15 questions each
        minutes = float(np.clip(rng.lognormal(np.log(60), 0.45), 20, 240))
        items += [("lvbench", f"{v}-{q}", minutes, 1024) for q in range(int(rng.integers(10, 21)))]
    for v, dur in enumerate(["short"] * 300 + ["medium"] * 300 + ["long"] * 300):  # Video-MME order
        minutes = {"short": rng.uniform(0.2, 2), "medium": rng.uniform(4, 15), "long": rng.uniform(30, 60)}[dur]
        items += [("videomme", f"{v}-{q}", minutes, 512) for q in range(3)]
    items += [("mvbench", str(i), float(rng.uniform(0.1, 0.6)), 16) for i in range(4000)]
    return items


def run(workers: int, seed: int, slow: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    items = workload(rng)
    units, durations = [], {}
    for task, sid, minutes, frames in items:
        spec = FrameSpec(num_frames=frames)
        sample = Sample(task, sid, VideoRef(f"{task}/{sid}.mp4"), "", (), "", meta={"duration_s": minutes * 60})
        cost = frames * 224 ** 2 + minutes * 60  # the planner's estimate (plan.work_units)
        units.append(WorkUnit(task, sample, spec, "", cost))
        durations[(task, sid)] = frames * PREFILL_S_PER_FRAME + minutes * DECODE_S_PER_VIDEO_MIN
    order = [durations[(t, s)] for t, s, _, _ in items]
    speeds = [slow] + [1.0] * (workers - 1)  # worker 0: a slower / shared GPU when slow < 1
    dyn = simulate_dispatcher(units, durations, workers, speeds=speeds)
    strided = simulate_strided(order, workers, speeds)
    return {"bench": "schedule_makespan", "workers": workers, "seed": seed, "samples": len(items),
            "slow_worker_speed": slow,
            "total_gpu_h": sum(order) / 3600, "lower_bound_h": lower_bound(order, workers) / 3600,
            "dispatcher_h": dyn / 3600, "strided_h": strided / 3600, "speedup": strided / dyn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [run(args.workers, s, slow) for slow in (1.0, 0.5) for s in range(args.seeds)]
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{'slow GPU':>8} {'seed':>4} {'samples':>8} {'GPU-h':>7} {'bound h':>8} {'dispatch h':>11} {'strided h':>10} "
          f"{'speedup':>8}")
    for r in rows:
        print(f"{r['slow_worker_speed']:>8} {r['seed']:>4} {r['samples']:>8} {r['total_gpu_h']:>7.2f} {r['lower_bound_h']:>8.3f} "
              f"{r['dispatcher_h']:>11.3f} {r['strided_h']:>10.3f} {r['speedup']:>8.2f}")


if __name__ == "__main__":
    main()
