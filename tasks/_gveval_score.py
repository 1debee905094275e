"""G-VEval scoring, step for step as ztangaj/gveval ``evaluation/gveval/scorer.py`` + ``utils.py``
(commit fee3fd7): the judge input (3-frame composite, reference join) and the logprob expectation.

Pure helpers (``composite``, ``composite_indices``, ``join_references``, ``marker_alternatives``,
``expected_score``) are unit-tested; ``judge_caption`` runs the judge with the metric's retries.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vamba_eval.judge import JudgeReply, JudgeReplyUnusable, TokenLogprob, scrub

TILE_W, TILE_H, BAND_H = 512, 512, 50  # each frame 512×462 over a 50-px white band → 1536×512
N_FRAMES = 3
INTEGER_TOKENS = frozenset(str(i) for i in range(101))  # exact token strings "0" … "100"
SCORE_MARKER = "$"
ACCR_MARKERS = (("accuracy", "α"), ("completeness", "β"), ("conciseness", "ψ"), ("relevance", "δ"))
ATTEMPTS = 3  # scorer.py: ``ignore = 3``, one less per unusable reply, give up at 0
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "logprobs": True, "top_logprobs": 5}  # gpt-4o-2024-05-13 run
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}


class ScoreParseError(ValueError):
    """A judge reply the metric cannot score (no marker, marker last, no integer alternative)."""


# --------------------------------------------------------------------------- visual input


def composite_indices(num_frames: int) -> list[int]:
    """``np.linspace(0, N−1, 4, dtype=int)[:-1]`` — utils.py ``video2imgs(num_samples=3)``."""
    if num_frames < 1:
        raise ValueError("the video has no frames")
    return [int(i) for i in np.linspace(0, num_frames - 1, N_FRAMES + 1, dtype=int)[:-1]]


@dataclass(frozen=True)
class Visual:
    """The picture sent to the judge, as a data URL, and how it was made."""

    kind: str  # "vid" (3-frame composite) | "img" (the image file itself)
    data_url: str
    detail: str  # "high" for videos (scorer.py forces it), "low" for images (its default)
    frames: tuple[int, ...] = ()
    size: tuple[int, int] = (0, 0)

    def to_record(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.data_url.encode("ascii")).hexdigest()[:16]
        return {"kind": self.kind, "frames": list(self.frames), "size": list(self.size), "detail": self.detail,
                "sha256": digest}


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=32)  # cv2 FONT_HERSHEY_SIMPLEX at scale 1.2 is ~32 px tall


def composite(frames: Sequence[np.ndarray]) -> Image.Image:
    """Frames ([H, W, 3] uint8 RGB) side by side: each resized to 512×462 above a 50-px white
    band labelled "Frame k" (k = 1, 2, 3) → 1536×512 (utils.py ``save_frames_as_single_image``)."""
    if len(frames) != N_FRAMES:
        raise ValueError(f"the composite needs {N_FRAMES} frames, got {len(frames)}")
    canvas = Image.new("RGB", (TILE_W * N_FRAMES, TILE_H), (0, 0, 0))
    for k, frame in enumerate(frames):
        tile = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
        canvas.paste(tile.resize((TILE_W, TILE_H - BAND_H), Image.BILINEAR), (k * TILE_W, 0))
        band = Image.new("RGB", (TILE_W, BAND_H), (255, 255, 255))
        ImageDraw.Draw(band).text((10, 35), f"Frame {k + 1}", fill=(0, 0, 0), font=_font(), anchor="ls",
                                  stroke_width=1, stroke_fill=(0, 0, 0))
        canvas.paste(band, (k * TILE_W, TILE_H - BAND_H))
    return canvas


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def video_visual(path: str) -> Visual:
    """The composite of a video file (or frame folder) as the judge sees it."""
    from vamba_eval.video import decode_frames, probe

    meta = probe(path)
    idx = composite_indices(meta.num_frames)
    frames = decode_frames(path, idx, meta)  # [3, H, W, 3] RGB, native size
    image = composite(list(frames))
    return Visual("vid", png_data_url(image), "high", tuple(idx), image.size)


def image_visual(path: str) -> Visual:
    """An image is sent as its own file bytes (scorer.py ``encode_image``), detail "low"."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
    mime = _MIME.get(Path(path).suffix.lower(), "image/jpeg")
    return Visual("img", f"data:{mime};base64," + base64.b64encode(data).decode("ascii"), "low", (), size)


def visual_for(path: str) -> Visual:
    return image_visual(path) if Path(path).suffix.lower() in IMAGE_SUFFIXES else video_visual(path)


