"""Ray-free parts of the sharded executor: executor choice, options, the work queue with its
retry bookkeeping, the per-sample CUDA-OOM retry, and per-worker statistics (``workers.json``).

Everything here is plain Python so it is unit-tested without a Ray cluster; ``ray_executor``
(the only module that imports ``ray``) drives it.

Queue policy (``Dispatcher``):

- units leave the queue longest first (``WorkUnit.cost``, ties in plan order), one per worker
  per round, so the longest units start first and on different workers;
- each worker holds up to ``depth`` units at once (the actor decodes the next while the
  model runs the current one);
- when a worker dies, every unit it held is re-queued with ``attempt + 1``, or, at
  ``max_attempts``, returned to be recorded as a sample error;
- a re-queued ("suspect") unit runs alone on a worker (that worker is drained first), so a
  sample that crashes its worker cannot take innocent neighbours down with it again.

``SampleRecord.attempt`` is the dispatch that produced the record: 1 unless a worker died while
holding the sample. It is the one field besides the measurements (``timings``,
``peak_memory_bytes``) in which a Ray run with faults differs from an in-process run.
"""

from __future__ import annotations

import dataclasses
import heapq
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, Sequence

from vamba_eval.records import SampleError, SampleRecord
from vamba_eval.run.process import WorkUnit

EXECUTORS = ("local", "ray", "auto")
WORKERS_FILE = "workers.json"


class ExecutorChoiceError(ValueError):
    """Inconsistent executor flags (e.g. ``--executor local --gpus 2``) or Ray missing."""


def choose_executor(executor: str, *, gpus: Optional[int], address: Optional[str],
                    ray_available: bool) -> str:
    """``local`` | ``ray``. ``auto``: Ray when more than one GPU or a cluster address is given."""
    if executor not in EXECUTORS:
        raise ExecutorChoiceError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor == "local":
        if address:
            raise ExecutorChoiceError("--ray-address needs --executor ray (or auto)")
        if gpus is not None and gpus > 1:
            raise ExecutorChoiceError(f"--gpus {gpus}: the in-process executor uses one device; "
                                      "use --executor ray (or auto) to shard over GPUs")
        return "local"
    wanted = executor == "ray" or bool(address) or (gpus is not None and gpus > 1)
    if wanted and not ray_available:
        raise ExecutorChoiceError("the Ray executor needs Ray: pip install 'vamba-eval[ray]' (ray>=2.60) "
                                  "(or run with --executor local)")
    return "ray" if wanted else "local"


@dataclass(frozen=True)
class RayOptions:
    """How ``run_ray`` shards a run (config keys of the same names; see ``from_config``)."""

    gpus: Optional[int] = None  # GPUs to use; None: every GPU of the cluster (CUDA devices) or none (CPU)
    gpus_per_worker: float = 1.0  # < 1: several model copies share a GPU (0.5 → 2 per GPU)
    cpu_workers: int = 1  # CPU-only runs: model copies (actors)
    cpus_per_worker: float = 1.0  # Ray CPUs per actor (also its torch threads on CPU)
    address: Optional[str] = None  # None: start a local cluster; "auto" or ray://… to join one
    max_restarts: int = 3  # per worker: replacements after it dies, then it is retired
    max_attempts: int = 3  # per sample: dispatches before it is recorded as an error
    oom_retry_frames: int = 0  # per sample: halvings of the frame count after a CUDA OOM
    depth: int = 2  # units held per worker (>= 2 keeps decoding overlapped with compute)
    start_timeout_s: float = 600.0  # workers not ready by then → clear error (resources busy?)
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [(self.gpus is None or self.gpus >= 0, "gpus must be >= 0"),
                  (self.gpus_per_worker > 0, "gpus_per_worker must be > 0"),
                  (self.cpu_workers >= 1, "cpu_workers must be >= 1"),
                  (self.cpus_per_worker > 0, "cpus_per_worker must be > 0"),
                  (self.max_restarts >= 0, "max_restarts must be >= 0"),
                  (self.max_attempts >= 1, "max_attempts must be >= 1"),
                  (self.oom_retry_frames >= 0, "oom_retry_frames must be >= 0"),
                  (self.depth >= 1, "depth must be >= 1")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"Ray executor options: {msg}")

    @classmethod
    def from_config(cls, cfg: Any) -> "RayOptions":
        """From a RunConfig carrying the keys below (missing keys keep their defaults)."""
        names = ("gpus", "gpus_per_worker", "cpu_workers", "cpus_per_worker", "max_restarts",
                 "max_attempts", "oom_retry_frames", "progress")
        values = {n: getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None}
        if getattr(cfg, "ray_address", None):
            values["address"] = cfg.ray_address
        values["depth"] = max(2, int(getattr(cfg, "workers", 2)))
        return cls(**values)


@dataclass
class Job:
    """One dispatch of a unit: ``attempt`` is 1-based; ``suspect`` once a worker died holding it."""

    unit: WorkUnit
    seq: int
    attempt: int = 1
    suspect: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.unit.key


