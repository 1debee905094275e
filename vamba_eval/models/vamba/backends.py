"""SSM kernel backends: ``mamba_ssm`` (CUDA) → ``fla`` (Triton, CUDA) → ``torch`` (reference).

This is the ONLY module that imports ``mamba_ssm``, ``causal_conv1d`` or ``fla``, and only
inside functions: importing this module never touches them. Every backend implements the
contracts of :mod:`vamba_eval.models.vamba.ssm_ref`:

- ``mamba2_scan(x, dt, A, B, C, chunk_size, initial_state=None) -> (y, final_state)``
  (contract of :func:`ssm_ref.ssd_chunked`; state [b, h, p, n] fp32)
- ``mamba1_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
  initial_state=None) -> (y, final_state)`` (contract of :func:`ssm_ref.selective_scan_ref`)
- ``causal_conv1d(x, weight, bias=None, conv_state=None, activation="silu") -> (y, state)``
  (contract of :func:`ssm_ref.causal_conv1d_ref`)

Selection: ``select_backend(name, device)``; ``name`` None/"auto" reads ``VAMBA_SSM_BACKEND``
and, if that is unset or "auto", picks the first available of mamba_ssm, fla, torch.

Fused ops (optional, forward only): the CUDA backends (mamba_ssm, fla) also carry
``conv1d_blc`` and ``gated_norm`` from :mod:`~vamba_eval.models.vamba.triton_ops` when triton
imports, unless ``VAMBA_EVAL_FUSED_OPS=0``; ``Mamba2Mixer`` then uses them where no gradient is
needed. The fla backend also carries ``mamba2_scan_fwd`` (:func:`ssd_triton.ssd_scan`: our SSD
kernels reading the shared B/C in place; fla's scan copies them out per head) unless
``VAMBA_EVAL_FUSED_SSD=0`` (or the fused ops are off); mamba_ssm keeps its own SSD kernels, which
already share B/C. The torch backend never has them (it is the reference).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba_eval.models.vamba import ssm_ref

ENV_VAR = "VAMBA_SSM_BACKEND"
FUSED_ENV_VAR = "VAMBA_EVAL_FUSED_OPS"  # "0" turns the fused Triton ops off (A/B timing)
FUSED_SSD_ENV_VAR = "VAMBA_EVAL_FUSED_SSD"  # "0" keeps fla's scan while the other fused ops stay on
_OFF = ("0", "false", "off", "no")
BACKEND_NAMES = ("mamba_ssm", "fla", "torch")
_AUTO_ORDER = BACKEND_NAMES

_HOW_TO_FIX = {
    "mamba_ssm": (
        "mamba-ssm needs CUDA and its compiled extension: run on a CUDA device and "
        "`pip install mamba-ssm causal-conv1d --no-build-isolation` matching your torch/CUDA"
    ),
    "fla": "fla needs a CUDA device with Triton: `pip install fla-core` (tested with 0.6)",
}


class BackendUnavailable(RuntimeError):
    """An SSM backend was requested explicitly but cannot run here."""


@dataclass(frozen=True)
class SSMBackend:
    """A named set of SSM kernels; call ``backend.mamba2_scan(...)`` etc.

    ``conv1d_blc`` / ``gated_norm`` are optional forward-only fused ops with the contracts of
    :func:`triton_ops.causal_conv1d_silu_blc` / :func:`triton_ops.gated_rmsnorm_skip`
    (None: the mixer uses ``causal_conv1d`` and ``GatedRMSNorm``).
    """

    name: str
    mamba2_scan: Callable[..., tuple[Tensor, Tensor]] = field(repr=False, compare=False)
    mamba1_scan: Callable[..., tuple[Tensor, Tensor]] = field(repr=False, compare=False)
    causal_conv1d: Callable[..., tuple[Tensor, Tensor]] = field(repr=False, compare=False)
    conv1d_blc: Callable[..., tuple[Tensor, Tensor]] | None = field(
        default=None, repr=False, compare=False
    )
    gated_norm: Callable[..., Tensor] | None = field(default=None, repr=False, compare=False)
    mamba2_scan_fwd: Callable[..., tuple[Tensor, Tensor]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def fused(self) -> tuple[str, ...]:
        """Names of the fused ops this backend carries (empty for the plain kernels)."""
        names = ("conv1d_blc", "gated_norm", "mamba2_scan_fwd")
        return tuple(n for n in names if getattr(self, n) is not None)


# --------------------------------------------------------------------------- availability


@functools.lru_cache(maxsize=None)
def _import_problem(name: str) -> str | None:
    """Why the kernels of backend ``name`` cannot be imported, or None if they can (cached)."""
    modules = {
        "mamba_ssm": (
            "mamba_ssm.ops.triton.ssd_combined",  # Triton SSD kernels
            "mamba_ssm.ops.selective_scan_interface",  # imports the compiled selective_scan_cuda
        ),
        "fla": ("fla.ops.simple_gla",),
        "torch": (),
    }[name]
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a broken extension raising at import
            return f"`import {module}` failed ({type(exc).__name__}: {exc})"
    return None


def _unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or None if it can."""
    if name == "torch":
        return None
    if device.type != "cuda" or not torch.cuda.is_available():
        cuda = torch.cuda.is_available()
        return f"it needs a CUDA device, got {device.type!r} (CUDA available: {cuda})"
    return _import_problem(name)


