"""Ray executor: one model copy (actor) per GPU, or per GPU fraction, or N CPU workers.

The only module that imports ``ray``. The queue, retry and statistics policy is Ray-free in
``vamba_eval.run.dispatch``; each actor runs ``process.run_unit`` — the code the in-process
executor runs (``worker.EvalWorker``) — so both executors write the same records (see
``worker.comparable``).

- Dispatch is dynamic and longest first: a worker gets its next unit when one finishes.
- Each actor holds ``depth`` (>= 2) units: its threads decode the next videos while the model
  (behind a lock) works on the current one.
- Records stream back and go to ``on_record`` (the append-only store) as they finish; a crash
  loses at most the units in flight.
- A worker that dies (killed, CUDA error, segfault) is replaced (``max_restarts`` times) and
  its units are re-queued; a unit dispatched ``max_attempts`` times becomes a ``WorkerDied``
  sample error. CUDA OOM: see ``dispatch.run_with_oom_retry``.
- Ctrl-C: the workers are stopped, everything recorded so far stays; ``--resume`` goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from vamba_eval.records import SampleRecord
from vamba_eval.run.dispatch import (Dispatcher, ExecutorChoiceError, Job, RayOptions, RayStats,
                                     WorkerProgress, WorkerStats, plan_workers, worker_died_record)
from vamba_eval.run.process import WorkUnit
from vamba_eval.run.worker import EvalWorker, WorkerSettings, comparable, settings_from_config

DEATHS = (RayActorError, WorkerCrashedError, ray.exceptions.OutOfMemoryError)
RemoteWorker = ray.remote(EvalWorker)
# A local cluster we start keeps no per-task event history (the state API / dashboard task list,
# unused here): with it on, the GCS grows ≈ 3.3 KB and each worker ≈ 0.4 KB per sample, up to
# 100,000 tasks (benchmarks/ray_load.py, benchmarks/results/ray_load_cpu_*).
LOCAL_SYSTEM_CONFIG = {"task_events_report_interval_ms": 0}


class RayExecutorError(RuntimeError):
    """The Ray run cannot go on (no worker could start, every worker retired, start timeout)."""


class _LoadError(RuntimeError):
    """A worker could not build its model (the message names the exception)."""


def connect(address: Optional[str]) -> bool:
    """Join ``address``, reuse a running ``ray.init``, or start a small local cluster.
    Returns True when this call started (and so must shut down) the connection."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, object_store_memory=256 * 1024 ** 2, _system_config=LOCAL_SYSTEM_CONFIG,
                 **kwargs)
    return True


@dataclass
class _Slot:
    index: int
    handle: Any = None
    generation: int = 0
    restarts: int = 0  # over the executor's life (the budget); stats.restarts counts this run's
    stats: WorkerStats = field(default_factory=lambda: WorkerStats(0))


