"""A synthetic demo release in MLVU's dev-set on-disk layout (see shared/specs/benchmarks.md).

    folder/json/<n>_<task>.json           one JSON list per task
    folder/video/<n>_<task>/<file>.mp4
    folder/SYNTHETIC_DEMO.txt             marker (not in the official release; loaders ignore it)

Multiple-choice records: {"video", "duration", "question", "candidates" (4 strings), "answer" (the
TEXT of the right candidate), "question_type"}; the synthetic question kinds are mapped onto the
seven MLVU tasks (plot details → plotQA, a label shown in one scene → needle, …). Generation
records: {"video", "duration", "question", "answer" (reference text from ``caption`` /
``scene_caption``), "question_type"} plus "scoring_points" (the reference's sentences) for
sub-scene captioning. Videos last 20–40 s (the real ones 3 min – 2 h). The demo has none of the
real release's data quirks (answers outside the candidates, duplicate candidates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from vamba_eval.synth._release import stream_rng, write_notice, write_text
from vamba_eval.synth.questions import pick_questions
from vamba_eval.synth.render import render
from vamba_eval.synth.world import VideoScript, caption, random_script, scene_caption

#: json stem → (official question_type, video file prefix, synthetic question kinds, in preference order)
DEMO_VIDEOS_PER_TASK = 4  # × 2 questions × 7 multiple-choice tasks: ~56
TRAIN_VIDEOS_PER_TASK = 2  # per release of the training data and of the judge-scored "gen" demo
MC_PLAN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "1_plotQA": ("plotQA", "movie101", ("attr_color", "er_shape", "eu_event")),
    "2_needle": ("findNeedle", "needle", ("kir_digit", "kir_word")),
    "3_ego": ("ego", "ego", ("spatial_right", "er_which_scene", "er_shape")),
    "4_count": ("count", "count", ("count_ticks", "count_shapes", "sum_count")),
    "5_order": ("order", "order", ("sum_sequence", "rea_after")),
    "6_anomaly_reco": ("anomaly_reco", "surveil", ("eu_event",)),
    "7_topic_reasoning": ("topic_reasoning", "AWA", ("rea_more", "er_which_scene", "kir_word")),
}
GEN_PLAN: dict[str, tuple[str, str]] = {"8_sub_scene": ("subPlot", "subPlot_new_all"), "9_summary": ("summary", "summary")}
SUMMARY_QUESTION = "Please summarize this video, including its main content."
FALLBACK_KINDS = ("sum_sequence",)  # applies to every script
_STREAM_SCRIPT, _STREAM_QA = 300, 301


def _script(seed: int, task_index: int, v: int) -> VideoScript:
    rng = stream_rng(seed, _STREAM_SCRIPT, task_index, v)
    return random_script(rng, 10 * int(rng.integers(2, 5)))


def _mc_records(script: VideoScript, seed: int, task_index: int, v: int, kinds: tuple[str, ...],
                qtype: str, video: str, n: int) -> list[dict[str, Any]]:
    rng = stream_rng(seed, _STREAM_QA, task_index, v)
    questions = pick_questions(script, rng, n, [[k] for k in kinds]) or pick_questions(script, rng, 1, [list(FALLBACK_KINDS)])
    return [{"video": video, "duration": float(script.duration_s), "question": q.text, "candidates": list(q.options),
             "answer": q.answer_text, "question_type": qtype} for q in questions]


def _sentences(text: str) -> list[str]:
    return [s.strip().rstrip(".") for s in text.split(". ") if s.strip()]


def _gen_record(script: VideoScript, stem: str, qtype: str, video: str, v: int) -> dict[str, Any]:
    base = {"video": video, "duration": float(script.duration_s), "question_type": qtype}
    if stem == "9_summary":
        return {**base, "question": SUMMARY_QUESTION, "answer": caption(script)}
    scene = script.scenes[v % len(script.scenes)]
    reference = scene_caption(scene)
    question = f"Please describe the scene when the background is {scene.background} and the label {scene.text} is shown."
    return {**base, "question": question, "answer": reference, "scoring_points": _sentences(reference)}


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    write_text(path, json.dumps(records, ensure_ascii=False, indent=2) + "\n")


def write_release(folder: Union[str, Path], seed: int = 0, part: str = "mc", videos_per_task: int = DEMO_VIDEOS_PER_TASK,
                  questions_per_video: int = 2, width: int = 160, height: int = 96, fps: int = 4) -> Path:
    """Write the demo under ``folder``: ``part`` "mc" (the 7 multiple-choice tasks), "gen" (sub-scene
    captioning + summary) or "all"; returns ``folder``."""
    if part not in ("mc", "gen", "all"):
        raise ValueError(f"part must be 'mc', 'gen' or 'all', got {part!r}")
    folder = Path(folder)
    if part in ("mc", "all"):
        for t, (stem, (qtype, prefix, kinds)) in enumerate(MC_PLAN.items()):
            records: list[dict[str, Any]] = []
            for v in range(videos_per_task):
                script, video = _script(seed, t, v), f"{prefix}_{v + 1}.mp4"
                render(script, folder / "video" / stem / video, width, height, fps)
                records += _mc_records(script, seed, t, v, kinds, qtype, video, questions_per_video)
            _write_json(folder / "json" / f"{stem}.json", records)
    if part in ("gen", "all"):
        for t, (stem, (qtype, prefix)) in enumerate(GEN_PLAN.items(), start=len(MC_PLAN)):
            records = []
            for v in range(videos_per_task):
                script, video = _script(seed, t, v), f"{prefix}_{v + 1}.mp4"
                render(script, folder / "video" / stem / video, width, height, fps)
                records.append(_gen_record(script, stem, qtype, video, v))
            _write_json(folder / "json" / f"{stem}.json", records)
    write_notice(folder, "MLVU", seed)
    return folder
