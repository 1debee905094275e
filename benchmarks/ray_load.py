"""Load test: N synthetic samples (default 20,000) through the Ray executor on CPU — is memory flat
(no leak from decoders, the model, the queue, the store) and is throughput steady?

The real pipeline, end to end: ``RayExecutor`` (a local cluster with fake GPUs: each actor gets its
own ``CUDA_VISIBLE_DEVICES`` while its model runs on the CPU) → per unit PyAV decode (the frame cache
is OFF, so every sample really decodes its video) → LVBench's prompt → the bundled tiny VAMBA
(untrained; 16 new tokens, LVBench's default) → LVBench's official scorer → a record streamed
back to the driver → the append-only, fsynced ``samples.jsonl``. The load task is generated on the
fly: N LVBench-style questions over a handful of short 64×48 clips written with PyAV.

Every ``--interval`` seconds the driver samples the RSS of itself, of each live EvalWorker actor
and of Ray's own daemons (raylet, GCS; all found as descendants of this process), and the samples
finished in the interval. Output: a table on stdout and raw JSONL (one ``meta`` line, one line per
interval, one ``summary`` line) in ``--out`` (default ``benchmarks/results/ray_load_cpu_<date>.jsonl``).

    python benchmarks/ray_load.py [--samples 20000] [--workers 2] [--frames 8] [--max-new-tokens 16]
                                  [--interval 10] [--out F]

The summary compares the median RSS of the first and last fifths of the run after a warm-up
(the first ``--warmup`` fraction of samples) and fits a line (MB per 1,000 samples); throughput
steadiness is the coefficient of variation of the per-interval rate and the ratio of the last
fifth's rate to the first fifth's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba_eval.run import store  # noqa: E402
from vamba_eval.run.process import WorkUnit  # noqa: E402
from vamba_eval.types import Sample, VideoRef  # noqa: E402
from vamba_eval.video import FrameSpec  # noqa: E402

CLIPS = 4  # distinct short videos the samples cycle through
CLIP_FRAMES, CLIP_FPS, W, H = 48, 8, 64, 48  # 6 s each


# -- the load task ----------------------------------------------------------------------------
def write_clips(folder: Path, n: int = CLIPS) -> list[Path]:
    """``n`` short mpeg4 clips with moving coloured blocks (PyAV)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for k in range(n):
        path = folder / f"clip{k}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            base = rng.integers(0, 255, size=3)
            for i in range(CLIP_FRAMES):
                img = np.full((H, W, 3), base, np.uint8)
                x = (i * 3 + k * 7) % (W - 16)
                img[16:32, x:x + 16] = 255 - base
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths.append(path)
    return paths


def load_units(n: int, clips: list[Path], frames: int, root: Path, fixed_question: bool = False) -> list[WorkUnit]:
    """``n`` LVBench-style questions over ``clips`` (the real LVBench prompt and scorer run on them);
    ``fixed_question``: one question text for all (see ``--fixed-question``)."""
    spec = FrameSpec(num_frames=frames, max_edge=56)
    units = []
    for i in range(n):
        letter = "ABCD"[i % 4]
        options = tuple(f"({x}) colour {j}" for j, x in enumerate("ABCD"))
        sample = Sample(task="lvbench", sample_id=f"load-{i:05d}", video=VideoRef(str(clips[i % len(clips)])),
                        question=("Load question" if fixed_question else f"Load question {i}")
                        + ": which colour is the moving block?", options=options,
                        answer=letter, categories={"question_type": ("KIR",), "type": ("synthetic",)},
                        meta={"video_id": clips[i % len(clips)].stem})
        units.append(WorkUnit("lvbench", sample, spec, str(root), 1.0))
    return units


