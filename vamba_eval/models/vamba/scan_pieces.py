"""The Mamba-2 scan for training over long inputs: sequence pieces, each under activation checkpointing.

A differentiable scan keeps intermediates proportional to the whole input for its backward — the PyTorch
reference's per-chunk decay matrices are [h, Q, Q] fp32 per chunk, ≈ 4 GB per 7B layer at 38k tokens, several
times over. Cut into pieces of ``PIECE_TOKENS`` that pass the state on (the streaming prefill's identity: a scan
from a piece's initial state equals the rest of the whole scan), each piece checkpointed, the backward holds one
piece's intermediates at a time and recomputes them. Same values and gradients as one scan, up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

PIECE_TOKENS = 16384  # a multiple of every chunk size in use (256 for the 7B, 16–64 for the tiny models)

Scan = Callable[..., tuple[Tensor, Tensor]]


def needs_pieces(length: int, piece: int, *tensors: Optional[Tensor]) -> bool:
    """Pieces pay off only when a backward will run through a scan longer than one piece (grad mode is read
    first: in inference, compiled or not, nothing else is looked at)."""
    return torch.is_grad_enabled() and length > piece and any(t is not None and t.requires_grad for t in tensors)


def scan_in_pieces(scan: Scan, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                   initial_state: Optional[Tensor] = None, piece: int = PIECE_TOKENS) -> tuple[Tensor, Tensor]:
    """``scan`` (contract of ``ssm_ref.ssd_chunked``) over ``piece``-token pieces, each checkpointed.

    x [b, l, h, p], dt [b, l, h], B/C [b, l, g, n] → (y [b, l, h, p], final state [b, h, p, n] fp32).
    """
    if piece < 1:
        raise ValueError(f"piece must be ≥ 1 token, got {piece}")
    length = x.shape[1]
    ys, state = [], initial_state
    for s in range(0, length, piece):
        e = min(length, s + piece)
        y, state = checkpoint(scan, x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], chunk_size, state,
                              use_reentrant=False)  # y [b, e-s, h, p]
        ys.append(y)
    return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)), state


__all__ = ["PIECE_TOKENS", "needs_pieces", "scan_in_pieces"]
