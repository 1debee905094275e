"""Pure-PyTorch reference kernels for the SSM mixers (Mamba-2 SSD, Mamba-1, causal conv).

Written to be read, in the spirit of mamba's ``ssd_minimal.py``. They are the CPU backend,
and the oracle the fast CUDA/Triton backends are tested against.

Shape letters: b batch, l sequence, h heads, p head dim, g groups (h % g == 0; head i uses
group i // (h // g), as in mamba_ssm), r = h // g heads per group, n state size,
c chunks, s / t positions inside a chunk, d channels (Mamba-1 inner width), k conv width.

All scans accumulate in fp32 (fp64 when given fp64), return ``y`` in the input dtype and the
state in the accumulation dtype. The state layout is mamba_ssm's ``ssm_state``:
Mamba-2 [b, h, p, n], Mamba-1 [b, d, n].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Upper bound on the elements of the largest per-segment temporary ([b, h, c, s, t]):
# 2**27 fp32 values = 512 MiB, so long sequences run in bounded memory.
_SEGMENT_ELEMS = 2**27


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp64 stays fp64, everything else accumulates in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _segsum(a: Tensor) -> Tensor:
    """Stable segment sums: out[..., t, s] = a[..., s+1] + ... + a[..., t] for s <= t, else -inf.

    a [..., T] -> [..., T, T]; exp(out) is the decay from step s to step t.
    """
    T = a.shape[-1]
    a = a[..., None].expand(*a.shape, T)  # [..., T(t), T(s)] value a[..., t]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), -1)
    a = a.masked_fill(~strict, 0)  # keep a[t] only where s < t
    out = a.cumsum(dim=-2)  # [..., T(t), T(s)] = sum_{s < j <= t} a[j]
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), 0)
    return out.masked_fill(~lower, float("-inf"))


def _ssd_segment(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor
) -> tuple[Tensor, Tensor]:
    """SSD over one segment whose length is a multiple of ``chunk_size``, all in ``state.dtype``.

    x [b, l, h, p], dt [b, l, h], A [h], B/C [b, l, g, n], state [b, h, p, n].
    Returns y [b, l, h, p] (accumulation dtype) and the state after the segment.
    """
    f = state.dtype
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    c, r, s = l // chunk_size, h // g, chunk_size
    dt = dt.to(f)
    # x*dt: [b, l, h, p] -> [b, c, s, g, r, p]
    xdt = (x.to(f) * dt[..., None]).reshape(b, c, s, g, r, p)
    # log decay dt*A: [b, l, h] -> [b, c, s, g, r] -> [b, g, r, c, s]
    a = (dt * A.to(f)).reshape(b, c, s, g, r).permute(0, 3, 4, 1, 2)
    a_cum = a.cumsum(dim=-1)  # [b, g, r, c, s]
    Bc = B.to(f).reshape(b, c, s, g, n)  # [b, l, g, n] -> [b, c, s, g, n]
    Cc = C.to(f).reshape(b, c, s, g, n)  # [b, l, g, n] -> [b, c, t, g, n]

    # 1. Inside each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_{s+1..t}) dt_s x_s.
    seg = _segsum(a)  # [b, g, r, c, t, s] = a_{s+1} + ... + a_t
    cb = torch.einsum("bctgn,bcsgn->bgcts", Cc, Bc)  # [b, g, c, t, s]
    scores = cb[:, :, None] * torch.exp(seg)  # [b, g, r, c, t, s]
    y = torch.einsum("bgrcts,bcsgrp->bctgrp", scores, xdt)  # [b, c, t, g, r, p]

    # 2. Each chunk's contribution to the state at its end (chunk started from zero).
    to_end = torch.exp(seg[..., -1, :])  # [b, g, r, c, s] decay s -> chunk end (no cancellation)
    xw = xdt * to_end.permute(0, 3, 4, 1, 2)[..., None]  # [b, c, s, g, r, p]
    chunk_states = torch.einsum("bcsgn,bcsgrp->bcgrpn", Bc, xw)  # [b, c, g, r, p, n]

    # 3. Carry the state across chunks; keep the state entering every chunk.
    chunk_decay = torch.exp(a_cum[..., -1])  # [b, g, r, c]
    cur = state.reshape(b, g, r, p, n)  # [b, h, p, n] -> [b, g, r, p, n]
    entering = []
    for i in range(c):
        entering.append(cur)
        cur = chunk_decay[..., i, None, None] * cur + chunk_states[:, i]
    states_in = torch.stack(entering, dim=1)  # [b, c, g, r, p, n]

    # 4. The entering state seen from every position: C_t . (exp(a_{1..t}) state).
    from_start = torch.exp(a_cum).permute(0, 3, 4, 1, 2)[..., None]  # [b, c, t, g, r, 1]
    y = y + torch.einsum("bctgn,bcgrpn->bctgrp", Cc, states_in) * from_start
    return y.reshape(b, l, h, p), cur.reshape(b, h, p, n)


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2 SSD scan, chunked (no D, no gating: callers apply them).

    x [b, l, h, p]; dt [b, l, h] (already softplus'ed + biased); A [h] (negative);
    B, C [b, l, g, n]; initial_state [b, h, p, n] or None (zeros).
    Returns y [b, l, h, p] in x's dtype and the final state [b, h, p, n] in fp32.
    Any l works (padded internally); memory is bounded by processing segments of chunks.
    """
    b, l, h, p = x.shape
    n = B.shape[-1]
    f = _acc_dtype(x.dtype)
    pad = -l % chunk_size
    if pad:  # zero dt past the end: no input and no decay, so the final state is unchanged
        x = F.pad(x, (0, 0, 0, 0, 0, pad))  # [b, l + pad, h, p]
        dt = F.pad(dt, (0, 0, 0, pad))  # [b, l + pad, h]
        B = F.pad(B, (0, 0, 0, 0, 0, pad))  # [b, l + pad, g, n]
        C = F.pad(C, (0, 0, 0, 0, 0, pad))  # [b, l + pad, g, n]
    state = (
        torch.zeros(b, h, p, n, dtype=f, device=x.device)
        if initial_state is None
        else initial_state.to(f)
    )
    seg = chunk_size * max(1, _SEGMENT_ELEMS // (b * h * chunk_size * chunk_size))
    y = torch.empty_like(x)  # [b, l + pad, h, p]
    for start in range(0, l + pad, seg):
        sl = slice(start, start + seg)
        y_seg, state = _ssd_segment(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], chunk_size, state)
        y[:, sl] = y_seg.to(y.dtype)
    return y[:, :l], state