class Dispatcher:
    """The run's queue and who holds what; see the module docstring for the policy."""

    def __init__(self, units: Sequence[WorkUnit], *, max_attempts: int = 3, depth: int = 2) -> None:
        self.max_attempts, self.depth = max_attempts, depth
        self._queue: list[tuple[float, int, Job]] = []
        for seq, unit in enumerate(units):
            heapq.heappush(self._queue, (-unit.cost, seq, Job(unit, seq)))
        self._suspects: list[Job] = []
        self.held: dict[Hashable, dict[tuple[str, str], Job]] = {}
        self._solo: set[Hashable] = set()
        self._draining: Optional[Hashable] = None
        self.requeued = 0

    # -- workers ------------------------------------------------------------------------------
    def add_worker(self, wid: Hashable) -> None:
        self.held.setdefault(wid, {})

    def worker_died(self, wid: Hashable) -> list[Job]:
        """Take back everything ``wid`` held: re-queue (attempt + 1) or return the exhausted jobs."""
        jobs = list(self.held.pop(wid, {}).values())
        self._solo.discard(wid)
        if self._draining == wid:
            self._draining = None
        exhausted = []
        for job in sorted(jobs, key=lambda j: j.seq):
            if job.attempt >= self.max_attempts:
                exhausted.append(job)
            else:
                self._suspects.append(dataclasses.replace(job, attempt=job.attempt + 1, suspect=True))
                self.requeued += 1
        self._suspects.sort(key=lambda j: (-j.unit.cost, j.seq))
        return exhausted

    # -- jobs ---------------------------------------------------------------------------------
    def assign(self) -> list[tuple[Hashable, Job]]:
        """New (worker, job) pairs: suspects first (alone), then the queue, round-robin."""
        out: list[tuple[Hashable, Job]] = []
        while self._suspects:
            idle = [w for w, h in self.held.items() if not h]
            if not idle:
                if self._draining is None and self.held:
                    self._draining = min(self.held, key=lambda w: len(self.held[w]))
                break
            wid = self._draining if self._draining in idle else idle[0]
            self._draining = None if wid == self._draining else self._draining
            job = self._suspects.pop(0)
            self._give(wid, job, out)
            self._solo.add(wid)
        if not self._suspects:
            self._draining = None
        while self._queue:
            open_ = [w for w, h in self.held.items() if len(h) < self.depth
                     and w not in self._solo and w != self._draining]
            if not open_:
                break
            for wid in sorted(open_, key=lambda w: len(self.held[w])):
                if not self._queue:
                    break
                self._give(wid, heapq.heappop(self._queue)[2], out)
        return out

    def _give(self, wid: Hashable, job: Job, out: list) -> None:
        self.held[wid][job.key] = job
        out.append((wid, job))

    def finished(self, wid: Hashable, key: tuple[str, str]) -> Job:
        job = self.held[wid].pop(key)
        if not self.held[wid]:
            self._solo.discard(wid)
        return job

    def pending(self) -> int:
        return len(self._queue) + len(self._suspects)

    def in_flight(self) -> int:
        return sum(len(h) for h in self.held.values())

    def done(self) -> bool:
        return not self.pending() and not self.in_flight()


def worker_died_record(job: Job, reason: str) -> SampleRecord:
    """The record of a sample whose worker died on each of its ``max_attempts`` dispatches."""
    from vamba_eval.run.process import base_record

    message = (f"the worker process died {job.attempt} time(s) while running this sample "
               f"(last: {reason}); it is recorded as failed after {job.attempt} attempt(s). "
               "Check the worker log (OOM killer, CUDA error, segfault in a decoder/kernel).")
    return SampleRecord(**base_record(job.unit), error=SampleError(type="WorkerDied", message=message),
                        attempt=job.attempt)


# -- CUDA OOM: record the frame count, optionally halve the frames and retry --------------------
OOM_TYPES = ("OutOfMemoryError",)


def is_oom(record: SampleRecord) -> bool:
    err = record.error
    return err is not None and (err.type in OOM_TYPES or "out of memory" in err.message.lower())


