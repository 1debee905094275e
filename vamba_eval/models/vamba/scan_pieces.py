"""Training a Mamba block over long inputs: sequence pieces that pass the state on, each under checkpointing.

A differentiable mixer keeps activations proportional to its whole input for its backward — at VAMBA-7B width
the in_proj output alone is 29 KB per token, and the PyTorch reference scan's per-chunk decay matrices
([h, Q, Q] fp32 per chunk) come to ≈ 4 GB per layer at 38k tokens, several times over. Cut into pieces of
``PIECE_TOKENS`` that carry the mixer state (the streaming prefill's identity: a block run from a piece's
entering state equals the rest of one run), each piece checkpointed, the backward holds one piece's activations
at a time and recomputes them. Same values and gradients as one run, up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

PIECE_TOKENS = 16384  # a multiple of every chunk size in use (256 for the 7B, 16–64 for the tiny models)

StatefulFn = Callable[[Tensor, Any], tuple[Tensor, Any]]


def needs_pieces(length: int, piece: int, tensors: Iterable[Optional[Tensor]]) -> bool:
    """Pieces pay off only when a backward will run through an input longer than one piece (grad mode is read
    first: under no_grad / inference_mode nothing else is looked at)."""
    return torch.is_grad_enabled() and length > piece and any(t is not None and t.requires_grad for t in tensors)


def run_in_pieces(fn: StatefulFn, u: Tensor, state: Any = None, piece: int = PIECE_TOKENS) -> tuple[Tensor, Any]:
    """``fn(u_piece, state) -> (out_piece, state)`` over ``piece``-token pieces of u [b, l, …], each checkpointed;
    the outputs are concatenated along l and the last state returned."""
    if piece < 1:
        raise ValueError(f"piece must be ≥ 1 token, got {piece}")
    length = u.shape[1]
    outs = []
    for s in range(0, length, piece):
        out, state = checkpoint(fn, u[:, s:s + piece], state, use_reentrant=False)  # out [b, ≤ piece, …]
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), state


__all__ = ["PIECE_TOKENS", "needs_pieces", "run_in_pieces"]
