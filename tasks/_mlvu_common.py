"""Release discovery and file reading shared by ``mlvu`` (multiple choice) and ``mlvu_gen``.

Not a task (the leading underscore keeps it out of the registry). Layouts supported:

dev (hub ``MLVU/MVLU``, annotations also in github.com/JUNJIE99/MLVU ``data/``)
    ``<root>/json/<n>_<task>.json`` — one JSON list per task — and ``<root>/video/<n>_<task>/<file>``.
    ``<root>`` may also be the hub snapshot that holds the release in a ``MLVU/`` subfolder. The
    official template (``evaluation/multiple_choice_evaluation/choice_bench.py``) points each task
    at ``video/<task>`` (e.g. ``video/count``) — that folder name is accepted as a fallback.
test (hub ``MLVU/MLVU_Test``)
    ``<root>/test-ground-truth/test_mcq_gt.json`` (multiple choice WITH answers),
    ``test_ssc_gt.json`` (sub-scene captioning) and ``test_vs_gt.json`` (video summary) in the same
    folder; or, without ground truth, ``test_question.json`` at ``<root>``,
    ``<root>/leaderboard/`` or ``<root>/MLVU_Test/leaderboard/`` (the path in the authors'
    ``Evaluation_Test/test_bench.py``). Videos: ``<root>/video/<file>``, else
    ``<root>/MLVU_Test/video/<file>`` (unzip ``video.zip`` first if the download has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from vamba_eval.task_api import DataError
from vamba_eval.taskutil import read_json_file, require_folder

#: dev json stem → the task label of the official template's ``data_list`` (acc_dict keys).
MC_TASKS: dict[str, str] = {
    "1_plotQA": "plotQA",
    "2_needle": "needle",
    "3_ego": "ego",
    "4_count": "count",
    "5_order": "order",
    "6_anomaly_reco": "anomaly_reco",
    "7_topic_reasoning": "topic_reasoning",
}
GEN_TASKS: dict[str, str] = {"8_sub_scene": "sub_scene", "9_summary": "summary"}
#: test-ground-truth file → label (MC labels come from each record's ``question_type``).
TEST_MC_FILE = "test_mcq_gt.json"
TEST_GEN_FILES: dict[str, str] = {"test_ssc_gt.json": "sub_scene", "test_vs_gt.json": "summary"}
TEST_QUESTION_DIRS = (".", "leaderboard", "MLVU_Test/leaderboard")
TEST_VIDEO_DIRS = ("video", "MLVU_Test/video")
LAYOUT = (
    "dev: <root>/json/<n>_<task>.json + <root>/video/<n>_<task>/<file> (hub MLVU/MVLU; a MLVU/ "
    "subfolder is accepted); test: <root>/test-ground-truth/test_mcq_gt.json (or "
    "[leaderboard/]test_question.json without answers) + <root>/video/<file> (hub MLVU/MLVU_Test)"
)


@dataclass(frozen=True)
class Release:
    """A located release: its root and which split it is."""

    root: Path
    split: str  # "dev" | "test"

    def json_path(self, name: str) -> Path:
        return self.root / "json" / f"{name}.json" if self.split == "dev" else self.root / "test-ground-truth" / name


def find_release(folder: Path, title: str) -> Release:
    """Dev if a ``json/`` folder is there (directly or under ``MLVU/``), else test; DataError otherwise."""
    root = require_folder(Path(folder), title, LAYOUT)
    for candidate in (root, root / "MLVU"):
        if (candidate / "json").is_dir():
            return Release(candidate, "dev")
    if (root / "test-ground-truth").is_dir() or unlabelled_test_file(root) is not None:
        return Release(root, "test")
    raise DataError(f"{root}: no MLVU release here (no json/ folder, no test-ground-truth/). Expected layout: {LAYOUT}")


def unlabelled_test_file(root: Path) -> Optional[Path]:
    for sub in TEST_QUESTION_DIRS:
        path = root / sub / "test_question.json"
        if path.is_file():
            return path
    return None


def read_json_list(path: Path) -> list[dict[str, Any]]:
    """A release file: a JSON list of objects (DataError naming the file otherwise)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected layout: {LAYOUT}")
    data = read_json_file(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}. Re-download the file.")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}. Re-download the file.")
    return data


def require_text(rec: dict[str, Any], key: str, path: Path, at: str) -> str:
    """A required non-empty string field."""
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: {at}: field {key!r} must be a non-empty string, found {value!r}. "
                        "Fix the record or re-download the release.")
    return value


def duration_of(rec: dict[str, Any], path: Path, at: str) -> Optional[float]:
    value = rec.get("duration")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {at}: 'duration' must be seconds, found {value!r}. Fix the record.") from None


def video_path(release: Release, video: str, folders: Sequence[str]) -> Path:
    """The first existing ``<root>/<folder>/<video>``; the first candidate when none exists (the run
    then records VideoNotFound for that sample)."""
    candidates = [release.root / folder / video for folder in folders]
    return next((c for c in candidates if c.exists()), candidates[0])


def dev_video_folders(stem: str, label: str) -> tuple[str, ...]:
    return (f"video/{stem}", f"video/{label}")


def where(index: int, rec: dict[str, Any]) -> str:
    """How error messages name a record: its index, and question_id / video when present."""
    bits = [f"record {index}"]
    if rec.get("question_id") is not None:
        bits.append(f"question_id {rec['question_id']}")
    if isinstance(rec.get("video"), str):
        bits.append(f"video {rec['video']}")
    return " ".join(bits[:1]) + (f" ({', '.join(bits[1:])})" if len(bits) > 1 else "")
