"""Vision pre-training: the teacher's ViT + merger learn to read single frames of the synthetic world.

Trained only through the answer tokens of video QA, the tiny ViT learns background colours and little
else in a few minutes: digits, words and shape colours stay at chance (scripts/diagnostics/README.md,
"open questions by family"). Qwen2-VL's own ViT comes pre-trained on image-text data; this is its
miniature: frames are labelled from their scripts (background, label text, shapes on screen, shape
count, tally marks) and small heads on the pooled merger tokens learn those labels with dense
cross-entropy — every frame gives ~30 labels instead of one answer token. The heads are dropped;
the teacher's video training starts from the tower.

Frames come in temporal pairs, as the tower sees them (Qwen2-VL's temporal patch is 2 frames): the two
frames of a pair are ``gap`` seconds apart (often the same scene, sometimes not) and each has its own
heads, so the tokens have to keep both frames apart — what "right after" and "in which order" need.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vamba_eval.synth.world import COLOR_NAMES, DIGITS, SHAPE_KINDS, WORDS, VideoScript

TEXTS: tuple[str, ...] = DIGITS + WORDS
MAX_TICKS = 4
SHAPE_PAIRS: tuple[tuple[str, str], ...] = tuple((c, k) for c in COLOR_NAMES for k in SHAPE_KINDS)
#: (name, classes) of the single-label attributes, in label-column order; the shape bits follow
CLASSES: tuple[tuple[str, int], ...] = (("background", len(COLOR_NAMES)), ("text", len(TEXTS)),
                                        ("count", 4), ("ticks", MAX_TICKS + 1))
N_LABELS = len(CLASSES) + len(SHAPE_PAIRS)
PAIRS_PER_JOB = 256
VISION_SEED0 = 20_000_000  # vision pairs use seeds from here (other training data stays below)


def frame_labels(script: VideoScript, t: float) -> np.ndarray:
    """int16 [N_LABELS]: background, text, visible-shape count, tally marks, then one bit per (colour, kind)."""
    scene = script.scene_at(t)
    visible = [i for i in range(len(scene.shapes)) if scene.is_visible(i, t)]
    out = np.zeros(N_LABELS, dtype=np.int16)
    out[:4] = (COLOR_NAMES.index(scene.background), TEXTS.index(scene.text), len(visible),
               min(MAX_TICKS, scene.ticks_at(t)))
    for i in visible:
        out[len(CLASSES) + SHAPE_PAIRS.index((scene.color_at(i, t), scene.shapes[i].kind))] = 1
    return out


def frame_size() -> tuple[int, int]:
    """(width, height) of a demo video's frames after the run's resize (``FrameSpec(max_edge=224)``)."""
    from vamba_eval.video import FrameSpec
    from vamba_eval.video.cache import frame_size_for
    from vamba_eval.video.meta import VideoMeta

    meta = VideoMeta(path="<script>", num_frames=240, fps=4.0, duration_s=60.0, width=160, height=96)
    return tuple(frame_size_for(meta, FrameSpec(num_frames=8, max_edge=224)))


def render_pairs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled frame pairs from random scripts: (uint8 [n, 2, H, W, 3], int16 [n, 2, N_LABELS])."""
    from vamba_eval.synth.render import render_frame
    from vamba_eval.synth.world import random_script
    from vamba_eval.train.data import yuv420
    from vamba_eval.video.decode import _resize

    rng = np.random.default_rng([seed, 29])
    size = frame_size()
    frames = np.empty((n, 2, size[1], size[0], 3), dtype=np.uint8)
    labels = np.empty((n, 2, N_LABELS), dtype=np.int16)
    for k in range(n):
        script = random_script(rng, int(rng.integers(4, 25)) * 5)
        d = script.duration_s
        t1 = float(rng.uniform(0, d))
        gap = float(rng.uniform(0, 2)) if rng.random() < 0.5 else float(rng.uniform(0, d / 3))
        for j, t in enumerate((t1, min(d - 0.01, t1 + gap))):
            frames[k, j] = _resize(yuv420(render_frame(script, t)), size)
            labels[k, j] = frame_labels(script, t)
    return frames, labels


