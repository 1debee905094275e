"""TASK CARD — LVBench (THUDM/LVBench): extreme-long video QA, 103 videos (~68 min), 1,549 questions.

Release (hub ``THUDM/LVBench``; repo github.com/THUDM/LVBench, ``data/README.md``)
    ``<root>/video_info.meta.jsonl``: one JSON object per VIDEO — ``key`` (YouTube id = video
    file stem), ``type`` (genre: cartoon, documentary, live, selfmedia, sport, tv),
    ``video_info`` (``duration_minutes``, ``fps``, ``resolution``), ``qa``: a list of questions,
    each ``uid`` (int in some copies, str in others → normalised with ``str()``, as the official
    scorer does: ``uid = str(qa["uid"])``), ``question`` (the question text, then exactly four
    lines ``(A) …`` … ``(D) …``), ``answer`` (one letter), ``question_type`` (a LIST of one or
    more capability names), ``time_reference`` ("MM:SS-MM:SS"). Videos: ``<root>/videos/<key>.mp4``
    (``scripts/download.sh`` fetches them from YouTube).
    Third-party parquet repack, one row per question (``<root>/*.parquet`` or
    ``<root>/data/*.parquet``; lmms-eval's yaml reads such a hub repack). Columns:
    required ``uid``, ``question``, ``answer``, ``question_type`` (list, JSON-list string or a single
    name/code) and ``key`` or ``video_path`` (relative to ``<root>``; without it the video is
    ``videos/<key>.mp4``); optional ``options`` (list of bare option texts — then ``question`` holds
    only the stem), ``type``, ``time_reference``, ``duration_minutes`` or ``duration`` (seconds).
    Sample: ``sample_id`` = str(uid); ``question`` = the stem; ``options`` = the four display lines
    "(A) text" (one space after the letter); ``categories`` = {"question_type": short codes, "type": (genre,)};
    ``meta`` = video_id (=key), uid, time_reference, duration (seconds, when known).

Prompt
    The official repo defines NO prompt (its scorer takes a finished {uid: letter} dict). We use the
    common LLaVA/Vamba-style multiple-choice wording: the stem, the four "(X) …" lines exactly as
    released, then "Answer with the option's letter from the given choices directly."
    (lmms-eval uses the released question + "\\nAnswer the question with the option letter").

Extraction and scoring
    official: ``polish_answer`` re-implements ``lvbench/utils/answer_util.py`` @1dd4612 (the helper the repo
        ships but its scorer never calls): strip; cut at the first ")"; strip; if "(" is present keep
        what follows the first "("; first space-separated token; first character. Recorded as rule
        "lvbench_helper". Correct iff the result EQUALS the gold letter (``compute_accuracy.py`` @dd7d99d:
        ``model_answer == qa["answer"]``, no normalisation: "a" ≠ "A"). The official scorer skips only
        uids ABSENT from the answer dict; we submit an answer for every processed question, so every
        scored question is in the denominator. A result that is not A–D ("The answer is D" → "T") is
        recorded as unparsed (extraction.answer None) AND wrong. Failed samples (video/model errors)
        carry no score and are reported in n_failed — in an official submission they would be absent.
    lmms-eval: ``lmms_eval/tasks/lvbench/utils.py`` @ a74c71f — Video-MME's
        ``extract_characters_regex`` (see tasks/videomme.py; rule "videomme_regex"), ``pred == answer``,
        empty extraction counted wrong, metric = mean over all questions. Newer lmms-eval swaps in the
        generic ``_task_utils/mcq_extract.extract_mcq_answer`` — not reproduced here.

Aggregation (``lvbench/metrics/compute_accuracy.py`` @dd7d99d + ``scripts/test_acc.py`` @95577c1)
    Overall = Σcorrect / Σanswered over questions (micro). A question counts toward EVERY type in its
    ``question_type`` list. The leaderboard ``result.json`` renames types to KIR, EU, Sum, ER, Rea,
    TG and "acc" to "Overall", as fractions; we report percent with the same short codes
    (``leaderboard_json`` gives the official shape). Extra axis "type" (genre) is ours. A type
    listed twice for one question would count twice officially; we de-duplicate.

Known differences from lmms-eval: prompt wording; extraction — the helper reads the FIRST character
("The answer is C" → "T", wrong) where lmms-eval's regex takes the first capital A–D after removing
its prefixes ("C"; but "Based on …" → "B"); lmms-eval reports no per-type breakdown.

Vamba paper setting: 1024 frames, longest edge 560, shortest edge 256.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from vamba_eval.aggregate import aggregate_accuracy
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef, bad_record, guard_record
from vamba_eval.taskutil import (
    as_str_list,
    check_letter,
    check_mode,
    id_field,
    parse_options,
    present,
    read_jsonl,
    read_parquet,
    record_id,
    require_fields,
    require_folder,
    text_field,
    unique_ids,
)
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

from .videomme import extract_characters_regex

NAME = "lvbench"
TITLE = "LVBench"
LETTERS = "ABCD"
META_FILE = "video_info.meta.jsonl"
LAYOUT = (
    "<root>/video_info.meta.jsonl (one JSON object per video, from hub THUDM/LVBench) and "
    "<root>/videos/<key>.mp4; or a parquet repack (one row per question) at <root>/*.parquet or "
    "<root>/data/*.parquet"
)
INSTRUCTION = "Answer with the option's letter from the given choices directly."
# scripts/test_acc.py name_map (leaderboard codes)
TYPE_CODES = {
    "key information retrieval": "KIR",
    "event understanding": "EU",
    "summarization": "Sum",
    "entity recognition": "ER",
    "reasoning": "Rea",
    "temporal grounding": "TG",
}
BREAKDOWNS = ("question_type", "type")


@dataclass(frozen=True)
class _Row:
    """One question, whichever file it came from."""

    uid: str
    key: str
    question: Any
    answer: Any
    question_type: Any
    genre: Optional[str] = None
    time_reference: str = ""
    duration: Optional[float] = None
    video_path: Optional[str] = None
    options: Optional[list[str]] = None


# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    """Samples of a local LVBench release (``video_info.meta.jsonl`` or a parquet repack)."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.name == META_FILE:
        folder = folder.parent
    root = require_folder(folder, TITLE, LAYOUT)
    if (root / META_FILE).is_file():
        return unique_ids(_load_meta(root, root / META_FILE), "uid")
    parquets = sorted(root.glob("*.parquet")) or sorted((root / "data").glob("*.parquet"))
    if parquets:
        return unique_ids((s for p in parquets for s in _load_repack(root, p)), "uid")
    raise DataError(f"{root}: neither {META_FILE} nor a parquet repack found. Expected layout: {LAYOUT}")


