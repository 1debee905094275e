"""A synthetic demo release in LVBench's on-disk format (see shared/specs/benchmarks.md).

    folder/video_info.meta.jsonl     one JSON object per VIDEO:
        {"key", "type", "video_info": {"duration_minutes", "fps", "resolution": {"width", "height"}},
         "qa": [{"uid", "question", "answer", "question_type", "time_reference"}, ...]}
    folder/videos/<key>.mp4
    folder/SYNTHETIC_DEMO.txt        marker (not part of the official release; loaders ignore it)

``question`` is the question text followed by "\\n(A) …\\n(B) …\\n(C) …\\n(D) …"; ``answer`` is
one letter; ``question_type`` a list of one or two official category names; ``time_reference``
"MM:SS-MM:SS". As in the real release, uids are ints for some videos and strings for others
(loaders normalise with ``str()``). Videos last 60–120 s (the real ones ~68 min).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from vamba_eval.synth._release import stream_rng, write_notice, write_text, youtube_ids
from vamba_eval.synth.questions import LETTERS, Question, format_span, lvbench_groups, pick_questions
from vamba_eval.synth.render import render
from vamba_eval.synth.world import VideoScript, random_script

GENRES: tuple[str, ...] = ("cartoon", "documentary", "live", "selfmedia", "sport", "tv")
META_FILE = "video_info.meta.jsonl"
REPACK_FILE = "data/test-00000-of-00001.parquet"
REPACK_COLUMNS: tuple[str, ...] = (
    "key", "type", "duration_minutes", "fps", "width", "height", "video_path",
    "uid", "question", "answer", "question_type", "time_reference",
)
_STREAM_IDS, _STREAM_SCRIPT, _STREAM_QA = 100, 101, 102
DEMO_VIDEOS = 10  # × 5 questions: 50, enough to tell a model from guessing (±14 points at 95 %)
TRAIN_VIDEOS = 4  # per release of the training data (vamba_eval.train): the bundled checkpoints' data and tokenizer


@dataclass(frozen=True)
class VideoPlan:
    """One video of the demo release: its key, genre and script."""

    key: str
    genre: str
    script: VideoScript


def plan_release(seed: int = 0, n_videos: int = DEMO_VIDEOS) -> list[VideoPlan]:
    """The videos ``write_release(folder, seed, n_videos)`` writes (scripts give captions/answers)."""
    meta = stream_rng(seed, _STREAM_IDS)
    keys = youtube_ids(meta, n_videos)
    genres = [GENRES[int(i) % len(GENRES)] for i in meta.permutation(max(n_videos, len(GENRES)))]
    plans = []
    for v in range(n_videos):
        rng = stream_rng(seed, _STREAM_SCRIPT, v)
        duration = 10 * int(rng.integers(6, 13))
        plans.append(VideoPlan(keys[v], genres[v], random_script(rng, duration)))
    return plans


def question_field(q: Question) -> str:
    """The release's ``question`` string: text then the four "(X) option" lines."""
    return q.text + "".join(f"\n({LETTERS[i]}) {opt}" for i, opt in enumerate(q.options))


def _qa_items(plan: VideoPlan, v: int, seed: int, n: int, first_uid: int) -> list[dict[str, Any]]:
    rng = stream_rng(seed, _STREAM_QA, v)
    questions = pick_questions(plan.script, rng, n, lvbench_groups(rng, n * v))
    items = []
    for j, q in enumerate(questions):
        uid: Union[int, str] = first_uid + j if v % 2 == 0 else str(first_uid + j)
        items.append({"uid": uid, "question": question_field(q), "answer": q.answer,
                      "question_type": list(q.lvbench_types), "time_reference": format_span(*q.span)})
    return items


def write_release(folder: Union[str, Path], seed: int = 0, n_videos: int = DEMO_VIDEOS,
                  questions_per_video: int = 5, width: int = 160, height: int = 96,
                  fps: int = 4) -> Path:
    """Write the demo release under ``folder`` (created if needed); returns ``folder``."""
    folder = Path(folder)
    lines, next_uid = [], 1
    for v, plan in enumerate(plan_release(seed, n_videos)):
        render(plan.script, folder / "videos" / f"{plan.key}.mp4", width, height, fps)
        qa = _qa_items(plan, v, seed, questions_per_video, next_uid)
        next_uid += len(qa)
        record = {
            "key": plan.key,
            "type": plan.genre,
            "video_info": {"duration_minutes": round(plan.script.duration_s / 60, 2), "fps": float(fps),
                           "resolution": {"width": width, "height": height}},
            "qa": qa,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(folder / META_FILE, "\n".join(lines) + "\n")
    write_notice(folder, "LVBench", seed)
    return folder


def _repack_rows(folder: Path) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {c: [] for c in REPACK_COLUMNS}
    with open(folder / META_FILE, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    for rec in records:
        info = rec["video_info"]
        for qa in rec["qa"]:
            row = {"key": rec["key"], "type": rec["type"],
                   "duration_minutes": float(info["duration_minutes"]),
                   "fps": float(info["fps"]), "width": int(info["resolution"]["width"]),
                   "height": int(info["resolution"]["height"]), "video_path": f"videos/{rec['key']}.mp4",
                   "uid": str(qa["uid"]), "question": qa["question"], "answer": qa["answer"],
                   "question_type": list(qa["question_type"]), "time_reference": qa["time_reference"]}
            for c in REPACK_COLUMNS:
                cols[c].append(row[c])
    return cols


def write_parquet_repack(folder: Union[str, Path], path: Optional[Union[str, Path]] = None) -> Path:
    """Write the third-party "one row per question" parquet layout of the release in ``folder``.

    Reads ``folder/video_info.meta.jsonl`` (so it repacks a real release too) and writes
    ``path`` (default ``folder/data/test-00000-of-00001.parquet``) with the columns, in order:

    ========================  ================  ============================================
    key                       string            video key (= ``videos/<key>.mp4`` stem)
    type                      string            genre
    duration_minutes          double            ``video_info.duration_minutes``
    fps                       double            ``video_info.fps``
    width, height             int64             ``video_info.resolution``
    video_path                string            ``videos/<key>.mp4`` (relative to ``folder``)
    uid                       string            ``str(uid)`` (parquet cannot mix int/str)
    question                  string            text + the four "(X) …" lines, as in the jsonl
    answer                    string            gold letter
    question_type             list<string>      categories, as in the jsonl
    time_reference            string            "MM:SS-MM:SS"
    ========================  ================  ============================================

    Needs pyarrow (``pip install pyarrow``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    out = Path(path) if path is not None else folder / REPACK_FILE
    schema = pa.schema([("key", pa.string()), ("type", pa.string()), ("duration_minutes", pa.float64()),
                        ("fps", pa.float64()), ("width", pa.int64()), ("height", pa.int64()),
                        ("video_path", pa.string()), ("uid", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("question_type", pa.list_(pa.string())),
                        ("time_reference", pa.string())])
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(_repack_rows(folder), schema=schema), out)
    return out