def available_backends(device: torch.device | str) -> list[str]:
    """Backends that can run on ``device``, in auto-selection order (always ends with torch)."""
    device = torch.device(device)
    return [n for n in _AUTO_ORDER if _unavailable_reason(n, device) is None]


def select_backend(name: str | None, device: torch.device | str) -> SSMBackend:
    """Resolve a backend by name ("mamba_ssm", "fla", "torch", "auto" or None).

    None/"auto" defers to the ``VAMBA_SSM_BACKEND`` environment variable, then to the first
    available of mamba_ssm → fla → torch. An explicit name that cannot run raises
    :class:`BackendUnavailable` saying why and how to fix it.
    """
    device = torch.device(device)
    if name in (None, "auto"):
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
    if name == "auto":
        return _BUILDERS[available_backends(device)[0]]()
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown SSM backend {name!r}; choose one of {BACKEND_NAMES} or 'auto'")
    reason = _unavailable_reason(name, device)
    if reason is not None:
        raise BackendUnavailable(
            f"SSM backend {name!r} is unavailable on {device}: {reason}. Fix: {_HOW_TO_FIX[name]}; "
            f"or choose 'torch' / 'auto' (e.g. {ENV_VAR}=auto)."
        )
    return _BUILDERS[name]()


# --------------------------------------------------------------------------- fused ops


def fused_ops_problem() -> str | None:
    """Why the fused Triton ops are off (``VAMBA_EVAL_FUSED_OPS=0``, triton missing), or None."""
    if os.environ.get(FUSED_ENV_VAR, "").strip().lower() in _OFF:
        return f"{FUSED_ENV_VAR}={os.environ[FUSED_ENV_VAR]}"
    from vamba_eval.models.vamba import triton_ops

    return triton_ops.IMPORT_ERROR


def with_fused_ops(backend: SSMBackend) -> SSMBackend:
    """``backend`` plus the fused conv and gated norm of :mod:`triton_ops`, when they can be used.

    Unchanged if :func:`fused_ops_problem` gives a reason. The ops run on CUDA tensors (or on
    CPU tensors under Triton's interpreter, which is how the tests force this path).
    """
    if fused_ops_problem() is not None:
        return backend
    from vamba_eval.models.vamba import triton_ops

    scan_fwd = backend.mamba2_scan_fwd
    if backend.name == "fla" and os.environ.get(FUSED_SSD_ENV_VAR, "").strip().lower() not in _OFF:
        from vamba_eval.models.vamba import ssd_triton

        scan_fwd = _eager(ssd_triton.ssd_scan)
    return dataclasses.replace(
        backend,
        conv1d_blc=_eager(triton_ops.causal_conv1d_silu_blc),
        gated_norm=_eager(triton_ops.gated_rmsnorm_skip),
        mamba2_scan_fwd=scan_fwd,
    )


# --------------------------------------------------------------------------- fla


