"""The video layer: metadata probing, frame sampling, decoding, caching and prefetching.

Typical use::

    from vamba_eval.video import FrameSpec, FrameCache, load_frames

    spec = FrameSpec(num_frames=512, max_edge=480, min_edge=256)
    video = load_frames("videos/abc.mp4", spec, cache=FrameCache())
    video.frames  # [T, H, W, 3] uint8;  video.indices / video.times are recorded per sample

``check_inside_root(path, data_root)`` (``paths``) refuses a path that leaves the release folder
(``..``, absolute, or through a symbolic link) before anything is read; a run calls it first.

Sampling (``sampling``) is pure: the indices a run used are a function of (``VideoMeta``,
``FrameSpec``, start/end) and can be recomputed from the record.
"""

from __future__ import annotations

from vamba_eval.video.cache import (
    DecodedVideo,
    FrameCache,
    content_fingerprint,
    default_cache_root,
    frame_size_for,
    load_frames,
)
from vamba_eval.video.decode import decode_frames
from vamba_eval.video.errors import (
    FrameFolderError,
    VideoError,
    VideoNotFound,
    VideoOutsideDataRoot,
    VideoTooShort,
    VideoUnreadable,
)
from vamba_eval.video.paths import check_inside_root
from vamba_eval.video.meta import VideoMeta, natural_key, probe, probe_frame_folder
from vamba_eval.video.prefetch import prefetch
from vamba_eval.video.sampling import (
    SAMPLERS,
    FrameSpec,
    apply_odd_rule,
    frame_times,
    mvbench_centre,
    sample_indices,
    target_size,
    uniform_midpoint,
)

__all__ = [
    "DecodedVideo",
    "FrameCache",
    "FrameFolderError",
    "FrameSpec",
    "SAMPLERS",
    "VideoError",
    "VideoMeta",
    "VideoNotFound",
    "VideoOutsideDataRoot",
    "VideoTooShort",
    "VideoUnreadable",
    "apply_odd_rule",
    "check_inside_root",
    "content_fingerprint",
    "decode_frames",
    "default_cache_root",
    "frame_size_for",
    "frame_times",
    "load_frames",
    "mvbench_centre",
    "natural_key",
    "prefetch",
    "probe",
    "probe_frame_folder",
    "sample_indices",
    "target_size",
    "uniform_midpoint",
]
