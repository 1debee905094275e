"""Tests of the SSM reference kernels, backend registry and Mamba mixers (CPU; one GPU test)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vamba_eval.models.vamba import backends, ssm_ref
from vamba_eval.models.vamba.backends import BackendUnavailable, available_backends, select_backend
from vamba_eval.models.vamba.mixers import (
    GatedRMSNorm,
    Mamba1Mixer,
    Mamba2Mixer,
    MambaBlock,
    MixerState,
    rescale_out_proj,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def ssd_inputs(b, l, h, p, g, n, *, init: bool, seed: int = 0, dtype=torch.float32):
    """Random Mamba-2 scan inputs with moderate decays."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, l, h, generator=gen) - 1.0)
    A = -(0.5 + 3.5 * torch.rand(h, generator=gen))
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    h0 = torch.randn(b, h, p, n, generator=gen) if init else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), dt, A, cast(B), cast(C), h0


# ------------------------------------------------------------------ Mamba-2 SSD


def ssd_ref_call(fn, x, dt, A, B, C, chunk, h0):
    """Call a scan with the shared contract."""
    return fn(x, dt, A, B, C, chunk, initial_state=h0)


SSD_SHAPES = [  # b, l, h, p, g, n, chunk, init
    (1, 64, 4, 8, 1, 16, 16, False),  # l a multiple of the chunk
    (2, 37, 6, 4, 3, 5, 8, True),  # ragged l, 3 groups
    (2, 50, 4, 8, 4, 8, 16, True),  # g == h
    (1, 5, 2, 4, 1, 4, 16, True),  # l shorter than one chunk
    (1, 300, 8, 16, 1, 32, 64, False),  # several chunks, ragged
]


@pytest.mark.parametrize("b,l,h,p,g,n,chunk,init", SSD_SHAPES)
def test_ssd_chunked_matches_sequential_float64(b, l, h, p, g, n, chunk, init):
    x, dt, A, B, C, h0 = ssd_inputs(b, l, h, p, g, n, init=init)
    y, state = ssd_ref_call(ssm_ref.ssd_chunked, x, dt, A, B, C, chunk, h0)
    y64, state64 = ssd_ref_call(
        ssm_ref.ssd_sequential, *(t.double() if t is not None else None for t in (x, dt, A, B, C)),
        chunk, None if h0 is None else h0.double(),
    )
    assert y.dtype == torch.float32 and state.dtype == torch.float32
    assert y.shape == (b, l, h, p) and state.shape == (b, h, p, n)
    assert rel(y, y64) < 1e-6
    assert rel(state, state64) < 1e-6


def test_ssd_chunked_multiple_segments(monkeypatch):
    """Force several memory-bounded segments: results must not change."""
    x, dt, A, B, C, h0 = ssd_inputs(2, 203, 4, 8, 2, 8, init=True, seed=3)
    y1, s1 = ssm_ref.ssd_chunked(x, dt, A, B, C, 16, h0)
    monkeypatch.setattr(ssm_ref, "_SEGMENT_ELEMS", 2 * 4 * 16 * 16 * 3)  # 3 chunks per segment
    y2, s2 = ssm_ref.ssd_chunked(x, dt, A, B, C, 16, h0)
    assert rel(y2, y1) < 1e-6 and rel(s2, s1) < 1e-6


def test_ssd_chunked_bf16_inputs():
    x, dt, A, B, C, h0 = ssd_inputs(1, 70, 4, 8, 1, 16, init=True, dtype=torch.bfloat16)
    y, state = ssm_ref.ssd_chunked(x, dt, A, B, C, 32, h0)
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
    y64, s64 = ssm_ref.ssd_sequential(x.double(), dt.double(), A.double(), B.double(), C.double(),
                                      None, h0.double())
    assert rel(y, y64) < 1e-2 and rel(state, s64) < 1e-5


