"""Hostile media for tests/test_hostile_media.py: real files written with PyAV whose frames carry
their index (tests/video_fixtures.py), and a spy recording which files get opened."""

from __future__ import annotations

import builtins
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np
from PIL import Image

import video_fixtures as vf

# about 10 fps for 1 s, then 2 fps (jittered: no slot middle falls on a frame boundary)
VFR_PTS_MS = [i * 100 + (i % 3) * 7 for i in range(10)] + [1013 + i * 500 for i in range(10)]


# --------------------------------------------------------------------------- writers


def write_pattern_video(path: Path, n: int, *, scale: tuple[int, int] = (1, 1), fps: int = 10,
                        rotation: Optional[int] = None, pts_ms: Optional[list[int]] = None, fast: bool = False) -> Path:
    """Pattern frames (64×48 scaled by ``scale`` = (x, y)), optional display rotation; ``pts_ms`` gives
    variable timing (no B-frames then: the mp4 duration of a VFR stream is only right without reordering)."""
    codec = vf.video_codec()
    opts = vf._stream_options(codec, 30)
    if pts_ms is not None:
        opts["bf"] = "0"
    if fast and codec == "libx264":
        opts = {"crf": "35", "preset": "ultrafast", "x264-params": "keyint=6"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=opts)
        stream.width, stream.height, stream.pix_fmt = vf.W * scale[0], vf.H * scale[1], "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            img = np.kron(vf.pattern(i), np.ones((scale[1], scale[0], 1), np.uint8))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def index_of(frame: np.ndarray) -> int:
    """The pattern index of a decoded frame of any size (resized back to 64×48 first)."""
    if frame.shape[:2] != (vf.H, vf.W):
        frame = np.asarray(Image.fromarray(frame).resize((vf.W, vf.H), Image.BILINEAR))
    return vf.read_index(frame)


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _symlink_loop(a: Path, b: Path) -> Path:
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def build_media(base: Path) -> dict[str, Path]:
    """``base``/root/ (the data root) with every hostile case, and ``base``/outside/ holding a perfectly
    valid video; returns {case: path}."""
    root, vids, outside = base / "root", base / "root" / "videos", base / "outside"
    vids.mkdir(parents=True)
    outside.mkdir()
    m: dict[str, Path] = {"root": root, "outside_ok": vf.write_video(outside / "ok.mp4", 20)}
    m["ok"] = vf.write_video(vids / "ok.mp4", 40)
    full = vf.write_video(base / "fs.mp4", 200, faststart=True).read_bytes()
    m["truncated"] = _bytes(vids / "truncated.mp4", full[: len(full) // 2])
    moov_last = vf.write_video(base / "ml.mp4", 60).read_bytes()
    m["truncated_moov"] = _bytes(vids / "truncated_moov.mp4", moov_last[: len(moov_last) // 2])
    m["mkv_as_mp4"] = vf.write_video(vids / "mkv_as_mp4.mp4", 30, fmt="matroska")
    shutil.copy(vf.write_gif(base / "g.gif", 12), vids / "gif_as_mp4.mp4")
    m["gif_as_mp4"] = vids / "gif_as_mp4.mp4"
    m["text"] = _bytes(vids / "text.mp4", b"<html>404 Not Found</html>\n" * 30)
    m["empty"] = _bytes(vids / "empty.mp4", b"")
    audio = vf.write_audio_only(base / "speech")
    if audio is not None:
        m["audio"] = vids / "audio.mp4"
        shutil.copy(audio, m["audio"])
    m["vfr"] = write_pattern_video(vids / "vfr.mp4", len(VFR_PTS_MS), pts_ms=VFR_PTS_MS)
    for deg in (90, 180, 270):
        m[f"rot{deg}"] = write_pattern_video(vids / f"rot{deg}.mp4", 12, scale=(10, 10), rotation=deg)  # 640×480
    m["4k"] = write_pattern_video(vids / "4k.mp4", 12, scale=(60, 45), fast=True)  # 3840×2160
    m["gif1"] = vf.write_gif(vids / "one.gif", 1)
    m["frames_ok"] = vf.write_frame_folder(root / "frames" / "ok", 9, ext="jpg")
    m["frames_gaps"] = vf.write_frame_folder(root / "frames" / "gaps", 9, ext="jpg")
    for k in (3, 4, 7):
        (m["frames_gaps"] / f"img_{k}.jpg").unlink()
    m["short"] = vf.write_video(vids / "short.mp4", 5)
    m["loop"] = _symlink_loop(vids / "loop.mp4", vids / "loop2.mp4")
    m["dir_loop"] = _symlink_loop(root / "frames" / "dloop", root / "frames" / "dloop2")
    os.symlink(m["outside_ok"], vids / "link_out.mp4")
    m["link_out"] = vids / "link_out.mp4"
    os.symlink(outside, root / "linked_dir")
    m["link_dir_out"] = root / "linked_dir" / "ok.mp4"
    evil = vf.write_frame_folder(root / "frames" / "evil", 4)
    (evil / "img_4.png").unlink()
    os.symlink(m["outside_ok"], evil / "img_4.png")
    m["frame_link_out"] = evil
    return m


class OpenSpy:
    """Records every path opened through builtins.open / os.open / av.open."""

    def __init__(self, monkeypatch) -> None:
        self.paths: list[str] = []
        for mod, name in ((builtins, "open"), (os, "open"), (av, "open")):
            real = getattr(mod, name)
            monkeypatch.setattr(mod, name, self._wrap(real))

    def _wrap(self, real):
        def opener(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)):
                self.paths.append(os.path.realpath(file))
            return real(file, *args, **kwargs)
        return opener

    def touched(self, folder: Path) -> list[str]:
        return [p for p in self.paths if p.startswith(str(folder.resolve()))]
