"""On-disk cache of decoded frames, and ``load_frames``: probe → sample → odd rule → decode →
resize, through the cache.

A cache entry is one ``.npz`` (frames, indices, times, the probed metadata as JSON) named by
sha256 of (video content fingerprint, ``FrameSpec.key()``, start/end, frame-folder fps, cache
format). Content fingerprint: sha256 of the bytes for files up to 64 MB; for bigger files size +
mtime + the first and last MB (a re-encoded file of equal size and mtime would be missed; that is
the price of not hashing gigabytes); for frame folders the names, sizes and mtimes of the images.
Entries are written to a temporary file and renamed into place, so readers never see half an
entry and concurrent writers of one key are harmless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vamba_eval.video.decode import decode_frames
from vamba_eval.video.errors import PathLike
from vamba_eval.video.meta import VideoMeta, check_file, list_frame_files, probe, require_exists
from vamba_eval.video.sampling import (
    FrameSpec,
    apply_odd_rule,
    frame_times,
    sample_indices,
    target_size,
)

CACHE_FORMAT = "vamba-eval-frames/1"  # bump when sampling/decoding semantics change
BIG_FILE_BYTES = 64 * 1024 * 1024
EDGE_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024


def default_cache_root() -> Path:
    """``$VAMBA_EVAL_CACHE`` or ``~/.cache/vamba-eval/frames``."""
    env = os.environ.get("VAMBA_EVAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vamba-eval" / "frames"


def content_fingerprint(path: PathLike) -> str:
    """Hex digest identifying a video's content (see the module docstring)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in list_frame_files(p):
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()
    check_file(p)
    st = p.stat()
    with open(p, "rb") as fh:
        if st.st_size <= BIG_FILE_BYTES:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
            return "full:" + h.hexdigest()
        h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
        h.update(fh.read(EDGE_BYTES))
        fh.seek(st.st_size - EDGE_BYTES)
        h.update(fh.read(EDGE_BYTES))
    return "edges:" + h.hexdigest()


def _num(x: Optional[float]) -> str:
    """Key text of an optional number (5 and 5.0 are the same window)."""
    return "None" if x is None else repr(float(x))


class FrameCache:
    """Decoded frames on disk under ``root`` (default: ``default_cache_root()``)."""

    def __init__(self, root: Optional[PathLike] = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self._fingerprints: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def key(
        self,
        path: PathLike,
        spec: FrameSpec,
        start_s: Optional[float] = None,
        end_s: Optional[float] = None,
        folder_fps: Optional[float] = None,
    ) -> str:
        """Cache key of (video content, spec, window, folder fps)."""
        parts = [CACHE_FORMAT, self._fingerprint(Path(path)), spec.key(),
                 _num(start_s), _num(end_s), _num(folder_fps)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _fingerprint(self, p: Path) -> str:
        """Content fingerprint, memoised per (path, size, mtime) for this process."""
        st = require_exists(p).stat()
        memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if memo in self._fingerprints:
                return self._fingerprints[memo]
        fp = content_fingerprint(p)
        with self._lock:
            self._fingerprints[memo] = fp
        return fp

    def file_for(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> Optional[tuple[np.ndarray, list[int], list[float]]]:
        """(frames, indices, times) or None on a miss (an unreadable entry counts as a miss)."""
        entry = self.get_entry(key)
        return None if entry is None else entry[:3]

    def get_entry(
        self, key: str
    ) -> Optional[tuple[np.ndarray, list[int], list[float], Optional[VideoMeta]]]:
        """Like ``get`` plus the stored metadata (None if the entry was put without it)."""
        file = self.file_for(key)
        if not file.is_file():
            return None
        try:
            with np.load(file, allow_pickle=False) as data:
                frames = data["frames"]
                indices = [int(i) for i in data["indices"]]
                times = [float(t) for t in data["times"]]
                meta_json = str(data["meta"]) if "meta" in data.files else ""
        except Exception:  # noqa: BLE001 - corrupt/partial entry: drop it, recompute
            file.unlink(missing_ok=True)
            return None
        meta = VideoMeta.from_dict(json.loads(meta_json)) if meta_json else None
        return frames, indices, times, meta

    def put(
        self,
        key: str,
        frames: np.ndarray,
        indices: Sequence[int],
        times: Sequence[float],
        meta: Optional[VideoMeta] = None,
    ) -> Path:
        """Store an entry atomically (temporary file + ``os.replace``); returns its path."""
        file = self.file_for(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        meta_json = json.dumps(meta.to_dict()) if meta is not None else ""
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=np.asarray(frames, dtype=np.uint8),
                         indices=np.asarray(list(indices), dtype=np.int64),
                         times=np.asarray(list(times), dtype=np.float64),
                         meta=np.asarray(meta_json))
            os.replace(tmp, file)
        finally:
            tmp.unlink(missing_ok=True)
        return file


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """Frames ready for a model adapter, with what is needed to record how they were made."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    indices: tuple[int, ...]
    times: tuple[float, ...]
    meta: VideoMeta
    from_cache: bool = False


def frame_size_for(meta: VideoMeta, spec: FrameSpec) -> Optional[tuple[int, int]]:
    """(w, h) frames are resized to under ``spec``; None (native size) if it sets no edge."""
    if spec.max_edge is None and spec.min_edge is None:
        return None
    return target_size(meta.width, meta.height, spec.max_edge, spec.min_edge, spec.round_to)


def load_frames(
    path: PathLike,
    spec: FrameSpec,
    start_s: Optional[float] = None,
    end_s: Optional[float] = None,
    cache: Optional[FrameCache] = None,
    folder_fps: Optional[float] = None,
) -> DecodedVideo:
    """probe → sample → odd rule → decode → resize, served from / stored in ``cache``.

    ``folder_fps`` is the frame rate of a frame folder (``VideoRef.fps``). Raises the
    ``VideoError`` subclasses of probe/decode.
    """
    key = cache.key(path, spec, start_s, end_s, folder_fps) if cache is not None else None
    if cache is not None and key is not None:
        hit = cache.get_entry(key)
        if hit is not None and hit[3] is not None:
            frames, indices, times, meta = hit
            meta = dataclasses.replace(meta, path=str(path))
            return DecodedVideo(frames, tuple(indices), tuple(times), meta, True)
    meta = probe(path, folder_fps)
    indices = apply_odd_rule(sample_indices(meta, spec, start_s, end_s), spec.drop_odd)
    frames = decode_frames(path, indices, meta, frame_size_for(meta, spec))
    times = frame_times(meta, indices)
    if cache is not None and key is not None:
        cache.put(key, frames, indices, times, meta)
    return DecodedVideo(frames, tuple(indices), tuple(times), meta, False)