def test_ssd_split_sequence_equals_one_pass():
    x, dt, A, B, C, _ = ssd_inputs(1, 90, 4, 8, 2, 8, init=False, seed=5)
    y, s = ssm_ref.ssd_chunked(x, dt, A, B, C, 16)
    ya, sa = ssm_ref.ssd_chunked(x[:, :41], dt[:, :41], A, B[:, :41], C[:, :41], 16)
    yb, sb = ssm_ref.ssd_chunked(x[:, 41:], dt[:, 41:], A, B[:, 41:], C[:, 41:], 16, sa)
    assert rel(torch.cat([ya, yb], 1), y) < 1e-6 and rel(sb, s) < 1e-6


# ------------------------------------------------------------------ Mamba-1


def mamba1_inputs(b=2, d=6, l=23, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=gen)
    delta = torch.randn(b, d, l, generator=gen) * 0.5
    A = -torch.rand(d, n, generator=gen) * 3 - 0.2
    B = torch.randn(b, n, l, generator=gen)
    C = torch.randn(b, n, l, generator=gen)
    D = torch.randn(d, generator=gen)
    z = torch.randn(b, d, l, generator=gen)
    bias = torch.randn(d, generator=gen) * 0.3 - 1
    h0 = torch.randn(b, d, n, generator=gen)
    return u, delta, A, B, C, D, z, bias, h0


def mamba1_oracle(u, delta, A, B, C, D, z, bias, h0):
    """Independent float64 oracle in closed (quadratic) form."""
    u, delta, A, B, C, D, z, bias, h0 = (t.double() for t in (u, delta, A, B, C, D, z, bias, h0))
    dt = F.softplus(delta + bias[:, None])  # [b, d, l]
    cum = dt.cumsum(-1)  # [b, d, l]
    l = u.shape[-1]
    diff = cum[:, :, :, None] - cum[:, :, None, :]  # [b, d, t, s]
    mask = torch.tril(torch.ones(l, l, dtype=torch.bool))
    decay = torch.exp(diff[..., None] * A[None, :, None, None, :])  # [b, d, t, s, n]
    decay = decay * mask[None, None, :, :, None]
    inp = (dt * u)[:, :, None, :, None] * B.permute(0, 2, 1)[:, None, None, :, :]  # [b, d, 1, s, n]
    states = (decay * inp).sum(3) + torch.exp(cum[..., None] * A[None, :, None, :]) * h0[:, :, None]
    y = torch.einsum("bdtn,bnt->bdt", states, C)
    y = (y + D[:, None] * u) * F.silu(z)
    return y, states[:, :, -1]


def test_selective_scan_ref_matches_float64_oracle():
    args = mamba1_inputs()
    u, delta, A, B, C, D, z, bias, h0 = args
    y, state = ssm_ref.selective_scan_ref(u, delta, A, B, C, D, z, bias, True, h0)
    y64, s64 = mamba1_oracle(*args)
    assert y.dtype == torch.float32 and state.shape == (2, 6, 5)
    assert rel(y, y64) < 1e-6 and rel(state, s64) < 1e-6


def test_selective_scan_ref_split_equals_one_pass():
    u, delta, A, B, C, D, z, bias, _ = mamba1_inputs(seed=1)
    y, s = ssm_ref.selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    k = 9
    ya, sa = ssm_ref.selective_scan_ref(u[..., :k], delta[..., :k], A, B[..., :k], C[..., :k], D,
                                        z[..., :k], bias, True)
    yb, sb = ssm_ref.selective_scan_ref(u[..., k:], delta[..., k:], A, B[..., k:], C[..., k:], D,
                                        z[..., k:], bias, True, sa)
    assert rel(torch.cat([ya, yb], -1), y) < 1e-6 and rel(sb, s) < 1e-6


