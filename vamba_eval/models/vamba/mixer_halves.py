"""Mamba-2 inference in two halves: the scan's and the gate's working memory is half a streamed piece's.

At the 7B width a streamed prefill piece of 4,784 tokens (32 frames) holds, inside a mixer, the conv output
(71 MB), the SSD scan's per-chunk states (70 MB fp32) and its output y (69 MB), then z (69 MB) and norm(u) made
again for z (34 MB) — the whole prefill's peak (``benchmarks/vamba_prefill.py --memory-trace``). With the fused
kernels (no autograd) the mixer runs

- the scan over the two halves, the state passed on in fp32, each half written into one y
  (``ssd_triton.ssd_scan(out=…)``): the per-chunk states are half as large;
- z and the gated norm half by half, the norm's output written over y: z and norm(u) are half as large.

The cut is a whole number of scan chunks, so the chunking — and the values, up to the rounding of the state
handed across the cut — are those of one pass. The cut is symbolic arithmetic on the length (no loop over it), so
torch.compile with dynamic shapes does not specialise on the length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

Scan = Callable[..., tuple[Tensor, Tensor]]


def halves(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """[(0, cut), (cut, length)] with ``cut`` half the length rounded down to whole chunks; [(0, length)] when
    the input is shorter than two chunks."""
    cut = length // (2 * chunk_size) * chunk_size
    return [(0, length)] if cut == 0 else [(0, cut), (cut, length)]


def scan_halves(scan: Scan, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                initial_state: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """``scan`` (``ssd_triton.ssd_scan``'s contract, with ``out``) over the halves, into one y [b, l, h, p]."""
    b, l, h, p = x.shape
    parts = halves(l, chunk_size)
    if len(parts) == 1:
        return scan(x, dt, A, B, C, chunk_size, initial_state)
    y = x.new_empty(b, l, h, p)
    state = initial_state
    for s, e in parts:
        _, state = scan(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], chunk_size, state, out=y[:, s:e])
    return y, state


def gate_halves(gated_norm: Callable[..., Tensor], y: Tensor, x: Tensor, D: Tensor, z_rows: Callable[[int, int], Tensor],
                norm: Any, dtype: torch.dtype, chunk_size: int) -> Tensor:
    """GatedRMSNorm(y + D·x, z) written over y (contiguous [b, l, h, p], ``dtype``), z of rows s:e made by
    ``z_rows(s, e)`` one half at a time → [b, l, h·p] (y's memory)."""
    b, l, h, p = y.shape
    flat = y.view(b, l, h * p)  # [b, l, h, p] -> [b, l, d_inner], same memory
    for s, e in halves(l, chunk_size):
        gated_norm(y[:, s:e], x[:, s:e], D, z_rows(s, e), norm.weight, norm.eps, norm.group_size,
                   norm.norm_before_gate, out_dtype=dtype, out=flat[:, s:e])
    return flat


def fused_halves(mixer: Any, kernels: Any, u: Tensor, norm: Optional[Callable[[Tensor], Tensor]], x: Tensor,
                 dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """A ``Mamba2Mixer``'s scan → gated norm with the fused kernels (no autograd), both in halves: u the mixer's
    input (``norm``: not normalised yet), x/dt/B/C from its conv → (gated y [b, l, d_inner], final state)."""
    y, state = scan_halves(kernels.mamba2_scan_fwd, x, dt, A, B, C, mixer.chunk_size, h0)

    def z_rows(s: int, e: int) -> Tensor:  # rows s:e of z [b, e - s, d_inner]
        rows = u[:, s:e]
        return mixer._in_proj_rows(rows if norm is None else norm(rows), 0, mixer.d_inner)

    return gate_halves(kernels.gated_norm, y, x, mixer.D, z_rows, mixer.norm, u.dtype, mixer.chunk_size), state


__all__ = ["fused_halves", "gate_halves", "halves", "scan_halves"]
