"""Makespan of a sharded run, simulated: our dispatcher (dynamic, longest first) vs strided ranks.

lmms-eval and VLMEvalKit give rank r the samples r, r+N, r+2N … of the dataset order; a GPU that
draws the long videos finishes hours after the others. ``simulate_dispatcher`` drives the real
``dispatch.Dispatcher`` with per-sample durations (each worker runs its held units one at a time);
``simulate_strided`` is the static split. Both return the time the last worker finishes.
"""

from __future__ import annotations

import heapq
from typing import Optional, Sequence

from vamba_eval.run.dispatch import Dispatcher
from vamba_eval.run.process import WorkUnit


def simulate_strided(durations: Sequence[float], workers: int, speeds: Optional[Sequence[float]] = None) -> float:
    """Rank r runs samples r, r + workers, …: makespan = the slowest rank's total (time / speed)."""
    speeds = speeds or [1.0] * workers
    return max(sum(durations[r::workers]) / speeds[r] for r in range(workers))


def simulate_dispatcher(units: Sequence[WorkUnit], durations: dict[tuple[str, str], float], workers: int,
                        depth: int = 2, speeds: Optional[Sequence[float]] = None) -> float:
    """Event simulation of the Ray executor's queue: a worker asks for work whenever it finishes one;
    worker w runs ``speeds[w]`` times as fast as nominal (a slower or shared GPU is < 1)."""
    speeds = speeds or [1.0] * workers
    d = Dispatcher(units, depth=depth)
    queues: dict[int, list] = {w: [] for w in range(workers)}
    for w in range(workers):
        d.add_worker(w)
    busy_until = {w: 0.0 for w in range(workers)}
    events: list[tuple[float, int]] = []

    def feed(now: float) -> None:
        for wid, job in d.assign():
            queues[wid].append(job)
            if len(queues[wid]) == 1:  # idle worker: starts at once
                busy_until[wid] = now + durations[job.key] / speeds[wid]
                heapq.heappush(events, (busy_until[wid], wid))

    feed(0.0)
    end = 0.0
    while events:
        now, wid = heapq.heappop(events)
        job = queues[wid].pop(0)
        d.finished(wid, job.key)
        end = max(end, now)
        if queues[wid]:  # next held unit
            busy_until[wid] = now + durations[queues[wid][0].key] / speeds[wid]
            heapq.heappush(events, (busy_until[wid], wid))
        feed(now)
    return end


def lower_bound(durations: Sequence[float], workers: int) -> float:
    """No schedule beats max(longest sample, total / workers)."""
    return max(max(durations), sum(durations) / workers)
