"""From a RunConfig to work: resolve each task's data (a release folder or the built-in demo),
load its samples, fix the frame spec, and order the units by estimated cost (longest first)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vamba_eval.registry import get_task
from vamba_eval.run.config import RunConfig
from vamba_eval.run.process import WorkUnit
from vamba_eval.synth import DEMO_NOTICE
from vamba_eval.task_api import DataError, TaskDef, load_error, recording_bad_records
from vamba_eval.types import Sample
from vamba_eval.video import FrameSpec
from vamba_eval.video.paths import trusted_roots

DEMO_VERSION = "v2"  # v2: larger demo splits (40–56 questions each)
DEMO_MAX_EDGE = 224  # demo videos are small; keep their size (rounded to 28) instead of upscaling
FORMAT_NAMES = {"lvbench": "LVBench", "videomme": "Video-MME", "mlvu": "MLVU", "mlvu_gen": "MLVU",
                "longvideobench": "LongVideoBench", "longvideobench_test": "LongVideoBench", "mvbench": "MVBench",
                "gveval": "G-VEval"}


@dataclass(frozen=True)
class TaskPlan:
    task: TaskDef
    folder: Path
    samples: tuple[Sample, ...]
    spec: FrameSpec
    synthetic: bool
    data: dict[str, Any] = field(default_factory=dict)  # recorded: path, revision, notice …
    max_new_tokens: int = 16


def cache_root() -> Path:
    return Path(os.environ.get("VAMBA_EVAL_CACHE", Path.home() / ".cache" / "vamba-eval")).expanduser()


def demo_folder(task: TaskDef, seed: int, root: Optional[Path] = None) -> Path:
    """The task's synthetic demo release, written once per (task, seed, version) and reused."""
    folder = (root or cache_root() / "demo") / f"{task.name}-seed{seed}-{DEMO_VERSION}"
    if (folder / ".complete").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    task.write_demo(tmp, seed)
    (tmp / ".complete").write_text("ok\n")
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def annotation_fingerprint(folder: Path) -> str:
    """A revision for a local release: hash of its annotation files (videos excluded)."""
    h = hashlib.sha256()
    inside = trusted_roots(folder)
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".json", ".jsonl", ".parquet", ".srt") and path.is_file():
            real = os.path.realpath(path)
            if not any(os.path.commonpath([real, r]) == r for r in inside):
                continue  # a link leading out of the release: not read
            h.update(str(path.relative_to(folder)).encode())
            with open(real, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


def frame_spec(task: TaskDef, cfg: RunConfig, synthetic: bool) -> FrameSpec:
    d = task.frames
    num = cfg.frames or (d.demo_num_frames if synthetic else d.num_frames)
    max_edge = cfg.max_edge or (DEMO_MAX_EDGE if synthetic else d.max_edge)
    min_edge = cfg.min_edge if cfg.min_edge is not None else (None if synthetic else d.min_edge)
    return FrameSpec(num_frames=num, sampler=d.sampler, max_edge=max_edge, min_edge=min_edge)


def resolve_location(task: TaskDef, location: str) -> Path:
    """A folder, or ``hf`` (the task's pinned hub id/revision) / ``hf:ID[@REV]`` from the local HF cache."""
    if location != "hf" and not location.startswith("hf:"):
        return Path(location).expanduser()
    from vamba_eval.taskutil import resolve_hub_folder

    hub_id, revision = task.hub_id, task.hub_revision
    if location.startswith("hf:"):
        hub_id, _, rev = location[3:].partition("@")
        revision = rev or None
    if not hub_id:
        raise DataError(f"{task.name}: no hub id known; use --data-dir {task.name}=hf:ORG/NAME@REVISION")
    return resolve_hub_folder(hub_id, revision)


def plan_task(name: str, cfg: RunConfig) -> TaskPlan:
    task = get_task(name)
    location = cfg.data_dir_for(name)
    synthetic = location is None
    folder = demo_folder(task, cfg.seed) if location is None else resolve_location(task, location)
    with recording_bad_records():  # a bad record becomes a recorded sample error (task_api)
        samples = task.load(folder)
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    from vamba_eval.taskutil import snapshot_revision

    revs = {str(s.meta.get("release_revision")) for s in samples if s.meta.get("release_revision")}
    revs |= {snapshot_revision(folder)} - {None}
    data = {"path": str(folder), "synthetic": synthetic,
            "revision": revs.pop() if len(revs) == 1 else annotation_fingerprint(folder),
            "n_samples": len(samples), "limit": cfg.limit,
            "n_bad_records": sum(load_error(s) is not None for s in samples)}
    if synthetic:
        data["notice"] = DEMO_NOTICE.format(fmt=FORMAT_NAMES.get(name, task.title or name))
    return TaskPlan(task, folder, tuple(samples), frame_spec(task, cfg, synthetic), synthetic, data,
                    cfg.max_new_tokens or task.max_new_tokens)


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # e.g. Video-MME's "short" | "medium" | "long"
        return 0.0


def work_units(plans: list[TaskPlan], done: set[tuple[str, str]]) -> list[WorkUnit]:
    """Pending units, longest (most frames × pixels, then longest video) first; stable order otherwise."""
    units = []
    for plan in plans:
        px = (plan.spec.max_edge or 224) ** 2
        for s in plan.samples:
            if (plan.task.name, s.sample_id) in done:
                continue
            cost = plan.spec.num_frames * px + _seconds(s.meta.get("duration_s", s.meta.get("duration")))
            units.append(WorkUnit(plan.task.name, s, plan.spec, str(plan.folder), cost))
    return sorted(units, key=lambda u: -u.cost)
