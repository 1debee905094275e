"""Decode chosen frames of a video (PyAV) or of a frame folder (PIL).

Index semantics for files: index ``i`` is the time slot ``[i/fps, (i+1)/fps)`` (``fps``: the
average rate) and its frame is the one on screen at the slot's middle, i.e. the latest frame whose
timestamp position ``(pts − first_pts)·time_base·fps`` is ≤ ``i + 0.5``. For constant-frame-rate
video that is exactly the i-th frame (decord's index); for variable frame rate it samples uniformly
in TIME (a stretch at 30 fps gets no more slots than one as long at 5 fps), and the recorded time
``i/fps`` is the slot's start. It also makes sparse (seeking) and dense (sequential) decoding agree.
GIFs (by name) and streams without timestamps are indexed by decode order.

Sparse requests seek to the keyframe before each wanted frame and decode forward, letting one
seek serve all wanted frames within about a GOP; dense requests (more than a third of the
frames) decode the file sequentially, which is faster. A frame that cannot be decoded raises
``VideoUnreadable`` listing the indices — never fewer or black frames.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import av
import numpy as np
from PIL import Image

from vamba_eval.video.errors import FrameFolderError, PathLike, VideoUnreadable
from vamba_eval.video.meta import (
    VideoMeta,
    check_file,
    list_frame_files,
    open_container,
    probe,
    video_stream,
)

_log = logging.getLogger(__name__)

DENSE_FRACTION = 1.0 / 3.0  # more unique frames than this fraction: decode sequentially
MIN_FORWARD_GAP = 16  # always decode forward (rather than seek) across gaps this small
EOF_SLACK = 1.0  # the last frame also serves an index up to one frame past it (edit lists)
_BACKOFFS_S = (0.0, 1.0, 4.0, 16.0, 64.0, None)  # seconds before the target; None: the start
_START_SEEK_TICKS = 10**9  # a timestamp this far before the first frame seeks to the start
_Size = Optional[tuple[int, int]]


def decode_frames(
    path: PathLike,
    indices: Sequence[int],
    meta: Optional[VideoMeta] = None,
    size: _Size = None,
    folder_fps: Optional[float] = None,
) -> np.ndarray:
    """Frames at ``indices`` (in that order, repeats allowed) as ``[T, H, W, 3]`` uint8 RGB.

    ``meta`` is probed when not given (``folder_fps`` is then the fps of a frame folder).
    ``size`` = (width, height) resizes every frame with PIL bicubic; rotation metadata is
    applied first. Raises ``VideoNotFound`` / ``VideoUnreadable`` / ``FrameFolderError``.
    """
    p = Path(path)
    if meta is None:
        meta = probe(p, folder_fps)
    wanted = [int(i) for i in indices]
    bad = [i for i in wanted if not 0 <= i < meta.num_frames]
    if bad:
        raise ValueError(f"{p}: frame indices {_fmt(bad)} outside [0, {meta.num_frames})")
    out_w, out_h = size if size else (meta.width, meta.height)
    if not wanted:
        return np.zeros((0, out_h, out_w, 3), np.uint8)
    unique = sorted(set(wanted))
    if meta.kind == "frames":
        frames = _decode_folder(p, unique, size or (meta.width, meta.height))
    else:
        frames = _FileDecoder(p, meta, size).decode(unique)
    return np.stack([frames[i] for i in wanted])


def _fmt(indices: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', …' if len(indices) > limit else ''}] ({len(indices)} frames)"


def _resize(arr: np.ndarray, size: _Size) -> np.ndarray:
    if size is None or (arr.shape[1], arr.shape[0]) == tuple(size):
        return np.ascontiguousarray(arr)
    img = Image.fromarray(arr).resize((int(size[0]), int(size[1])), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _decode_folder(path: Path, unique: list[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Read the wanted images of a frame folder (all resized to ``size``)."""
    files = list_frame_files(path)
    out: dict[int, np.ndarray] = {}
    for i in unique:
        if i >= len(files):
            raise FrameFolderError(path, f"frame {i} wanted but the folder now has {len(files)} images",
                                   "The folder changed since it was probed; re-run.")
        try:
            with Image.open(files[i]) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - any PIL failure: the image is unusable
            raise FrameFolderError(
                files[i], f"cannot read frame {i} of the folder ({type(exc).__name__}: {exc})",
                "Re-extract the frame folder; the image is damaged or not an image.",
            ) from exc
        out[i] = _resize(arr, size)
    return out


