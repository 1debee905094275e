"""Fused Triton kernels for the Mamba-2 mixer's glue around its matmuls and scan (forward only).

- :func:`causal_conv1d_silu_blc`: the depthwise causal conv (+ SiLU) of ``ssm_ref.causal_conv1d_ref``
  read and written in [b, l, c] layout, straight from a strided slice of the in_proj output:
  one read and one write instead of transposes, fp32 casts and a cuDNN depthwise conv.
- :func:`gated_rmsnorm_skip`: ``GatedRMSNorm((y + D·x), z)`` with the D skip, the SiLU gate and
  the group RMS all in fp32 registers: one pass over y, x, z instead of many fp32 passes.

triton is optional: this module imports without it (CPU installs) and its functions then raise
saying so. Nothing in the package imports this module unless a CUDA backend with fused ops is
built (:func:`backends.with_fused_ops`). On CPU tensors the kernels run only under Triton's
interpreter, which must be switched on before triton is imported (``TRITON_INTERPRET=1``:
triton's own library functions are decorated at import); the tests do this in a subprocess.

No autograd: callers use these only when no gradient is needed (``Mamba2Mixer`` checks).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

try:  # optional dependency; `from __future__ import annotations` keeps `tl.constexpr` unevaluated
    import triton
    import triton.language as tl
except Exception as exc:  # ImportError, or a broken install raising at import
    triton = tl = None
    IMPORT_ERROR: str | None = f"`import triton` failed ({type(exc).__name__}: {exc})"
else:
    IMPORT_ERROR = None

# conv tile: 32 positions × 256 channels, 8 warps (~80 registers, no spills on sm_90)
CONV_BLOCK_L, CONV_BLOCK_C, CONV_WARPS = 32, 256, 8
MAX_NORM_BLOCK = 65536  # one norm group lives in registers of one program
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _jit(fn):
    """``triton.jit`` when triton is installed; the plain function otherwise (never launched)."""
    return fn if triton is None else triton.jit(fn)


# --------------------------------------------------------------------------- kernels


@_jit
def _conv_blc_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr,
    L, C,
    stride_xb, stride_xl, stride_xc,
    stride_wc, stride_wk,
    stride_sb, stride_sc, stride_sk,
    stride_yb, stride_yl,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, SILU: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One [BLOCK_L, BLOCK_C] tile of y[b, t, c] = act(bias[c] + Σ_j w[c, j]·in[b, t-K+1+j, c]).

    in[b, s, c] = x[b, s, c] for s >= 0 and state[b, c, K-1+s] for s < 0 (the previous inputs).
    """
    pid_l, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L] output positions
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] channels
    t_ok, c_ok = t < L, c < C
    x_base = x_ptr + pid_b.to(tl.int64) * stride_xb
    s_base = state_ptr + pid_b.to(tl.int64) * stride_sb
    acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(K):
        src = t - (K - 1 - j)  # [BLOCK_L] input position seen by tap j
        w = tl.load(w_ptr + c * stride_wc + j * stride_wk, mask=c_ok, other=0.0).to(tl.float32)
        in_x = (src >= 0) & t_ok
        ptrs = x_base + src.to(tl.int64)[:, None] * stride_xl + c[None, :] * stride_xc
        acc += tl.load(ptrs, mask=in_x[:, None] & c_ok[None, :], other=0.0).to(tl.float32) * w[None, :]
        if HAS_STATE:  # output row t0 < K-1-j reads state column t0 + j: [BLOCK_C] vectors, no 2D pointers
            for t0 in tl.static_range(K - 1 - j):
                s_ok = c_ok & (pid_l * BLOCK_L <= t0)  # only the tile holding row t0
                s = tl.load(s_base + c * stride_sc + (t0 + j) * stride_sk, mask=s_ok, other=0.0)
                acc += tl.where((t == t0)[:, None], (s.to(tl.float32) * w)[None, :], 0.0)
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    y_ptrs = y_ptr + pid_b.to(tl.int64) * stride_yb + t.to(tl.int64)[:, None] * stride_yl + c[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=t_ok[:, None] & c_ok[None, :])