# -- memory sampling --------------------------------------------------------------------------
def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def descendants(root: int) -> dict[int, str]:
    """pid → command line of every live descendant of ``root``."""
    parents, cmds = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            parents[pid] = _parent(pid)
            try:
                cmds[pid] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                pass
    out = {}
    for pid in parents:
        p, hops = pid, 0
        while p > 1 and hops < 32:
            p, hops = parents.get(p, 0), hops + 1
            if p == root:
                out[pid] = cmds.get(pid, "")
                break
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS of the driver, the EvalWorker actors and Ray's daemons; samples done."""

    def __init__(self, interval: float, done: list[int], sink: Any) -> None:
        super().__init__(daemon=True)
        self.interval, self.done, self.sink = interval, done, sink
        self.rows: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.last_done, self.last_t = 0, self.t0

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        procs = descendants(os.getpid())
        workers = {pid: rss_mb(pid) for pid, cmd in procs.items() if cmd.startswith("ray::EvalWorker")}
        daemons = sum(rss_mb(pid) or 0.0 for pid, cmd in procs.items() if "raylet" in cmd or "gcs_server" in cmd)
        done = self.done[0]
        row = {"kind": "interval", "t_s": round(now - self.t0, 2), "done": done,
               "rate_per_s": round((done - self.last_done) / max(now - self.last_t, 1e-9), 3),
               "driver_rss_mb": round(rss_mb(os.getpid()) or 0.0, 1),
               "worker_rss_mb": {str(p): round(v, 1) for p, v in sorted(workers.items()) if v is not None},
               "ray_daemons_rss_mb": round(daemons, 1)}
        self.last_done, self.last_t = done, now
        return row

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.emit(self.sample())

    def emit(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.sink.write(json.dumps(row) + "\n")
        self.sink.flush()
        workers = " ".join(f"{v:7.1f}" for v in row["worker_rss_mb"].values())
        print(f"{row['t_s']:8.1f} {row['done']:7d} {row['rate_per_s']:7.2f} {row['driver_rss_mb']:8.1f}  "
              f"{workers:>16}  {row['ray_daemons_rss_mb']:8.1f}", flush=True)


# -- analysis -----------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], n: int, warmup: float) -> dict[str, Any]:
    """Memory growth and throughput steadiness after the warm-up (see the module docstring)."""
    steady = [r for r in rows if r["done"] >= warmup * n and r["done"] < n]
    if len(steady) < 5:
        return {"kind": "summary", "note": "too few intervals after the warm-up for a verdict"}
    fifth = max(1, len(steady) // 5)
    first, last = steady[:fifth], steady[-fifth:]

    def med(rs: list[dict[str, Any]], key) -> float:
        return statistics.median(key(r) for r in rs)

    def worker_total(r: dict[str, Any]) -> float:
        return sum(r["worker_rss_mb"].values())

    def slope(key) -> float:  # MB per 1,000 samples, least squares
        x = np.array([r["done"] for r in steady], float) / 1000
        y = np.array([key(r) for r in steady], float)
        return float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0

    driver = (med(first, lambda r: r["driver_rss_mb"]), med(last, lambda r: r["driver_rss_mb"]))
    per_worker = len(first[0]["worker_rss_mb"]) or 1
    workers = (med(first, worker_total) / per_worker, med(last, worker_total) / per_worker)
    rates = [r["rate_per_s"] for r in steady]
    return {
        "kind": "summary", "samples": n, "steady_intervals": len(steady),
        "driver_rss_mb_first_last": [round(driver[0], 1), round(driver[1], 1)],
        "driver_growth_mb": round(driver[1] - driver[0], 1),
        "driver_slope_mb_per_1k": round(slope(lambda r: r["driver_rss_mb"]), 3),
        "worker_rss_mb_first_last": [round(workers[0], 1), round(workers[1], 1)],
        "worker_growth_mb": round(workers[1] - workers[0], 1),
        "worker_slope_mb_per_1k": round(slope(worker_total) / per_worker, 3),
        "rate_mean_per_s": round(statistics.fmean(rates), 3),
        "rate_cv": round(statistics.pstdev(rates) / statistics.fmean(rates), 3) if statistics.fmean(rates) else None,
        "rate_last_over_first": round(med(last, lambda r: r["rate_per_s"]) / max(med(first, lambda r: r["rate_per_s"]), 1e-9), 3),
    }


# -- the run ----------------------------------------------------------------------------------
def run(n: int, workers: int, frames: int, interval: float, out: Path, warmup: float,
        max_new_tokens: int = 16, fixed_question: bool = False, task_events: bool = False) -> dict[str, Any]:
    import ray

    from vamba_eval.models.base import ModelSpec
    from vamba_eval.run.dispatch import RayOptions
    from vamba_eval.run.environment import environment
    from vamba_eval.run.ray_executor import LOCAL_SYSTEM_CONFIG, RayExecutor
    from vamba_eval.run.worker import WorkerSettings

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="vamba-load-"))
    clips = write_clips(work / "clips")
    units = load_units(n, clips, frames, work, fixed_question)
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # unix socket paths < 107 bytes
    system = {} if task_events else LOCAL_SYSTEM_CONFIG  # as `vamba-eval run` starts a local cluster
    ray.init(num_cpus=max(4, workers * 2), num_gpus=workers, include_dashboard=False,
             object_store_memory=100 * 1024 ** 2, _temp_dir=temp, logging_level="warning", _system_config=system)
    settings = WorkerSettings(model_spec=ModelSpec("vamba"), max_new_tokens={"lvbench": max_new_tokens}, use_subtitles=False,
                              scoring="official", cache_dir=None, thumbs=False)
    opts = RayOptions(gpus=workers, cpus_per_worker=1.0, progress=False, max_restarts=0, max_attempts=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "meta", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "samples": n,
            "workers": workers, "fake_gpus": workers, "frames": frames, "clip": f"{W}x{H} {CLIP_FRAMES} frames mpeg4",
            "max_new_tokens": max_new_tokens, "fixed_question": fixed_question, "ray_task_events": task_events,
            "frame_cache": False, "interval_s": interval, "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(), "python": platform.python_version(),
            "packages": {k: v for k, v in environment("cpu")["packages"].items()
                         if k in ("torch", "ray", "av", "vamba-eval", "transformers")}}
    done, errors = [0], [0]
    with open(out, "w", encoding="utf-8") as sink:
        sink.write(json.dumps(meta) + "\n")
        print(f"{n} samples, {workers} Ray workers (fake GPUs), {frames} frames/sample, run dir {work}", flush=True)
        print(f"{'t (s)':>8} {'done':>7} {'rate/s':>7} {'driver MB':>9}  {'worker MB (each)':>16}  {'ray MB':>8}")
        sampler = Sampler(interval, done, sink)
        t_start = time.monotonic()
        with RayExecutor(settings, opts) as ex, store.SampleWriter(work / store.SAMPLES) as writer:
            t_ready = time.monotonic()
            sampler.t0 = sampler.last_t = t_ready
            sampler.start()

            def on_record(rec: Any) -> None:
                writer.append(rec)
                done[0] += 1
                errors[0] += rec.error is not None

            stats = ex.run(units, on_record)
            sampler.stop.set()
            sampler.join()
            sampler.emit(sampler.sample())
        wall = time.monotonic() - t_ready
        summary = summarize(sampler.rows, n, warmup)
        lines = store.load_records(work / store.SAMPLES)
        summary.update(start_s=round(t_ready - t_start, 1), wall_s=round(wall, 1), throughput_per_s=round(n / wall, 3),
                       records=len(lines), failed=errors[0], worker_deaths=stats.worker_deaths,
                       load_avg_end=os.getloadavg())
        sink.write(json.dumps(summary) + "\n")
    ray.shutdown()
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return summary


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8, help="per sample (the demo runs' setting)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="LVBench's default")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of samples ignored by the verdict")
    ap.add_argument("--fixed-question", action="store_true",
                    help="one question text for every sample: the tokenizer's word cache (bounded, 10,000 entries; "
                         "the tiny tokenizer caches whole prompts) then stays put, so any growth left is a leak")
    ap.add_argument("--task-events", action="store_true",
                    help="keep Ray's per-task event history on (Ray's default; `vamba-eval run` turns it off)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tag = ("_fixedq" if args.fixed_question else "") + ("_taskevents" if args.task_events else "")
    out = args.out or (Path(__file__).resolve().parent / "results"
                       / f"ray_load_cpu_{datetime.now(timezone.utc).strftime('%Y-%m-%d')}{tag}.jsonl")
    summary = run(args.samples, args.workers, args.frames, args.interval, out, args.warmup, args.max_new_tokens,
                  args.fixed_question, args.task_events)
    print(json.dumps(summary, indent=1))
    print(f"raw: {out}")
    return summary


if __name__ == "__main__":
    main()
