"""Render a :class:`~vamba_eval.synth.world.VideoScript` to frames and to an h264 mp4 (PyAV).

Layout of a frame (sizes scale with the frame; defaults 160×96):

* the scene's background colour everywhere; a border of ``MARGIN·H`` is never drawn on, so the
  four corners always show the pure background colour;
* the *label area* (the left ``LABEL_WIDTH`` of the frame): the scene's digit or word, big, in
  black on light backgrounds and white on dark ones, with a stroke of the other colour; under
  it the tally (one small square per tick so far);
* the *stage* (the rest): one vertical lane per shape, each shape bouncing inside its own lane,
  radius ``SHAPE_RADIUS·H``, with a 2-px outline (black; white for black shapes). Shapes never
  overlap each other or the label, so everything in the script is visible in every frame.

Frames are a pure function of (script, time, size). The encoder runs single-threaded with
bit-exact flags, so a script gives the same file bytes with the same PyAV/FFmpeg build.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vamba_eval.synth.world import COLORS, LIGHT_COLORS, Scene, VideoScript

MARGIN = 0.07          # untouched border (fraction of H)
LABEL_WIDTH = 0.42     # the label area: the left part of the frame (fraction of W)
LABEL_Y = 0.42         # label centre (fraction of H)
SHAPE_RADIUS = 0.15    # fraction of H (less when lanes are narrow)
TALLY_SIDE = 0.085     # tally square side (fraction of H)
DIGIT_SIZE = 0.6       # font size of a digit label (fraction of H)
WORD_SIZE = 0.34       # font size of a word label (fraction of H), shrunk to fit the label area


def text_colors(background: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(fill, stroke) of the label and the tally on ``background``."""
    black, white = COLORS["black"], COLORS["white"]
    return (black, white) if background in LIGHT_COLORS else (white, black)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _stroke(height: int) -> int:
    return max(1, height // 48)


@lru_cache(maxsize=256)
def _font_size(text: str, width: int, height: int) -> int:
    """The label's font size: DIGIT_SIZE/WORD_SIZE of H, shrunk until it fits the label area."""
    size = max(8, int(round((DIGIT_SIZE if text.isdigit() else WORD_SIZE) * height)))
    room = LABEL_WIDTH * width - 2 * MARGIN * height
    while size > 8 and _font(size).getlength(text) + 2 * _stroke(height) > room:
        size -= 1
    return size


def _draw_label(draw: ImageDraw.ImageDraw, text: str, width: int, height: int,
                colors: tuple[object, object], stroke_width: int) -> None:
    draw.text((LABEL_WIDTH * width / 2, LABEL_Y * height), text, fill=colors[0], anchor="mm",
              font=_font(_font_size(text, width, height)), stroke_width=stroke_width,
              stroke_fill=colors[1])


@lru_cache(maxsize=256)
def text_mask(text: str, width: int = 160, height: int = 96, stroke: bool = False) -> np.ndarray:
    """Coverage (uint8 [H, W]) of the label ``text``; the glyphs only unless ``stroke``."""
    img = Image.new("L", (width, height), 0)
    _draw_label(ImageDraw.Draw(img), text, width, height, (255, 255), _stroke(height) if stroke else 0)
    return np.asarray(img)


@lru_cache(maxsize=128)
def _label_layer(text: str, background: str, width: int, height: int) -> Image.Image:
    """The label with its stroke on a transparent RGBA layer (cached per scene)."""
    fill, stroke = text_colors(background)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    _draw_label(ImageDraw.Draw(layer), text, width, height, (fill + (255,), stroke + (255,)),
                _stroke(height))
    return layer


def stage_to_pixels(x: float, y: float, lane: int, n_lanes: int, width: int,
                    height: int) -> tuple[float, float, float]:
    """Map stage point (x, y) ∈ [0, 1]² of lane ``lane`` (of ``n_lanes``) to (cx, cy, radius) px."""
    m = MARGIN * height
    left, right = LABEL_WIDTH * width, width - m
    lane_w = (right - left) / n_lanes
    r = min(SHAPE_RADIUS * height, lane_w / 2 - 1)
    x0, x1 = left + lane * lane_w + r, left + (lane + 1) * lane_w - r
    y0, y1 = m + r, height - m - r
    return x0 + x * (x1 - x0), y0 + y * (y1 - y0), r


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, color: str, cx: float, cy: float, r: float) -> None:
    fill = COLORS[color]
    outline = COLORS["white"] if color == "black" else COLORS["black"]
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=2)
    elif kind == "square":
        h = r * 0.88
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill, outline=outline, width=2)
    else:
        pts = [(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)]
        draw.polygon(pts, fill=fill, outline=outline, width=2)