def test_mamba1_initial_state_wrapper_matches_reference():
    """The mamba_ssm Mamba-1 path (zero-state kernel + initial-state term) is exact."""

    def zero_state_scan(u, dt, A, B, C):
        return ssm_ref.selective_scan_ref(u, dt, A, B, C)

    u, delta, A, B, C, D, z, bias, h0 = mamba1_inputs(seed=2)
    want = ssm_ref.selective_scan_ref(u, delta, A, B, C, D, z, bias, True, h0)
    got = backends._mamba1_via_zero_state_scan(zero_state_scan, u, delta, A, B, C, D, z, bias,
                                               True, h0)
    assert rel(got[0], want[0]) < 1e-6 and rel(got[1], want[1]) < 1e-6
    dt = F.softplus(delta + bias[:, None])
    y0, s0 = zero_state_scan(u, dt, A, B, C)
    big = backends._add_initial_state(y0, s0, dt, A, C, h0)
    small = backends._add_initial_state(y0, s0, dt, A, C, h0, block=7)
    assert rel(small[0], big[0]) < 1e-6 and rel(small[1], big[1]) < 1e-6


# ------------------------------------------------------------------ causal conv


@pytest.mark.parametrize(
    "weight_3d,with_bias,activation", [(True, True, "silu"), (False, False, None)]
)
def test_causal_conv_chunked_equals_whole(weight_3d, with_bias, activation):
    gen = torch.Generator().manual_seed(0)
    b, c, l, k = 2, 5, 29, 4
    x = torch.randn(b, c, l, generator=gen)
    w = torch.randn(c, 1, k, generator=gen)
    bias = torch.randn(c, generator=gen) if with_bias else None
    weight = w if weight_3d else w[:, 0]
    y, state = ssm_ref.causal_conv1d_ref(x, weight, bias, None, activation)
    conv = F.conv1d(x, w, bias, padding=k - 1, groups=c)[..., :l]  # nn.Conv1d as mamba uses it
    assert max_rel(y, conv if activation is None else F.silu(conv)) < 1e-6
    assert torch.equal(state, x[..., -(k - 1):])
    pieces, st = [], None
    for a, e in [(0, 1), (1, 3), (3, 4), (4, 20), (20, 29)]:  # includes pieces shorter than k-1
        out, st = ssm_ref.causal_conv1d_ref(x[..., a:e], weight, bias, st, activation)
        pieces.append(out)
    assert max_rel(torch.cat(pieces, -1), y) < 1e-6 and torch.equal(st, state)


# ------------------------------------------------------------------ backends


def test_fla_mapping_with_reference_simple_gla():
    """The fla call (q=C, k=B, v=x·dt, g=A·dt, state transposed) reproduces the SSD scan."""

    def simple_gla(q, k, v, g, scale, initial_state, output_final_state):
        b, t, h, kd = q.shape
        S = q.new_zeros(b, h, kd, v.shape[-1]) if initial_state is None else initial_state.clone()
        outs = []
        for i in range(t):  # fla semantics: S = exp(g) S + kᵀv ; o = scale · q S
            S = torch.exp(g[:, i])[..., None, None] * S + k[:, i, :, :, None] * v[:, i, :, None, :]
            outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, i], S))
        return torch.stack(outs, 1), (S if output_final_state else None)

    x, dt, A, B, C, h0 = ssd_inputs(2, 33, 6, 4, 2, 8, init=True, seed=7)
    y, s = backends._fla_mamba2_scan(x, dt, A, B, C, 16, h0, kernel=simple_gla)
    y_ref, s_ref = ssm_ref.ssd_chunked(x, dt, A, B, C, 16, h0)
    assert rel(y, y_ref) < 1e-5 and rel(s, s_ref) < 1e-5 and s.shape == h0.shape