def _load_meta(root: Path, path: Path) -> Iterable[tuple[Sample, str]]:
    for line_no, video in read_jsonl(path):
        qa, key = video.get("qa"), record_id(video.get("key"))
        line = f"line {line_no}" + (f" (video {key})" if key else "")
        if not isinstance(qa, list):  # no questions to attribute the problem to: one failed record
            problem = "missing field 'qa'" if qa is None else f"'qa' must be a list of questions, found {type(qa).__name__}"
            message = f"{path}: {line}: {problem}. Re-download the file."
            yield bad_record(message, task=NAME, sample_id=f"line{line_no}", source=path), f"{path}: {line}"
            continue
        for j, item in enumerate(qa):
            uid = record_id(item.get("uid")) if isinstance(item, dict) else None
            where = f"{line} uid {uid}" if uid else f"{line} qa[{j}]"
            sample = guard_record(lambda: _sample(root, _meta_row(video, item, path, line, j), path, where),
                                  task=NAME, sample_id=uid or f"line{line_no}.qa{j}", source=path)
            yield sample, f"{path}: {where}"


def _meta_row(video: dict[str, Any], qa: Any, path: Path, line: str, j: int) -> _Row:
    """Question ``j`` of a video line (video-level problems are reported on each of its questions)."""
    where = f"{line} qa[{j}]"
    if not isinstance(qa, dict):
        raise DataError(f"{path}: {where}: expected a JSON object, got {type(qa).__name__}. Re-download the file.")
    require_fields(video, ("key",), path, where)
    require_fields(qa, ("uid", "question", "answer", "question_type"), path, where)
    uid = id_field(qa, "uid", path, where)
    where = f"{line} uid {uid}"
    info = video.get("video_info") or {}
    minutes = info.get("duration_minutes") if isinstance(info, dict) else None
    return _Row(
        uid=uid,
        key=id_field(video, "key", path, where),
        question=text_field(qa, "question", path, where),
        answer=qa["answer"],
        question_type=qa["question_type"],
        genre=str(video["type"]) if video.get("type") else None,
        time_reference=str(qa.get("time_reference") or ""),
        duration=_minutes(minutes, path, where),
    )


