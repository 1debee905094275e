"""VAMBA: the `transformers` Qwen2-VL vision tower + hybrid Mamba/cross-attention decoder.

Module tree = the official state-dict prefixes: ``visual.*`` (Qwen2-VL ViT + merger),
``model.{embed_tokens, layers.i.*, norm}``, ``lm_head``.

Inference is two passes that never mix: ``encode_video`` pushes the video stream through every
layer (ViT → per layer: cross-attn K/V, then the Mamba update), streaming chunks of frames and
carrying each layer's conv/SSM state, and keeps only the per-layer K/V. ``generate`` then runs
the text through the layers against those cached K/V with a text KV cache; the mixers never run
while decoding. ``forward`` is the unstreamed reference (training, tests).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn
from transformers import DynamicCache
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel, Qwen2VLRotaryEmbedding

from vamba_eval.models.vamba.backends import SSMBackend, select_backend
from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.vamba.layers import KV, Qwen2VLRMSNorm, VambaDecoderLayer
from vamba_eval.models.vamba.mixers import MambaBlock, MixerState
from vamba_eval.models.vamba.streaming import MIN_TAIL_SLICES, KVPieces, piece_spans, piece_vit_frames
from vamba_eval.models.vamba.vision import (VideoGrid, check_frames, encode_frames, frames_grid, pad_temporal, patchify,
                                            split_block_fn, vision_block)

DEFAULT_STREAM_THRESHOLD = 64  # frames: stream past this many
# "1": compile_video_path compiles the ViT block's two halves and runs its attention eagerly between them
SPLIT_COMPILE_ENV = "VAMBA_EVAL_VIT_SPLIT_COMPILE"
# The largest streamed piece, 64 frames (9,568 tokens at 640×360): 1,024 compiled frames on an H100 in 4.00 s vs
# 4.09 s with 32, +0.5 GB (benchmarks/results/ssd_h100_2026-11-24/v2/prefill_chunks.jsonl)
DEFAULT_CHUNK_FRAMES = 64
MIN_AUTO_CHUNK_FRAMES = 32
# A piece is at most 1/8 of the video, so that its transient activations stay small next to the K/V cache (which
# grows with the video): up to 511 frames stream in 32-frame pieces, 512 and more in 64. Smaller pieces throughout
# cost time — the host launches more, smaller kernels: 256 frames in 1.3–2.6 s with 16-frame pieces vs 1.0–1.4 s
# with 32 (benchmarks/README.md); only the last piece, which runs beside a nearly full K/V cache, is cut
# (``tail_for``, ``streaming``).
AUTO_CHUNK_PIECES = 8
# Inside a streamed piece the ViT runs over half of it at a time, 8 to 32 frames (exact: it attends within 2-frame
# slices): its activations (≈ 25 KB per patch at the MLP) would otherwise be the largest transient of the prefill.
MIN_VIT_CHUNK_FRAMES, MAX_VIT_CHUNK_FRAMES = 8, 32


def auto_chunk_frames(total: int, threshold: int = DEFAULT_STREAM_THRESHOLD, largest: int = DEFAULT_CHUNK_FRAMES,
                      smallest: int = MIN_AUTO_CHUNK_FRAMES) -> int:
    """Frames per streamed piece for a ``total``-frame video when none is set: all at once up to ``threshold``,
    else the largest power of two in [``smallest``, ``largest``] that is ≤ total / AUTO_CHUNK_PIECES."""
    if total <= threshold:
        return total
    chunk = smallest
    while chunk * 2 <= min(largest, total // AUTO_CHUNK_PIECES):
        chunk *= 2
    return chunk


def auto_vit_chunk_frames(piece_frames: int) -> int:
    """Frames per ViT pass inside a streamed piece of ``piece_frames``: half of it, within [8, 32]."""
    return max(MIN_VIT_CHUNK_FRAMES, min(MAX_VIT_CHUNK_FRAMES, piece_frames // 2))


@dataclass
class VideoContext:
    """What the text needs from a video: per-layer cross-attention K/V (each [b, kv_heads, M, hd])."""

    kv: list[KV]
    grid: VideoGrid
    num_tokens: int
    chunks: int
    timings: dict[str, float] = field(default_factory=dict)


class VambaTextModel(nn.Module):
    """``model.*``: embeddings, hybrid layers, final norm (rotary tables hold no weights)."""

    def __init__(self, cfg: VambaConfig, text_cfg: Any) -> None:
        super().__init__()
        d = text_cfg.hidden_size
        self.embed_tokens = nn.Embedding(text_cfg.vocab_size, d)
        self.layers = nn.ModuleList(VambaDecoderLayer(cfg, text_cfg, i) for i in range(text_cfg.num_hidden_layers))
        self.norm = Qwen2VLRMSNorm(d, eps=text_cfg.rms_norm_eps)
        self.rotary_emb = Qwen2VLRotaryEmbedding(text_cfg)


def text_positions(start: int, length: int, batch: int, device: torch.device) -> torch.Tensor:
    """1-D text positions laid on the three M-RoPE axes: [3, b, L]."""
    pos = torch.arange(start, start + length, device=device)
    return pos.view(1, 1, -1).expand(3, batch, -1)


def video_positions(grid: VideoGrid, t0: int, t1: int, device: torch.device) -> torch.Tensor:
    """(t, h, w) M-RoPE positions of the merged video tokens of temporal slices [t0, t1): [3, 1, M]."""
    hh, ww = grid.h // grid.merge, grid.w // grid.merge
    t = torch.arange(t0, t1, device=device).repeat_interleave(hh * ww)
    h = torch.arange(hh, device=device).repeat_interleave(ww).repeat(t1 - t0)
    w = torch.arange(ww, device=device).repeat(hh * (t1 - t0))
    return torch.stack([t, h, w]).unsqueeze(1)


class VambaForConditionalGeneration(nn.Module):
    def __init__(self, cfg: VambaConfig, backend: Optional[SSMBackend] = None) -> None:
        super().__init__()
        self.config = cfg
        self.hf_config = cfg.hf_config()
        text_cfg = self.hf_config.text_config
        self.visual = Qwen2VisionTransformerPretrainedModel(self.hf_config.vision_config)
        self.model = VambaTextModel(cfg, text_cfg)
        self.lm_head = nn.Linear(text_cfg.hidden_size, text_cfg.vocab_size, bias=False)
        self._block_fn = vision_block
        self.stream_threshold = DEFAULT_STREAM_THRESHOLD
        self.chunk_frames: Optional[int] = None  # None: auto_chunk_frames per video
        self.vit_chunk_frames: Optional[int] = None  # None: auto_vit_chunk_frames of the streamed piece
        self.stream_tail: Optional[bool] = None  # None: tail_for decides per video
        self.tail_min_slices = MIN_TAIL_SLICES  # the tail's smallest piece (temporal slices)
        self.inference_only = False  # set by release_unused_video_mixer
        self.ssm_backend = backend or select_backend(None, torch.device("cpu"))
        self.set_ssm_backend(self.ssm_backend)

    # --- set-up --------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def mixer_blocks(self) -> list[MambaBlock]:
        return [layer.vision_mixer for layer in self.layers if layer.vision_mixer is not None]

    def set_ssm_backend(self, backend: SSMBackend) -> None:
        self.ssm_backend = backend
        for block in self.mixer_blocks():
            block.mixer.backend = backend

    def compile_video_path(self, mode: Optional[str] = None) -> None:
        """torch.compile the ViT block and the video mixers (fuses their elementwise work; CUDA).

        The SSM/conv kernels of the backend stay outside the compiled graphs.
        """
        if os.environ.get(SPLIT_COMPILE_ENV) == "1":  # attention eager between two compiled halves
            self._block_fn = split_block_fn(lambda f: torch.compile(f, dynamic=True, mode=mode))
        else:
            self._block_fn = torch.compile(vision_block, dynamic=True, mode=mode)
        for block in self.mixer_blocks():
            block.forward = torch.compile(block.forward, dynamic=True, mode=mode)

    def release_unused_video_mixer(self) -> int:
        """Drop the last layer's video mixer, for inference: its output is never read (no later layer's
        cross-attention sees it), so its weights (157 MB at 7B in bf16) need not be in memory. The model can
        no longer be saved as a checkpoint (``save_pretrained`` refuses). Returns the parameters released."""
        last = self.layers[-1]
        if last.vision_mixer is None:
            return 0
        released = sum(p.numel() for p in last.vision_mixer.parameters())
        last.vision_mixer = None
        self.inference_only = True
        return released

    def init_weights(self, seed: Optional[int] = None) -> None:
        """Random init: Qwen2-VL's normal(0, initializer_range) for the LLM, mamba init for mixers."""
        from vamba_eval.models.vamba.init import init_vamba_weights

        init_vamba_weights(self, seed)

    # --- video stream --------------------------------------------------------------------
    def _vision_tokens(self, frames: torch.Tensor, vit_frames: int) -> tuple[torch.Tensor, VideoGrid]:
        """Frames (a multiple of the temporal patch) → merged tokens [1, m, d], ``vit_frames`` at a time."""
        vcfg = self.hf_config.vision_config
        temporal = vcfg.temporal_patch_size
        step = max(temporal, vit_frames - vit_frames % temporal)
        vit_dtype = self.visual.patch_embed.proj.weight.dtype
        pieces = []
        for f0 in range(0, frames.shape[0], step):
            piece = frames[f0:f0 + step]
            grid = frames_grid(piece.shape, vcfg.patch_size, temporal, vcfg.spatial_merge_size)
            # pixels cast to the ViT dtype (what the patch embedding casts to) and handed over as a temporary:
            # neither the fp32 copy nor the cast one is held through the tower
            pieces.append(encode_frames(self.visual, patchify(piece.to(self.device, non_blocking=True),
                                                              vcfg.patch_size, temporal,
                                                              vcfg.spatial_merge_size)[0].to(vit_dtype),
                                        grid, self._block_fn))  # [m_piece, d]
        tokens = pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # [m, d]
        full = frames_grid(frames.shape, vcfg.patch_size, temporal, vcfg.spatial_merge_size)
        return tokens.unsqueeze(0).to(self.dtype), full  # [1, m, d]

    def _video_rope(self, v: torch.Tensor, grid: VideoGrid, t0: int, t1: int) -> Optional[KV]:
        if not self.config.vamba.cross_attn_use_position_embeddings:
            return None
        return self.model.rotary_emb(v, video_positions(grid, t0, t1, v.device))

    def chunk_frames_for(self, total_frames: int, chunk_frames: Optional[int] = None) -> int:
        """Frames per streamed piece: ``chunk_frames``, else the model's ``chunk_frames`` (as ``--chunk-frames``
        sets it: at every length), else ``auto_chunk_frames`` (no streaming up to the stream threshold)."""
        if chunk_frames is not None:
            return chunk_frames
        if self.chunk_frames is not None:
            return self.chunk_frames
        return auto_chunk_frames(total_frames, self.stream_threshold)

    def vit_frames_for(self, piece_frames: int) -> int:
        """Frames per ViT pass inside a streamed piece: the model's ``vit_chunk_frames``, else auto."""
        return self.vit_chunk_frames or auto_vit_chunk_frames(piece_frames)

    def _chunk_slices(self, total_frames: int, chunk_frames: Optional[int]) -> int:
        temporal = self.hf_config.vision_config.temporal_patch_size
        chunk_frames = self.chunk_frames_for(total_frames, chunk_frames)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be ≥ 1, got {chunk_frames}")
        return max(1, chunk_frames // temporal)

    @torch.inference_mode()
    def encode_video(self, frames: torch.Tensor, chunk_frames: Optional[int] = None) -> VideoContext:
        """uint8 frames [T, H, W, 3] → per-layer cross-attn K/V, streamed ``chunk_frames`` at a time.

        Exactly equal to the unchunked computation: the ViT attends within 2-frame slices and each
        layer's Mamba carries its conv/SSM state across chunks. The last layer's video update is
        never read, so it is skipped. The K/V cache grows piece by piece and each layer's SSM state is
        dropped once the last piece has passed it (``streaming``: the peak is at the last piece).
        """
        vcfg = self.hf_config.vision_config
        temporal = vcfg.temporal_patch_size
        frames = torch.as_tensor(frames)
        check_frames(frames, vcfg.patch_size, vcfg.spatial_merge_size)
        frames = pad_temporal(frames, temporal)
        per_chunk = self._chunk_slices(frames.shape[0], chunk_frames)
        n_slices = frames.shape[0] // temporal
        spans = piece_spans(n_slices, per_chunk, self.tail_for(frames.shape[0], chunk_frames), self.tail_min_slices)
        kv = KVPieces(len(self.layers))
        states: list[Optional[MixerState]] = [None] * len(self.layers)
        t_start, written = time.perf_counter(), 0
        vit_frames = self.vit_frames_for(per_chunk * temporal)
        for s0, s1 in spans:
            last = s1 == n_slices
            v, grid = self._vision_tokens(frames[s0 * temporal: s1 * temporal],
                                          piece_vit_frames(vit_frames, (s1 - s0) * temporal, per_chunk * temporal,
                                                           temporal))
            rope = self._video_rope(v, grid, s0, s1)
            for i, layer in enumerate(self.layers):
                kv.add(i, *layer.video_kv(v, rope))
                if i < len(self.layers) - 1:
                    v, states[i] = layer.video_update(v, states[i])
                    if last:  # nothing reads this layer's state again
                        states[i] = None
            del v  # not held through the next piece's ViT passes
            written += grid.num_tokens
        full = frames_grid(frames.shape, vcfg.patch_size, temporal, vcfg.spatial_merge_size)
        return VideoContext(kv.join(), full, written, len(spans), {"encode_s": time.perf_counter() - t_start})

    def tail_for(self, total_frames: int, chunk_frames: Optional[int] = None) -> bool:
        """Whether the last streamed piece is cut in halves of halves: ``stream_tail`` if set, else (auto) for the
        videos that stream in the smallest auto piece (65–511 frames at the default threshold), whose K/V cache is
        small next to a piece's transients. Longer videos keep whole pieces: at 1,024 frames the cut would save
        0.25 GB of 31.8 and cost ≈ 0.2 s (benchmarks/README.md)."""
        if self.stream_tail is not None:
            return self.stream_tail
        if chunk_frames is not None or self.chunk_frames is not None:
            return False
        return self.stream_threshold < total_frames and self.chunk_frames_for(total_frames) == MIN_AUTO_CHUNK_FRAMES

    # --- text stream ---------------------------------------------------------------------
    def _text_rope(self, h: torch.Tensor, start: int) -> tuple[KV, Optional[KV]]:
        pos = text_positions(start, h.shape[1], h.shape[0], h.device)
        pe = self.model.rotary_emb(h, pos)
        return pe, (pe if self.config.vamba.cross_attn_use_position_embeddings else None)

    def text_step(self, input_ids: torch.Tensor, video: VideoContext, cache: Any, start: int,
                  logits_to_keep: int = 1) -> torch.Tensor:
        """Run ``input_ids`` [b, n] at positions ``start…`` against cached video K/V → logits [b, keep, V]."""
        h = self.model.embed_tokens(input_ids)
        pe, q_rope = self._text_rope(h, start)
        for i, layer in enumerate(self.layers):
            h = layer.text_forward(h, video.kv[i], pe, cache=cache, q_rope=q_rope)
        h = self.model.norm(h[:, -logits_to_keep:] if logits_to_keep else h)
        return self.lm_head(h)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, video: VideoContext, max_new_tokens: int = 32,
                 eos_token_ids: Sequence[int] = ()) -> tuple[list[int], dict[str, float]]:
        """Greedy decoding (batch 1) with a text KV cache; cross-attn K/V come from ``video``."""
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"generate takes input_ids of shape [1, n], got {tuple(input_ids.shape)}")
        input_ids = input_ids.to(self.device)
        cache = DynamicCache()
        t0 = time.perf_counter()
        logits = self.text_step(input_ids, video, cache, start=0)
        self._sync()
        t1 = time.perf_counter()
        out: list[int] = []
        pos = input_ids.shape[1]
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt in eos_token_ids:
                break
            logits = self.text_step(torch.tensor([[nxt]], device=self.device), video, cache, start=pos)
            pos += 1
        self._sync()
        return out, {"prefill_text_s": t1 - t0, "generate_s": time.perf_counter() - t1}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- reference forward ---------------------------------------------------------------
    def video_stream(self, frames: torch.Tensor, vit_frames: Optional[int] = None) -> tuple[torch.Tensor, VideoGrid]:
        """The layer-0 video stream [1, M, d] for all frames (no streaming through the layers); the ViT runs over
        ``vit_frames`` (default: the model's ``vit_chunk_frames``, else all) at a time."""
        vcfg = self.hf_config.vision_config
        frames = torch.as_tensor(frames)
        check_frames(frames, vcfg.patch_size, vcfg.spatial_merge_size)
        frames = pad_temporal(frames, vcfg.temporal_patch_size)
        return self._vision_tokens(frames, vit_frames or self.vit_chunk_frames or frames.shape[0])

    def forward(self, input_ids: torch.Tensor, frames: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """Unstreamed reference: both streams layer by layer in the official order → logits [b, n, V]."""
        v, grid = self.video_stream(frames)
        h = self.model.embed_tokens(input_ids)
        v = v.expand(h.shape[0], -1, -1)
        pe, q_rope = self._text_rope(h, 0)
        v_rope = self._video_rope(v, grid, 0, grid.t)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h, v = layer(h, v, pe, video_rope=v_rope, q_rope=q_rope, update_video=i < last)
        h = self.model.norm(h[:, -logits_to_keep:] if logits_to_keep else h)
        return self.lm_head(h)
