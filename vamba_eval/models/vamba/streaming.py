"""How ``encode_video`` streams a video: the pieces it cuts, and the cross-attention K/V they fill.

A streamed prefill's peak memory is at its last piece. The K/V cache grows piece by piece (``KVPieces``: each
layer's K and V kept as one tensor per piece, joined into one buffer per layer when the video is done), so
that a piece's transients — its ViT passes, its Mamba-2 scans — count on top of the part of the cache written
so far, not on top of the whole cache. With a *tail* the last piece is cut in halves of halves down to
``MIN_TAIL_SLICES`` (a 32-frame piece: 16, 16 frames): the pieces that run when the cache is nearly full are the
smaller ones. At 7B and 256 frames the cache is 2.2 GB and a 32-frame piece's transients ≈ 0.35 GB; on an H100 the
256-frame peak was 25.02 GB with the cache grown piece by piece, 24.92 with a 16, 16 tail and 24.91 with
16, 8, 4, 4 (benchmarks/results/sweep_h100_2026-11-25_session16/).
"""

from __future__ import annotations

import torch

MIN_TAIL_SLICES = 8  # the tail's smallest piece: 8 temporal slices (16 frames at Qwen2-VL's temporal patch of 2)

Span = tuple[int, int]  # [first, last) temporal slice of a piece


def piece_spans(n_slices: int, per_piece: int, tail: bool = False, min_tail: int = MIN_TAIL_SLICES) -> list[Span]:
    """Streamed pieces of ``per_piece`` slices covering ``n_slices``; with ``tail`` (and ≥ 2 pieces) the last one
    is cut into halves of what is left until ``min_tail`` slices remain (``min_tail`` 2: 16 → 8, 4, 2, 2)."""
    if n_slices < 1 or per_piece < 1 or min_tail < 1:
        raise ValueError(f"need ≥ 1 slice, ≥ 1 slice per piece and a tail of ≥ 1 slice, got {n_slices}, {per_piece} "
                         f"and {min_tail} (tail_min_slices)")
    spans = [(s0, min(n_slices, s0 + per_piece)) for s0 in range(0, n_slices, per_piece)]
    if not tail or len(spans) < 2:
        return spans
    s0, s1 = spans.pop()
    while s1 - s0 > min_tail:
        cut = s0 + max(min_tail, (s1 - s0) // 2)
        spans.append((s0, cut))
        s0 = cut
    spans.append((s0, s1))
    return spans


def piece_vit_frames(vit_frames: int, piece_frames: int, full_piece_frames: int, temporal: int) -> int:
    """Frames per ViT pass inside one piece: ``vit_frames``, or for a piece shorter than the others (the tail, a
    short last piece) at most half of it — its passes run when the K/V cache is nearly full."""
    if piece_frames >= full_piece_frames:
        return vit_frames
    return min(vit_frames, max(temporal, piece_frames // 2))


class KVPieces:
    """Per-layer cross-attention K and V, one tensor per streamed piece ([b, kv_heads, m, hd] each), until
    ``join`` makes one [b, kv_heads, M, hd] buffer per layer and tensor — one at a time, freeing the pieces as
    it copies them, so that the join needs one layer's K (or V) on top of the cache."""

    def __init__(self, layers: int) -> None:
        self._k: list[list[torch.Tensor]] = [[] for _ in range(layers)]
        self._v: list[list[torch.Tensor]] = [[] for _ in range(layers)]

    def add(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._k[layer].append(k)
        self._v[layer].append(v)

    def join(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for ks, vs in zip(self._k, self._v):
            k = _join(ks)
            out.append((k, _join(vs)))
        return out


def _join(pieces: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [b, h, m_i, d] pieces along m into one contiguous tensor, emptying ``pieces`` as it goes."""
    if not pieces:
        raise ValueError("no K/V pieces to join: encode_video streamed no frames")
    b, h, _, d = pieces[0].shape
    full = pieces[0].new_empty((b, h, sum(p.shape[2] for p in pieces), d))
    at = 0
    while pieces:
        piece = pieces.pop(0)
        full[:, :, at:at + piece.shape[2]] = piece
        at += piece.shape[2]
        del piece  # freed before the next copy
    return full