class _RunAssigner:
    """Matches the frames of ONE contiguous decode run (presentation order) to wanted indices:
    index i gets the latest frame whose position ≤ i + 0.5."""

    def __init__(self, pending: list[int], store: Callable[[int, Any], None]) -> None:
        self.pending = pending
        self.store = store
        self.k = 0  # pending[:k] are done
        self.prev: Any = None
        self.prev_pos = 0.0

    @property
    def done(self) -> bool:
        return self.k >= len(self.pending)

    def feed(self, frame: Any, pos: float) -> None:
        """A new frame: every pending index it supersedes gets the previous frame."""
        while self.k < len(self.pending) and self.pending[self.k] + 0.5 < pos:
            if self.prev is not None and self.prev_pos <= self.pending[self.k] + 0.5:
                self.store(self.pending[self.k], self.prev)
            self.k += 1  # unassigned here means missing: reported by the caller
        self.prev, self.prev_pos = frame, pos

    def finish(self) -> None:
        """End of stream: the last frame serves indices up to ``EOF_SLACK`` past it."""
        while (self.k < len(self.pending) and self.prev is not None
               and self.pending[self.k] <= self.prev_pos + EOF_SLACK + 1e-6):
            self.store(self.pending[self.k], self.prev)
            self.k += 1


class _FileDecoder:
    """Decodes the wanted frames of one video file (see the module docstring)."""

    def __init__(self, path: Path, meta: VideoMeta, size: _Size) -> None:
        self.path, self.meta, self.size = path, meta, size
        self.out: dict[int, np.ndarray] = {}
        self.error: Optional[str] = None  # last FFmpeg error seen while decoding
        self.first_pts: Optional[int] = None
        self.sec_per_tick = 0.0
        self.seek_cost = 0.0  # frames a seek is expected to decode (GOP length, landing distance)

    def decode(self, unique: list[int]) -> dict[int, np.ndarray]:
        check_file(self.path)
        gif = self.path.suffix.lower() == ".gif"
        sequential = gif or len(unique) > DENSE_FRACTION * self.meta.num_frames
        with open_container(self.path) as container:
            stream = video_stream(container, self.path)
            if sequential:
                stream.thread_type = "AUTO"  # frame threads: only before the codec opens
            self.sec_per_tick = float(stream.time_base) if stream.time_base else 0.0
            frames = self._frames(container, stream)
            first = next(frames, None)
            if first is not None and first.pts is not None and self.sec_per_tick > 0:
                self.first_pts = int(first.pts)
            ordinal = gif or self.first_pts is None
            if first is None:
                pass  # nothing decodes: every frame is reported missing below
            elif sequential or ordinal:
                self._sequential(itertools.chain([first], frames), unique, ordinal)
            else:
                self._sparse(container, stream, unique)
        missing = [i for i in unique if i not in self.out]
        if missing:
            why = f" (FFmpeg: {self.error})" if self.error else ""
            raise VideoUnreadable(
                self.path,
                f"could not decode frames {_fmt(missing)} of the {self.meta.num_frames} its metadata "
                f"declares; the file ends early or is damaged{why}",
                "The file looks truncated or corrupt; re-download it.",
            )
        return self.out

    def _frames(self, container: Any, stream: Any) -> Iterator[Any]:
        """Decode from the current position. A packet the decoder rejects is skipped, as
        ffmpeg and decord do (logged as a warning; its index then gets the frame shown before
        it); a demuxer error ends the run. The last error is kept for the error message."""
        try:
            for packet in container.demux(stream):
                try:
                    yield from packet.decode()
                except av.error.InvalidDataError as exc:
                    self.error = str(exc)
                    _log.warning("%s: decoder rejected a packet at pts %s: %s", self.path, packet.pts, exc)
        except av.error.FFmpegError as exc:
            self.error = str(exc)

    def _pos(self, frame: Any, last: float) -> float:
        """Index position of a frame from its pts (or one past the last frame without pts)."""
        if frame.pts is None or self.first_pts is None:
            return last + 1.0
        return (int(frame.pts) - self.first_pts) * self.sec_per_tick * self.meta.fps

    def _store(self, index: int, frame: Any) -> None:
        if index in self.out:
            return
        arr = frame.to_ndarray(format="rgb24")
        if self.meta.rotation_deg:
            arr = np.rot90(arr, k=self.meta.rotation_deg // 90)
        self.out[index] = _resize(arr, self.size)

    def _sequential(self, frames: Iterator[Any], unique: list[int], ordinal: bool) -> None:
        """Decode on from the start, stopping after the last wanted frame."""
        if ordinal:
            wanted = set(unique)
            for n, frame in enumerate(frames):
                if n in wanted:
                    self._store(n, frame)
                if n >= unique[-1]:
                    break
            return
        assigner = _RunAssigner(unique, self._store)
        pos = -1.0
        for frame in frames:
            pos = self._pos(frame, pos)
            assigner.feed(frame, pos)
            if assigner.done:
                return
        assigner.finish()

    def _sparse(self, container: Any, stream: Any, unique: list[int]) -> None:
        """Seek + decode forward; one seek serves every wanted frame within about a GOP."""
        k = 0
        while k < len(unique):
            assigner = _RunAssigner(unique[k:], self._store)
            if not self._run(self._seek_run(container, stream, unique[k]), assigner):
                return  # end of file: whatever is left is missing
            k += max(assigner.k, 1)  # max(): a frame the run could not serve is missing

    def _run(self, run: Iterator[tuple[Any, float]], assigner: _RunAssigner) -> bool:
        """Consume one decode run. False when the file ended during it."""
        last_key: Optional[float] = None
        for frame, pos in run:
            assigner.feed(frame, pos)
            if frame.key_frame:
                if last_key is not None:
                    self.seek_cost = max(self.seek_cost, pos - last_key)
                last_key = pos
            if assigner.done:
                return True
            gap = assigner.pending[assigner.k] - pos
            if assigner.k > 0 and gap > max(MIN_FORWARD_GAP, self.seek_cost):
                return True  # cheaper to seek to the next wanted frame
        assigner.finish()
        return False

    def _seek_run(self, container: Any, stream: Any, target: int) -> Iterator[tuple[Any, float]]:
        """Seek so that decoding starts at or before ``target``; yields (frame, position).

        Seeks to the keyframe before the target's timestamp; if the first frame decoded is past
        the target (B-frame reordering; containers such as MPEG-TS whose generic seek lands on
        a LATER keyframe), seeks further back, finally to the very start.
        """
        assert self.first_pts is not None
        tried: set[int] = set()
        for backoff in _BACKOFFS_S:
            if backoff is None:
                ts = self.first_pts - _START_SEEK_TICKS  # before the first frame: the start
            else:
                t = max(0.0, target / self.meta.fps - backoff)
                ts = self.first_pts + int(t / self.sec_per_tick)
            if ts in tried:
                continue
            tried.add(ts)
            try:
                container.seek(ts, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                self.error = str(exc)
                continue
            frames = self._frames(container, stream)
            first = next(frames, None)
            if first is None:
                continue  # landed past the data (truncated file): try further back
            pos = self._pos(first, -1.0)
            if pos <= target + 0.5 or backoff is None:
                self.seek_cost = max(self.seek_cost, target - pos)
                return itertools.chain([(first, pos)], self._positions(frames, pos))
        return iter(())

    def _positions(self, frames: Iterator[Any], pos: float) -> Iterator[tuple[Any, float]]:
        for frame in frames:
            pos = self._pos(frame, pos)
            yield frame, pos
