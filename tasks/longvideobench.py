"""TASK CARD — LongVideoBench (longvideobench/LongVideoBench): 6,678 multiple-choice questions on
3,763 web videos (8 s – 1 h) with subtitles; "referring reasoning" over interleaved frames and text.

Release (hub ``longvideobench/LongVideoBench``, gated; code github.com/longvideobench/LongVideoBench)
    ``<root>/lvb_val.json`` (1,337 labelled) and ``<root>/lvb_test_wo_gt.json`` (5,341, no labels):
    JSON lists of records; or their parquet copies ``<root>/validation-*.parquet`` /
    ``<root>/test-*.parquet`` (also under ``data/``), where ``candidates`` is spread over
    ``option0``..``option4`` with "N/A" for absent options. Videos ``<root>/videos/<video_path>``,
    subtitles ``<root>/subtitles/<subtitle_path>`` (``subtitles.tar``). Record fields read: id
    ("<video_id>_<k>"), video_id, video_path, question, candidates (4 or 5; 2–5 accepted, A–E),
    correct_choice (0-based; absent in test), question_category (17 codes), duration_group
    (15 | 60 | 600 | 3600), duration (s); optional: subtitle_path, starting_timestamp_for_subtitles
    (default 0), level, topic_category, position, question_wo_referring_query, view_count.
    ``TASK`` reads the validation split (JSON preferred over parquet); ``load_split(root, "test")``
    and the task ``longvideobench_test`` read the test split (``Sample.answer == ""``).
    Sample: ``sample_id`` = id; ``options`` = "A. cand0", "B. cand1", … (the prompt lines);
    ``categories`` = duration_group, question_category, level, topic_category; ``subtitles`` = the
    subtitle file's path; ``meta`` = video_id, duration, duration_s, starting_timestamp_for_subtitles,
    split, position, question_wo_referring_query, view_count (those present).

Prompt (``longvideobench_dataset.py`` ``LongVideoBenchDataset.__getitem__``, verbatim)
    "Question: " + question / one line per candidate "A. cand0" (``". ".join([letter, c])``) /
    "Answer with the option's letter from the given choices directly." — lines joined with "\\n".
    With ``PromptContext.use_subtitles`` (``--subtitles``) the subtitles are INTERLEAVED with the
    frames (``insert_subtitles_into_frames``) and handed over as ``Prompt.interleave``:
      * cue times: {"timestamp": [start, end], "text"} in seconds — an ``end`` that is not a JSON
        float (null, and — official quirk, kept — also an integer) becomes the video ``duration``;
        or {"start": "HH:MM:SS.fff", "end", "line"} (``int(h)*3600 + int(m)*60 + float(s)``).
        Both are shifted by ``-starting_timestamp_for_subtitles``.
      * for each cue in file order: emit the not-yet-emitted frames whose timestamp ≤ the cue
        midpoint; if the cue lasts < 1 s widen it to midpoint ± 0.5; emit the cue text only if some
        frame (any, not only the new ones) lies STRICTLY inside it; at the end emit the remaining
        frames. Frame timestamps are ``PromptContext.frame_times`` (index / fps, the official
        convention), i.e. the frames this run sampled. Texts are passed verbatim.
    Without ``--subtitles`` (Vamba's setting): frames, then the prompt. The model adapter places the
    texts (``describe()["interleave_support"]``): qwen2vl between frame groups, vamba before the
    question. The official loader samples ``min(max_num_frames, int(duration))`` frames at
    ``int(total/num)·i``; the run's frame spec decides here (see Frames).

Extraction (the benchmark author's parser, as shipped in lmms-eval ``tasks/longvideobench/utils.py``
``parse_multi_choice_response``, "Same as original LongVideoBench paper (from author Haoning Wu)")
    strip; delete every occurrence of "The best answer is", "The correct answer is", "The answer is",
    "The answer", "The best option is", "The correct option is", "Best answer:", "Best option:"
    (this list HAS its commas, unlike Video-MME's); if more than 10 words and no A–E → a RANDOM
    letter among the item's options; else the FIRST uppercase A–E anywhere (may be "E" on a
    4-option item: then wrong); none → RANDOM. Our random is seeded per sample id
    (sha256("longvideobench:" + id)), so re-scoring gives the same letter; each random answer sets
    ``Extraction.fallback`` and the flag "random_fallback", counted in ``n_flagged``. Correct iff
    the letter equals chr(65 + correct_choice). Test split: ``correct=None`` (no labels), and
    ``submission(records)`` gives the leaderboard file {id: raw prediction}.

Aggregation
    Overall = micro accuracy (random answers included, as officially); breakdowns duration_group,
    question_category, level, topic_category. lmms-eval mode scores identically: same parser; its
    "Overall" is the example-weighted mean over the duration_group and question_category subsets,
    which equals micro accuracy (its "num" counts every question twice); its random fallback draws
    from the global RNG (order dependent), ours is per-sample seeded.

Frames: Vamba's setting (TIGER-AI-Lab/Vamba ``eval`` script: ``num_frames=512``,
``img_shortest_edge=256``, ``img_longest_edge=480``, ``use_subtitle=False``) — 512 frames, 480/256.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from vamba_eval.aggregate import aggregate_accuracy
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef
from vamba_eval.tasks._lvb_io import load_cues, read_split
from vamba_eval.taskutil import check_mode, require_folder, unique_ids
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample

NAME = "longvideobench"
TITLE = "LongVideoBench"
TEST_NAME = "longvideobench_test"  # the test split's task (tasks/longvideobench_test.py)
LETTERS = "ABCDE"
SPLITS = {"validation": "lvb_val.json", "test": "lvb_test_wo_gt.json"}
LAYOUT = (
    "<root>/lvb_val.json and/or <root>/lvb_test_wo_gt.json (or validation-*.parquet / test-*.parquet), "
    "videos <root>/videos/<video_path>, subtitles <root>/subtitles/<subtitle_path> (hub longvideobench/LongVideoBench)"
)
BREAKDOWNS = ("duration_group", "question_category", "level", "topic_category")
ANSWER_LINE = "Answer with the option's letter from the given choices directly."
ANSWER_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option is", "The correct option is", "Best answer:", "Best option:",
)  # fmt: skip


# --------------------------------------------------------------------------- loading (files: tasks/_lvb_io.py)


def load_split(folder: Path, split: str = "validation", task: str = NAME) -> list[Sample]:
    """Samples of one split of a local release folder (JSON preferred over the parquet copy)."""
    if split not in SPLITS:
        raise ValueError(f"unknown LongVideoBench split {split!r}; expected one of {', '.join(SPLITS)}")
    root = require_folder(Path(folder), TITLE, LAYOUT)
    return unique_ids(read_split(root, split, SPLITS[split], LETTERS, task), "id")


def load(folder: Path) -> list[Sample]:
    return load_split(folder, "validation")


def load_test(folder: Path) -> list[Sample]:
    return load_split(folder, "test", task=TEST_NAME)


# --------------------------------------------------------------------------- prompt


def interleave(frame_times: Sequence[float], cues: Sequence[tuple[float, float, str]]) -> tuple[tuple[int, str], ...]:
    """``insert_subtitles_into_frames`` as (frames before, text) pairs; ``cues`` already shifted."""
    out: list[tuple[int, str]] = []
    cur = 0
    for start, end, text in cues:
        mid = (start + end) / 2
        while cur < len(frame_times) and frame_times[cur] <= mid:
            cur += 1
        if end - start < 1:
            start, end = mid - 0.5, mid + 0.5
        if any(start < t < end for t in frame_times):
            out.append((cur, text))
    return tuple(out)


def subtitle_interleave(sample: Sample, frame_times: Sequence[float]) -> tuple[tuple[int, str], ...]:
    """The sample's subtitle cues interleaved with the sampled frames (DataError if unreadable)."""
    if not sample.subtitles:
        raise DataError(f"{sample.video.path}: sample {sample.sample_id}: the record names no subtitle_path; "
                        "run without --subtitles or fix the record.")
    meta = sample.meta
    cues = load_cues(sample.subtitles, float(meta.get("duration_s", 0.0)),
                     float(meta.get("starting_timestamp_for_subtitles", 0.0)))
    return interleave(frame_times, cues)


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    text = "\n".join(["Question: " + sample.question, *sample.options, ANSWER_LINE])
    subs = subtitle_interleave(sample, ctx.frame_times) if ctx.use_subtitles else ()
    return Prompt(user=text, interleave=subs)


