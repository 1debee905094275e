"""Mamba-2 SSD chunked scan in Triton, B/C shared by the heads of a group (forward only).

Same contract and the same four steps as :func:`ssm_ref.ssd_chunked` (read that first):

1. ``cum``: per chunk of ``Q`` steps, the running sum of the log decay ``a = dt·A`` (torch, fp32).
2. :func:`_chunk_cb_kernel`: ``CB[t, s] = C_t·B_s`` per chunk, once per group (not per head);
   :func:`_chunk_state_kernel`: each chunk's contribution to the state at its end,
   ``S_c[p, n] = Σ_s exp(cum_Q − cum_s)·dt_s·x_s[p]·B_s[n]``.
3. :func:`_state_pass_kernel`: ``H_c = exp(cum_Q)·H_{c−1} + S_c``, 16 chunks per step in closed form;
   the state after each chunk overwrites ``S_c`` in place, the last one is the final state.
4. :func:`_chunk_scan_kernel`: ``y_t = exp(cum_t)·C_t·H_{c−1} + Σ_{s≤t} (C_t·B_s)·exp(cum_t − cum_s)·dt_s·x_s``
   (``H_{−1}`` = the initial state).

Why not fla's ``chunk_simple_gla`` (the ``fla`` backend's scan): it takes one q/k per head, so B and C
(one per group, 128 wide) must be copied out to every head, and its ``input_guard`` copies every
strided input; at VAMBA-7B width (112 heads) that is ≈ 9 GB of copies per 153k-token mixer call.
Here x, B, C and dt are read in place through their strides (slices of the conv output), C_t·B_s is
computed once per group, and the grids run the heads of one chunk side by side so that the shared
B, C and CB tiles come from L2.

Numerics follow mamba_ssm's SSD kernels: fp32 decays and accumulators; the operands of the
matmuls (x·weights, the entering state) are rounded to the input dtype (bf16/fp16), fp32 inputs
stay fp32 (exact ``ieee`` dots). No autograd: callers use it only when no gradient is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba_eval.models.vamba.triton_ops import INTERPRETED, _check, _jit, _on, tl, triton


@dataclass(frozen=True)
class Tiles:
    """Launch shapes (``benchmarks/ssd_tuning.py`` times alternatives on the GPU)."""

    block_t: int = 64  # positions per scan tile (rows and columns of the C·Bᵀ block)
    max_block_p: int = 64  # head-dim columns per program
    pass_block: int = 128  # state elements per state-passing program
    pass_group: int = 16  # chunks combined per step of the state-passing loop (the loop is latency-bound)
    warps_cb: int = 4
    warps_state: int = 4
    warps_pass: int = 4
    warps_scan: int = 4
    stages: int = 3  # software-pipelining depth of the state and scan loops (Triton's default)

    def __post_init__(self) -> None:
        sizes = {"block_t": self.block_t, "max_block_p": self.max_block_p, "pass_block": self.pass_block,
                 "pass_group": self.pass_group}
        bad = {k: v for k, v in sizes.items() if v < 16 or v & (v - 1)}
        if bad:  # tl.dot needs every dimension ≥ 16 (pass_group 8 failed to compile on the H100)
            raise ValueError(f"ssd_triton.Tiles: {bad} must be powers of two ≥ 16")


TILES = Tiles()
# how tl.dot runs: native (tensor cores; fp16/bf16 on the GPU), exact fp32 ("ieee"), or — under
# Triton's CPU interpreter, whose bf16 dot is wrong (numpy has no bf16) — operands rounded to the
# input dtype as on the GPU, then multiplied exactly in fp32
DOT_NATIVE, DOT_IEEE, DOT_UPCAST = 0, 1, 2


def _pow2(n: int, least: int = 16) -> int:
    """Smallest power of two ≥ max(n, least) (tl.dot needs every dimension ≥ 16)."""
    return max(least, 1 << (max(1, n) - 1).bit_length())


# --------------------------------------------------------------------------- kernels


@_jit
def _dot(a, b, DOT: tl.constexpr):
    """a @ b with fp32 accumulation (``DOT``: see DOT_NATIVE / DOT_IEEE / DOT_UPCAST)."""
    if DOT == 2:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif DOT == 1:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@_jit
def _chunk_cb_kernel(
    b_ptr, c_ptr, cb_ptr,
    L, N, G,
    sbb, sbl, sbg, sbn,
    sCb, sCl, sCg, sCn,
    Q: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr,
):
    """CB[b, c, g, t, s] = C_t · B_s for one [BLOCK_T, BLOCK_T] tile of chunk c (shared by the group's heads)."""
    pid_bg, pid_c, pid_ts = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi, gi = pid_bg // G, pid_bg % G
    t = (pid_ts // (Q // BLOCK_T)) * BLOCK_T + tl.arange(0, BLOCK_T)
    s = (pid_ts % (Q // BLOCK_T)) * BLOCK_T + tl.arange(0, BLOCK_T)
    n = tl.arange(0, BLOCK_N)
    pos_t, pos_s = pid_c.to(tl.int64) * Q + t, pid_c.to(tl.int64) * Q + s
    ct = tl.load(c_ptr + bi * sCb + pos_t[:, None] * sCl + gi * sCg + n[None, :] * sCn,
                 mask=(pos_t < L)[:, None] & (n < N)[None, :], other=0.0)  # [BLOCK_T, BLOCK_N]
    bs = tl.load(b_ptr + bi * sbb + pos_s[:, None] * sbl + gi * sbg + n[None, :] * sbn,
                 mask=(pos_s < L)[:, None] & (n < N)[None, :], other=0.0)  # [BLOCK_T, BLOCK_N]
    cb = _dot(ct, tl.trans(bs), DOT)  # [t, s] fp32
    out = cb_ptr + (pid_bg.to(tl.int64) * tl.num_programs(1) + pid_c) * Q * Q
    tl.store(out + t[:, None] * Q + s[None, :], cb)


@_jit
def _chunk_state_kernel(
    x_ptr, dt_ptr, cum_ptr, b_ptr, st_ptr,
    L, H, P, N, HPG,
    sxb, sxl, sxh, sxp,
    sdb, sdl, sdh,
    scb, sch, scc,
    sbb, sbl, sbg, sbn,
    ssb, ssc, ssh,
    Q: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr,
):
    """S[b, c, h, p, n] = Σ_s x[s, p]·w_s·B[s, n], w_s = exp(cum_last − cum_s)·dt_s (chunk c, head h).

    Heads vary fastest over the grid, so the programs reading one chunk's B run together (L2 hits).
    """
    pid_bh, pid_c, pid_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi, hi = pid_bh // H, pid_bh % H
    gi = hi // HPG
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    cum_base = cum_ptr + bi.to(tl.int64) * scb + hi * sch + pid_c.to(tl.int64) * scc
    cum_last = tl.load(cum_base + Q - 1)  # padded steps add no decay: the last valid step's sum
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for s0 in range(0, Q, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)  # [BLOCK_S] steps inside the chunk
        pos = pid_c.to(tl.int64) * Q + s
        ok = pos < L
        dt = tl.load(dt_ptr + bi * sdb + pos * sdl + hi * sdh, mask=ok, other=0.0).to(tl.float32)
        w = tl.exp(cum_last - tl.load(cum_base + s)) * dt  # [BLOCK_S], ≤ dt
        xs = tl.load(x_ptr + bi * sxb + pos[:, None] * sxl + hi * sxh + p[None, :] * sxp,
                     mask=ok[:, None] & (p < P)[None, :], other=0.0)  # [BLOCK_S, BLOCK_P]
        bs = tl.load(b_ptr + bi * sbb + pos[:, None] * sbl + gi * sbg + n[None, :] * sbn,
                     mask=ok[:, None] & (n < N)[None, :], other=0.0)  # [BLOCK_S, BLOCK_N]
        xw = tl.trans((xs.to(tl.float32) * w[:, None]).to(xs.dtype))  # [BLOCK_P, BLOCK_S]
        acc += _dot(xw, bs, DOT)
    out = st_ptr + bi.to(tl.int64) * ssb + pid_c.to(tl.int64) * ssc + hi * ssh
    tl.store(out + p[:, None] * N + n[None, :], acc, mask=(p < P)[:, None] & (n < N)[None, :])


@_jit
def _state_pass_kernel(
    st_ptr, cum_ptr, init_ptr, final_ptr,
    H, PN, n_chunks,
    ssb, ssc, ssh,
    scb, sch, scc,
    Q: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK: tl.constexpr, GROUP: tl.constexpr,
):
    """S_c → H_c = exp(cum_last_c)·H_{c−1} + S_c in place (the state after chunk c), GROUP chunks per step.

    The GROUP chunks of one step are loaded together and combined in closed form — with L_k the running
    sum of the chunks' log decays, ``H_k = exp(L_k)·H + Σ_{j≤k} exp(L_k − L_j)·S_j``, one small exact
    matmul — so the sequential loop (latency-bound: one round trip per step) runs n_chunks / GROUP times.
    """
    pid_bh, pid_e = tl.program_id(0), tl.program_id(1)
    bi, hi = pid_bh // H, pid_bh % H
    e = pid_e * BLOCK + tl.arange(0, BLOCK)  # flat (p, n) index
    ok = e < PN
    if HAS_INIT:
        state = tl.load(init_ptr + pid_bh.to(tl.int64) * PN + e, mask=ok, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)
    k = tl.arange(0, GROUP)
    base = st_ptr + bi.to(tl.int64) * ssb + hi * ssh
    cum_base = cum_ptr + bi.to(tl.int64) * scb + hi * sch
    for c0 in range(0, n_chunks, GROUP):
        c = c0 + k  # [GROUP] chunks of this step
        ok_c = c < n_chunks
        ptrs = base + c.to(tl.int64)[:, None] * ssc + e[None, :]  # [GROUP, BLOCK]
        m = ok_c[:, None] & ok[None, :]
        x = tl.load(ptrs, mask=m, other=0.0)  # S_c; past the end: 0 (and decay 1: the state is kept)
        run = tl.cumsum(tl.load(cum_base + c * scc + Q - 1, mask=ok_c, other=0.0), 0)  # [GROUP] L_k ≤ 0
        w = tl.where(k[:, None] >= k[None, :], tl.exp(tl.minimum(run[:, None] - run[None, :], 0.0)), 0.0)
        after = tl.dot(w, x, input_precision="ieee") + tl.exp(run)[:, None] * state[None, :]  # [GROUP, BLOCK]
        tl.store(ptrs, after, mask=m)
        state = tl.sum(tl.where(k[:, None] == GROUP - 1, after, 0.0), axis=0)  # after the step's last chunk
    tl.store(final_ptr + pid_bh.to(tl.int64) * PN + e, state, mask=ok)


@_jit
def _chunk_scan_kernel(
    x_ptr, dt_ptr, cum_ptr, c_ptr, cb_ptr, st_ptr, init_ptr, y_ptr,
    L, H, P, N, HPG, G,
    sxb, sxl, sxh, sxp,
    sdb, sdl, sdh,
    scb, sch, scc,
    sCb, sCl, sCg, sCn,
    ssb, ssc, ssh,
    syb, syl, syh,
    Q: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """y for BLOCK_T steps of one chunk and head: the entering state's term plus the causal intra-chunk sum.

    Heads vary fastest over the grid: the group's CB tiles and C rows are read from L2.
    """
    pid_bh, pid_ct, pid_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    chunk, tb = pid_ct // (Q // BLOCK_T), pid_ct % (Q // BLOCK_T)
    bi, hi = pid_bh // H, pid_bh % H
    gi = hi // HPG
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    t = tb * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T] steps inside the chunk
    pos_t = chunk.to(tl.int64) * Q + t
    ok_t = pos_t < L
    cum_base = cum_ptr + bi.to(tl.int64) * scb + hi * sch + chunk.to(tl.int64) * scc
    cum_t = tl.load(cum_base + t)  # [BLOCK_T]
    ct = tl.load(c_ptr + bi * sCb + pos_t[:, None] * sCl + gi * sCg + n[None, :] * sCn,
                 mask=ok_t[:, None] & (n < N)[None, :], other=0.0)  # [BLOCK_T, BLOCK_N]
    # entering state H[p, n] = the state after the previous chunk (chunk 0: the initial state), transposed
    pn = p[None, :] * N + n[:, None]  # [BLOCK_N, BLOCK_P]
    m_pn = (n < N)[:, None] & (p < P)[None, :]
    prev = tl.maximum(chunk - 1, 0).to(tl.int64)
    st = st_ptr + bi.to(tl.int64) * ssb + prev * ssc + hi * ssh
    h_in = tl.load(st + pn, mask=m_pn & (chunk > 0), other=0.0)
    if HAS_INIT:
        h_in += tl.load(init_ptr + pid_bh.to(tl.int64) * P * N + pn, mask=m_pn & (chunk == 0), other=0.0)
    acc = _dot(ct, h_in.to(ct.dtype), DOT) * tl.exp(cum_t)[:, None]  # [BLOCK_T, BLOCK_P]
    n_chunks = (L + Q - 1) // Q
    cb_base = cb_ptr + ((bi * G + gi).to(tl.int64) * n_chunks + chunk) * Q * Q
    for s0 in range(0, (tb + 1) * BLOCK_T, BLOCK_T):  # source tiles up to the diagonal
        s = s0 + tl.arange(0, BLOCK_T)  # [BLOCK_T] source steps
        pos_s = chunk.to(tl.int64) * Q + s
        ok_s = pos_s < L
        dt_s = tl.load(dt_ptr + bi * sdb + pos_s * sdl + hi * sdh, mask=ok_s, other=0.0).to(tl.float32)
        cb = tl.load(cb_base + t[:, None] * Q + s[None, :])  # [t, s] fp32
        decay = tl.exp(tl.minimum(cum_t[:, None] - tl.load(cum_base + s)[None, :], 0.0))
        m = tl.where(t[:, None] >= s[None, :], cb * decay * dt_s[None, :], 0.0)  # [t, s]
        xs = tl.load(x_ptr + bi * sxb + pos_s[:, None] * sxl + hi * sxh + p[None, :] * sxp,
                     mask=ok_s[:, None] & (p < P)[None, :], other=0.0)  # [BLOCK_T(s), BLOCK_P]
        acc += _dot(m.to(xs.dtype), xs, DOT)
    out = y_ptr + bi.to(tl.int64) * syb + pos_t[:, None] * syl + hi * syh + p[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=ok_t[:, None] & (p < P)[None, :])


# --------------------------------------------------------------------------- wrapper


def _chunk_cumsum(dt: Tensor, A: Tensor, n_chunks: int, q: int) -> Tensor:
    """Running sums of dt·A inside each chunk: dt [b, l, h] → cum [b, h, c, q] fp32 (zero-padded steps)."""
    b, l, h = dt.shape
    a = dt.float() * A.float()  # [b, l, h] log decay per step
    a = F.pad(a, (0, 0, 0, n_chunks * q - l))  # [b, c·q, h]
    return a.view(b, n_chunks, q, h).cumsum(dim=2).permute(0, 3, 1, 2).contiguous()  # [b, h, c, q]


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    initial_state: Tensor | None = None,
    tiles: Tiles = TILES,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2 SSD scan (contract of :func:`ssm_ref.ssd_chunked`), four Triton kernels, no copies of x/B/C.

    x [b, l, h, p] (any strides), dt [b, l, h], A [h], B/C [b, l, g, n], initial_state [b, h, p, n].
    Returns y [b, l, h, p] (x's dtype, contiguous; or written into ``out`` [b, l, h, p] of x's dtype with unit
    stride in p, e.g. a slice of a larger y) and the final state [b, h, p, n] fp32.
    The kernels tile chunks of a power of two ≥ 16: the largest one ≤ ``chunk_size`` (16 if it is
    smaller), and less for short inputs; the result does not depend on the chunking beyond rounding.
    """
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device
                            or out.stride(3) != 1):
        raise ValueError(f"ssd_scan: out must be {list(x.shape)} {x.dtype} on {x.device}, unit stride in p, "
                         f"got {list(out.shape)} {out.dtype} strides {out.stride()} on {out.device}")
    device = _check("ssd_scan", {"x": x, "dt": dt, "A": A, "B": B, "C": C, "initial_state": initial_state})
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if B.shape != C.shape or B.shape[:2] != (b, l) or dt.shape != (b, l, h) or h % g:
        raise ValueError(f"ssd_scan: shapes x {tuple(x.shape)}, dt {tuple(dt.shape)}, B {tuple(B.shape)}, "
                         f"C {tuple(C.shape)} do not fit [b, l, h, p] / [b, l, h] / [b, l, g, n] with h % g == 0")
    q = min(max(16, 1 << (max(1, chunk_size).bit_length() - 1)), _pow2(l))  # power of two ≥ 16
    block_t = min(tiles.block_t, q)
    n_chunks = triton.cdiv(l, q)
    B, C = B.to(x.dtype), C.to(x.dtype)  # tl.dot needs one operand dtype (no copy when equal)
    dot = DOT_IEEE if x.dtype == torch.float32 else DOT_UPCAST if INTERPRETED else DOT_NATIVE
    cum = _chunk_cumsum(dt, A, n_chunks, q)  # [b, h, c, q]
    states = torch.empty(b, n_chunks, h, p, n, device=device, dtype=torch.float32)
    cb = torch.empty(b, g, n_chunks, q, q, device=device, dtype=torch.float32)  # C_t·B_s per chunk
    final = torch.empty(b, h, p, n, device=device, dtype=torch.float32)
    y = torch.empty(b, l, h, p, device=device, dtype=x.dtype) if out is None else out
    init = None if initial_state is None else initial_state.float().contiguous()
    bp, bn = min(tiles.max_block_p, _pow2(p)), _pow2(n)
    common = (*x.stride(), *dt.stride(), *cum.stride()[:3])
    n_tiles = q // block_t
    with _on(device):
        _chunk_cb_kernel[(b * g, n_chunks, n_tiles * n_tiles)](
            B, C, cb, l, n, g, *B.stride(), *C.stride(), Q=q, BLOCK_T=block_t, BLOCK_N=bn, DOT=dot,
            num_warps=tiles.warps_cb)
        _chunk_state_kernel[(b * h, n_chunks, triton.cdiv(p, bp))](
            x, dt, cum, B, states, l, h, p, n, h // g, *common, *B.stride(), *states.stride()[:3],
            Q=q, BLOCK_S=block_t, BLOCK_P=bp, BLOCK_N=bn, DOT=dot, num_warps=tiles.warps_state,
            num_stages=tiles.stages)
        _state_pass_kernel[(b * h, triton.cdiv(p * n, tiles.pass_block))](
            states, cum, init if init is not None else final, final, h, p * n, n_chunks,
            *states.stride()[:3], *cum.stride()[:3], Q=q, HAS_INIT=init is not None, BLOCK=tiles.pass_block,
            GROUP=tiles.pass_group, num_warps=tiles.warps_pass)
        _chunk_scan_kernel[(b * h, n_chunks * n_tiles, triton.cdiv(p, bp))](
            x, dt, cum, C, cb, states, init if init is not None else final, y, l, h, p, n, h // g, g, *common,
            *C.stride(), *states.stride()[:3], *y.stride()[:3],
            Q=q, BLOCK_T=block_t, BLOCK_P=bp, BLOCK_N=bn, DOT=dot, HAS_INIT=init is not None,
            num_warps=tiles.warps_scan,
            num_stages=tiles.stages)
    return y, final
