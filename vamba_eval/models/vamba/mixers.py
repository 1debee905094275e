"""Mamba-2 and Mamba-1 mixers with mamba_ssm's parameter names, shapes and initialisation.

``Mamba2Mixer`` matches ``mamba_ssm.modules.mamba2.Mamba2`` and ``Mamba1Mixer`` matches
``mamba_ssm.modules.mamba_simple.Mamba``, so their state dicts load unchanged. The kernels come
from an :class:`~vamba_eval.models.vamba.backends.SSMBackend`; mixers carry their recurrent
state explicitly (:class:`MixerState`) so a sequence processed in pieces gives the same output
as one pass (the basis of streaming prefill).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vamba_eval.models.vamba.backends import SSMBackend, select_backend
from vamba_eval.models.vamba.mixer_halves import fused_halves
from vamba_eval.models.vamba.scan_pieces import PIECE_TOKENS, needs_pieces, scan_in_pieces


@dataclass
class MixerState:
    """Recurrent state of a mixer between pieces of one sequence.

    conv_state: the last d_conv-1 conv inputs [b, conv_channels, d_conv-1] (input dtype).
    ssm_state: Mamba-2 [b, nheads, headdim, d_state] / Mamba-1 [b, d_inner, d_state] (fp32).
    """

    conv_state: Tensor
    ssm_state: Tensor


def _inverse_softplus_dt(
    n: int, dt_min: float, dt_max: float, dt_init_floor: float, like: Tensor
) -> Tensor:
    """mamba's dt bias init: softplus⁻¹ of log-uniform[dt_min, dt_max] clamped at the floor."""
    u = torch.rand(n, device=like.device, dtype=like.dtype)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = torch.clamp(dt, min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (like mamba's Triton RMSNorm); output in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight = 1."""
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        rstd = torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + self.eps)
        return (xf * rstd * self.weight.float()).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """mamba_ssm's gated, group-wise RMSNorm (``layernorm_gated.RMSNorm``), in fp32.

    norm_before_gate=False: out = rmsnorm_per_group(x * silu(z)) * weight.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(hidden_size, eps, device=device, dtype=dtype)
        self.group_size = group_size or hidden_size
        self.norm_before_gate = norm_before_gate

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        xf = x.float()
        if z is not None and not self.norm_before_gate:
            xf = xf * F.silu(z.float())
        grouped = xf.reshape(*xf.shape[:-1], -1, self.group_size)  # [..., d] -> [..., G, d/G]
        rstd = torch.rsqrt(grouped.square().mean(dim=-1, keepdim=True) + self.eps)
        out = (grouped * rstd).reshape(xf.shape) * self.weight.float()  # [..., d]
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.float())
        return out.to(x.dtype)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _use_fused(op: Callable | None, *tensors: Tensor | None) -> bool:
    """Whether to run a backend's forward-only fused op: it exists, no gradient is needed
    through ``tensors``, and their dtypes are ones it supports."""
    if op is None:
        return False
    given = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in given):
        return False
    return all(t.dtype in _FUSED_DTYPES for t in given)


class _MixerBase(nn.Module):
    """Backend resolution shared by both mixers."""

    backend: SSMBackend | None

    def _kernels(self, device: torch.device) -> SSMBackend:
        """The configured backend, else auto-selected for ``device`` (env var honoured)."""
        return self.backend if self.backend is not None else select_backend(None, device)


class Mamba2Mixer(_MixerBase):
    """Mamba-2 mixer; parameters identical to ``mamba_ssm.modules.mamba2.Mamba2``.

    in_proj (z, x, B, C, dt) → causal conv over x‖B‖C + SiLU → SSD scan (+ D skip) →
    gated group RMSNorm with z → out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        rmsnorm_eps: float = 1e-5,
        norm_before_gate: bool = False,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        backend: SSMBackend | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.conv_init = conv_init
        self.expand, self.headdim, self.ngroups = expand, headdim, ngroups
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"d_inner={self.d_inner} is not a multiple of headdim={headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads={self.nheads} is not a multiple of ngroups={ngroups}")
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")
        self.A_init_range, self.dt_limit = tuple(A_init_range), tuple(dt_limit)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.chunk_size, self.layer_idx, self.backend = chunk_size, layer_idx, backend
        self.scan_piece_tokens = PIECE_TOKENS  # training scans longer than this run in checkpointed pieces
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads  # z, x, B, C, dt
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **fk)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
            padding=d_conv - 1, bias=conv_bias, **fk,
        )
        self.dt_bias = nn.Parameter(torch.empty(self.nheads, **fk))
        self.A_log = nn.Parameter(torch.empty(self.nheads, **fk))
        self.D = nn.Parameter(torch.empty(self.nheads, device=device))  # fp32, as in mamba_ssm
        self.norm = GatedRMSNorm(
            self.d_inner, eps=rmsnorm_eps, group_size=self.d_inner // ngroups,
            norm_before_gate=norm_before_gate, **fk,
        )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's init, in its RNG order; works after ``to_empty`` from the meta device."""
        self.in_proj.reset_parameters()
        self.conv1d.reset_parameters()
        if self.conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -self.conv_init, self.conv_init)
        self.dt_bias.copy_(_inverse_softplus_dt(
            self.nheads, self.dt_min, self.dt_max, self.dt_init_floor, self.dt_bias
        ))
        A = torch.empty(self.nheads, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(A.uniform_(*self.A_init_range)))
        self.D.fill_(1.0)
        self.norm.reset_parameters()
        self.out_proj.reset_parameters()

    def init_state(self, batch_size: int, device=None, dtype=None) -> MixerState:
        """A zero state (the same as passing ``state=None``)."""
        device = device or self.out_proj.weight.device
        conv = torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device,
                           dtype=dtype or self.conv1d.weight.dtype)
        ssm = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device)
        return MixerState(conv, ssm)

    def forward(self, u: Tensor, state: MixerState | None = None,
                norm: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, MixerState]:
        """u [b, l, d_model] → (out [b, l, d_model], state after the last position).

        ``norm``: u is not normalised yet; the mixer applies ``norm`` to it twice — for x/B/C/dt and again for z
        after the scan — instead of holding norm(u) through the scan (inference: one activation less at the
        prefill's peak; same values, the norm is deterministic).
        The backend's fused conv / gated norm / SSD scan (if any) replace the reference ones when
        no gradient is needed; the results agree to rounding (the fused norm skips one rounding).
        """
        kernels = self._kernels(u.device)
        b, l, _ = u.shape
        h, p, g, n = self.nheads, self.headdim, self.ngroups, self.d_state
        # in_proj as three GEMMs over row slices of its weight (views): z is made only for the norm, so it and the
        # conv's input are not held through the scan (the prefill's largest transient, ≈ 30 % less per token)
        normed = u if norm is None else norm(u)
        xBC = self._in_proj_rows(normed, self.d_inner, self.conv_dim)  # [b, l, conv_dim]
        dt = self._in_proj_rows(normed, self.d_inner + self.conv_dim, h)  # [b, l, h]
        del normed  # with ``norm``: freed here, made again for z
        xBC, conv_state = self._conv(kernels, xBC, None if state is None else state.conv_state)
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        x = x.reshape(b, l, h, p)  # [b, l, d_inner] -> [b, l, h, p]
        B, C = B.reshape(b, l, g, n), C.reshape(b, l, g, n)  # [b, l, g*n] -> [b, l, g, n]
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [b, l, h]
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(min=self.dt_limit[0], max=self.dt_limit[1])
        A = -torch.exp(self.A_log.float())  # [h]
        h0 = None if state is None else state.ssm_state
        scan = kernels.mamba2_scan
        if _use_fused(kernels.mamba2_scan_fwd, x, dt, B, C, h0):
            scan = kernels.mamba2_scan_fwd  # forward-only SSD kernels reading B/C in place
            if x.dtype == u.dtype and _use_fused(kernels.gated_norm, x, self.norm.weight):
                y, ssm_state = fused_halves(self, kernels, u, norm, x, dt, A, B, C, h0)  # [b, l, d_inner]
                return self.out_proj(y), MixerState(conv_state, ssm_state)
        if needs_pieces(l, self.scan_piece_tokens, x, dt, B, C, h0):  # training on long inputs: bounded memory
            y, ssm_state = scan_in_pieces(scan, x, dt, A, B, C, self.chunk_size, h0, self.scan_piece_tokens)
        else:
            y, ssm_state = scan(x, dt, A, B, C, self.chunk_size, h0)
        z = self._in_proj_rows(u if norm is None else norm(u), 0, self.d_inner)  # [b, l, d_inner]
        y = self._skip_and_norm(kernels, y, x, z, u.dtype)  # [b, l, d_inner]
        return self.out_proj(y), MixerState(conv_state, ssm_state)

    def _in_proj_rows(self, u: Tensor, start: int, width: int) -> Tensor:
        """Outputs ``start : start + width`` of ``in_proj(u)`` (z ‖ xBC ‖ dt) with one GEMM."""
        w, bias = self.in_proj.weight, self.in_proj.bias
        return F.linear(u, w[start:start + width], None if bias is None else bias[start:start + width])

    def _conv(
        self, kernels: SSMBackend, xBC: Tensor, conv_state: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Causal conv + SiLU over xBC [b, l, conv_dim] → ([b, l, conv_dim], new conv state)."""
        w, bias = self.conv1d.weight, self.conv1d.bias
        if _use_fused(kernels.conv1d_blc, xBC, w, bias, conv_state):
            return kernels.conv1d_blc(xBC, w, bias, conv_state, "silu")  # stays [b, l, c]
        out, conv_state = kernels.causal_conv1d(  # [b, l, conv_dim] -> [b, conv_dim, l]
            xBC.transpose(1, 2), w, bias, conv_state, "silu"
        )
        return out.transpose(1, 2), conv_state  # [b, conv_dim, l] -> [b, l, conv_dim]

    def _skip_and_norm(
        self, kernels: SSMBackend, y: Tensor, x: Tensor, z: Tensor, dtype: torch.dtype
    ) -> Tensor:
        """GatedRMSNorm(y + D·x, z): y, x [b, l, h, p], z [b, l, d_inner] → [b, l, d_inner]."""
        norm = self.norm
        if _use_fused(kernels.gated_norm, y, x, z, self.D, norm.weight):
            # written over y (the scan's fresh output, read nowhere else): one activation less at the prefill's peak
            inplace = y.is_contiguous() and y.dtype == dtype
            return kernels.gated_norm(
                y, x, self.D, z, norm.weight, norm.eps, norm.group_size, norm.norm_before_gate,
                out_dtype=dtype, out=y.view(y.shape[0], y.shape[1], self.d_inner) if inplace else None,
            )
        b, l = y.shape[:2]
        y = y.float() + self.D.float()[:, None] * x.float()  # [b, l, h, p]
        return norm(y.reshape(b, l, self.d_inner).to(dtype), z)  # [b, l, h, p] -> [b, l, d_inner]


class Mamba1Mixer(_MixerBase):
    """Mamba-1 mixer; parameters identical to ``mamba_ssm.modules.mamba_simple.Mamba``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        backend: SSMBackend | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_init, self.dt_scale = dt_init, dt_scale
        self.layer_idx, self.backend = layer_idx, backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **fk)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
            padding=d_conv - 1, bias=conv_bias, **fk,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **fk)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **fk)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state, device=device))  # fp32
        self.D = nn.Parameter(torch.empty(self.d_inner, device=device))  # fp32
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's init (S4D-real A, dt_proj std dt_rank**-0.5), in its RNG order."""
        for lin in (self.in_proj, self.conv1d, self.x_proj, self.dt_proj):
            lin.reset_parameters()
        std = self.dt_rank**-0.5 * self.dt_scale
        if self.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(
            _inverse_softplus_dt(self.d_inner, self.dt_min, self.dt_max, self.dt_init_floor,
                                 self.dt_proj.bias)
        )
        n = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(n).expand(self.d_inner, -1))  # A = -[1..d_state] per channel
        self.D.fill_(1.0)
        self.out_proj.reset_parameters()

    def init_state(self, batch_size: int, device=None, dtype=None) -> MixerState:
        """A zero state (the same as passing ``state=None``)."""
        device = device or self.out_proj.weight.device
        conv = torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device,
                           dtype=dtype or self.conv1d.weight.dtype)
        return MixerState(conv, torch.zeros(batch_size, self.d_inner, self.d_state, device=device))

    def forward(self, u: Tensor, state: MixerState | None = None) -> tuple[Tensor, MixerState]:
        """u [b, l, d_model] → (out [b, l, d_model], state after the last position)."""
        kernels = self._kernels(u.device)
        x, z = self.in_proj(u).chunk(2, dim=-1)  # [b, l, 2*d_inner] -> 2 × [b, l, d_inner]
        x, conv_state = kernels.causal_conv1d(  # -> [b, d_inner, l]
            x.transpose(1, 2), self.conv1d.weight, self.conv1d.bias,
            None if state is None else state.conv_state, "silu",
        )
        x_dbl = self.x_proj(x.transpose(1, 2))  # [b, l, dt_rank + 2*d_state]
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # [b, l, d_inner]; bias goes in as delta_bias
        y, ssm_state = kernels.mamba1_scan(
            x,
            dt.transpose(1, 2),  # [b, d_inner, l]
            -torch.exp(self.A_log.float()),  # [d_inner, d_state]
            B.transpose(1, 2),  # [b, d_state, l]
            C.transpose(1, 2),  # [b, d_state, l]
            D=self.D.float(),
            z=z.transpose(1, 2),  # [b, d_inner, l]
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            initial_state=None if state is None else state.ssm_state,
        )
        return self.out_proj(y.transpose(1, 2)), MixerState(conv_state, ssm_state)


