"""What a benchmark module in ``tasks/`` provides: one ``TaskDef`` named ``TASK``.

A task is data + rules, never model knobs: how to read the release, how to word the prompt,
how to pull an answer out of a response, and how the official script aggregates. The model
adapter owns the chat template; the run config owns frame counts (the task only suggests its
paper setting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample

SCORING_MODES = ("official", "lmms-eval")


class DataError(Exception):
    """A release file is missing or malformed. The message names the file/record and the fix."""


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
    # Tasks scored by an LLM judge: (raw response, sample, mode, judge) → Score. ``judge`` is a
    # ``vamba_eval.judge`` client built from the run config; without one the sample is a recorded
    # error, never a made-up score.
    judge_score: Optional[Callable[[str, Sample, str, Any], Score]] = None
