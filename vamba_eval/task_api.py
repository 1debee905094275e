"""What a benchmark module in ``tasks/`` provides: one ``TaskDef`` named ``TASK``.

A task is data + rules, never model knobs: how to read the release, how to word the prompt,
how to pull an answer out of a response, and how the official script aggregates. The model
adapter owns the chat template; the run config owns frame counts (the task only suggests its
paper setting).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

SCORING_MODES = ("official", "lmms-eval")


class DataError(Exception):
    """A release file is missing or malformed. The message names the file/record and the fix."""


# --------------------------------------------------------------------------- bad records
# Policy (DESIGN.md: bad input is a clear error; in a run, a recorded sample error). A loader
# RAISES DataError for a structural problem — a file missing, unreadable, not UTF-8, not
# JSON/parquet, over the size limit, of the wrong shape (not a list, a line that is not an
# object, a missing column), or duplicate sample ids. A bad RECORD (missing or empty fields,
# wrong types, option count mismatch, answer outside the options, unknown labels) raises too,
# unless the loader runs inside ``recording_bad_records()`` (the run planner does): the record
# then becomes a Sample whose ``meta[LOAD_ERROR]`` holds the DataError message; the run records
# it as a failed sample (counted in n_failed) and never opens its video or asks the model.

LOAD_ERROR = "load_error"
_RECORDING: ContextVar[bool] = ContextVar("vamba_eval_recording_bad_records", default=False)


@contextmanager
def recording_bad_records() -> Iterator[None]:
    """Within this block, task loaders turn a bad record into a failed Sample instead of raising."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def guard_record(build: Callable[[], Sample], *, task: str, sample_id: str, source: Path) -> Sample:
    """``build()``; a DataError it raises propagates, or — while recording bad records — becomes
    ``failed_sample(task, sample_id, source, message)``."""
    try:
        return build()
    except DataError as err:
        if not _RECORDING.get():
            raise
        return failed_sample(task, sample_id, source, str(err))


def bad_record(message: str, *, task: str, sample_id: str, source: Path) -> Sample:
    """A record too broken to build (e.g. a video line without questions): raise DataError(message),
    or — while recording bad records — return its ``failed_sample``."""
    if not _RECORDING.get():
        raise DataError(message)
    return failed_sample(task, sample_id, source, message)


def failed_sample(task: str, sample_id: str, source: Path, message: str) -> Sample:
    """A placeholder for a bad record: no question, no options, no answer (nothing is invented).
    Its "video" is the annotation file, never opened; each is its own statistics cluster."""
    return Sample(task=task, sample_id=sample_id, video=VideoRef(path=str(source)), question="", options=(),
                  answer="", categories={}, meta={LOAD_ERROR: message, "video_id": f"{Path(source).name}#{sample_id}"})


def load_error(sample: Sample) -> Optional[str]:
    """The DataError message of a sample its loader marked bad, else None."""
    value = sample.meta.get(LOAD_ERROR)
    return str(value) if value is not None else None


@dataclass(frozen=True)
class PromptContext:
    """Run-time facts a prompt may depend on (never model-specific)."""

    frame_times: tuple[float, ...] = ()
    use_subtitles: bool = False


@dataclass(frozen=True)
class Score:
    """The scorer's verdict on one response."""

    extraction: Extraction
    correct: Optional[bool]  # None = excluded from the denominator by the official rule
    flags: tuple[str, ...] = ()  # e.g. "empty_output_counted_correct", "random_fallback"
    value: Optional[float] = None  # a graded score (judge 0–100, MLVU 2–10) for non-QA tasks
    judge: Optional[Mapping[str, Any]] = None  # raw judge outputs, stored so `score` never re-asks


@dataclass(frozen=True)
class FrameDefaults:
    """The frame setting the paper used for this benchmark, and a small one for the demo."""

    num_frames: int
    max_edge: Optional[int]
    min_edge: Optional[int]
    sampler: str = "uniform_midpoint"
    demo_num_frames: int = 8


@dataclass(frozen=True)
class TaskDef:
    """A benchmark: loader, prompt, scorer, aggregation, demo writer and task card."""

    name: str
    title: str
    card: str  # the module docstring: what the release is, how it is scored
    load: Callable[[Path], list[Sample]]
    prompt: Callable[[Sample, PromptContext], Prompt]
    score: Callable[[str, Sample, str], Score]  # (raw response, sample, scoring mode)
    aggregate: Callable[[Sequence[ScoredSample], str], dict[str, Any]]  # (scored, mode) → task result
    write_demo: Callable[[Path, int], Path]  # (folder, seed) → release folder written
    frames: FrameDefaults
    breakdowns: tuple[str, ...]
    max_new_tokens: int = 16
    hub_id: Optional[str] = None
    hub_revision: Optional[str] = None
    release_layout: str = ""  # one line describing the expected folder layout, for error messages
    extra: Mapping[str, Any] = field(default_factory=dict)
    # (folder, seed) → a smaller release in the demo's format that `vamba_eval.train` builds its data from
    # (None: write_demo). Fixed so that a data build gives the bundled checkpoints' data and tokenizer.
    write_train_release: Optional[Callable[[Path, int], Path]] = None
    # Tasks scored by an LLM judge: (raw response, sample, mode, judge) → Score. ``judge`` is a
    # ``vamba_eval.judge`` client built from the run config; without one the sample is a recorded
    # error, never a made-up score.
    judge_score: Optional[Callable[[str, Sample, str, Any], Score]] = None