@_jit
def _gated_norm_kernel(
    y_ptr, x_ptr, d_ptr, z_ptr, w_ptr, out_ptr,
    stride_yb, stride_yl, stride_yh, stride_yp,
    stride_xb, stride_xl, stride_xh, stride_xp,
    stride_zb, stride_zl, stride_zd,
    stride_ob, stride_ol,
    eps,
    P: tl.constexpr, GROUP: tl.constexpr, BLOCK: tl.constexpr, GATE_FIRST: tl.constexpr,
):
    """One (position, group): v = y + D[h]·x; out = rms_norm(v·silu(z))·w (GATE_FIRST) or
    rms_norm(v)·w·silu(z), over the GROUP channels of the group; all in fp32."""
    pid_t, pid_g, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t, b = pid_t.to(tl.int64), pid_b.to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < GROUP
    col = pid_g * GROUP + offs  # [BLOCK] channel in [0, h*p)
    head, lane = col // P, col % P  # channel -> (head, position in head)
    y = tl.load(y_ptr + b * stride_yb + t * stride_yl + head * stride_yh + lane * stride_yp,
                mask=ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * stride_xb + t * stride_xl + head * stride_xh + lane * stride_xp,
                mask=ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + b * stride_zb + t * stride_zl + col * stride_zd,
                mask=ok, other=0.0).to(tl.float32)
    v = y + tl.load(d_ptr + head, mask=ok, other=0.0).to(tl.float32) * x
    gate = z / (1.0 + tl.exp(-z))  # silu(z)
    if GATE_FIRST:
        v = v * gate
    v = tl.where(ok, v, 0.0)
    rstd = tl.rsqrt(tl.sum(v * v, axis=0) / GROUP + eps)
    out = v * rstd * tl.load(w_ptr + col, mask=ok, other=0.0).to(tl.float32)
    if not GATE_FIRST:
        out = out * gate
    tl.store(out_ptr + b * stride_ob + t * stride_ol + col, out.to(out_ptr.dtype.element_ty), mask=ok)


# --------------------------------------------------------------------------- checks


def _is_interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return triton is not None and not isinstance(_conv_blc_kernel, triton.runtime.JITFunction)


INTERPRETED: bool = _is_interpreted()


def _interpreter_scalar_index() -> None:
    """Let interpreted kernels loop ``for i in range(n)`` over a runtime ``n``.

    Triton 3.6's interpreter holds scalar arguments as 1-element numpy arrays and converts them
    with ``int(array)``, which numpy ≥ 2 refuses for 1-d arrays; compiled kernels are unaffected.
    Applied only when the interpreter is on.
    """
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_vamba_eval_fix", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._vamba_eval_fix = True
    interpreter._patch_lang_tensor = patched


if INTERPRETED:
    _interpreter_scalar_index()


def _check(op: str, tensors: dict[str, Tensor | None]) -> torch.device:
    """Triton present, one device Triton can run on, supported dtypes; returns the device."""
    if IMPORT_ERROR is not None:
        raise RuntimeError(
            f"{op} needs triton: {IMPORT_ERROR}. Fix: `pip install triton` (CUDA installs of torch "
            "ship it), or use the PyTorch path (VAMBA_EVAL_FUSED_OPS=0 / VAMBA_SSM_BACKEND=torch)."
        )
    given = {k: t for k, t in tensors.items() if t is not None}
    devices = {t.device for t in given.values()}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    (device,) = devices
    if device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"{op}: Triton kernels need CUDA tensors, got {device}. On the CPU they run only under "
            "Triton's interpreter: set TRITON_INTERPRET=1 before triton is first imported."
        )
    bad = {k: str(t.dtype) for k, t in given.items() if t.dtype not in SUPPORTED_DTYPES}
    if bad:
        raise TypeError(f"{op}: dtypes {bad} unsupported (fp16/bf16/fp32 only); use the torch path")
    return device