def _render_star(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return render_pairs(*args)


def build_pairs(count: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs rendered by ``workers`` processes (deterministic in ``seed``)."""
    jobs = [(VISION_SEED0 + seed * 100_000 + i, min(PAIRS_PER_JOB, count - i * PAIRS_PER_JOB))
            for i in range(-(-count // PAIRS_PER_JOB))]
    if workers <= 1:
        parts = [render_pairs(*j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_render_star, jobs))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass(frozen=True)
class PairBatch:
    frames: torch.Tensor  # uint8 [b, 2, H, W, 3]
    labels: torch.Tensor  # int64 [b, 2, N_LABELS]

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(self.frames.to(device, non_blocking=True), self.labels.to(device, non_blocking=True))


class PairSet:
    """Labelled pairs held on the training device; the last ``val`` pairs are held out."""

    def __init__(self, frames: np.ndarray, labels: np.ndarray, device: torch.device, val: int) -> None:
        if len(frames) <= val:
            raise ValueError(f"{len(frames)} vision pairs leave none to train on after {val} held out; "
                             "raise data.vision_pairs")
        self.frames = torch.from_numpy(frames).to(device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
        self.n_train = len(frames) - val

    def count(self, kind: str, split: str = "train") -> int:
        return self.n_train if split == "train" else len(self.frames) - self.n_train

    def sample(self, kind: str, size: int, rng: np.random.Generator) -> PairBatch:
        idx = torch.from_numpy(rng.integers(0, self.n_train, size)).to(self.frames.device)
        return PairBatch(self.frames[idx], self.labels[idx])

    def val_batches(self, size: int) -> Iterator[PairBatch]:
        for start in range(self.n_train, len(self.frames), size):
            yield PairBatch(self.frames[start:start + size], self.labels[start:start + size])


class VisionHeads(torch.nn.Module):
    """Per pair slot: (mean ‖ max)-pooled merger tokens → logits of every attribute and shape bit."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        width = sum(c for _, c in CLASSES) + len(SHAPE_PAIRS)
        self.slots = torch.nn.ModuleList(torch.nn.Linear(2 * hidden, width) for _ in range(2))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """tokens [b, M, d] (M merged tokens per pair) → per slot logits [b, width]."""
        pooled = torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1).float()  # [b, 2d]
        return [head(pooled) for head in self.slots]


def pair_tokens(visual: Any, frames: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 pairs [b, 2, H, W, 3] → merger tokens [b, M, d] (the b pairs as one joined video)."""
    from vamba_eval.train.forward import batch_pixels

    pixels, grid = batch_pixels(frames, visual.config)
    joined = torch.tensor([[grid.t, grid.h, grid.w]], device=frames.device)
    visual(pixels.to(next(visual.parameters()).dtype), grid_thw=joined)
    tokens = store["video"]  # [b·M, d]
    return tokens.reshape(frames.shape[0], -1, tokens.shape[-1])  # [b, M, d]


def head_losses(logits: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over slots of the attribute cross-entropies + the shape-bit BCE; per-attribute parts for the log."""
    total, parts = 0.0, {}
    for slot, lg in enumerate(logits):
        at = 0
        for col, (name, classes) in enumerate(CLASSES):
            loss = F.cross_entropy(lg[:, at:at + classes], labels[:, slot, col])
            total, at = total + loss, at + classes
            parts[name] = parts.get(name, 0.0) + float(loss.detach()) / 2
        bits = F.binary_cross_entropy_with_logits(lg[:, at:], labels[:, slot, len(CLASSES):].float())
        total = total + len(CLASSES) * bits  # the bits weigh as much as the attributes together
        parts["shapes"] = parts.get("shapes", 0.0) + float(bits.detach()) / 2
    return total, parts


@torch.no_grad()
def head_accuracy(logits: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hits per attribute (summed over slots) and exact shape sets, as counts."""
    hits: dict[str, torch.Tensor] = {}
    for slot, lg in enumerate(logits):
        at = 0
        for col, (name, classes) in enumerate(CLASSES):
            right = (lg[:, at:at + classes].argmax(-1) == labels[:, slot, col]).sum()
            hits[name] = hits.get(name, 0) + right
            at += classes
        exact = ((lg[:, at:] > 0).long() == labels[:, slot, len(CLASSES):]).all(-1).sum()
        hits["shapes"] = hits.get("shapes", 0) + exact
    return hits


def run_vision(model: Any, recipe: Any, device: torch.device, log: Any) -> list[dict[str, Any]]:
    """Pre-train ``model``'s (a transformers Qwen2-VL) ViT + merger on labelled pairs; returns the history."""
    from vamba_eval.train.forward import track_video_tokens, video_scale_penalty
    from vamba_eval.train.loop import train

    stage = recipe.vision
    if stage.steps <= 0 or recipe.data.vision_pairs <= 0:
        return []
    visual = getattr(model.model, "visual", None) or model.visual
    store = track_video_tokens(model)
    heads = VisionHeads(visual.config.hidden_size).to(device)  # the merger's output width
    val = max(1, min(1024, recipe.data.vision_pairs // 8))  # PairSet refuses a set left with nothing to train on
    frames, labels = build_pairs(recipe.data.vision_pairs, recipe.seed, recipe.data.workers)
    pairs = PairSet(frames, labels, device, val)
    del frames, labels  # the set holds its own (device) copy: ~5 GB of host memory at the gpu preset (60,000 pairs)
    h, w = pairs.frames.shape[2:4]
    log(f"[vision] {pairs.n_train:,} labelled frame pairs ({h}×{w}), {val} held out")

    def step(batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = pair_tokens(visual, batch.frames, store)
        loss, parts = head_losses(heads(tokens), batch.labels)
        pen = video_scale_penalty(tokens)
        return loss + recipe.video_norm_penalty * pen, {**parts, "video_pen": float(pen.detach())}

    params = [*visual.parameters(), *heads.parameters()]
    hist = train(params, step, pairs, stage, device, recipe.seed, log, "vision")
    hist.append({"stage": "vision", **validate_vision(visual, heads, pairs, store, device)})
    log(f"[vision] held-out {hist[-1]}", **hist[-1])
    return hist


@torch.no_grad()
def validate_vision(visual: Any, heads: VisionHeads, pairs: PairSet, store: dict[str, torch.Tensor],
                    device: torch.device) -> dict[str, float]:
    """Held-out accuracy per attribute (both frames of a pair); ``shapes``: the exact set of shapes on screen."""
    from vamba_eval.train.loop import autocast

    was = visual.training
    visual.eval()
    totals: dict[str, float] = {}
    n = 0
    try:
        for batch in pairs.val_batches(256):
            with autocast(device):
                hits = head_accuracy(heads(pair_tokens(visual, batch.frames, store)), batch.labels)
            for k, v in hits.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            n += 2 * batch.frames.shape[0]
    finally:
        visual.train(was)
    return {f"vision_val_{k}_acc": round(v / max(1, n), 4) for k, v in totals.items()}
