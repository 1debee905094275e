"""Video metadata: what frame sampling needs to know about a video, read cheaply.

``probe`` reads container/stream metadata with PyAV (and decodes one frame to check the stream
really decodes and to read its display rotation). ``probe_frame_folder`` does the same for a
folder of JPEG/PNG frames, the layout some MVBench tasks ship (``tvqa/frames_fps3_hq``).
"""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import av

from vamba_eval.video.errors import (
    FrameFolderError,
    PathLike,
    VideoNotFound,
    VideoUnreadable,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FOLDER_FPS = 3.0  # MVBench's frame folders (tvqa/frames_fps3_hq) are 3 fps

_HINT_NOT_VIDEO = (
    "Check that it is a complete video file (truncated downloads, HTML error pages and Git LFS "
    "pointers look like this) and re-download it."
)
_HINT_TRUNCATED = "The file looks truncated or corrupt; re-download it."


@dataclass(frozen=True)
class VideoMeta:
    """What sampling needs to know about a video.

    ``width``/``height`` are the DISPLAY size (after ``rotation_deg`` is applied), which is what
    the resize policy works on. ``rotation_deg`` is the counter-clockwise rotation (0, 90, 180,
    270) that the decoder applies to coded frames, from the stream's display matrix.
    ``kind`` is "file" (anything PyAV opens: mp4, webm, mkv, gif …) or "frames" (a folder of
    images; ``fps`` is then the one the caller declared).
    """

    path: str
    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    rotation_deg: int = 0
    kind: str = "file"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for records and the frame cache)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoMeta":
        """Inverse of ``to_dict``."""
        return cls(**data)


def probe(path: PathLike, folder_fps: Optional[float] = None) -> VideoMeta:
    """Read a video's metadata. A directory is treated as a frame folder at ``folder_fps``
    (default ``DEFAULT_FOLDER_FPS``).

    Raises ``VideoNotFound`` or ``VideoUnreadable`` (zero bytes, not a video, no video stream,
    nothing decodable) naming the path.
    """
    p = Path(path)
    if require_exists(p).is_dir():
        return probe_frame_folder(p, folder_fps if folder_fps else DEFAULT_FOLDER_FPS)
    check_file(p)
    with open_container(p) as container:
        stream = video_stream(container, p)
        fps = _stream_fps(stream)
        num_frames = int(stream.frames or 0)
        duration = _duration_s(container, stream, num_frames, fps)
        if num_frames <= 0:
            num_frames = _count_packets(container, stream)
            _check_counted(p, num_frames, duration, fps)
            duration = duration or (num_frames / fps if fps else 0.0)
        if fps is None:
            fps = num_frames / duration if duration > 0 else 0.0
        coded_w, coded_h = stream.codec_context.width, stream.codec_context.height
    rotation, coded_w, coded_h = _first_frame_info(p, coded_w, coded_h)
    if num_frames <= 0 or fps <= 0:
        raise VideoUnreadable(p, "the video stream has no frames (or no frame rate)", _HINT_TRUNCATED)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return VideoMeta(str(p), num_frames, float(fps), float(duration), width, height, rotation, "file")


def probe_frame_folder(path: PathLike, fps: float) -> VideoMeta:
    """Metadata of a folder of JPEG/PNG frames (naturally sorted: img_2 before img_10).

    ``fps`` is the folder's declared frame rate (the files carry none). Raises
    ``VideoNotFound`` for a missing folder and ``FrameFolderError`` for one without images or
    whose first image cannot be read.
    """
    p = Path(path)
    files = list_frame_files(p)
    if fps is None or fps <= 0:
        raise FrameFolderError(p, f"a frame folder needs a positive fps, got {fps!r}",
                               "Pass the folder's frame rate (MVBench's tvqa frames are 3 fps).")
    from PIL import Image  # local: PIL is only needed for folders

    try:
        with Image.open(files[0]) as img:
            width, height = img.size
    except Exception as exc:  # noqa: BLE001 - any PIL failure means the same thing here
        raise FrameFolderError(files[0], f"cannot read the image ({type(exc).__name__}: {exc})") from exc
    n = len(files)
    return VideoMeta(str(p), n, float(fps), n / float(fps), int(width), int(height), 0, "frames")