def _reason(err: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _log(message: str) -> None:
    print(f"[vamba-eval] {message}", file=sys.stderr, flush=True)


class RayExecutor:
    """Start workers (``start``), run units (``run``), stop them (``close``); a context manager."""

    def __init__(self, settings: WorkerSettings, opts: RayOptions) -> None:
        self.settings, self.opts = settings, opts
        self.slots: list[_Slot] = []
        self.starting: dict[Any, int] = {}  # ready() ref → slot index
        self.calls: dict[Any, tuple[int, int, Job]] = {}  # process() ref → (slot, generation, job)
        self.owns_cluster = False
        self.actor_options: dict[str, Any] = {}
        self.model_info: dict[str, Any] = {}  # describe() of the first worker's model (for config.json)
        self.stats = RayStats(workers=[])

    def __enter__(self) -> "RayExecutor":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Connect, check the resources, start the workers and wait until each has its model."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.owns_cluster = connect(self.opts.address)
        where = f"the Ray cluster at {self.opts.address}" if self.opts.address else "the local Ray cluster"
        n, per = plan_workers(self.opts, self.settings.model_spec.device, ray.cluster_resources(), where)
        if per["num_gpus"] and not self.settings.model_spec.device.startswith("cuda"):
            _log(f"{n} worker(s) hold {per['num_gpus']:g} GPU each but the model device is "
                 f"{self.settings.model_spec.device!r}: the models run on the CPU (pass --device cuda)")
        threads = max(1, int(self.opts.cpus_per_worker))  # used on CPU models only
        self.settings = dataclasses.replace(self.settings, torch_threads=threads)
        self.actor_options = {**per, "max_restarts": 0, "max_task_retries": 0,
                              "max_concurrency": self.opts.depth + 1}
        for i in range(n):
            slot = _Slot(i, stats=WorkerStats(i))
            self.slots.append(slot)
            self._spawn(slot)
        self.wait_started()

    def _spawn(self, slot: _Slot) -> None:
        slot.handle = RemoteWorker.options(**self.actor_options).remote(self.settings)
        slot.generation += 1
        self.starting[slot.handle.ready.remote()] = slot.index

    def wait_started(self) -> None:
        """Block until every worker being started is ready (an error if one cannot load the model)."""
        deadline, noted = time.monotonic() + self.opts.start_timeout_s, time.monotonic() + 30
        while self.starting:
            ready, _ = ray.wait(list(self.starting), num_returns=1, timeout=1.0)
            for ref in ready:
                slot = self.slots[self.starting.pop(ref)]
                try:
                    self._started(slot, ray.get(ref))
                except (RayTaskError, *DEATHS, _LoadError) as err:
                    raise RayExecutorError(f"Ray worker #{slot.index} could not load the model "
                                           f"{self.settings.model_spec.name!r}: {_reason(err)}") from None
            if self.starting and time.monotonic() > noted:
                noted = time.monotonic() + 30
                _log(f"waiting for {len(self.starting)} Ray worker(s) to start (each asks for "
                     f"{self.actor_options}; free now: {ray.available_resources()})")
            if self.starting and time.monotonic() > deadline:
                raise RayExecutorError(f"{len(self.starting)} Ray worker(s) did not start within "
                                       f"{self.opts.start_timeout_s:.0f}s; the cluster may be busy "
                                       f"(free: {ray.available_resources()})")

    def _started(self, slot: _Slot, info: dict[str, Any]) -> None:
        if info["error"]:
            raise _LoadError(info["error"])
        slot.stats.pids.append(int(info["pid"]))
        self.model_info = self.model_info or info["model"]
        slot.stats.node, slot.stats.gpu_ids = info["node"], info["gpu_ids"]

    def pids(self) -> dict[int, int]:
        """Worker slot → pid of its live actor (asks the actors)."""
        live = [s for s in self.slots if not s.stats.retired and s.index not in self.starting.values()]
        return dict(zip([s.index for s in live], ray.get([s.handle.pid.remote() for s in live])))

    def close(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                try:
                    ray.kill(slot.handle, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        self.slots, self.starting, self.calls = [], {}, {}
        if self.owns_cluster and ray.is_initialized():
            ray.shutdown()
            self.owns_cluster = False

    # -- the run ------------------------------------------------------------------------------
    def run(self, units: Sequence[WorkUnit], on_record: Callable[[SampleRecord], None],
            thumbs: Optional[Path] = None) -> RayStats:
        """Run ``units`` (longest first, dynamically); every record goes to ``on_record`` at once."""
        disp = Dispatcher(units, max_attempts=self.opts.max_attempts, depth=self.opts.depth)
        self._new_stats()
        for slot in self.slots:
            if not slot.stats.retired and slot.index not in self.starting.values():
                disp.add_worker(slot.index)
        progress = WorkerProgress(self.stats.workers, len(units), self.opts.progress)
        t0 = time.perf_counter()
        try:
            while not disp.done():
                for wid, job in disp.assign():
                    slot = self.slots[wid]
                    self.calls[slot.handle.process.remote(job.unit, job.attempt)] = (wid, slot.generation, job)
                refs = [*self.calls, *self.starting]
                if not refs:
                    raise RayExecutorError(f"every Ray worker died more than {self.opts.max_restarts} time(s); "
                                           f"{disp.pending()} sample(s) not run (finished ones are saved: "
                                           "fix the cause and re-run with --resume)")
                ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                for ref in ready:
                    self._collect(ref, disp, on_record, thumbs)
                progress.tick(disp.pending())
        finally:  # on Ctrl-C or an error, calls still in flight are abandoned (their units not recorded)
            self.calls.clear()
            self.stats.wall_s += time.perf_counter() - t0
            self.stats.requeued += disp.requeued
        if self.stats.wall_s >= progress.every_s:  # a long run: end with the per-worker summary
            progress.tick(0, force=True)
        return self.stats

    def _new_stats(self) -> None:
        """Statistics are per ``run`` (one session of workers.json); the restart budget is not."""
        for slot in self.slots:
            old, starting = slot.stats, slot.index in self.starting.values()
            slot.stats = WorkerStats(slot.index, retired=old.retired, pids=[] if starting else old.pids[-1:],
                                     node=old.node, gpu_ids=old.gpu_ids)
        self.stats = RayStats(workers=[s.stats for s in self.slots], address=self.opts.address or "local",
                              started=datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def _collect(self, ref: Any, disp: Dispatcher, on_record: Callable[[SampleRecord], None],
                 thumbs: Optional[Path]) -> None:
        if ref in self.starting:
            slot = self.slots[self.starting.pop(ref)]
            try:
                self._started(slot, ray.get(ref))
            except (RayTaskError, *DEATHS, _LoadError) as err:
                self._died(slot, err, disp, on_record)
                return
            disp.add_worker(slot.index)
            return
        wid, generation, job = self.calls.pop(ref)
        slot = self.slots[wid]
        try:
            out = ray.get(ref)
        except RayTaskError as err:  # a bug, not a bad sample: the in-process executor stops too
            raise err.as_instanceof_cause() from None
        except DEATHS as err:
            if generation == slot.generation:
                self._died(slot, err, disp, on_record)
            return  # else: a call to an actor already replaced; its unit was re-queued then
        record = SampleRecord.model_validate_json(out["record"])
        disp.finished(wid, job.key)
        slot.stats.add(record, out["busy_s"], out["decode_s"])
        self.stats.samples += 1
        if thumbs is not None and out["thumb"] is not None:
            from vamba_eval.run.executor import save_thumb
            from vamba_eval.run.thumbs import thumb_path

            path = thumb_path(thumbs, record.task, record.sample_id)

            def write() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(out["thumb"])

            save_thumb(write, thumbs, job.unit)
        on_record(record)

    def _died(self, slot: _Slot, err: BaseException, disp: Dispatcher,
              on_record: Callable[[SampleRecord], None]) -> None:
        """Re-queue what ``slot`` held (or record it as failed), then replace or retire the worker."""
        reason = _reason(err)
        self.stats.worker_deaths += 1
        exhausted = disp.worker_died(slot.index)
        stale = [r for r, (w, g, _) in self.calls.items() if w == slot.index and g == slot.generation]
        for r in stale:
            del self.calls[r]
        for job in exhausted:
            record = worker_died_record(job, reason)
            slot.stats.add(record, 0.0, 0.0)
            self.stats.samples += 1
            on_record(record)
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it is dead already
            pass
        held = len(stale) + len(exhausted)
        if slot.restarts < self.opts.max_restarts:
            slot.restarts += 1
            slot.stats.restarts += 1
            _log(f"Ray worker #{slot.index} died ({reason}); {held} sample(s) re-queued or recorded; "
                 f"restarting it ({slot.restarts}/{self.opts.max_restarts})")
            self._spawn(slot)
        else:
            slot.stats.retired = True
            _log(f"Ray worker #{slot.index} died ({reason}) after {self.opts.max_restarts} restart(s); retired")

def run_ray(units: Sequence[WorkUnit], settings: WorkerSettings, opts: RayOptions,
            on_record: Callable[[SampleRecord], None], *, thumbs: Optional[Path] = None) -> RayStats:
    """The Ray counterpart of ``executor.run_local``: start workers, run ``units``, stop workers.

    Raises ``ExecutorChoiceError`` at once when the cluster cannot host the workers (e.g.
    ``--gpus 2`` on a cluster without GPUs) and ``RayExecutorError`` when the run cannot go on.
    ``KeyboardInterrupt`` stops the workers; records already passed to ``on_record`` stay.
    """
    if not units:
        return RayStats(workers=[])
    with RayExecutor(settings, opts) as executor:
        return executor.run(units, on_record, thumbs=thumbs)


__all__ = ["ExecutorChoiceError", "RayExecutor", "RayExecutorError", "WorkerSettings", "comparable",
           "connect", "run_ray", "settings_from_config"]