# --------------------------------------------------------------------------- scoring


def fallback_rng(sample_id: str) -> random.Random:
    """The random fallback's generator: a pure function of the sample id (any process, any order)."""
    digest = hashlib.sha256(f"{NAME}:{sample_id}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def parse_multi_choice_response(response: str, all_choices: Sequence[str], rng: random.Random) -> tuple[str, Optional[str]]:
    """The author's parser step for step: (letter, None) or (random letter, why it is random)."""
    s = response.strip()
    for answer_prefix in ANSWER_PREFIXES:
        s = s.replace(answer_prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return rng.choice(list(all_choices)), "random:long_without_letter"
    matches = re.search(r"[ABCDE]", s)
    if matches is None:
        return rng.choice(list(all_choices)), "random:no_letter"
    return matches[0], None


def score(raw: str, sample: Sample, mode: str) -> Score:
    check_mode(mode)  # both modes score the same (see the task card)
    choices = LETTERS[: len(sample.options)]
    letter, why = parse_multi_choice_response(raw or "", choices, fallback_rng(sample.sample_id))
    extraction = Extraction(letter, "lvb_parser" if why is None else "lvb_parser_random", fallback=why)
    flags = ("random_fallback",) if why else ()
    correct = None if not sample.answer else letter == sample.answer
    return Score(extraction, correct=correct, flags=flags)


def aggregate(scored: Sequence[ScoredSample], mode: str, *, name: str = NAME, title: str = TITLE) -> dict[str, Any]:
    check_mode(mode)
    n_random = sum(1 for s in scored if "random_fallback" in s.flags)
    answered = [s for s in scored if s.error is None]
    if answered and all(s.correct is None for s in answered):
        notes = [f"No labels (test split): no accuracy; submit `submission(records)` (raw predictions, parsed by "
                 f"the leaderboard). Our parser would have guessed {n_random} answer(s) at random."]
    else:
        notes = [f"Random fallbacks: {n_random} answer(s) are seeded random letters (the author's parser found no "
                 "usable A–E); they stay in the denominator, as officially."]
    if mode == "lmms-eval":
        notes.append("lmms-eval mode scores identically (same parser; its Overall equals micro accuracy).")
    return aggregate_accuracy(scored, task=name, title=title, scoring=mode, breakdowns=BREAKDOWNS,
                              n_total=len(scored), notes=notes)


def submission(records: Iterable[Any]) -> dict[str, str]:
    """The leaderboard file {id: raw prediction} (lmms-eval ``longvideobench_aggregate_results_for_submission``)
    from ``SampleRecord`` s or their dicts; samples without a response (errors) are left out."""
    out: dict[str, str] = {}
    for rec in records:
        data: Mapping[str, Any] = rec if isinstance(rec, Mapping) else rec.model_dump()
        if data.get("response") is not None and data.get("error") is None:
            out[str(data["sample_id"])] = str(data["response"])
    return out


def write_demo(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.longvideobench import write_release

    return write_release(folder, seed=seed)


def write_train_release(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.longvideobench import TRAIN_VIDEOS, write_release

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
    max_new_tokens=32,  # lmms-eval longvideobench_*.yaml generation_kwargs
    hub_id="longvideobench/LongVideoBench",
    release_layout=LAYOUT,
    extra={"submission": submission, "load_split": load_split, "answer_prefixes": ANSWER_PREFIXES,
           "splits": tuple(SPLITS)},
)