def test_select_backend_on_cpu(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    cpu = torch.device("cpu")
    assert select_backend(None, cpu).name == "torch"
    assert select_backend("auto", "cpu").name == "torch"
    assert select_backend("torch", cpu).name == "torch"
    assert available_backends(cpu) == ["torch"]
    with pytest.raises(ValueError, match="unknown SSM backend"):
        select_backend("triton", cpu)


@pytest.mark.parametrize(
    "name,hint", [("fla", "pip install fla-core"), ("mamba_ssm", "pip install mamba-ssm")]
)
def test_explicit_unavailable_backend_explains(name, hint, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    with pytest.raises(BackendUnavailable) as err:
        select_backend(name, torch.device("cpu"))
    msg = str(err.value)
    assert name in msg and "CUDA" in msg and hint in msg


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "fla")
    with pytest.raises(BackendUnavailable, match="fla"):
        select_backend(None, "cpu")
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    assert select_backend(None, "cpu").name == "torch"
    assert select_backend("torch", "cpu").name == "torch"  # explicit name wins


def test_backends_module_imports_no_kernel_packages():
    code = (
        "import sys, vamba_eval.models.vamba.mixers, vamba_eval.models.vamba.backends as b;"
        "b.select_backend(None, 'cpu');"
        "bad = [m for m in ('mamba_ssm', 'fla', 'causal_conv1d') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ mixers


def random_splits(l: int, seed: int) -> list[int]:
    """Cut points 0 < … < l, including a piece of length 1."""
    gen = torch.Generator().manual_seed(seed)
    cuts = sorted(set(torch.randint(1, l, (5,), generator=gen).tolist()) | {1, l})
    return [0] + cuts


def run_in_pieces(mixer, u, cuts):
    outs, state = [], None
    for a, e in zip(cuts[:-1], cuts[1:]):
        out, state = mixer(u[:, a:e], state)
        outs.append(out)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("ngroups,seed", [(1, 0), (2, 1), (2, 2)])
def test_mamba2_mixer_streaming_equals_one_pass(ngroups, seed):
    torch.manual_seed(seed)
    m = Mamba2Mixer(48, d_state=8, headdim=12, ngroups=ngroups, chunk_size=16)
    u = torch.randn(2, 71, 48)
    with torch.no_grad():
        y, state = m(u)
        y2, state2 = run_in_pieces(m, u, random_splits(71, seed))
    assert isinstance(state, MixerState)
    assert state.conv_state.shape == (2, m.conv_dim, 3) and state.ssm_state.shape == (2, 8, 12, 8)
    assert max_rel(y2, y) < 1e-5
    assert max_rel(state2.ssm_state, state.ssm_state) < 1e-5
    assert torch.equal(state2.conv_state, state.conv_state)


@pytest.mark.parametrize("seed", [0, 1])
def test_mamba1_mixer_streaming_equals_one_pass(seed):
    torch.manual_seed(seed)
    m = Mamba1Mixer(32, d_state=8)
    u = torch.randn(2, 45, 32)
    with torch.no_grad():
        y, state = m(u)
        y2, state2 = run_in_pieces(m, u, random_splits(45, seed))
    assert max_rel(y2, y) < 1e-5 and max_rel(state2.ssm_state, state.ssm_state) < 1e-5


def mamba2_naive(m: Mamba2Mixer, u: torch.Tensor) -> torch.Tensor:
    """mamba_ssm Mamba2's unfused forward, written out with nn.Conv1d and the sequential scan."""
    b, l, _ = u.shape
    z, xBC, dt = torch.split(m.in_proj(u), [m.d_inner, m.conv_dim, m.nheads], dim=-1)
    xBC = F.silu(m.conv1d(xBC.transpose(1, 2))[..., :l]).transpose(1, 2)
    x, B, C = torch.split(xBC, [m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    x = x.reshape(b, l, m.nheads, m.headdim)
    dt = F.softplus(dt + m.dt_bias)
    y, _ = ssm_ref.ssd_sequential(x.double(), dt.double(), -torch.exp(m.A_log).double(),
                                  B.reshape(b, l, m.ngroups, -1).double(),
                                  C.reshape(b, l, m.ngroups, -1).double())
    y = (y + m.D.double()[:, None] * x.double()).reshape(b, l, -1) * F.silu(z.double())
    yg = y.reshape(b, l, m.ngroups, -1)
    yg = yg * torch.rsqrt(yg.square().mean(-1, keepdim=True) + m.norm.eps)
    return m.out_proj((yg.reshape(b, l, -1) * m.norm.weight.double()).float())


def torch_fused_ops(calls: dict) -> dict:
    """Pure-torch stand-ins with the contracts of the fused Triton ops, counting their calls."""

    def conv1d_blc(x, weight, bias, conv_state, activation):
        calls["conv1d_blc"] = calls.get("conv1d_blc", 0) + 1
        y, state = ssm_ref.causal_conv1d_ref(x.transpose(1, 2), weight, bias, conv_state, activation)
        return y.transpose(1, 2).contiguous(), state

    def gated_norm(y, x, D, z, weight, eps, group_size, norm_before_gate, out_dtype=None, out=None):
        calls["gated_norm"] = calls.get("gated_norm", 0) + 1
        b, l, h, p = y.shape
        norm = GatedRMSNorm(h * p, eps, group_size, norm_before_gate).to(weight.dtype)
        norm.weight.data.copy_(weight)
        result = norm((y.float() + D.float()[:, None] * x.float()).reshape(b, l, -1), z).to(out_dtype)
        return result if out is None else out.copy_(result)  # out may be y's memory: result is computed first

    return {"conv1d_blc": conv1d_blc, "gated_norm": gated_norm}


def test_mamba2_mixer_uses_fused_ops_only_where_no_gradient_is_needed():
    torch.manual_seed(4)
    ref = select_backend("torch", "cpu")
    calls: dict = {}
    fused = dataclasses.replace(ref, **torch_fused_ops(calls))
    assert fused.fused == ("conv1d_blc", "gated_norm") and ref.fused == ()
    m = Mamba2Mixer(32, d_state=8, headdim=8, ngroups=2, chunk_size=8, backend=ref)
    u = torch.randn(2, 19, 32)
    with torch.no_grad():
        y_ref, st_ref = m(u)
        m.backend = fused
        y, st = m(u)
        y2, st2 = run_in_pieces(m, u, [0, 1, 2, 10, 19])
    assert calls == {"conv1d_blc": 5, "gated_norm": 5}
    assert max_rel(y, y_ref) < 1e-5 and max_rel(y2, y_ref) < 1e-5
    assert torch.equal(st.conv_state, st_ref.conv_state) and torch.equal(st2.conv_state, st_ref.conv_state)
    y_grad, _ = m(u)  # autograd needed (parameters require grad): the reference path
    y_grad.sum().backward()
    assert calls == {"conv1d_blc": 5, "gated_norm": 5} and m.in_proj.weight.grad is not None
    assert torch.equal(y_grad.detach(), y_ref)
    with torch.no_grad():
        m.double()(u.double())  # fp64 is not a fused-op dtype: the reference path
    assert calls == {"conv1d_blc": 5, "gated_norm": 5}


def test_mamba2_mixer_fused_inference_runs_in_halves_with_the_same_values():
    """With a fused scan and gated norm (stand-ins here) and no autograd, the mixer scans two halves into one y
    and makes z / gates half by half over y (``mixer_halves``): same output and state as the reference path."""
    from vamba_eval.models.vamba.mixer_halves import halves

    assert halves(45, 16) == [(0, 16), (16, 45)] and halves(31, 16) == [(0, 31)] and halves(64, 16) == [(0, 32), (32, 64)]
    torch.manual_seed(5)
    ref = select_backend("torch", "cpu")
    calls: dict = {}
    scans: list[tuple] = []

    def scan_fwd(x, dt, A, B, C, chunk_size, initial_state=None, out=None):
        scans.append((x.shape[1], initial_state is not None, out is not None))
        y, state = ssm_ref.ssd_chunked(x, dt, A, B, C, chunk_size, initial_state)
        return (y, state) if out is None else (out.copy_(y), state)

    fused = dataclasses.replace(ref, **torch_fused_ops(calls), mamba2_scan_fwd=scan_fwd)
    block = MambaBlock(Mamba2Mixer(32, d_state=8, headdim=8, ngroups=2, chunk_size=8, backend=ref), 32)
    u = torch.randn(2, 45, 32)
    with torch.no_grad():
        y_ref, st_ref = block(u)
        block.mixer.backend = fused
        y, st = block(u)
        y2, st2 = run_in_pieces(block, u, [0, 5, 45])
    assert scans == [(16, False, True), (29, True, True), (5, False, False), (16, True, True), (24, True, True)]
    assert calls == {"conv1d_blc": 3, "gated_norm": 5}  # a gate per half; the 5-token piece is one half
    assert max_rel(y, y_ref) < 1e-5 and max_rel(y2, y_ref) < 1e-5
    assert max_rel(st.ssm_state, st_ref.ssm_state) < 1e-5 and max_rel(st2.ssm_state, st_ref.ssm_state) < 1e-5


def test_fused_ops_off_without_triton_or_by_env(monkeypatch):
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from vamba_eval.models.vamba import backends, triton_ops as t\n"
        "assert t.IMPORT_ERROR and 'import triton' in t.IMPORT_ERROR, t.IMPORT_ERROR\n"
        "b = backends.select_backend('torch', 'cpu')\n"
        "assert backends.with_fused_ops(b) is b and backends.fused_ops_problem() == t.IMPORT_ERROR\n"
        "for call in (lambda: t.causal_conv1d_silu_blc(torch.zeros(1, 3, 4), torch.zeros(4, 1, 4)),\n"
        "             lambda: t.gated_rmsnorm_skip(*[torch.zeros(1, 2, 2, 2)] * 2, torch.ones(2),\n"
        "                                          torch.zeros(1, 2, 4), torch.ones(4), 1e-5)):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as err:\n"
        "        assert 'needs triton' in str(err) and 'pip install triton' in str(err), err\n"
        "    else:\n"
        "        raise AssertionError('no error without triton')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setenv(backends.FUSED_ENV_VAR, "0")
    ref = select_backend("torch", "cpu")
    assert backends.with_fused_ops(ref) is ref
    assert backends.fused_ops_problem() == "VAMBA_EVAL_FUSED_OPS=0"


def test_mamba2_mixer_matches_unfused_mamba_forward():
    torch.manual_seed(3)
    m = Mamba2Mixer(32, d_state=8, headdim=8, ngroups=2, chunk_size=8)
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        u = torch.randn(2, 27, 32)
        assert max_rel(m(u)[0], mamba2_naive(m, u)) < 1e-5


def test_vamba7b_mamba2_shapes_on_meta():
    block = MambaBlock(Mamba2Mixer(3584, d_state=128, headdim=64, expand=2, device="meta"), 3584)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "norm.weight": (3584,),
        "mixer.in_proj.weight": (14704, 3584),
        "mixer.conv1d.weight": (7424, 1, 4),
        "mixer.conv1d.bias": (7424,),
        "mixer.dt_bias": (112,),
        "mixer.A_log": (112,),
        "mixer.D": (112,),
        "mixer.norm.weight": (7168,),
        "mixer.out_proj.weight": (3584, 7168),
    }
    assert sum(p.numel() for p in block.parameters()) == 78_437_456
    assert block.mixer.in_proj.bias is None and block.mixer.out_proj.bias is None


def test_mamba1_shapes_on_meta():
    m = Mamba1Mixer(3584, device="meta")
    assert m.dt_rank == 224
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "in_proj.weight": (14336, 3584),
        "conv1d.weight": (7168, 1, 4),
        "conv1d.bias": (7168,),
        "x_proj.weight": (256, 7168),
        "dt_proj.weight": (7168, 224),
        "dt_proj.bias": (7168,),
        "A_log": (7168, 16),
        "D": (7168,),
        "out_proj.weight": (3584, 7168),
    }


def test_init_statistics_after_meta_to_empty():
    torch.manual_seed(0)
    block = MambaBlock(Mamba2Mixer(512, headdim=8, d_state=16, device="meta"), 512)
    block.to_empty(device="cpu")
    block.reset_parameters()
    m = block.mixer
    dt = F.softplus(m.dt_bias.float())
    assert m.nheads == 128
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert dt.log().std() > 0.5  # log-uniform spread, not a constant
    A = -torch.exp(m.A_log.float())
    assert A.min() >= -16 and A.max() <= -1 and A.std() > 1
    assert torch.equal(m.D, torch.ones(128)) and torch.equal(block.norm.weight, torch.ones(512))
    assert torch.equal(m.norm.weight, torch.ones(1024))
    w_before = m.out_proj.weight.clone()
    rescale_out_proj(block, 28)
    assert torch.allclose(m.out_proj.weight, w_before / math.sqrt(28))

    m1 = Mamba1Mixer(64, d_state=16, device="meta")
    m1.to_empty(device="cpu")
    m1.reset_parameters()
    dt1 = F.softplus(m1.dt_proj.bias)
    assert dt1.min() >= 0.001 * (1 - 1e-4) and dt1.max() <= 0.1 * (1 + 1e-4)
    assert torch.allclose(-torch.exp(m1.A_log), -torch.arange(1, 17.0).expand(128, 16))
    assert m1.dt_proj.weight.abs().max() <= m1.dt_rank**-0.5


def test_block_residual_and_fp32_norm():
    torch.manual_seed(0)
    block = MambaBlock(Mamba2Mixer(32, d_state=8, headdim=8, chunk_size=8), 32).to(torch.bfloat16)
    u = torch.randn(1, 20, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        out, state = block(u)
        mixed, _ = block.mixer(block.norm(u))
    assert out.dtype == torch.bfloat16 and state.ssm_state.dtype == torch.float32
    assert torch.equal(out, u + mixed)


def test_block_inference_does_not_hold_the_normed_input_through_the_scan():
    """Without autograd the mixer norms u again for z instead of keeping norm(u) alive across the scan (the
    7B prefill's peak is inside the scan); the output equals the training path's exactly."""
    import weakref

    torch.manual_seed(0)
    block = MambaBlock(Mamba2Mixer(32, d_state=8, headdim=8, chunk_size=8), 32).double()
    normed: list = []
    norm_forward = block.norm.forward
    block.norm.forward = lambda x: normed.append(weakref.ref(out := norm_forward(x))) or out
    alive_in_scan: list[bool] = []
    backend = block.mixer._kernels(torch.device("cpu"))

    def scan(*args, **kwargs):
        alive_in_scan.append(any(ref() is not None for ref in normed))
        return backend.mamba2_scan(*args, **kwargs)

    block.mixer.backend = dataclasses.replace(backend, mamba2_scan=scan)
    u = torch.randn(2, 20, 32, dtype=torch.float64)
    with torch.no_grad():
        out, state = block(u)
    assert len(normed) == 2 and alive_in_scan == [False]  # made twice, dead during the scan
    normed.clear()
    trained, state_t = block(u)  # grad enabled: one norm, held for autograd
    assert len(normed) == 1 and alive_in_scan == [False, True]
    assert torch.equal(out, trained.detach()) and torch.equal(state.ssm_state, state_t.ssm_state)


# ------------------------------------------------------------------ GPU


def _gpu_backends() -> list[str]:
    return available_backends("cuda") if torch.cuda.is_available() else []


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fla", "mamba_ssm"])
def test_fast_backend_matches_reference_bf16_7b_width(name):
    if name not in _gpu_backends():
        pytest.skip(f"{name} needs CUDA and the package installed (available: {_gpu_backends()})")
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    b, l, h, p, n = 1, 4096, 112, 64, 128
    x = torch.randn(b, l, h, p, device=dev, generator=gen).bfloat16()
    dt = F.softplus(torch.randn(b, l, h, device=dev, generator=gen) - 3.0)
    A = -(1 + 15 * torch.rand(h, device=dev, generator=gen))
    B = torch.randn(b, l, 1, n, device=dev, generator=gen).bfloat16()
    C = torch.randn(b, l, 1, n, device=dev, generator=gen).bfloat16()
    h0 = torch.randn(b, h, p, n, device=dev, generator=gen)
    y_ref, s_ref = ssm_ref.ssd_chunked(x.float(), dt, A, B.float(), C.float(), 256, h0)
    y, s = select_backend(name, dev).mamba2_scan(x, dt, A, B, C, 256, h0)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32 and s.shape == s_ref.shape
    assert rel(y, y_ref) < 2e-2 and rel(s, s_ref) < 2e-2


@pytest.mark.gpu
def test_mamba2_mixer_fla_bf16_7b_width_streaming():
    if "fla" not in _gpu_backends():
        pytest.skip(f"fla needs CUDA and fla-core installed (available: {_gpu_backends()})")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    m = Mamba2Mixer(3584, device=dev, dtype=torch.bfloat16, backend=select_backend("fla", dev))
    u = torch.randn(1, 3000, 3584, device=dev, dtype=torch.bfloat16)
    with torch.inference_mode():
        y, state = m(u)
        y2, state2 = run_in_pieces(m, u, [0, 1000, 1001, 3000])
        m.backend = select_backend("torch", dev)
        y_ref, state_ref = m(u)
    assert y.dtype == torch.bfloat16 and state.ssm_state.dtype == torch.float32
    assert rel(y2, y) < 2e-2 and rel(state2.ssm_state, state.ssm_state) < 2e-2
    assert rel(y, y_ref) < 2e-2 and rel(state.ssm_state, state_ref.ssm_state) < 2e-2


# --- training scans in checkpointed pieces -----------------------------------------------------
def _scan_inputs(seed: int, length: int = 100, h: int = 4, p: int = 8, g: int = 2, n: int = 16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, h, p, generator=gen, dtype=torch.float64)
    dt = F.softplus(torch.randn(1, length, h, generator=gen, dtype=torch.float64))
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.1
    B = torch.randn(1, length, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(1, length, g, n, generator=gen, dtype=torch.float64)
    h0 = torch.randn(1, h, p, n, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, dt, A, B, C, h0)]


@pytest.mark.parametrize("with_state", [False, True])
def test_scan_in_pieces_equals_one_scan_values_and_gradients(with_state):
    from vamba_eval.models.vamba.scan_pieces import needs_pieces, scan_in_pieces

    results = []
    for pieces in (False, True):
        x, dt, A, B, C, h0 = _scan_inputs(3)
        h0 = h0 if with_state else None
        if pieces:
            y, final = scan_in_pieces(ssm_ref.ssd_chunked, x, dt, A, B, C, 16, h0, piece=32)  # 32+32+32+4
        else:
            y, final = ssm_ref.ssd_chunked(x, dt, A, B, C, 16, h0)
        gen = torch.Generator().manual_seed(9)
        loss = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() + final.square().sum()
        leaves = [x, dt, A, B, C] + ([h0] if with_state else [])
        results.append([y.detach(), final.detach(), *torch.autograd.grad(loss, leaves)])
    for whole, cut in zip(*results):
        assert rel(cut, whole) < 1e-12
    assert needs_pieces(100, 32, x) and not needs_pieces(32, 32, x) and not needs_pieces(100, 32, x.detach())
    with torch.no_grad():
        assert not needs_pieces(100, 32, x)


def test_mixer_trains_through_scan_pieces_with_the_same_gradients(monkeypatch):
    from vamba_eval.models.vamba import mixers, scan_pieces

    used: list[int] = []

    def spy(*args, **kwargs):
        used.append(kwargs.get("piece", args[-1]))
        return scan_pieces.scan_in_pieces(*args, **kwargs)

    monkeypatch.setattr(mixers, "scan_in_pieces", spy)
    torch.manual_seed(0)
    mixer = Mamba2Mixer(d_model=32, d_state=16, headdim=8, expand=2, chunk_size=16,
                        backend=select_backend("torch", torch.device("cpu")))
    mixer = mixer.double()
    u = torch.randn(1, 90, 32, dtype=torch.float64)
    grads, outs = [], []
    for piece in (10_000, 32):
        mixer.zero_grad()
        mixer.scan_piece_tokens = piece
        out, state = mixer(u)
        (out.square().sum() + state.ssm_state.sum()).backward()
        outs.append(out.detach())
        grads.append({k: p.grad.clone() for k, p in mixer.named_parameters()})
    assert used == [32]  # the second pass ran in pieces, the first in one scan
    assert rel(outs[1], outs[0]) < 1e-12
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        assert rel(grads[1][k], grads[0][k]) < 1e-6, k  # the mixer keeps dt and A in fp32 (as mamba_ssm)