def natural_key(name: str) -> tuple:
    """Sort key putting ``img_2`` before ``img_10`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(s), s) if s.isdigit() else (1, 0, s.lower()) for s in parts)


def list_frame_files(path: Path) -> list[Path]:
    """The image files of a frame folder in natural order (hidden files skipped).

    Numbered frames (``00001.jpg`` …, ``img_1.png`` …: one common prefix) must be numbered
    without gaps or repeats: the position of a frame is its time, so a missing number would
    shift every later frame (``FrameFolderError`` naming the missing numbers).
    """
    if not require_exists(path, "no such frame folder").is_dir():
        raise FrameFolderError(path, "is not a folder of frames")
    names = [
        n for n in os.listdir(path)
        if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)
    ]
    if not names:
        raise FrameFolderError(path, "the frame folder holds no JPEG/PNG images")
    names.sort(key=natural_key)
    _check_numbering(path, names)
    return [path / n for n in names]


_NUMBERED = re.compile(r"^(.*?)(\d+)\.[A-Za-z]+$")


def _check_numbering(path: Path, names: list[str]) -> None:
    """Gaps or repeats in the numbering of a numbered frame folder → ``FrameFolderError``."""
    matches = [_NUMBERED.match(n) for n in names]
    if not all(matches) or len({m.group(1) for m in matches if m}) != 1:
        return  # not one numbered sequence: natural order is all there is
    numbers = [int(m.group(2)) for m in matches if m]
    first, last = numbers[0], numbers[-1]
    repeated = sorted(n for n, k in Counter(numbers).items() if k > 1)
    missing = sorted(set(range(first, last + 1)) - set(numbers))
    if not missing and not repeated:
        return
    shown = lambda xs: ", ".join(map(str, xs[:10])) + (", …" if len(xs) > 10 else "")  # noqa: E731
    what = [f"missing number(s) {shown(missing)} ({len(missing)} in all)"] if missing else []
    what += [f"number(s) {shown(repeated)} used twice"] if repeated else []
    raise FrameFolderError(
        path, f"the frame numbering has gaps or repeats: {len(names)} images numbered {first}–{last}, "
              f"{'; '.join(what)}",
        "Frame positions are times, so the frames after a gap would be misplaced; re-extract the "
        "frame folder so every frame number is present once.",
    )


def require_exists(p: Path, missing: str = "no such file") -> Path:
    """``p`` if it can be stat'ed; else the precise error: missing, broken symbolic link,
    symbolic-link loop, permission denied."""
    try:
        os.stat(p)
        return p
    except OSError as exc:
        err = exc
    if err.errno == errno.ELOOP:
        raise VideoUnreadable(p, "the path is a loop of symbolic links",
                              "Fix the links (one of them points back at itself) or point at the real file.")
    if err.errno in (errno.EACCES, errno.EPERM):
        raise VideoUnreadable(p, "permission denied", "Fix the permissions of the file and its folders.")
    if os.path.islink(p):
        raise VideoNotFound(p, f"broken symbolic link (to {os.readlink(p)})")
    raise VideoNotFound(p, missing)


def check_file(p: Path) -> None:
    """Raise the right error for a missing, non-regular or zero-byte file."""
    require_exists(p)
    if not p.is_file():
        raise VideoUnreadable(p, "is not a regular file", "Point the sample at the video file.")
    if p.stat().st_size == 0:
        raise VideoUnreadable(p, "the file is empty (0 bytes)", "Re-download or re-extract it.")


class open_container:
    """``with open_container(path) as c`` — av.open with our errors instead of FFmpeg's, also for
    any FFmpeg error escaping the block (a hostile file must not end a run with a raw av error)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: Any = None

    def __enter__(self):
        try:
            self.container = av.open(str(self.path), mode="r")
        except av.error.FileNotFoundError as exc:
            raise VideoNotFound(self.path, "no such file") from exc
        except av.error.PermissionError as exc:
            raise VideoUnreadable(self.path, "permission denied", "Fix the file's permissions.") from exc
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoUnreadable(self.path, f"not a readable video ({exc})", _HINT_NOT_VIDEO) from exc
        return self.container

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.container is not None:
            self.container.close()
        if isinstance(exc, av.error.FFmpegError):
            raise VideoUnreadable(self.path, f"FFmpeg failed while reading it ({type(exc).__name__}: {exc})",
                                  _HINT_TRUNCATED) from exc