def _fla_mamba2_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    initial_state: Tensor | None = None,
    *,
    kernel: Callable | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2 SSD as fla ``chunk_simple_gla``: q = C, k = B, v = x·dt, g = A·dt, scale 1.

    fla works in [b, t, h, k] layout with its own chunking (``chunk_size`` is unused) and a
    state [b, h, k, v] = [b, h, n, p], the transpose of ours [b, h, p, n].
    ``kernel`` replaces ``chunk_simple_gla`` (tests inject a pure-torch stand-in).
    """
    if kernel is None:
        from fla.ops.simple_gla import chunk_simple_gla as kernel
    h = x.shape[2]
    r = h // B.shape[2]
    dtype = x.dtype
    # fla's input_guard makes every tensor argument contiguous, so an expand() here would be
    # copied there anyway: repeat_interleave costs the same.
    q = C.to(dtype).repeat_interleave(r, dim=2)  # [b, l, g, n] -> [b, l, h, n]
    k = B.to(dtype).repeat_interleave(r, dim=2)  # [b, l, g, n] -> [b, l, h, n]
    v = (x * dt.float()[..., None]).to(dtype)  # [b, l, h, p]; fp32 by type promotion
    g = dt.float() * A.float()  # [b, l, h] log decay per head and step
    h0 = None
    if initial_state is not None:
        h0 = initial_state.float().transpose(-1, -2).contiguous()  # [b, h, p, n] -> [b, h, n, p]
    kwargs = {"head_first": False} if "head_first" in inspect.signature(kernel).parameters else {}
    o, ht = kernel(
        q=q, k=k, v=v, g=g, scale=1.0, initial_state=h0, output_final_state=True, **kwargs
    )
    return o.to(dtype), ht.float().transpose(-1, -2)  # y [b, l, h, p]; state [b, h, p, n]


def _eager(fn: Callable) -> Callable:
    """Kernels stay out of torch.compile graphs (Triton/CUDA extensions, Python loops)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def _build_fla() -> SSMBackend:
    """fla for Mamba-2; fla has no Mamba-1 kernel, so Mamba-1 and the conv use the reference
    (Mamba-2's conv and gated norm use the fused Triton ops when available)."""
    return with_fused_ops(SSMBackend(
        name="fla",
        mamba2_scan=_eager(_fla_mamba2_scan),
        mamba1_scan=_eager(ssm_ref.selective_scan_ref),
        causal_conv1d=_eager(ssm_ref.causal_conv1d_ref),
    ))


# --------------------------------------------------------------------------- mamba_ssm


