"""The body of one sharded-executor worker, Ray-free (``ray_executor`` wraps it in an actor).

A worker loads the model once and runs units with ``process.run_unit`` — exactly what the
in-process executor runs — so both executors write the same records: equal after dropping the
measurements (``comparable``: ``timings``, ``peak_memory_bytes``). ``process`` may be called
from several threads at once: decoding runs in parallel, the model one unit at a time (a lock),
so the next videos decode while the model works.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from vamba_eval.models.base import ModelSpec
from vamba_eval.records import SampleRecord, dump_json_line
from vamba_eval.run.dispatch import run_with_oom_retry
from vamba_eval.run.process import WorkUnit

IGNORED_FOR_COMPARISON = ("timings", "peak_memory_bytes")


def comparable(record: SampleRecord) -> dict[str, Any]:
    """A record without its measurements: in-process and Ray runs agree on this, field for field."""
    return {k: v for k, v in record.model_dump(mode="json").items() if k not in IGNORED_FOR_COMPARISON}


@dataclass(frozen=True)
class WorkerSettings:
    """What every actor needs to build its model and run units (pickled once per actor)."""

    model_spec: ModelSpec
    max_new_tokens: dict[str, int]
    use_subtitles: bool
    scoring: str
    cache_dir: Optional[str] = None
    thumbs: bool = False
    oom_retry_frames: int = 0
    torch_threads: Optional[int] = None
    model_factory: Optional[Callable[[ModelSpec], Any]] = None  # default: the registry's
    judge: Any = None  # a pickled vamba_eval.judge.Judge (no key inside; each actor reads its env)


def _try_decode(unit: WorkUnit, cache: Any) -> Any:
    from vamba_eval.run.process import decode

    try:
        return decode(unit, cache)
    except Exception as err:  # noqa: BLE001 - recorded by run_unit, as the prefetcher does
        return err


def _contact_sheet(unit: WorkUnit, frames: Any, scratch: str) -> bytes:
    from vamba_eval.run.thumbs import write_contact_sheet

    path = write_contact_sheet(Path(scratch), unit.task, unit.sample.sample_id, frames)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


class EvalWorker:
    """The actor: loads the model once; ``process`` may run in ``depth`` threads at a time —
    decoding in parallel, the model one unit at a time."""

    def __init__(self, settings: WorkerSettings) -> None:
        import torch

        from vamba_eval.registry import get_model_factory, get_task
        from vamba_eval.video import FrameCache

        spec = settings.model_spec
        if spec.device.startswith("cuda:"):  # Ray sets CUDA_VISIBLE_DEVICES: our GPU is cuda:0
            spec = dataclasses.replace(spec, device="cuda")
        if settings.torch_threads and not spec.device.startswith("cuda"):
            torch.set_num_threads(settings.torch_threads)
        self.settings, self.load_error = settings, ""
        try:
            self.model = (settings.model_factory or get_model_factory(spec.name))(spec)
        except Exception as err:  # noqa: BLE001 - reported by ready() as a clear message
            self.load_error = f"{type(err).__name__}: {err}"
        self.tasks = {name: get_task(name) for name in settings.max_new_tokens}
        self.cache = FrameCache(settings.cache_dir) if settings.cache_dir else None
        self.lock = threading.Lock()
        self.scratch = tempfile.mkdtemp(prefix="vamba-thumbs-")

    def ready(self) -> dict[str, Any]:
        """Who this worker is (Ray sets CUDA_VISIBLE_DEVICES to its GPUs), and a load error if any."""
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return {"pid": os.getpid(), "node": socket.gethostname(),
                "gpu_ids": [g for g in gpus.split(",") if g], "error": self.load_error,
                "model": {} if self.load_error else self.model.describe()}

    def pid(self) -> int:
        return os.getpid()

    def process(self, unit: WorkUnit, attempt: int) -> dict[str, Any]:
        from vamba_eval.run.process import run_unit

        s, times = self.settings, {"busy": 0.0, "decode": 0.0}
        first: list[Any] = []
        thumb: list[bytes] = []

        def run(u: WorkUnit) -> SampleRecord:
            t0 = time.perf_counter()
            decoded = first.pop() if first else _try_decode(u, self.cache)
            times["decode"] += time.perf_counter() - t0
            with self.lock:
                t1 = time.perf_counter()
                record = run_unit(u, self.tasks[u.task], decoded, self.model, use_subtitles=s.use_subtitles,
                                  scoring=s.scoring, max_new_tokens=s.max_new_tokens[u.task], judge=s.judge)
                times["busy"] += time.perf_counter() - t1
            if s.thumbs and not isinstance(decoded, BaseException):
                thumb[:] = [_contact_sheet(u, decoded.frames, self.scratch)]
            return record

        t0 = time.perf_counter()
        first.append(_try_decode(unit, self.cache))  # outside the lock: overlaps the model
        times["decode"] += time.perf_counter() - t0
        record = run_with_oom_retry(unit, run, s.oom_retry_frames, on_oom=_free_cuda_cache)
        if attempt != 1:
            record = record.model_copy(update={"attempt": attempt})
        return {"record": dump_json_line(record), "busy_s": times["busy"], "decode_s": times["decode"],
                "thumb": thumb[0] if thumb else None}


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def settings_from_config(cfg: Any, plans: Sequence[Any], cache_dir: Optional[Path], judge: Any = None) -> WorkerSettings:
    """WorkerSettings for a RunConfig and its TaskPlans (the model spec as ``api.evaluate`` builds it)."""
    spec = ModelSpec(cfg.model, cfg.model_path, cfg.device, cfg.dtype, cfg.ssm_backend, cfg.seed,
                     cfg.chunk_frames, cfg.compile)
    return WorkerSettings(model_spec=spec, max_new_tokens={p.task.name: p.max_new_tokens for p in plans},
                          use_subtitles=cfg.subtitles, scoring=cfg.scoring,
                          cache_dir=str(cache_dir) if cache_dir else None, thumbs=True,
                          oom_retry_frames=int(getattr(cfg, "oom_retry_frames", 0) or 0), judge=judge)
