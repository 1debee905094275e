"""Frames → Qwen2-VL patches → the `transformers` Qwen2-VL vision tower → video tokens.

The patch layout reproduces `transformers`' Qwen2-VL image processor (checked against it in the
tests): per token ``(C, temporal_patch, patch, patch)`` values, tokens ordered
``t, h/merge, w/merge, merge_h, merge_w``. It runs in torch so that normalisation happens on the
model's device, chunk by chunk (a 1024-frame 640×360 video is 2.8 GB as float32).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

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


def frames_grid(shape: tuple[int, ...], patch: int = 14, temporal: int = 2, merge: int = 2) -> VideoGrid:
    """The token grid of frames [T, H, W, 3] (T a multiple of ``temporal``), as ``patchify`` makes it."""
    return VideoGrid(shape[0] // temporal, shape[1] // patch, shape[2] // patch, merge)


@functools.lru_cache(maxsize=None)
def normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViT's pixel mean and std [1, 3, 1, 1] on ``device``, made once per device: a tensor built from a Python
    list on a GPU is a blocking copy, and two per ViT pass made the host wait for the GPU at every pass of a
    streamed prefill (``benchmarks/sync_check.py``)."""
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    return mean, std


def patchify(frames: torch.Tensor, patch: int = 14, temporal: int = 2, merge: int = 2) -> tuple[torch.Tensor, VideoGrid]:
    """uint8 frames [T, H, W, 3] → (pixel patches [t·h·w, 3·temporal·patch²], grid)."""
    frames = pad_temporal(frames, temporal)
    grid = frames_grid(frames.shape, patch, temporal, merge)
    T, H, W, C = frames.shape
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # [T, C, H, W]
    mean, std = normalisation(x.device)  # each [1, C, 1, 1]
    x = (x - mean) / std
    gt, gh, gw = grid.t, grid.h, grid.w
    x = x.reshape(gt, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    # (gt, gh/m, gw/m, mh, mw, C, temporal, ph, pw)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    x = x.reshape(gt * gh * gw, C * temporal * patch * patch)  # [tokens_before_merge, patch_dim]
    return x, grid


def run_vision_tower(visual: torch.nn.Module, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """Merged video tokens [M, hidden] via the `transformers` tower's own forward (the reference)."""
    dtype = next(visual.parameters()).dtype
    out = visual(pixels.to(dtype), grid_thw=grid_thw.to(pixels.device))
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def slice_rope(visual: torch.nn.Module, grid: VideoGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D rotary cos/sin [h·w, head_dim] of one temporal slice, in the tower's block-major token order."""
    inv = visual.rotary_pos_emb.inv_freq.float()  # [head_dim / 4]
    dev = inv.device
    hpos = torch.arange(grid.h, device=dev).view(-1, 1).expand(grid.h, grid.w)
    wpos = torch.arange(grid.w, device=dev).view(1, -1).expand(grid.h, grid.w)
    m = grid.merge
    # (h/m, m, w/m, m) → (h/m, w/m, m, m): tokens of one 2×2 merge block are adjacent
    hpos = hpos.reshape(grid.h // m, m, grid.w // m, m).permute(0, 2, 1, 3).flatten()
    wpos = wpos.reshape(grid.h // m, m, grid.w // m, m).permute(0, 2, 1, 3).flatten()
    freqs = torch.cat([hpos[:, None] * inv, wpos[:, None] * inv], dim=-1)  # [L, head_dim / 2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [L, head_dim]
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def block_qkv(block: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              slices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """norm1 → qkv → 2-D rotary: q, k, v [S, H, L, d] for the batched attention of ``vision_block``."""
    attn = block.attn
    n, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(block.norm1(x)).view(slices, n // slices, 3, heads, c // heads)  # [S, L, 3, H, d]
    q, k, v = qkv.unbind(2)  # each [S, L, H, d]
    cos_, sin_ = cos[None, :, None, :], sin[None, :, None, :]  # [1, L, 1, d]
    q = (q.float() * cos_ + _rotate_half(q.float()) * sin_).to(v.dtype)
    k = (k.float() * cos_ + _rotate_half(k.float()) * sin_).to(v.dtype)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [S, H, L, d]


def block_out(block: torch.nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Attention output [S, H, L, d] → proj + residual → + mlp(norm2(x)): the rest of ``vision_block``."""
    n, c = x.shape
    x = x + block.attn.proj(out.transpose(1, 2).reshape(n, c))  # [S, L, H, d] -> [S·L, C]
    return x + block.mlp(block.norm2(x))


def vision_block(block: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 slices: int) -> torch.Tensor:
    """One Qwen2-VL ViT block with attention batched over equal-length temporal slices.

    Same function as the tower's block (which loops over slices one SDPA call at a time):
    x [S·L, C] → x + attn(norm1(x)) → + mlp(norm2(x)).
    """
    q, k, v = block_qkv(block, x, cos, sin, slices)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # [S, H, L, d], scale d^-0.5
    return block_out(block, x, out)


BlockFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def split_block_fn(compile_fn: Callable[[Callable], Callable]) -> BlockFn:
    """``vision_block`` with its two elementwise halves compiled (``compile_fn``) and the attention left eager,
    so that the SDPA backend chosen at run time (``VAMBA_EVAL_VIT_SDPA``) is the one that runs."""
    qkv_fn, out_fn = compile_fn(block_qkv), compile_fn(block_out)

    def block_fn(block: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 slices: int) -> torch.Tensor:
        q, k, v = qkv_fn(block, x, cos, sin, slices)
        return out_fn(block, x, torch.nn.functional.scaled_dot_product_attention(q, k, v))

    return block_fn


def patch_embed(embed: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The tower's patch embedding as one matmul: its Conv3d has kernel = stride = one patch, so it is
    ``pixels @ W.view(C_out, -1)ᵀ`` (cuDNN's bf16 Conv3d for this shape is slower than the GEMM)."""
    conv = embed.proj
    w = conv.weight.reshape(conv.weight.shape[0], -1)  # [C_out, C, T, P, P] -> [C_out, C·T·P·P]
    return torch.nn.functional.linear(pixels.to(w.dtype), w, conv.bias)  # [tokens, C_out]


def encode_frames(visual: torch.nn.Module, pixels: torch.Tensor, grid: VideoGrid,
                  block_fn=vision_block) -> torch.Tensor:
    """Merged video tokens [M, hidden]: the tower's modules, batched attention (see ``vision_block``).

    Passed as a temporary (``encode_frames(visual, patchify(…)[0], …)``), the pixels are freed after the patch
    embedding instead of being held through the tower."""
    x = patch_embed(visual.patch_embed, pixels)  # [t·h·w, C]
    del pixels
    cos, sin = slice_rope(visual, grid)
    with vision_sdpa_backends():
        for block in visual.blocks:
            x = block_fn(block, x, cos, sin, grid.t)
    return visual.merger(x)


VIT_SDPA_ENV = "VAMBA_EVAL_VIT_SDPA"  # comma list of SDPA backends for the ViT, in order of preference


def vision_sdpa_backends():
    """SDPA backends for the batched slices: flash, mem-efficient, math (``VAMBA_EVAL_VIT_SDPA`` overrides).

    On H100 + torch 2.11 PyTorch's default pick, cuDNN, was 3.4× slower for this shape
    (1024 frames: 29.3 s vs 8.5 s, benchmarks/results); ``benchmarks/vit_attention.py`` compares them.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    names = [n.strip() for n in os.environ.get(VIT_SDPA_ENV, "flash,efficient,math").split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        raise ValueError(f"{VIT_SDPA_ENV}={os.environ.get(VIT_SDPA_ENV)!r}: use a comma list of {tuple(table)}")
    return sdpa_kernel([table[n] for n in names])
