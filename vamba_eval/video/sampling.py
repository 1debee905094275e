"""Frame sampling and the resize policy: pure functions of (video metadata, frame spec).

Nothing here touches a file, so the indices a run uses can be recomputed (and checked) from the
recorded metadata alone.

Index convention: an index is a 0-based position in the video's frame sequence (for a frame
folder: in its naturally sorted image list). When a video has fewer frames than asked for, the
samplers return what their formula gives, which REPEATS indices; they never fail because of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from vamba_eval.video.errors import VideoTooShort
from vamba_eval.video.meta import VideoMeta

MVBENCH_GIF_FPS = 25.0  # the official MVBench read_gif() hard-codes fps=25 for bounds
_EPS = 1e-9


@dataclass(frozen=True)
class FrameSpec:
    """How to turn a video into model frames.

    ``num_frames`` frames are picked by ``sampler`` (see ``SAMPLERS``); frames are resized so the
    longest edge is at most ``max_edge`` and the shortest at least ``min_edge``, then to
    multiples of ``round_to`` (no resize at all when both edges are None); an odd count loses
    its last frame when ``drop_odd`` (as in the official Vamba scripts).
    """

    num_frames: int
    sampler: str = "uniform_midpoint"
    max_edge: Optional[int] = None
    min_edge: Optional[int] = None
    round_to: int = 28
    drop_odd: bool = True

    def __post_init__(self) -> None:
        if int(self.num_frames) < 1:
            raise ValueError(f"FrameSpec.num_frames must be >= 1, got {self.num_frames}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
        if self.round_to < 1:
            raise ValueError(f"FrameSpec.round_to must be >= 1, got {self.round_to}")
        for name in ("max_edge", "min_edge"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"FrameSpec.{name} must be None or >= 1, got {value}")

    def key(self) -> str:
        """Stable string naming this spec (cache keys, run records)."""
        odd = "dropodd" if self.drop_odd else "keepodd"
        return (
            f"n{self.num_frames}|{self.sampler}|max{self.max_edge}|min{self.min_edge}"
            f"|round{self.round_to}|{odd}"
        )


def _require_frames(meta: VideoMeta, n: int) -> int:
    if n < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got {n}")
    if meta.num_frames < 1:
        raise VideoTooShort(meta.path, "the video has no frames")
    return meta.num_frames


def uniform_midpoint(
    meta: VideoMeta, n: int, start_s: Optional[float] = None, end_s: Optional[float] = None
) -> list[int]:
    """Segment midpoints, as the Vamba evaluation scripts sample.

    The window [start_idx, end_idx) is the whole video, or the frames whose timestamps fall in
    [start_s, end_s] (start_idx = floor(start_s·fps), end_idx = ceil(end_s·fps), clipped to the
    video). With seg = (end_idx − start_idx)/n: index_i = floor(start_idx + seg·(i + 0.5)).
    A window shorter than n frames repeats indices; an empty window (end ≤ start) gives its
    first frame n times.
    """
    total = _require_frames(meta, n)
    start_idx = 0
    end_idx = total
    if start_s is not None:
        start_idx = min(max(0, math.floor(start_s * meta.fps + _EPS)), total - 1)
    if end_s is not None:
        end_idx = min(max(0, math.ceil(end_s * meta.fps - _EPS)), total)
    if end_idx <= start_idx:
        return [start_idx] * n
    seg = (end_idx - start_idx) / n
    return [min(total - 1, math.floor(start_idx + seg * (i + 0.5))) for i in range(n)]


def mvbench_centre(
    meta: VideoMeta,
    n: int,
    bound: Optional[tuple[Optional[float], Optional[float]]] = None,
    fps: Optional[float] = None,
) -> list[int]:
    """The official MVBench ``get_index``: segment centres over the bound or the whole video.

    Official code: start, end = bound or (−100000, 100000); start_idx = max(first_idx,
    round(start·fps)); end_idx = min(round(end·fps), max_frame); seg = (end_idx − start_idx)/n;
    index_i = int(start_idx + seg/2 + np.round(seg·i)).

    Per the official readers: videos use first_idx = 0, max_frame = num_frames − 1 and the
    average fps; GIFs the same but fps = 25 (hard-coded there); frame folders first_idx = 1,
    max_frame = num_frames (1-based file numbers ``00001.jpg`` …) at the folder fps — those are
    returned as 0-based positions (official − 1). ``fps`` overrides the rate used for the bound.
    Results are clipped into the video (the official code can index past it with a bound
    outside the video).
    """
    total = _require_frames(meta, n)
    if fps is None:
        fps = MVBENCH_GIF_FPS if meta.path.lower().endswith(".gif") else meta.fps
    if meta.kind == "frames":
        first_idx, max_frame, offset = 1, total, 1
    else:
        first_idx, max_frame, offset = 0, total - 1, 0
    start, end = (bound if bound else (None, None))
    start = -100000 if start is None else start
    end = 100000 if end is None else end
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg = float(end_idx - start_idx) / n
    official = [int(start_idx + (seg / 2) + np.round(seg * i)) for i in range(n)]
    return [min(max(i - offset, 0), total - 1) for i in official]


def _dispatch_uniform(meta: VideoMeta, n: int, start_s: Optional[float], end_s: Optional[float]) -> list[int]:
    return uniform_midpoint(meta, n, start_s, end_s)


def _dispatch_mvbench(meta: VideoMeta, n: int, start_s: Optional[float], end_s: Optional[float]) -> list[int]:
    bound = None if start_s is None and end_s is None else (start_s, end_s)
    return mvbench_centre(meta, n, bound)


SAMPLERS: dict[str, Callable[[VideoMeta, int, Optional[float], Optional[float]], list[int]]] = {
    "uniform_midpoint": _dispatch_uniform,
    "mvbench_centre": _dispatch_mvbench,
}


def sample_indices(
    meta: VideoMeta, spec: FrameSpec, start_s: Optional[float] = None, end_s: Optional[float] = None
) -> list[int]:
    """Indices for ``spec`` (before the odd-count rule), by sampler name."""
    try:
        sampler = SAMPLERS[spec.sampler]
    except KeyError:
        raise ValueError(
            f"unknown sampler {spec.sampler!r}; valid samplers: {', '.join(sorted(SAMPLERS))}"
        ) from None
    return sampler(meta, spec.num_frames, start_s, end_s)


def apply_odd_rule(indices: Sequence[int], drop_odd: bool) -> list[int]:
    """Drop the last index of an odd-length list when ``drop_odd`` (official Vamba scripts:
    Qwen2-VL packs frames in pairs). A single frame is kept: never reduce to zero frames."""
    out = list(indices)
    if drop_odd and len(out) % 2 == 1 and len(out) > 1:
        out.pop()
    return out


def frame_times(meta: VideoMeta, indices: Sequence[int]) -> list[float]:
    """Timestamp (seconds from the first frame) of each index, at the video's fps."""
    fps = meta.fps if meta.fps > 0 else 1.0
    return [round(int(i) / fps, 6) for i in indices]


def target_size(
    width: int, height: int, max_edge: Optional[int], min_edge: Optional[int], round_to: int = 28
) -> tuple[int, int]:
    """The (w, h) frames are resized to.

    Scale down (aspect kept) so the longest edge ≤ ``max_edge``; then up so the shortest edge ≥
    ``min_edge`` (so for extreme aspect ratios ``min_edge`` wins); then round each edge to the
    nearest multiple of ``round_to`` (Python ``round``, as Qwen2-VL's smart_resize), at least
    ``round_to``. Rounding can move an edge by up to ``round_to``/2.
    """
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    w, h = float(width), float(height)
    if max_edge is not None and max(w, h) > max_edge:
        scale = max_edge / max(w, h)
        w, h = w * scale, h * scale
    if min_edge is not None and min(w, h) < min_edge:
        scale = min_edge / min(w, h)
        w, h = w * scale, h * scale
    return _round_to(w, round_to), _round_to(h, round_to)


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)