def _on(device: torch.device):
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _silu_flag(activation: str | None) -> bool:
    """True for "silu"/"swish", False for None (the activations of ``ssm_ref``)."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return activation is not None


# --------------------------------------------------------------------------- public ops


def next_conv_state_blc(x: Tensor, conv_state: Tensor | None, width: int) -> Tensor:
    """The last ``width - 1`` inputs [b, c, width-1] after x [b, l, c] follows conv_state.

    Always a fresh tensor (never a view of x, which may be a slice of a large in_proj output).
    """
    b, l, c = x.shape
    keep = width - 1
    if l >= keep:  # [b, keep, c] -> [b, c, keep]
        return x[:, l - keep:].transpose(1, 2).clone(memory_format=torch.contiguous_format)
    prev = x.new_zeros(b, c, keep) if conv_state is None else conv_state.to(x.dtype)
    full = torch.cat([prev, x.transpose(1, 2)], dim=-1)  # [b, c, keep + l]
    return full[..., l:]  # [b, c, keep]


def causal_conv1d_silu_blc(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    conv_state: Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]:
    """``ssm_ref.causal_conv1d_ref`` + ``next_conv_state`` in [b, l, c] layout, fp32 accumulation.

    x [b, l, c], any strides (e.g. a slice of the in_proj output); weight [c, 1, k] or [c, k];
    bias [c]; conv_state [b, c, k-1] (previous k-1 inputs; None = zeros).
    Returns y [b, l, c] contiguous in x's dtype and the new state [b, c, k-1] in x's dtype.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be [b, l, c], got shape {tuple(x.shape)}")
    b, l, c = x.shape
    w = weight.reshape(c, -1)  # [c, 1, k] -> [c, k]
    k = w.shape[1]
    silu = _silu_flag(activation)
    device = _check("causal_conv1d_silu_blc",
                    {"x": x, "weight": w, "bias": bias, "conv_state": conv_state})
    if b > 65535:
        raise ValueError(f"batch {b} > 65535 (a CUDA grid limit); split the batch")
    if bias is not None and bias.shape != (c,):
        raise ValueError(f"bias must be [{c}], got {tuple(bias.shape)}")
    if conv_state is not None:
        if conv_state.shape != (b, c, k - 1):
            raise ValueError(f"conv_state must be [{b}, {c}, {k - 1}], got {tuple(conv_state.shape)}")
        conv_state = conv_state.to(x.dtype)  # the reference rounds the state to x's dtype
    y = torch.empty(b, l, c, dtype=x.dtype, device=device)
    if y.numel():
        s = conv_state if conv_state is not None else w  # w: a dummy pointer, never read
        grid = (triton.cdiv(l, CONV_BLOCK_L), triton.cdiv(c, CONV_BLOCK_C), b)
        with _on(device):
            _conv_blc_kernel[grid](
                x, w, bias if bias is not None else w, s, y, l, c,
                *x.stride(), *w.stride(),
                *(conv_state.stride() if conv_state is not None else (0, 0, 0)),
                y.stride(0), y.stride(1),
                K=k, HAS_BIAS=bias is not None, HAS_STATE=conv_state is not None, SILU=silu,
                BLOCK_L=CONV_BLOCK_L, BLOCK_C=CONV_BLOCK_C, num_warps=CONV_WARPS,
            )
    return y, next_conv_state_blc(x, conv_state, k)


def gated_rmsnorm_skip(
    y: Tensor,
    x: Tensor,
    D: Tensor,
    z: Tensor,
    weight: Tensor,
    eps: float,
    group_size: int | None = None,
    norm_before_gate: bool = False,
    out_dtype: torch.dtype | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``GatedRMSNorm(y + D[h]·x, z)`` in one pass, fp32 in registers (no rounding in between).

    y, x [b, l, h, p] (any strides); D [h]; z [b, l, h*p] (any strides, e.g. an in_proj slice);
    weight [h*p]; groups of ``group_size`` channels (None = all h*p).
    norm_before_gate=False: rms_norm_per_group((y + D·x)·silu(z))·weight;
    norm_before_gate=True: rms_norm_per_group(y + D·x)·weight·silu(z).
    Returns [b, l, h*p] contiguous in ``out_dtype`` (default z's dtype), or written into ``out`` [b, l, h*p]
    (channels contiguous), which may be y's or z's own memory: each (position, group) is read whole before it
    is written, and no two share an element.
    """
    if y.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"y and x must be [b, l, h, p] alike, got {tuple(y.shape)}, {tuple(x.shape)}")
    b, l, h, p = y.shape
    d = h * p
    group = group_size or d
    for name, t, shape in (("z", z, (b, l, d)), ("D", D, (h,)), ("weight", weight, (d,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(t.shape)}")
    if d % group:
        raise ValueError(f"group_size={group} does not divide h*p={d}")
    if out is not None and (tuple(out.shape) != (b, l, d) or out.stride(2) != 1):
        raise ValueError(f"out must be [{b}, {l}, {d}] with contiguous channels, got {tuple(out.shape)} "
                         f"strides {out.stride()}")
    device = _check("gated_rmsnorm_skip", {"y": y, "x": x, "D": D, "z": z, "weight": weight, "out": out})
    block = triton.next_power_of_2(group)
    if block > MAX_NORM_BLOCK:
        raise ValueError(
            f"group_size={group} > {MAX_NORM_BLOCK}: too large for the fused norm; use GatedRMSNorm"
        )
    if b > 65535:
        raise ValueError(f"batch {b} > 65535 (a CUDA grid limit); split the batch")
    if out is None:
        out = torch.empty(b, l, d, dtype=out_dtype or z.dtype, device=device)
    if out.numel():
        with _on(device):
            _gated_norm_kernel[(l, d // group, b)](
                y, x, D, z, weight, out,
                *y.stride(), *x.stride(), *z.stride(), out.stride(0), out.stride(1),
                float(eps),
                P=p, GROUP=group, BLOCK=block, GATE_FIRST=not norm_before_gate,
                num_warps=min(max(block // 256, 1), 8),
            )
    return out