def _load_repack(root: Path, path: Path) -> Iterable[tuple[Sample, str]]:
    frame = read_parquet(path, ("uid", "question", "answer", "question_type"))
    if "key" not in frame.columns and "video_path" not in frame.columns:
        raise DataError(f"{path}: missing column 'key' (or 'video_path'). Use a repack with one of them.")
    for i, rec in enumerate(frame.to_dict(orient="records")):
        uid = record_id(rec.get("uid"))
        where = f"row {i}" + (f" (uid {uid})" if uid else "")
        sample = guard_record(lambda: _sample(root, _repack_row(rec, path, where), path, where),
                              task=NAME, sample_id=uid or f"row{i}", source=path)
        yield sample, f"{path}: {where}"


def _repack_row(rec: dict[str, Any], path: Path, where: str) -> _Row:
    require_fields(rec, ("uid", "question", "answer", "question_type"), path, where)
    video_path = text_field(rec, "video_path", path, where) if present(rec.get("video_path")) else None
    key = id_field(rec, "key", path, where) if present(rec.get("key")) else (Path(video_path).stem if video_path else "")
    if not key:
        raise DataError(f"{path}: {where}: empty 'key' and 'video_path'. Fix the row.")
    minutes, seconds = rec.get("duration_minutes"), rec.get("duration")
    duration = _minutes(minutes, path, where) if present(minutes) else (_number(seconds, "duration", path, where)
                                                                       if present(seconds) else None)
    options = None
    if present(rec.get("options")):
        options = as_str_list(rec["options"])
        if options is None:
            raise DataError(f"{path}: {where}: 'options' must be a list of option texts. Fix the row.")
    return _Row(
        uid=id_field(rec, "uid", path, where),
        key=key,
        question=text_field(rec, "question", path, where),
        answer=rec["answer"],
        question_type=rec["question_type"],
        genre=str(rec["type"]) if present(rec.get("type")) else None,
        time_reference=str(rec.get("time_reference") or ""),
        duration=duration,
        video_path=video_path,
        options=options,
    )


def _number(value: Any, name: str, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{path}: {where}: {name!r} must be a number, found {value!r}. Fix the record.")
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path}: {where}: {name!r} must be a number, found {value!r}. Fix the record.") from None


def _minutes(value: Any, path: Path, where: str) -> Optional[float]:
    return None if value is None else _number(value, "duration_minutes", path, where) * 60.0


def _sample(root: Path, row: _Row, path: Path, where: str) -> Sample:
    text = row.question
    if row.options is not None:  # repack with a separate options column: rebuild the released text
        if len(row.options) != len(LETTERS):
            raise DataError(f"{path}: {where}: expected {len(LETTERS)} options, found {len(row.options)}. Fix the row.")
        text = "\n".join([text] + [f"({letter}) {option}" for letter, option in zip(LETTERS, row.options)])
    stem, options = parse_options(text, LETTERS, path, where)
    meta: dict[str, Any] = {"video_id": row.key, "uid": row.uid, "time_reference": row.time_reference}
    if row.duration is not None:
        meta["duration"] = row.duration
    video = root / row.video_path if row.video_path else root / "videos" / f"{row.key}.mp4"
    return Sample(
        task=NAME,
        sample_id=row.uid,
        video=VideoRef(path=str(video)),
        question=stem,
        options=options,
        answer=check_letter(row.answer, LETTERS, path, where),
        categories={"question_type": _type_codes(row.question_type, path, where), "type": (row.genre,) if row.genre else ()},
        meta=meta,
    )