def ssd_sequential(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2 scan as a plain per-step recurrence (the test oracle; run it in float64).

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t ⊗ B_t ;  y_t = C_t · h_t.
    Same contract as :func:`ssd_chunked`; ``chunk_size`` is accepted and ignored.
    """
    b, l, h, p = x.shape
    r = h // B.shape[2]
    f = _acc_dtype(x.dtype)
    Bh = B.to(f).repeat_interleave(r, dim=2)  # [b, l, g, n] -> [b, l, h, n]
    Ch = C.to(f).repeat_interleave(r, dim=2)  # [b, l, g, n] -> [b, l, h, n]
    dt, A, xf = dt.to(f), A.to(f), x.to(f)
    state = (
        torch.zeros(b, h, p, Bh.shape[-1], dtype=f, device=x.device)
        if initial_state is None
        else initial_state.to(f)
    )
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)[..., None, None]  # [b, h, 1, 1]
        inp = (dt[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # [b, h, p, n]
        state = decay * state + inp
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))  # [b, h, p]
    y = torch.stack(ys, dim=1) if ys else xf.new_zeros(b, 0, h, p)  # [b, l, h, p]
    return y.to(x.dtype), state


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-1 selective scan (mamba_ssm ``selective_scan_ref`` semantics, real A, plus a state).

    u, delta [b, d, l]; A [d, n]; B, C [b, n, l]; D [d]; z [b, d, l]; delta_bias [d];
    initial_state [b, d, n] or None. Per step:
    dt = softplus(delta + bias); x_t = exp(dt A) x_{t-1} + dt u_t B_t; y_t = C_t · x_t.
    Output (y + D u) * silu(z) in u's dtype, and the final state [b, d, n] in fp32.
    """
    f = _acc_dtype(u.dtype)
    b, d, l = u.shape
    uf, dt = u.to(f), delta.to(f)
    if delta_bias is not None:
        dt = dt + delta_bias.to(f)[:, None]  # [b, d, l]
    if delta_softplus:
        dt = F.softplus(dt)
    A, B, C = A.to(f), B.to(f), C.to(f)
    state = (
        torch.zeros(b, d, A.shape[1], dtype=f, device=u.device)
        if initial_state is None
        else initial_state.to(f)
    )
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, :, t, None] * A)  # [b, d, n]
        state = decay * state + (dt[:, :, t] * uf[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))  # [b, d]
    y = torch.stack(ys, dim=-1) if ys else uf.new_zeros(b, d, 0)  # [b, d, l]
    if D is not None:
        y = y + D.to(f)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(f))
    return y.to(u.dtype), state


def _activate(y: Tensor, activation: str | None) -> Tensor:
    """Apply the conv activation: None, or "silu"/"swish"."""
    if activation is None:
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def next_conv_state(x: Tensor, conv_state: Tensor | None, width: int) -> Tensor:
    """The last ``width - 1`` inputs after appending x [b, c, l] to conv_state [b, c, width-1]."""
    b, c, _ = x.shape
    if conv_state is None:
        conv_state = x.new_zeros(b, c, width - 1)
    full = torch.cat([conv_state.to(x.dtype), x], dim=-1)  # [b, c, width - 1 + l]
    return full[..., full.shape[-1] - (width - 1) :]  # [b, c, width - 1]


def causal_conv1d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    conv_state: Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]:
    """Causal depthwise conv1d with a carried state (computed in fp32).

    x [b, c, l]; weight [c, 1, k] or [c, k]; bias [c]; conv_state [b, c, k-1] (the previous
    k-1 inputs; None = zeros). Returns y [b, c, l] in x's dtype and the new state [b, c, k-1].
    """
    b, c, l = x.shape
    w = weight.reshape(c, -1)  # [c, 1, k] -> [c, k]
    k = w.shape[1]
    f = _acc_dtype(x.dtype)
    prev = x.new_zeros(b, c, k - 1) if conv_state is None else conv_state.to(x.dtype)
    full = torch.cat([prev, x], dim=-1).to(f)  # [b, c, k - 1 + l]
    bias_f = None if bias is None else bias.to(f)
    y = F.conv1d(full, w.to(f)[:, None, :], bias_f, groups=c)  # [b, c, l]
    return _activate(y, activation).to(x.dtype), next_conv_state(x, conv_state, k)