# --------------------------------------------------------------------------- text input


def join_references(references: Sequence[str]) -> str:
    """scorer.py: ``"'" + "'; '".join(refs)`` — an opening quote and NO closing quote."""
    return "'" + "'; '".join(references)


def normalise_text(text: str) -> str:
    """dataset.py: ``' '.join(s.split())`` (references and candidates)."""
    return " ".join(str(text).split())


def messages_for(prompt: str, visual: Optional[Visual]) -> list[dict[str, Any]]:
    """With a picture: one user turn [text, image_url]; without: the prompt as a SYSTEM message."""
    if visual is None:
        return [{"role": "system", "content": prompt}]
    return [{"role": "user", "content": [{"type": "text", "text": prompt},
                                         {"type": "image_url",
                                          "image_url": {"url": visual.data_url, "detail": visual.detail}}]}]


# --------------------------------------------------------------------------- the score


def marker_alternatives(tokens: Sequence[TokenLogprob], marker: str) -> tuple[tuple[str, float], ...]:
    """Top alternatives of the token AFTER the first token containing ``marker``."""
    for i, tok in enumerate(tokens):
        if marker in tok.token:
            if i + 1 >= len(tokens):
                raise ScoreParseError(f"the marker {marker!r} is the reply's last token")
            return tokens[i + 1].top
    if not tokens:
        raise ScoreParseError("the reply carries no logprobs (the server must support logprobs/top_logprobs)")
    raise ScoreParseError(f"no {marker!r} marker in the reply")


def expected_score(alternatives: Sequence[tuple[str, float]]) -> tuple[float, dict[str, float]]:
    """Σ value·p over the alternatives that are the integers "0"…"100", p renormalised over them.

    Returns (score, {token: renormalised p}). A token listed twice keeps its last probability
    (the authors fill a dict)."""
    probs: dict[str, float] = {}
    for token, logprob in alternatives:
        if token in INTEGER_TOKENS:
            probs[token] = math.exp(logprob)
    total = sum(probs.values())
    if not total > 0:
        raise ScoreParseError("no integer 0–100 among the top alternatives after the marker")
    weights = {t: p / total for t, p in probs.items()}
    return sum(int(t) * w for t, w in weights.items()), weights


def scores_of(reply: JudgeReply, accr: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """({name: score}, {marker: renormalised alternatives}); ACCR adds "mean" of the four."""
    markers = ACCR_MARKERS if accr else (("score", SCORE_MARKER),)
    scores: dict[str, float] = {}
    used: dict[str, Any] = {}
    for name, marker in markers:
        scores[name], weights = expected_score(marker_alternatives(reply.tokens, marker))
        used[marker] = [[t, round(p, 6)] for t, p in weights.items()]
    if accr:
        scores["mean"] = sum(scores[name] for name, _ in ACCR_MARKERS) / len(ACCR_MARKERS)
    return scores, used


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, float]  # "score", or the four ACCR dimensions + "mean"
    record: dict[str, Any]  # what the sample record keeps (JSON-safe, no key, no image)

    @property
    def value(self) -> float:
        return self.scores["mean"] if "mean" in self.scores else self.scores["score"]


def judge_caption(judge: Any, prompt: str, visual: Optional[Visual], accr: bool) -> Verdict:
    """Ask the judge up to ``ATTEMPTS`` times until its reply can be scored; else JudgeReplyUnusable.

    API failures are retried inside ``judge.chat`` and surface as ``JudgeUnavailable``. Each attempt
    is a new sample (temperature 1): ``sample_index`` keeps the judge's reply cache from replaying
    attempt 1's unusable reply as attempt 2, while a re-run replays every attempt as it was."""
    messages = messages_for(prompt, visual)
    problems: list[str] = []
    for attempt in range(ATTEMPTS):
        reply = judge.chat(messages, **SAMPLING, sample_index=attempt)
        try:
            scores, used = scores_of(reply, accr)
        except ScoreParseError as err:
            problems.append(scrub(f"{err} (reply starts {reply.text[:80]!r})"))
            continue
        record = {"reply": reply.to_record(), "alternatives": used, "attempts": len(problems) + 1,
                  "unusable_replies": problems, "visual": visual.to_record() if visual else None}
        return Verdict(scores, record)
    detail = "; ".join(f"#{i + 1}: {p}" for i, p in enumerate(problems))
    raise JudgeReplyUnusable(scrub(f"G-VEval: no scorable judge reply in {ATTEMPTS} attempts ({detail})"))
