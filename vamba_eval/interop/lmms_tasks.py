"""lmms-eval task names → vamba-eval tasks.

lmms-eval names its video tasks after the benchmark and a variant (``videomme_w_subtitle``,
``mlvu_dev``, ``longvideobench_val_v``, one ``mvbench_<subtask>`` per MVBench task). A name is
resolved, in order, by: an explicit ``--task LMMS=OURS`` override; the table below; the metric
name in the task's config (``metric_list``), which survives renamed copies of a task YAML
(``include:`` + another ``task:`` name). Unknown names resolve to None (the caller says how to map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

MVBENCH_PREFIX = "mvbench_"


@dataclass(frozen=True)
class LmmsTask:
    """One lmms-eval task seen as a vamba-eval task."""

    lmms_name: str
    ours: str  # vamba-eval task name (tasks/<ours>.py)
    subtitles: bool = False  # the lmms-eval variant puts subtitles in the prompt
    subtask: Optional[str] = None  # MVBench: the subtask (json/<subtask>.json)


# name → (vamba-eval task, subtitles)
KNOWN: dict[str, tuple[str, bool]] = {
    "videomme": ("videomme", False),
    "videomme_w_subtitle": ("videomme", True),
    "videomme_long": ("videomme", False),
    "videomme_long_w_subtitle": ("videomme", True),
    "lvbench": ("lvbench", False),
    "mlvu_dev": ("mlvu", False),
    "mlvu_test": ("mlvu", False),
    "longvideobench_val_v": ("longvideobench", False),
    "longvideobench_val_i": ("longvideobench", True),
    "longvideobench_test_v": ("longvideobench_test", False),
    "longvideobench_test_i": ("longvideobench_test", True),
}

# metric name (lmms-eval ``process_results`` key) → vamba-eval task
METRICS: dict[str, str] = {
    "videomme_perception_score": "videomme",
    "lvbench_score": "lvbench",
    "mlvu_percetion_score": "mlvu",  # sic: lmms-eval's spelling
    "mlvu_perception_score": "mlvu",
    "mvbench_accuracy": "mvbench",
    "lvb_acc": "longvideobench",
}


def _metric_names(config: Mapping[str, Any]) -> list[str]:
    out = []
    for entry in config.get("metric_list") or []:
        if isinstance(entry, Mapping) and entry.get("metric"):
            out.append(str(entry["metric"]))
    return out


def mvbench_subtask(name: str, config: Mapping[str, Any]) -> Optional[str]:
    """The MVBench subtask (json stem) an lmms-eval task reads: its dataset_name, else the ``sub_task``
    its doc_to_visual uses, else the name after ``mvbench_``."""
    kwargs = (config.get("lmms_eval_specific_kwargs") or {}).get("default") or {}
    guess = name[len(MVBENCH_PREFIX):] if name.startswith(MVBENCH_PREFIX) else None
    return str(config.get("dataset_name") or kwargs.get("sub_task") or guess or "") or None


def _from_config(name: str, config: Mapping[str, Any]) -> Optional[LmmsTask]:
    for metric in _metric_names(config):
        ours = METRICS.get(metric)
        if ours is None:
            continue
        if ours == "mvbench":
            return LmmsTask(name, "mvbench", subtask=mvbench_subtask(name, config))
        if ours == "longvideobench" and str(config.get("test_split", "")).startswith("test"):
            ours = "longvideobench_test"
        subtitles = "subtitle" in name or "subtitle" in str(config.get("doc_to_text", ""))
        return LmmsTask(name, ours, subtitles=subtitles)
    return None


def resolve(name: str, config: Optional[Mapping[str, Any]] = None,
            overrides: Optional[Mapping[str, str]] = None) -> Optional[LmmsTask]:
    """The vamba-eval task an lmms-eval task is, or None when it is not one of ours."""
    config = config or {}
    if overrides and name in overrides:
        ours = overrides[name]
        subtask = mvbench_subtask(name, config) if ours == "mvbench" else None
        return LmmsTask(name, ours, subtitles="subtitle" in name, subtask=subtask)
    if name in KNOWN:
        ours, subtitles = KNOWN[name]
        return LmmsTask(name, ours, subtitles=subtitles)
    if name.startswith(MVBENCH_PREFIX) and name != "mvbench":
        return LmmsTask(name, "mvbench", subtask=mvbench_subtask(name, config))
    return _from_config(name, config)


def frame_defaults(lmms_name: str) -> Optional[tuple[int, str, Optional[int], Optional[int]]]:
    """(frames, sampler, max_edge, min_edge) of the matching vamba-eval task's paper setting, if any."""
    task = resolve(lmms_name)
    if task is None:
        return None
    from vamba_eval.registry import get_task

    d = get_task(task.ours).frames
    return d.num_frames, d.sampler, d.max_edge, d.min_edge


__all__ = ["LmmsTask", "KNOWN", "METRICS", "resolve", "frame_defaults"]