def run_with_oom_retry(unit: WorkUnit, run: Callable[[WorkUnit], SampleRecord], halvings: int,
                       on_oom: Callable[[], None] = lambda: None) -> SampleRecord:
    """``run(unit)``; on a CUDA OOM, name the frame count in the error and (``halvings`` > 0)
    retry with half the frames, each time; a success after a retry carries an ``oom_retry`` flag."""
    first = unit.spec.num_frames
    record = run(unit)
    while is_oom(record):
        on_oom()
        n = unit.spec.num_frames
        if halvings <= 0 or n <= 1:
            note = f" (CUDA out of memory with {n} frames" + (f"; first tried {first}" if n != first else "") + ")"
            return record.model_copy(update={"error": SampleError(type=record.error.type,
                                                                  message=record.error.message + note)})
        halvings -= 1
        unit = dataclasses.replace(unit, spec=dataclasses.replace(unit.spec, num_frames=max(1, n // 2)))
        record = run(unit)
    if unit.spec.num_frames != first:
        flags = sorted(record.flags + [f"oom_retry:frames={first}->{unit.spec.num_frames}"])
        record = record.model_copy(update={"flags": flags})
    return record


# -- per-worker statistics ---------------------------------------------------------------------
@dataclass
class WorkerStats:
    slot: int
    samples: int = 0
    failed: int = 0
    busy_s: float = 0.0  # model time (the actor's model lock held)
    decode_s: float = 0.0  # decode time (background threads, overlapped)
    restarts: int = 0
    retired: bool = False
    pids: list[int] = field(default_factory=list)
    node: str = ""
    gpu_ids: list[str] = field(default_factory=list)

    def add(self, record: SampleRecord, busy_s: float, decode_s: float) -> None:
        self.samples += 1
        self.failed += record.error is not None
        self.busy_s += busy_s
        self.decode_s += decode_s


@dataclass
class RayStats:
    """What ``run_ray`` returns; ``as_dict`` is one session of ``workers.json``."""

    workers: list[WorkerStats]
    wall_s: float = 0.0
    samples: int = 0
    requeued: int = 0  # re-dispatches after a worker died
    worker_deaths: int = 0
    started: str = ""
    address: str = ""

    def as_dict(self) -> dict[str, Any]:
        rows = []
        for w in self.workers:
            row = dataclasses.asdict(w)
            row.update(busy_s=round(w.busy_s, 3), decode_s=round(w.decode_s, 3),
                       utilization=round(w.busy_s / self.wall_s, 3) if self.wall_s > 0 else None,
                       throughput_per_s=round(w.samples / self.wall_s, 4) if self.wall_s > 0 else None)
            rows.append(row)
        return {"executor": "ray", "started": self.started, "address": self.address,
                "wall_s": round(self.wall_s, 3), "samples": self.samples, "requeued": self.requeued,
                "worker_deaths": self.worker_deaths, "workers": rows}


def record_worker_stats(run_dir: Path, stats: RayStats) -> Path:
    """Append this session to ``RUN_DIR/workers.json`` (``{"sessions": [...]}``; resumes add one)."""
    import json

    from vamba_eval.run.store import write_json

    path = Path(run_dir) / WORKERS_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"sessions": []}
    data["sessions"].append(stats.as_dict())
    write_json(path, data)
    return path


class WorkerProgress:
    """Every ``every_s``: per-worker samples, rate and busy share, queue length and ETA."""

    def __init__(self, stats: list[WorkerStats], total: int, enabled: bool, every_s: float = 10.0,
                 emit: Optional[Callable[[str], None]] = None) -> None:
        self.stats, self.total, self.enabled, self.every_s = stats, total, enabled, every_s
        self.emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = self.last = time.monotonic()

    def line(self, pending: int, now: Optional[float] = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        done = sum(w.samples for w in self.stats)
        parts = [f"#{w.slot} {w.samples} ({w.samples / elapsed:.2f}/s, busy {100 * w.busy_s / elapsed:.0f}%"
                 + (f", {w.restarts} restart(s)" if w.restarts else "") + (", retired" if w.retired else "") + ")"
                 for w in self.stats]
        rate = done / elapsed
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "?"
        return f"[vamba-eval] workers: {' · '.join(parts)} · queued {pending} · ETA {eta}"

    def tick(self, pending: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last >= self.every_s):
            self.last = now
            self.emit(self.line(pending, now))


def plan_workers(opts: RayOptions, device: str, resources: dict[str, float],
                 where: str = "the Ray cluster") -> tuple[int, dict[str, float]]:
    """How many model copies (actors) and what each asks Ray for; a request the cluster can
    never satisfy is an immediate error (Ray would otherwise wait for it forever)."""
    total_gpu, total_cpu = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    gpus = opts.gpus
    if gpus is None and device.startswith("cuda"):
        gpus = int(total_gpu)
        if gpus == 0:
            raise ExecutorChoiceError(f"--device {device}: {where} has no GPUs; use --device cpu "
                                      "(with --cpu-workers N), or join a GPU cluster with --ray-address")
    if gpus:
        if gpus > total_gpu:
            raise ExecutorChoiceError(f"--gpus {gpus}: {where} has {total_gpu:g} GPU(s); ask for at most "
                                      f"{total_gpu:g}, or run on CPU with --device cpu --cpu-workers N")
        n = int(gpus / opts.gpus_per_worker + 1e-9)
        if n < 1:
            raise ExecutorChoiceError(f"--gpus {gpus} with {opts.gpus_per_worker:g} GPU per worker "
                                      "leaves no worker; lower gpus_per_worker")
        per = {"num_gpus": opts.gpus_per_worker, "num_cpus": opts.cpus_per_worker}
    else:
        n, per = opts.cpu_workers, {"num_gpus": 0.0, "num_cpus": opts.cpus_per_worker}
    if n * opts.cpus_per_worker > total_cpu + 1e-9:
        raise ExecutorChoiceError(f"{n} worker(s) × {opts.cpus_per_worker:g} CPU need "
                                  f"{n * opts.cpus_per_worker:g} CPUs; {where} has {total_cpu:g}; "
                                  "lower --cpu-workers or cpus_per_worker")
    return n, per
