"""In-process executor: decode in background threads while the model works on the previous sample."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from vamba_eval.models.base import ModelAdapter
from vamba_eval.records import SampleRecord
from vamba_eval.run.process import WorkUnit, decode, run_unit
from vamba_eval.run.thumbs import write_contact_sheet
from vamba_eval.task_api import TaskDef
from vamba_eval.video import FrameCache, prefetch


class Progress:
    """samples done / total, failures, rate and ETA on one line (a TTY) or every ~10 s (logs)."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.done, self.failed = total, done, 0
        self.start, self.last = time.monotonic(), 0.0
        self.first = done
        stream = stream if stream is not None else sys.stderr  # now, not at import (stderr may be redirected)
        self.enabled, self.stream = enabled, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, record: SampleRecord) -> None:
        self.done += 1
        self.failed += record.error is not None
        now = time.monotonic()
        if self.enabled and (self.tty or now - self.last > 10 or self.done == self.total):
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        new = self.done - self.first
        rate = new / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:5.0f}s" if eta != float("inf") else "  ?"
        line = (f"[vamba-eval] {self.done}/{self.total} samples · {self.failed} failed · "
                f"{rate:.2f}/s · ETA {eta_s}")
        end = "\r" if self.tty and self.done < self.total else "\n"
        print(line, end=end, file=self.stream, flush=True)


def save_thumb(write: Callable[[], Any], thumbs: Path, unit: WorkUnit) -> None:
    """Write a sample's contact sheet; a full disk stops the run (``DiskFullError``, resumable)."""
    from vamba_eval.run.store import disk_full_error, is_disk_full

    try:
        write()
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(thumbs, f"the frame strip of sample {unit.task}/{unit.sample.sample_id}", err) from None
        raise


def run_local(units: Sequence[WorkUnit], tasks: dict[str, TaskDef], model: ModelAdapter,
              on_record: Callable[[SampleRecord], None], *, use_subtitles: bool, scoring: str,
              max_new_tokens: dict[str, int], workers: int = 2, cache: Optional[FrameCache] = None,
              thumbs: Optional[Path] = None, judge: Any = None) -> int:
    """Run ``units`` in order; each finished record goes to ``on_record`` at once. Returns the count."""
    n = 0
    stream = prefetch(units, lambda u: decode(u, cache), workers=workers, depth=2 * workers)
    try:
        for unit, decoded in stream:
            record = run_unit(unit, tasks[unit.task], decoded, model, use_subtitles=use_subtitles,
                              scoring=scoring, max_new_tokens=max_new_tokens[unit.task], judge=judge)
            if thumbs is not None and not isinstance(decoded, BaseException):
                save_thumb(lambda: write_contact_sheet(thumbs, unit.task, unit.sample.sample_id, decoded.frames),
                           thumbs, unit)
            on_record(record)
            n += 1
    finally:
        stream.close()
    return n