def _type_codes(value: Any, path: Path, where: str) -> tuple[str, ...]:
    names = as_str_list(value)
    if names is None:  # a string: a JSON/Python list literal, or one name
        text = str(value).strip()
        names = _literal_list(text, path, where) if text.startswith("[") else [text]
    codes: list[str] = []
    known = {**TYPE_CODES, **{c.lower(): c for c in TYPE_CODES.values()}}
    for name in names:
        code = known.get(name.strip().lower())
        if code is None:
            raise DataError(
                f"{path}: {where}: unknown question_type {name!r}; known: {', '.join(TYPE_CODES)}. "
                "Fix the record or update TYPE_CODES in tasks/lvbench.py."
            )
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _literal_list(text: str, path: Path, where: str) -> list[str]:
    """A question_type stored as a JSON/Python list literal ("['reasoning']")."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    names = as_str_list(value)
    if names is None:
        raise DataError(f"{path}: {where}: question_type {text[:80]!r} is not a list of names. Fix the record.")
    return names


# --------------------------------------------------------------------------- prompt / score


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    return Prompt(user="\n".join([sample.question, *sample.options, INSTRUCTION]))


def polish_answer(answer: str) -> str:
    """lvbench/utils/answer_util.py ``polish_answer``, step for step."""
    answer = answer.strip()
    answer = answer.split(")")[0].strip()
    if "(" in answer:
        answer = answer.split("(")[1].strip()
    answer = answer.split(" ")[0]
    return answer[0] if len(answer) > 0 else answer


def score(raw: str, sample: Sample, mode: str) -> Score:
    if check_mode(mode) == "official":
        got = polish_answer(raw or "")
        letter = got if len(got) == 1 and got in LETTERS else None
        return Score(Extraction(letter, "lvbench_helper"), correct=(got == sample.answer))
    got = extract_characters_regex(raw or "")
    return Score(Extraction(got or None, "videomme_regex"), correct=(got == sample.answer))


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    notes = ["Every scored question is in the denominator; non-A–D extractions count wrong (n_unparsed)."]
    if mode == "lmms-eval":
        notes.append("lmms-eval reports only the overall mean; the breakdowns are vamba-eval's.")
    return aggregate_accuracy(
        scored, task=NAME, title=TITLE, scoring=check_mode(mode), breakdowns=BREAKDOWNS, n_total=len(scored), notes=notes
    )


def leaderboard_json(result: dict[str, Any]) -> dict[str, Optional[float]]:
    """The HF-leaderboard ``result.json`` shape of scripts/test_acc.py: codes + "Overall", fractions."""
    frac = lambda e: None if e["value"] is None else e["value"] / 100.0  # noqa: E731
    out = {code: frac(est) for code, est in result["breakdowns"].get("question_type", {}).items()}
    out["Overall"] = frac(result["overall"])
    return out


def submission(responses: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{uid: polish_answer(response)} — the input ``compute_accuracy.py`` expects."""
    return {str(uid): polish_answer(text or "") for uid, text in responses}


def write_demo(folder: Path, seed: int) -> Path:
    from vamba_eval.synth import write_lvbench_demo

    return write_lvbench_demo(folder, seed)


def write_train_release(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.lvbench import TRAIN_VIDEOS, write_release

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
    frames=FrameDefaults(num_frames=1024, max_edge=560, min_edge=256),
    breakdowns=BREAKDOWNS,
    max_new_tokens=16,
    hub_id="THUDM/LVBench",
    release_layout=LAYOUT,
    extra={"leaderboard_json": leaderboard_json, "submission": submission, "type_codes": dict(TYPE_CODES)},
)
