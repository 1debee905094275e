"""Errors of the video layer.

Every error names the file (or frame folder) and says what the user should do. The message is
always ``"<path>: <what is wrong>. <what to do>"`` so that a run can record it as a sample error
(type name + message) and a report can show it verbatim.

The classes pickle with their fields, so they survive thread pools, process pools and Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


class VideoError(Exception):
    """Base class: a video (file or frame folder) could not be used.

    Attributes:
        path: the offending file or folder, as given.
        problem: what is wrong (no trailing period).
        hint: what the user should do about it.
    """

    default_hint = "Check the file."

    def __init__(self, path: PathLike, problem: str, hint: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem.rstrip(". ")
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(f"{self.path}: {self.problem}. {self.hint}")

    def __reduce__(self):  # keep the fields when pickled (workers, Ray)
        return (type(self), (self.path, self.problem, self.hint))


class VideoNotFound(VideoError):
    """The path does not exist."""

    default_hint = (
        "Check the path and the dataset root (is the video downloaded and the folder mounted?)."
    )


class VideoUnreadable(VideoError):
    """The file exists but cannot be decoded: empty, corrupt, truncated, not a video,
    audio-only, or it yields fewer frames than its metadata promises."""

    default_hint = "Re-download or re-extract the file; check it plays with ffprobe/ffplay."


class VideoTooShort(VideoError):
    """The video (or the requested time window) holds no frame to sample."""

    default_hint = "Check the sample's start/end bound against the video's duration."


class VideoOutsideDataRoot(VideoError):
    """The annotation points at a path outside the task's data root (``..``, an absolute path, or
    a symbolic link leading elsewhere). Refused before anything is opened or read."""

    default_hint = (
        "Fix the annotation so the video lies under the data root. If the release really keeps its "
        "videos elsewhere through symbolic links, list those folders in $VAMBA_EVAL_TRUSTED_DIRS "
        "(separated by ':')."
    )


class FrameFolderError(VideoError):
    """A folder of frames (MVBench style) is empty or holds an unreadable image."""

    default_hint = "Put the JPEG/PNG frames in the folder (or fix the path); re-extract it if an image is damaged."
