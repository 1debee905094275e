"""Small test videos written with PyAV whose frames say which frame they are.

Each frame is 64×48 and carries its index as 12 bits: a 4×3 grid of 16×16 blocks, white for 1
and black for 0 (block ``r*4 + c`` is bit ``r*4 + c``). Lossy codecs keep such blocks, so
``read_index`` recovers the exact index of a decoded frame from the block means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import av
import numpy as np
from PIL import Image

W, H, BLOCK = 64, 48, 16
COLS, ROWS = W // BLOCK, H // BLOCK
LOW, HIGH = 16, 240


def pattern(index: int) -> np.ndarray:
    """The 48×64 RGB frame encoding ``index``."""
    img = np.full((H, W, 3), LOW, np.uint8)
    for bit in range(COLS * ROWS):
        if index >> bit & 1:
            r, c = divmod(bit, COLS)
            img[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = HIGH
    return img


def read_index(frame: np.ndarray) -> int:
    """Index encoded in a (decoded, 48×64) frame; block centres only (codec edge bleed)."""
    assert frame.shape[:2] == (H, W), frame.shape
    value = 0
    for bit in range(COLS * ROWS):
        r, c = divmod(bit, COLS)
        block = frame[r * BLOCK + 4:(r + 1) * BLOCK - 4, c * BLOCK + 4:(c + 1) * BLOCK - 4]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def video_codec() -> str:
    """libx264 when this PyAV build can encode it, else mpeg4."""
    for name in ("libx264", "mpeg4"):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - codec not in this build
            continue
    raise RuntimeError("no usable video encoder in this PyAV build")


def _stream_options(codec: str, gop: int) -> dict[str, str]:
    if codec == "libx264":
        # fixed GOP: no scene-cut keyframes (every frame differs); B-frames on (reordering)
        return {"crf": "12", "bf": "2",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    return {"g": str(gop), "qscale": "2", "bf": "2"}


def write_video(
    path: Path,
    num_frames: int,
    fps: int = 10,
    gop: int = 30,
    rotation: Optional[int] = None,
    faststart: bool = False,
    fmt: Optional[str] = None,
) -> Path:
    """Write ``num_frames`` pattern frames (frame i shows ``pattern(i)``) to ``path``."""
    codec = video_codec()
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, container_options=container_options) as out:
        stream = out.add_stream(codec, rate=fps, options=_stream_options(codec, gop))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_gif(path: Path, num_frames: int, fps: int = 10) -> Path:
    """An animated GIF of pattern frames (black/white survive the palette exactly)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("gif", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "rgb8"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_frame_folder(folder: Path, num_frames: int, ext: str = "png", stem: str = "img_") -> Path:
    """``stem1.ext`` … ``stemN.ext`` (unpadded numbers: natural order matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(pattern(i)).save(folder / f"{stem}{i + 1}.{ext}")
    return folder


def write_audio_only(path: Path) -> Optional[Path]:
    """A one-second audio-only file (AAC in mp4, else PCM in wav); None if no encoder."""
    for codec, fmt, suffix in (("aac", "mp4", ".mp4"), ("pcm_s16le", "wav", ".wav")):
        try:
            av.Codec(codec, "w")
        except Exception:  # noqa: BLE001
            continue
        target = path.with_suffix(suffix)
        with av.open(str(target), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=16000)
            stream.layout = "mono"
            fmt_name = stream.codec_context.codec.audio_formats[0].name
            samples = (np.sin(np.arange(16000) / 10.0) * 3000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
            frame.sample_rate = 16000
            frame.pts = 0
            resampler = av.AudioResampler(format=fmt_name, layout="mono", rate=16000)
            for chunk in resampler.resample(frame):
                out.mux(stream.encode(chunk))
            out.mux(stream.encode(None))
        return target
    return None
