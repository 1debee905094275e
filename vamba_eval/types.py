"""Core data contracts shared by every stage of a run (see shared/DESIGN.md, "Core contracts").

Everything here is a frozen dataclass: values flow between the task adapters, the planner,
the executors, the model adapters and the scorers without anyone mutating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class VideoRef:
    """Where a sample's video is: a file (mp4/webm/gif/…) or a folder of frames.

    ``start``/``end`` (seconds) bound the part of the video the question is about (MVBench's
    "bound" tasks); ``fps`` is required for frame folders, whose files carry no timing.
    """

    path: str
    start: Optional[float] = None
    end: Optional[float] = None
    fps: Optional[float] = None


@dataclass(frozen=True)
class Sample:
    """One question of a benchmark release, model-agnostic.

    ``sample_id`` is the release's own id (stable across runs: resume and regression gates key on it).
    ``categories`` maps each official breakdown axis to the labels this sample counts toward
    (a tuple, because LVBench questions count toward every category in their list).
    ``answer`` is the gold option letter ("" for unlabelled test splits).
    """

    task: str
    sample_id: str
    video: VideoRef
    question: str
    options: tuple[str, ...]
    answer: str
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    subtitles: Optional[str] = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def video_key(self) -> str:
        """Cluster key for statistics: questions of one video are correlated."""
        return str(self.meta.get("video_id", self.video.path))


@dataclass(frozen=True)
class Prompt:
    """The text around the video, before the model's chat template is applied.

    The video comes first in the user turn, then ``user``; ``assistant_prefix`` is text the
    assistant turn starts with (e.g. MVBench's "Best option:("), which the model continues.

    ``interleave`` puts text INSIDE the video (LongVideoBench's subtitles between frames): entries
    ``(k, text)``, in order, each meaning "after the first ``k`` frames of the request, insert
    ``text``" (``0 <= k <= T``; ``k == 0``: before the first frame, ``k == T``: after the last).
    ``k`` never decreases; entries sharing a ``k`` follow one another in order. Empty (the
    default): the whole video, then ``user``. With entries, the order is frames and texts as
    given, then ``user``. How an adapter realises it is its own business and is stated in its
    ``describe()["interleave_support"]``: ``"interleaved"`` (texts between frame groups, see
    ``models.base.frame_groups`` for the rounding a temporal patch forces) or ``"prepended"``
    (video tokens are not in the text sequence: the texts, in order, go before ``user``).
    An adapter must never drop the texts silently.
    """

    user: str
    system: Optional[str] = None
    assistant_prefix: str = ""
    interleave: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        last = 0
        for entry in self.interleave:
            if (len(entry) != 2 or isinstance(entry[0], bool) or not isinstance(entry[0], int)
                    or not isinstance(entry[1], str)):
                raise ValueError(f"Prompt.interleave entries must be (int frames_before, str text), got {entry!r}")
            if entry[0] < last:
                raise ValueError(f"Prompt.interleave must be in frame order (k never decreases), got {self.interleave!r}")
            last = entry[0]


@dataclass(frozen=True)
class Request:
    """What a model adapter gets: decoded frames plus the prompt parts."""

    sample_id: str
    frames: np.ndarray  # [T, H, W, 3] uint8, RGB
    frame_times: tuple[float, ...]
    prompt: Prompt
    max_new_tokens: int = 32


@dataclass(frozen=True)
class Prediction:
    """What a model adapter returns for one request."""

    text: str
    prompt_tokens: int = 0
    video_tokens: int = 0
    output_tokens: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds: prefill / generate / …
    peak_memory_bytes: Optional[int] = None


@dataclass(frozen=True)
class Extraction:
    """An answer pulled out of a raw response, and how.

    ``answer`` is None when nothing could be extracted (``rule`` says which rule gave up);
    ``fallback`` is set when the official rule invents an answer (LongVideoBench's random
    letter) so reports can count such cases instead of hiding them.
    """

    answer: Optional[str]
    rule: str
    fallback: Optional[str] = None


@dataclass(frozen=True)
class ScoredSample:
    """The scoring-relevant view of one ``samples.jsonl`` line."""

    sample_id: str
    video_key: str
    categories: Mapping[str, tuple[str, ...]]
    extracted: Optional[str]
    correct: Optional[bool]  # None: excluded from the denominator (error, or unparsed where the rule says so)
    error: Optional[str] = None
    unparsed: bool = False
    flags: tuple[str, ...] = ()
    score: Optional[float] = None  # graded tasks (judge scores); None for plain accuracy