def _draw_tally(draw: ImageDraw.ImageDraw, n: int, background: str, width: int, height: int) -> None:
    """``n`` squares centred under the label."""
    if n <= 0:
        return
    side = max(3, int(round(TALLY_SIDE * height)))
    gap = side // 2 + 1
    x = int(round(LABEL_WIDTH * width / 2 - (n * side + (n - 1) * gap) / 2))
    y = height - int(round(MARGIN * height)) - side - 2
    fill, _ = text_colors(background)
    for i in range(n):
        left = x + i * (side + gap)
        draw.rectangle((left, y, left + side - 1, y + side - 1), fill=fill)


def render_scene_frame(scene: Scene, t: float, width: int = 160, height: int = 96) -> Image.Image:
    """The frame of ``scene`` at absolute time ``t`` as an RGB PIL image."""
    img = Image.new("RGB", (width, height), COLORS[scene.background])
    draw = ImageDraw.Draw(img)
    n = len(scene.shapes)
    for i, shape in enumerate(scene.shapes):
        if scene.is_visible(i, t):
            cx, cy, r = stage_to_pixels(*scene.position(i, t), i, n, width, height)
            _draw_shape(draw, shape.kind, scene.color_at(i, t), cx, cy, r)
    layer = _label_layer(scene.text, scene.background, width, height)
    img.paste(layer, (0, 0), layer)
    _draw_tally(draw, scene.ticks_at(t), scene.background, width, height)
    return img


def render_frame(script: VideoScript, t: float, width: int = 160, height: int = 96) -> np.ndarray:
    """The frame at time ``t`` seconds: uint8 RGB array [H, W, 3]."""
    return np.asarray(render_scene_frame(script.scene_at(t), t, width, height))


def frame_count(script: VideoScript, fps: int) -> int:
    """Number of frames of the rendered video (``duration_s · fps``); frame i shows t = i / fps."""
    return int(round(script.duration_s * fps))


def _open_stream(container: av.container.OutputContainer, fps: int, width: int, height: int):
    """An h264 (libx264) stream, or mpeg4 where libx264 is unavailable."""
    if "libx264" in av.codecs_available:
        stream = container.add_stream("libx264", rate=fps)
        stream.options = {"crf": "17", "preset": "veryfast", "threads": "1"}
    else:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.bit_rate = 1_500_000
        stream.codec_context.thread_count = 1
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.gop_size = max(1, 2 * fps)
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    return stream


Captured = tuple[VideoScript, int, int, int]  # (script, width, height, fps) of one render() call
_CAPTURE: Optional[dict[str, Captured]] = None


@contextlib.contextmanager
def capture_scripts() -> Iterator[dict[str, Captured]]:
    """Inside the block ``render`` encodes nothing: it records ``str(path) → (script, width, height,
    fps)`` in the yielded dict instead. Training data uses this to write a release's annotations
    only and draw the few frames a sample needs straight from the script (``render_frame`` at the
    sampled frames' times), which is ~100× faster than encoding and decoding every frame."""
    global _CAPTURE
    previous, _CAPTURE = _CAPTURE, {}
    try:
        yield _CAPTURE
    finally:
        _CAPTURE = previous


def record_capture(script: VideoScript, path: Union[str, Path], width: int = 160, height: int = 96,
                   fps: float = 4) -> bool:
    """Under ``capture_scripts()``: record the video a writer is about to make (any container or a
    frame folder showing ``script`` at ``fps``) and return True — the writer then skips it."""
    if _CAPTURE is None:
        return False
    _CAPTURE[str(Path(path))] = (script, width, height, fps)
    return True


def render(script: VideoScript, path: Union[str, Path], width: int = 160, height: int = 96,
           fps: int = 4) -> Path:
    """Encode ``script`` to ``path`` (mp4, yuv420p, constant ``fps``); returns the path.

    Under ``capture_scripts()`` nothing is written; the call is recorded instead."""
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {width}x{height}")
    path = Path(path)
    if record_capture(script, path, width, height, fps):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, fps)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = _open_stream(container, fps, width, height)
        for i in range(frame_count(script, fps)):
            rgb = render_frame(script, i / fps, width, height)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
