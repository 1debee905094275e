"""A synthetic demo release in Video-MME's on-disk format (see shared/specs/benchmarks.md).

    folder/videomme/test-00000-of-00001.parquet   3 rows per video, columns in this order:
        video_id ("001"), duration (short|medium|long), domain, sub_category, url, videoID,
        question_id ("001-1"), task_type, question, options (4 strings "A. …"), answer (letter)
    folder/data/<videoID>.mp4
    folder/subtitle/<videoID>.srt                 every "long" video, about half of the others
    folder/SYNTHETIC_DEMO.txt                     marker (not in the official release)

Durations are scaled down (short 20 s, medium 45 s, long 90 s) but keep their labels; domains
and sub-categories are the official ones; subtitles are real SRT whose cues say what is on
screen (scene changes, shape events, counter ticks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from vamba_eval.synth._release import stream_rng, write_notice, write_text, youtube_ids
from vamba_eval.synth.questions import LETTERS, pick_questions, videomme_groups
from vamba_eval.synth.render import render
from vamba_eval.synth.world import VideoScript, event_phrase, random_script

DOMAINS: dict[str, tuple[str, ...]] = {
    "Knowledge": ("Humanity & History", "Literature & Art", "Biology & Medicine", "Finance & Commerce",
                  "Astronomy", "Geography", "Law", "Life Tip", "Technology"),
    "Film & Television": ("Animation", "Movie & TV Show", "Documentary", "News Report"),
    "Sports Competition": ("Esports", "Basketball", "Football", "Athletics", "Other Sports"),
    "Artistic Performance": ("Stage Play", "Magic Show", "Variety Show", "Acrobatics"),
    "Life Record": ("Handicraft", "Food", "Fashion", "Daily Life", "Travel", "Pet & Animal", "Exercise"),
    "Multilingual": ("Multilingual",),
}
DURATIONS: dict[str, int] = {"short": 20, "medium": 45, "long": 90}
PARQUET_FILE = "videomme/test-00000-of-00001.parquet"
COLUMNS: tuple[str, ...] = ("video_id", "duration", "domain", "sub_category", "url", "videoID",
                            "question_id", "task_type", "question", "options", "answer")
QUESTIONS_PER_VIDEO = 3
DEMO_VIDEOS = 15  # × 3 questions: 45 (5 short, 5 medium, 5 long videos)
TRAIN_VIDEOS = 6  # per release of the training data (vamba_eval.train): the bundled checkpoints' data and tokenizer
_STREAM_IDS, _STREAM_SCRIPT, _STREAM_QA = 200, 201, 202


@dataclass(frozen=True)
class VideoPlan:
    """One video of the demo release."""

    video_id: str
    video_key: str
    duration: str
    domain: str
    sub_category: str
    has_subtitles: bool
    script: VideoScript


def plan_release(seed: int = 0, n_videos: int = DEMO_VIDEOS) -> list[VideoPlan]:
    """The videos ``write_release(folder, seed, n_videos)`` writes, with their scripts."""
    meta = stream_rng(seed, _STREAM_IDS)
    keys = youtube_ids(meta, n_videos)
    names = list(DOMAINS)
    domains = [names[int(i) % len(names)] for i in meta.permutation(max(n_videos, len(names)))]
    plans = []
    for v in range(n_videos):
        rng = stream_rng(seed, _STREAM_SCRIPT, v)
        label = ("short", "medium", "long")[v % 3]
        subs = DOMAINS[domains[v]]
        sub = subs[int(rng.integers(len(subs)))]
        has_subs = label == "long" or bool(rng.random() < 0.5)
        plans.append(VideoPlan(f"{v + 1:03d}", keys[v], label, domains[v], sub, has_subs,
                               random_script(rng, DURATIONS[label])))
    return plans


def srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm``."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def subtitle_cues(script: VideoScript) -> list[tuple[float, float, str]]:
    """(start, end, text) cues describing the screen, ordered and non-overlapping."""
    raw: dict[float, list[str]] = {}
    for scene in script.scenes:
        label = f"the number {scene.text}" if scene.text_is_digit else f"the word {scene.text}"
        raw.setdefault(float(scene.start_s), []).append(
            f"Now the background is {scene.background} and {label} is shown.")
        for ev in scene.events:
            raw.setdefault(float(ev.time_s), []).append(event_phrase(scene, ev).capitalize() + ".")
    starts = sorted(raw)
    cues = []
    for k, start in enumerate(starts):
        limit = starts[k + 1] if k + 1 < len(starts) else float(script.duration_s)
        end = min(start + 3.0, limit)
        if end > start:
            cues.append((start, end, " ".join(raw[start])))
    return cues


def srt_text(script: VideoScript) -> str:
    """The whole SRT file: index, "HH:MM:SS,mmm --> HH:MM:SS,mmm", text, blank line."""
    blocks = [f"{i}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n"
              for i, (a, b, text) in enumerate(subtitle_cues(script), start=1)]
    return "\n".join(blocks)


def _rows(plan: VideoPlan, v: int, seed: int) -> list[dict[str, Any]]:
    rng = stream_rng(seed, _STREAM_QA, v)
    groups = videomme_groups(rng, QUESTIONS_PER_VIDEO * v)
    questions = pick_questions(plan.script, rng, QUESTIONS_PER_VIDEO, groups)
    if len(questions) < QUESTIONS_PER_VIDEO:
        raise RuntimeError(f"video {plan.video_id}: only {len(questions)} questions could be generated")
    return [{"video_id": plan.video_id, "duration": plan.duration, "domain": plan.domain,
             "sub_category": plan.sub_category, "url": f"https://www.youtube.com/watch?v={plan.video_key}",
             "videoID": plan.video_key, "question_id": f"{plan.video_id}-{j + 1}", "task_type": q.task_type,
             "question": q.text, "options": [f"{LETTERS[i]}. {o}" for i, o in enumerate(q.options)],
             "answer": q.answer} for j, q in enumerate(questions)]


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [(c, pa.list_(pa.string()) if c == "options" else pa.string()) for c in COLUMNS]
    table = pa.table({c: [r[c] for r in rows] for c in COLUMNS}, schema=pa.schema(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_release(folder: Union[str, Path], seed: int = 0, n_videos: int = DEMO_VIDEOS, width: int = 160,
                  height: int = 96, fps: int = 4) -> Path:
    """Write the demo release under ``folder`` (created if needed); returns ``folder``.

    Needs pyarrow for the parquet file (``pip install pyarrow``).
    """
    folder = Path(folder)
    rows: list[dict[str, Any]] = []
    for v, plan in enumerate(plan_release(seed, n_videos)):
        render(plan.script, folder / "data" / f"{plan.video_key}.mp4", width, height, fps)
        if plan.has_subtitles:
            write_text(folder / "subtitle" / f"{plan.video_key}.srt", srt_text(plan.script))
        rows.extend(_rows(plan, v, seed))
    _write_parquet(rows, folder / PARQUET_FILE)
    write_notice(folder, "Video-MME", seed)
    return folder