def video_stream(container: Any, path: Path) -> Any:
    """The first video stream, or ``VideoUnreadable`` (audio-only, subtitles …)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoUnreadable(
            path, f"the file has no video stream (streams: {', '.join(kinds)})",
            "Point the sample at the video file, not an audio track.",
        )
    return container.streams.video[0]


def _stream_fps(stream: Any) -> Optional[float]:
    """Average frame rate, falling back to the guessed and the base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < float(rate) <= 1000:
            return float(rate)
    return None


def _count_packets(container: Any, stream: Any) -> int:
    """Count the stream's packets (containers like mkv/webm/ts store no frame count)."""
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                n += 1
    except av.error.FFmpegError:
        pass  # a damaged tail: the count so far; decoding will report the missing frames
    return n


def _duration_s(container: Any, stream: Any, num_frames: int, fps: Optional[float]) -> float:
    """Stream duration, else container duration, else frames / fps (0 if unknown)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return num_frames / fps if fps and num_frames else 0.0


def _check_counted(p: Path, counted: int, duration: float, fps: Optional[float]) -> None:
    """A counted frame total far below what the declared duration implies (a Matroska header
    says 10 s, the packets stop at 3 s) means a truncated file. Conservative on purpose: below
    half AND more than 2 s of frames missing."""
    if not fps or duration <= 0:
        return
    expected = duration * fps
    if counted < 0.5 * expected and expected - counted > 2 * fps:
        raise VideoUnreadable(
            p, f"the file ends early: {counted} frames found, its header declares {duration:.1f} s "
               f"(about {expected:.0f} frames at {fps:g} fps)", _HINT_TRUNCATED,
        )


def _first_frame_info(p: Path, width: int, height: int) -> tuple[int, int, int]:
    """Decode the first frame: proves the stream decodes; gives rotation and coded size."""
    with open_container(p) as container:
        stream = video_stream(container, p)
        frame = next(_safe_frames(container, stream, p), None)
        if frame is None:
            raise VideoUnreadable(p, "no frame could be decoded", _HINT_TRUNCATED)
        rotation = normalise_rotation(getattr(frame, "rotation", 0) or 0)
        if not rotation:
            rotation = normalise_rotation(_metadata_rotation(stream))
        return rotation, int(frame.width or width), int(frame.height or height)


def _safe_frames(container: Any, stream: Any, p: Path) -> Iterator[Any]:
    """Decode frames, turning FFmpeg errors into ``VideoUnreadable``."""
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise VideoUnreadable(p, f"decoding failed ({exc})", _HINT_TRUNCATED) from exc


def _metadata_rotation(stream: Any) -> float:
    """Old-style ``rotate`` tag (clockwise degrees) as a counter-clockwise angle."""
    value = (stream.metadata or {}).get("rotate")
    try:
        return -float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def normalise_rotation(deg: float) -> int:
    """Snap an angle to 0/90/180/270 (counter-clockwise)."""
    return int(round(float(deg) / 90.0)) % 4 * 90

