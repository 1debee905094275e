"""A synthetic demo release in LongVideoBench's on-disk format (see shared/specs/benchmarks.md).

    folder/lvb_val.json                        JSON list, 2 labelled questions per video
    folder/lvb_test_wo_gt.json                 JSON list, 1 question per video, no correct_choice
    folder/validation-00000-of-00001.parquet   parquet copies: option0..option4 ("N/A" when absent),
    folder/test-00000-of-00001.parquet         correct_choice -1 in test
    folder/videos/<video_id>.mp4
    folder/subtitles/<video_id>_en.json        even videos {"timestamp": [s, e], "text"} (last end
                                               null), odd videos {"start", "end", "line"} "HH:MM:SS.fff"
    folder/SYNTHETIC_DEMO.txt                  marker (not in the official release)

Records carry every release field (video_id, question, question_wo_referring_query, candidates,
correct_choice, position, topic_category, question_category, level, id, video_path, subtitle_path,
duration_group, starting_timestamp_for_subtitles, duration, view_count). Durations are scaled down
(12–60 s) but keep the four duration_group labels; one question in three has a fifth candidate
("none of the above"), and one in six has its answer moved to E. The third video's subtitles are
timed on a clock 5 s ahead (starting_timestamp_for_subtitles = 5.0), as for clips cut from a longer
video. Cues say what is on screen (``synth.videomme.subtitle_cues``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import numpy as np

from vamba_eval.synth._release import stream_rng, write_notice, write_text, youtube_ids
from vamba_eval.synth.questions import LETTERS, Question, lvbench_groups, pick_questions
from vamba_eval.synth.render import render
from vamba_eval.synth.videomme import subtitle_cues
from vamba_eval.synth.world import VideoScript, random_script

DURATIONS: tuple[tuple[int, int], ...] = ((15, 12), (60, 30), (600, 45), (3600, 60))  # (group label, seconds)
KIND_CATEGORY: dict[str, str] = {
    "kir_digit": "S2O", "kir_word": "S2O", "count_shapes": "S2O", "er_shape": "S2O", "spatial_right": "S2O",
    "eu_event": "S2E", "count_ticks": "S2E", "tg_scene": "S2E", "tg_shape": "S2E", "attr_color": "S2A",
    "er_which_scene": "O2E", "sum_count": "SSS", "sum_sequence": "SSS", "rea_after": "SSS", "rea_more": "SOS",
}  # fmt: skip
L2_CATEGORIES = frozenset({"E3E", "O3O", "SSS", "SOS", "SAA", "T3E", "T3O", "TOS", "TAA"})
TOPIC = "SYN-Synthetic-Shapes"  # not an official topic: the demo's own label
EXTRA_OPTION = "none of the above"
SHIFTED_VIDEO, SHIFT_S = 2, 5.0
VAL_PER_VIDEO, TEST_PER_VIDEO = 2, 1
DEMO_VIDEOS = 20  # × 2 labelled questions: 40 in the validation split (+ 20 unlabelled test questions)
TRAIN_VIDEOS = 4  # per release of the training data (vamba_eval.train): the bundled checkpoints' data and tokenizer
_STREAM_IDS, _STREAM_SCRIPT, _STREAM_QA = 300, 301, 302


def _hms(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def subtitle_json(script: VideoScript, whisper_form: bool, shift: float) -> list[dict[str, Any]]:
    """The subtitle file's cues, on a clock ``shift`` seconds ahead of the video's."""
    cues = subtitle_cues(script)
    if whisper_form:
        out: list[dict[str, Any]] = [{"timestamp": [a + shift, b + shift], "text": f" {t}"} for a, b, t in cues]
        if out:
            out[-1]["timestamp"][1] = None  # Whisper leaves the last end open: the video's duration
        return out
    return [{"start": _hms(a + shift), "end": _hms(b + shift), "line": t} for a, b, t in cues]


def _candidates(q: Question, g: int, rng: np.random.Generator) -> tuple[list[str], int]:
    """(candidates, correct_choice): 4 options, or 5 for one item in three (E correct for one in six)."""
    options, gold = list(q.options), LETTERS.index(q.answer)
    if g % 3 != 1:
        return options, gold
    if g % 6 == 1:
        return [o for i, o in enumerate(options) if i != gold] + [EXTRA_OPTION, options[gold]], 4
    pos = int(rng.integers(5))
    options.insert(pos, EXTRA_OPTION)
    return options, gold + (1 if pos <= gold else 0)


def _record(vid: str, k: int, q: Question, v: int, g: int, rng: np.random.Generator, labelled: bool) -> dict[str, Any]:
    group, seconds = DURATIONS[v % len(DURATIONS)]
    candidates, gold = _candidates(q, g, rng)
    category = KIND_CATEGORY[q.kind]
    rec: dict[str, Any] = {
        "video_id": vid, "question": q.text, "question_wo_referring_query": q.text, "candidates": candidates,
        "correct_choice": gold, "position": [int((q.span[0] + q.span[1]) // 2)], "topic_category": TOPIC,
        "question_category": category, "level": "L2-Relation" if category in L2_CATEGORIES else "L1-Perception",
        "id": f"{vid}_{k}", "video_path": f"{vid}.mp4", "subtitle_path": f"{vid}_en.json", "duration_group": group,
        "starting_timestamp_for_subtitles": SHIFT_S if v == SHIFTED_VIDEO else 0.0, "duration": float(seconds),
        "view_count": int(rng.integers(100, 100_000)),
    }  # fmt: skip
    if not labelled:
        rec.pop("correct_choice")
    return rec


def _parquet(records: list[dict[str, Any]], path: Path, labelled: bool) -> None:
    import pandas as pd

    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k != "candidates"}
        row.update({f"option{i}": (rec["candidates"][i] if i < len(rec["candidates"]) else "N/A") for i in range(5)})
        row["correct_choice"] = rec["correct_choice"] if labelled else -1
        rows.append(row)
    pd.DataFrame(rows).to_parquet(path, index=False)


def write_release(folder: Union[str, Path], seed: int = 0, n_videos: int = DEMO_VIDEOS, width: int = 160,
                  height: int = 96, fps: int = 4) -> Path:
    """Write the demo release under ``folder`` (created if needed); returns ``folder``."""
    folder = Path(folder)
    ids = youtube_ids(stream_rng(seed, _STREAM_IDS), n_videos)
    val: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for v, vid in enumerate(ids):
        script = random_script(stream_rng(seed, _STREAM_SCRIPT, v), DURATIONS[v % len(DURATIONS)][1])
        render(script, folder / "videos" / f"{vid}.mp4", width, height, fps)
        shift = SHIFT_S if v == SHIFTED_VIDEO else 0.0
        write_text(folder / "subtitles" / f"{vid}_en.json",
                   json.dumps(subtitle_json(script, v % 2 == 0, shift), ensure_ascii=False, indent=1) + "\n")
        rng = stream_rng(seed, _STREAM_QA, v)
        n = VAL_PER_VIDEO + TEST_PER_VIDEO
        questions = pick_questions(script, rng, n, lvbench_groups(rng, n * v))
        if len(questions) < n:
            raise RuntimeError(f"video {vid}: only {len(questions)} questions could be generated")
        for k, q in enumerate(questions):
            labelled = k < VAL_PER_VIDEO
            (val if labelled else test).append(_record(vid, k, q, v, v * n + k, rng, labelled))
    for name, records in (("lvb_val.json", val), ("lvb_test_wo_gt.json", test)):
        write_text(folder / name, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    _parquet(val, folder / "validation-00000-of-00001.parquet", labelled=True)
    _parquet(test, folder / "test-00000-of-00001.parquet", labelled=False)
    write_notice(folder, "LongVideoBench", seed)
    return folder