def _mamba_ssm_mamba2_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mamba-2 SSD via ``mamba_chunk_scan_combined`` (dt already softplus'ed: no bias/softplus)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    dtype = x.dtype
    y, final = mamba_chunk_scan_combined(
        x.contiguous(),  # [b, l, h, p]
        dt.contiguous(),  # [b, l, h]
        A.float(),  # [h]
        B.to(dtype).contiguous(),  # [b, l, g, n]
        C.to(dtype).contiguous(),  # [b, l, g, n]
        chunk_size,
        initial_states=None if initial_state is None else initial_state.float().contiguous(),
        return_final_states=True,
    )
    return y.to(dtype), final.float()  # [b, l, h, p], [b, h, p, n]


def _add_initial_state(
    y: Tensor, state: Tensor, dt: Tensor, A: Tensor, C: Tensor, h0: Tensor, block: int = 512
) -> tuple[Tensor, Tensor]:
    """Add a Mamba-1 initial state to a scan that started from zero (the scan is linear in it).

    y [b, d, l] fp32 (before D and gating), state [b, d, n] fp32, dt [b, d, l] (effective, fp32),
    A [d, n], C [b, n, l], h0 [b, d, n]. Adds y_t += C_t · (exp(A·sum_{j<=t} dt_j) h0) and
    state += exp(A·sum_j dt_j) h0. Works on blocks of ``block`` steps to bound memory.
    """
    A = A.float()
    carried = h0.float()  # exp(A * dt summed up to the block start) * h0, [b, d, n]
    extra = []
    for start in range(0, dt.shape[-1], block):
        sl = slice(start, start + block)
        cum = dt[..., sl].cumsum(dim=-1)  # [b, d, t]
        decayed = torch.exp(cum[..., None] * A[:, None, :]) * carried[:, :, None]  # [b, d, t, n]
        extra.append(torch.einsum("bdtn,bnt->bdt", decayed, C[..., sl].float()))  # [b, d, t]
        carried = decayed[:, :, -1]  # [b, d, n]
    if extra:
        y = y + torch.cat(extra, dim=-1)  # [b, d, l]
    return y, state + carried


def _mamba1_via_zero_state_scan(
    scan: Callable[..., tuple[Tensor, Tensor]],
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
    """Mamba-1 contract on top of ``scan(u, dt, A, B, C) -> (y, last_state)`` from a zero state.

    mamba_ssm's ``selective_scan_fn`` has no initial state, so the scan runs from zero with the
    effective dt, then the initial-state term, D and the gate are applied here in fp32.
    """
    dt = delta.float()  # [b, d, l]
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    y, state = scan(u, dt, A, B, C)
    y, state = y.float(), state.float()  # [b, d, l], [b, d, n]
    if initial_state is not None:
        y, state = _add_initial_state(y, state, dt, A, C, initial_state)
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype), state


def _selective_scan_cuda(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor
) -> tuple[Tensor, Tensor]:
    """Zero-state Mamba-1 scan with mamba_ssm's CUDA kernel (dt already effective)."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    dtype = u.dtype
    return selective_scan_fn(
        u.contiguous(),  # [b, d, l]
        dt.to(dtype).contiguous(),  # [b, d, l]
        A.float().contiguous(),  # [d, n]
        B.to(dtype).contiguous(),  # [b, n, l]
        C.to(dtype).contiguous(),  # [b, n, l]
        return_last_state=True,
    )


def _mamba_ssm_mamba1_scan(*args, **kwargs) -> tuple[Tensor, Tensor]:
    """Mamba-1 via ``selective_scan_fn`` (contract of ``ssm_ref.selective_scan_ref``)."""
    return _mamba1_via_zero_state_scan(_selective_scan_cuda, *args, **kwargs)


def _cuda_causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    conv_state: Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]:
    """Causal conv via ``causal_conv1d_fn`` (channel-last, needed for initial states).

    Falls back to the reference when the causal-conv1d package is not installed. The new
    state is the last k-1 inputs, computed here (no reliance on the kernel's final states).
    """
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return ssm_ref.causal_conv1d_ref(x, weight, bias, conv_state, activation)
    c = x.shape[1]
    w = weight.reshape(c, -1).to(x.dtype).contiguous()  # [c, 1, k] -> [c, k]
    x_cl = x.transpose(1, 2).contiguous().transpose(1, 2)  # [b, c, l], channel-last strides
    init = None
    if conv_state is not None:  # [b, c, k-1], channel-last strides
        init = conv_state.to(x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
    b_ = None if bias is None else bias.to(x.dtype)
    y = causal_conv1d_fn(x_cl, w, b_, initial_states=init, activation=activation)
    return y, ssm_ref.next_conv_state(x, conv_state, w.shape[1])


def _build_mamba_ssm() -> SSMBackend:
    """mamba_ssm kernels for both mixers; causal-conv1d when installed; fused ops when available."""
    return with_fused_ops(SSMBackend(
        name="mamba_ssm",
        mamba2_scan=_eager(_mamba_ssm_mamba2_scan),
        mamba1_scan=_eager(_mamba_ssm_mamba1_scan),
        causal_conv1d=_eager(_cuda_causal_conv1d),
    ))


# --------------------------------------------------------------------------- torch


def _build_torch() -> SSMBackend:
    """The pure-PyTorch reference kernels (any device)."""
    return SSMBackend(
        name="torch",
        mamba2_scan=_eager(ssm_ref.ssd_chunked),
        mamba1_scan=_eager(ssm_ref.selective_scan_ref),
        causal_conv1d=_eager(ssm_ref.causal_conv1d_ref),
    )


_BUILDERS: dict[str, Callable[[], SSMBackend]] = {
    "mamba_ssm": _build_mamba_ssm,
    "fla": _build_fla,
    "torch": _build_torch,
}
