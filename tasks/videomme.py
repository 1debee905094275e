"""TASK CARD — Video-MME (lmms-lab/Video-MME): 900 videos (11 s – 1 h) × 3 questions = 2,700.

Release (hub ``lmms-lab/Video-MME``; benchmark repo github.com/BradyFU/Video-MME)
    ``<root>/videomme/test-00000-of-00001.parquet`` (every ``*.parquet`` under ``videomme/`` is read),
    split ``test``. Columns (all required; a missing one is a DataError naming it and the file):
    video_id ("001"), duration (short|medium|long), domain, sub_category, url, videoID (YouTube id =
    file stem), question_id ("001-1"), task_type, question, options (4 strings already prefixed
    "A. …"), answer (letter). Videos ``<root>/data/<videoID>.mp4`` (``.MP4``/``.mkv`` accepted, as
    lmms-eval does); subtitles ``<root>/subtitle/<videoID>.srt`` (optional per video; 744 files, all
    long videos have one). Revisions differ in columns/rows: when the folder is a hub-cache snapshot
    its commit is recorded in every sample's ``meta["release_revision"]``.
    Sample: ``sample_id`` = question_id; ``options`` = the released "A. …" lines verbatim;
    ``categories`` = duration, domain, sub_category, task_type; ``subtitles`` = path of the .srt;
    ``meta`` = video_id, videoID, duration, url.

Prompt (README "Evaluation Pipeline", verbatim)
    "Select the best answer to the following multiple-choice question based on the video. Respond
    with only the letter (A, B, C, or D) of the correct option." / question / the four option lines /
    "The best answer is:". With ``PromptContext.use_subtitles``, first "This video's subtitles are
    listed below:" then ONLY the cues showing at the sampled frames' timestamps
    (``PromptContext.frame_times``; cue start <= t < end), each cue once, in time order (paper: the
    subtitles corresponding to the sampled frames). No cue selected / no .srt → the block is left
    out (lmms-eval writes "No subtitles available").

Extraction (BradyFU/Video-MME ``evaluation/eval_your_results.py`` @4e7566d, ``extract_characters_regex``)
    strip; delete every occurrence of each prefix in the list — which, through two MISSING COMMAS,
    holds the merged entries "The best option isThe correct option is" and "Best answer:Best option:",
    so "The best option is", "The correct option is", "Best answer:" and "Best option:" are never
    removed on their own; if more than 10 words and no A–D → ""; else the FIRST uppercase A–D
    anywhere ("Based on the video, the answer is C" → "B"; "Best answer: C" → "B"). Correct iff it
    equals the gold letter.
    official: an empty extraction is EXCLUDED from the denominator (``if extration != "":`` guards the
        ``answered`` counter) → ``correct=None``, unparsed.
    lmms-eval (``lmms_eval/tasks/videomme/utils.py``, same at 86a293d and 0696573): same extraction
        (same merged prefixes), but ``videomme_aggregate_results`` counts every question in
        ``answered`` and compares ``pred_answer == answer`` → an empty extraction is wrong.

Aggregation
    Overall = Σcorrect / Σanswered (micro), ×100; per duration, domain (``video_category``),
    sub_category, task_type. The official script prints one decimal (``f"{x: .1f}"``); ``value`` keeps
    full precision and ``notes`` carries the official one-decimal overall and per-duration strings.
    The official results file is a JSON list per video with nested questions and a ``response``
    field (its committed template has trailing commas); ``results_file`` writes it as valid JSON.

Known differences from lmms-eval: empty extractions (above); its no-subtitle prompt says "based on
the video and the subtitles", some versions put ``str(options)`` (a Python list) in the prompt, and
it picks subtitles by frame index of its own uniform sampling.

Vamba paper setting: 512 frames, longest edge 480, shortest edge 256, no subtitles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from vamba_eval.aggregate import aggregate_accuracy
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef, guard_record
from vamba_eval.taskutil import (
    as_str_list,
    check_letter,
    check_mode,
    cues_at,
    id_field,
    load_srt,
    read_parquet,
    record_id,
    require_fields,
    require_folder,
    snapshot_revision,
    text_field,
    unique_ids,
)
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

NAME = "videomme"
TITLE = "Video-MME"
LETTERS = "ABCD"
COLUMNS = (
    "video_id", "duration", "domain", "sub_category", "url", "videoID",
    "question_id", "task_type", "question", "options", "answer",
)  # fmt: skip
LAYOUT = (
    "<root>/videomme/test-00000-of-00001.parquet (hub lmms-lab/Video-MME), videos "
    "<root>/data/<videoID>.mp4, optional subtitles <root>/subtitle/<videoID>.srt"
)
BREAKDOWNS = ("duration", "domain", "sub_category", "task_type")
INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
SUBTITLE_HEADER = "This video's subtitles are listed below:"
ANSWER_CUE = "The best answer is:"
# eval_your_results.py: the list as written, INCLUDING its two missing commas — Python joins the
# adjacent literals, so these are 6 entries, not 8.
ANSWER_PREFIXES = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is" "The correct option is",  # noqa: ISC001 — the official bug, kept on purpose
    "Best answer:" "Best option:",  # noqa: ISC001
]
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv")  # lmms-eval videomme_doc_to_visual fallbacks


# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    """Samples of a local Video-MME release folder (hub snapshot layout)."""
    root = require_folder(Path(folder), TITLE, LAYOUT)
    parquets = sorted((root / "videomme").glob("*.parquet"))
    if not parquets:
        raise DataError(f"{root / 'videomme'}: no parquet file (want test-00000-of-00001.parquet). Expected layout: {LAYOUT}")
    revision = snapshot_revision(root)
    return unique_ids((pair for path in parquets for pair in _read(root, path, revision)), "question_id")


def _read(root: Path, path: Path, revision: Optional[str]) -> Iterator[tuple[Sample, str]]:
    for i, rec in enumerate(read_parquet(path, COLUMNS).to_dict(orient="records")):
        qid = record_id(rec.get("question_id"))
        where = f"row {i}" + (f" (question_id {qid})" if qid else "")
        sample = guard_record(lambda: _sample(root, rec, path, where, revision), task=NAME,
                              sample_id=qid or f"row{i}", source=path)
        yield sample, f"{path}: {where}"


def _sample(root: Path, rec: dict[str, Any], path: Path, where: str, revision: Optional[str]) -> Sample:
    require_fields(rec, COLUMNS, path, where)
    options = as_str_list(rec["options"])
    if options is None or len(options) != len(LETTERS):
        found = f"{len(options)}" if options is not None else f"a {type(rec['options']).__name__}"
        raise DataError(f"{path}: {where}: 'options' must be a list of 4 strings, found {found}. Re-download the release.")
    for letter, option in zip(LETTERS, options):
        if not option.startswith(f"{letter}."):
            raise DataError(f"{path}: {where}: option {option!r} does not start with '{letter}.'. Use the lmms-lab/Video-MME release.")
    vid = id_field(rec, "videoID", path, where)
    srt = root / "subtitle" / f"{vid}.srt"
    meta: dict[str, Any] = {"video_id": str(rec["video_id"]), "videoID": vid, "duration": str(rec["duration"]), "url": str(rec["url"])}
    if revision:
        meta["release_revision"] = revision
    return Sample(
        task=NAME,
        sample_id=id_field(rec, "question_id", path, where),
        video=VideoRef(path=str(_video_path(root, vid))),
        question=text_field(rec, "question", path, where),
        options=tuple(options),
        answer=check_letter(rec["answer"], LETTERS, path, where),
        categories={axis: (str(rec[axis]),) for axis in BREAKDOWNS},
        subtitles=str(srt) if srt.is_file() else None,
        meta=meta,
    )


def _video_path(root: Path, video_id: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        candidate = root / "data" / f"{video_id}{suffix}"
        if candidate.exists():
            return candidate
    return root / "data" / f"{video_id}.mp4"  # absent: the run records VideoNotFound for it


# --------------------------------------------------------------------------- prompt


def subtitle_lines(sample: Sample, frame_times: Sequence[float]) -> list[str]:
    """The cues showing at the sampled timestamps, de-duplicated, in order."""
    if not sample.subtitles:
        return []
    return cues_at(load_srt(sample.subtitles), frame_times)


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    parts: list[str] = []
    if ctx.use_subtitles:
        lines = subtitle_lines(sample, ctx.frame_times)
        if lines:
            parts += [SUBTITLE_HEADER, *lines]
    parts += [INSTRUCTION, sample.question, *sample.options, ANSWER_CUE]
    return Prompt(user="\n".join(parts))


# --------------------------------------------------------------------------- scoring


def extract_characters_regex(s: str) -> str:
    """eval_your_results.py ``extract_characters_regex``, step for step ("" = no answer)."""
    s = s.strip()
    for answer_prefix in ANSWER_PREFIXES:
        s = s.replace(answer_prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return ""
    matches = re.search(r"[ABCD]", s)
    if matches is None:
        return ""
    return matches[0]


def score(raw: str, sample: Sample, mode: str) -> Score:
    mode = check_mode(mode)
    got = extract_characters_regex(raw or "")
    extraction = Extraction(got or None, "videomme_regex")
    if not got and mode == "official":
        return Score(extraction, correct=None)  # excluded: the official "answered" counter skips ""
    return Score(extraction, correct=(got == sample.answer))


def official_decimals(result: dict[str, Any]) -> list[str]:
    """The numbers the official script prints: overall and per duration, one decimal."""
    def fmt(est: dict[str, Any]) -> str:
        return "n/a" if est["value"] is None else format(est["value"], ".1f")

    per = result["breakdowns"].get("duration", {})
    order = [d for d in ("short", "medium", "long") if d in per] + sorted(d for d in per if d not in ("short", "medium", "long"))
    text = "; ".join([f"overall {fmt(result['overall'])}"] + [f"{d} {fmt(per[d])}" for d in order])
    return [f"official (1 decimal): {text}"]


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    rule = (
        "Empty extractions are excluded from the denominator (official)."
        if check_mode(mode) == "official"
        else "Empty extractions count wrong (lmms-eval)."
    )
    result = aggregate_accuracy(
        scored, task=NAME, title=TITLE, scoring=mode, breakdowns=BREAKDOWNS, n_total=len(scored), notes=[rule]
    )
    result["notes"] = result["notes"] + official_decimals(result)
    return result


def results_file(samples: Sequence[Sample], responses: dict[str, str]) -> list[dict[str, Any]]:
    """The official results-file shape (one entry per video, nested questions with ``response``)."""
    videos: dict[str, dict[str, Any]] = {}
    for s in samples:
        entry = videos.setdefault(s.meta["video_id"], {
            "video_id": s.meta["video_id"], "duration_category": s.categories["duration"][0],
            "video_category": s.categories["domain"][0], "video_subcategory": s.categories["sub_category"][0],
            "url": s.meta.get("url", ""), "missing": False, "questions": [],
        })  # fmt: skip
        entry["questions"].append({
            "question_id": s.sample_id, "task_type": s.categories["task_type"][0], "question": s.question,
            "choices": list(s.options), "answer": s.answer, "response": responses.get(s.sample_id, ""),
        })  # fmt: skip
    return list(videos.values())


def write_demo(folder: Path, seed: int) -> Path:
    from vamba_eval.synth import write_videomme_demo

    return write_videomme_demo(folder, seed)


def write_train_release(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.videomme import TRAIN_VIDEOS, write_release

    return write_release(folder, seed=seed, n_videos=TRAIN_VIDEOS)


TASK = TaskDef(
    name=NAME,
    title=TITLE,
    card=__doc__ or "",
    load=load,
    prompt=prompt,
    score=score,
    aggregate=aggregate,
    write_demo=write_demo,
    write_train_release=write_train_release,
    frames=FrameDefaults(num_frames=512, max_edge=480, min_edge=256),
    breakdowns=BREAKDOWNS,
    max_new_tokens=16,
    hub_id="lmms-lab/Video-MME",
    release_layout=LAYOUT,
    extra={"results_file": results_file, "answer_prefixes": tuple(ANSWER_PREFIXES)},
)