class MambaBlock(nn.Module):
    """Pre-norm residual block: u + mixer(RMSNorm(u)); keys ``norm.weight`` and ``mixer.*``."""

    def __init__(
        self, mixer: Mamba2Mixer | Mamba1Mixer, d_model: int, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        w = mixer.out_proj.weight
        self.norm = RMSNorm(d_model, eps=norm_eps, device=w.device, dtype=w.dtype)
        self.mixer = mixer

    def reset_parameters(self) -> None:
        """Re-initialise norm and mixer (e.g. after ``to_empty``)."""
        self.norm.reset_parameters()
        self.mixer.reset_parameters()

    def forward(self, u: Tensor, state: MixerState | None = None) -> tuple[Tensor, MixerState]:
        """u [b, l, d_model] → (u + mixer(norm(u)), new mixer state)."""
        if isinstance(self.mixer, Mamba2Mixer) and not torch.is_grad_enabled():
            out, state = self.mixer(u, state, norm=self.norm)  # norm(u) not held through the scan
        else:  # training: autograd would keep both norm outputs
            out, state = self.mixer(self.norm(u), state)
        return u + out, state


@torch.no_grad()
def rescale_out_proj(block: MambaBlock | nn.Module, n_layers: int) -> None:
    """Divide the mixer's out_proj weight by sqrt(n_layers) (the spec's Mamba-2 init)."""
    mixer = block.mixer if isinstance(block, MambaBlock) else block
    mixer.out_proj.weight.div_(math.sqrt(n_layers))
