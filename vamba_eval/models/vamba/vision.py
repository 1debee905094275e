"""Frames → Qwen2-VL patches → the `transformers` Qwen2-VL vision tower → video tokens.

The patch layout reproduces `transformers`' Qwen2-VL image processor (checked against it in the
tests): per token ``(C, temporal_patch, patch, patch)`` values, tokens ordered
``t, h/merge, w/merge, merge_h, merge_w``. It runs in torch so that normalisation happens on the
model's device, chunk by chunk (a 1024-frame 640×360 video is 2.8 GB as float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# OpenAI CLIP statistics, as Qwen2-VL's processor uses them.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class FrameError(ValueError):
    """Frames handed to the model are unusable; the message says what to do."""


@dataclass(frozen=True)
class VideoGrid:
    """Token grid of one video: ``t`` temporal patches × ``h`` × ``w`` patches (before merging)."""

    t: int
    h: int
    w: int
    merge: int

    @property
    def tokens_per_slice(self) -> int:  # LLM tokens per temporal patch (2 frames)
        return (self.h // self.merge) * (self.w // self.merge)

    @property
    def num_tokens(self) -> int:
        return self.t * self.tokens_per_slice

    def thw(self, t: int | None = None) -> torch.Tensor:
        return torch.tensor([[t if t is not None else self.t, self.h, self.w]], dtype=torch.long)


def check_frames(frames: np.ndarray | torch.Tensor, patch: int, merge: int) -> None:
    """Reject what the ViT cannot take, before torch fails somewhere deep."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise FrameError(f"frames must be [T, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise FrameError("zero frames: the video decoded to nothing; check the file and the frame sampler")
    unit = patch * merge
    if h % unit or w % unit:
        raise FrameError(
            f"frame size {w}x{h} is not a multiple of {unit}; resize with "
            f"vamba_eval.video.target_size(..., round_to={unit}) before calling the model"
        )
    if h < unit or w < unit:
        raise FrameError(f"frame size {w}x{h} is smaller than one {unit}x{unit} token")


def pad_temporal(frames: torch.Tensor, temporal: int) -> torch.Tensor:
    """Repeat the last frame up to a multiple of ``temporal`` (Qwen2-VL's rule for odd counts)."""
    rem = frames.shape[0] % temporal
    if rem == 0:
        return frames
    return torch.cat([frames, frames[-1:].expand(temporal - rem, *frames.shape[1:])], dim=0)


def patchify(frames: torch.Tensor, patch: int = 14, temporal: int = 2, merge: int = 2) -> tuple[torch.Tensor, VideoGrid]:
    """uint8 frames [T, H, W, 3] → (pixel patches [t·h·w, 3·temporal·patch²], grid)."""
    frames = pad_temporal(frames, temporal)
    T, H, W, C = frames.shape
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # [T, C, H, W]
    mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, C, 1, 1)
    std = torch.tensor(IMAGE_STD, device=x.device).view(1, C, 1, 1)
    x = (x - mean) / std
    gt, gh, gw = T // temporal, H // patch, W // patch
    x = x.reshape(gt, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    # (gt, gh/m, gw/m, mh, mw, C, temporal, ph, pw)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    x = x.reshape(gt * gh * gw, C * temporal * patch * patch)  # [tokens_before_merge, patch_dim]
    return x, VideoGrid(gt, gh, gw, merge)


def run_vision_tower(visual: torch.nn.Module, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """Merged video tokens [M, hidden] from the `transformers` tower (return type differs by version)."""
    dtype = next(visual.parameters()).dtype
    out = visual(pixels.to(dtype), grid_thw=grid_thw.to(pixels.device))
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output
