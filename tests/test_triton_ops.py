"""Fused Triton ops (``triton_ops``) against the PyTorch reference, on CPU via Triton's interpreter.

``TRITON_INTERPRET=1`` only works if it is set before triton is first imported (triton decorates
its own library functions, e.g. ``tl.sum``, at import), and it then turns every later Triton
kernel of the process into interpreted code (fla's too). So the kernels run in a child process
(this file run as a script, with the variable set) that prints one JSON object of measurements
per case; the tests here check those. The pytest process itself never sets the variable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from vamba_eval.models.vamba import backends, ssm_ref, triton_ops  # noqa: E402
from vamba_eval.models.vamba.mixers import GatedRMSNorm, Mamba2Mixer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# max |fused − ref| / max |ref|. The interpreter rounds fp32 -> bf16 toward zero (GPUs round to
# nearest), so bf16 results here may be off by one bf16 ulp (<= 2**-7 relative to the largest value).
TOL = {"fp32": 1e-5, "bf16": 1e-2, "fp16": 2e-3}

# name: (b, l, c, k, dtype, with_state, with_bias, activation); x is always a strided slice
# of a wider [b, l, c + 37] tensor (like the in_proj output), except where noted
CONV_CASES = {
    "l1-state": (2, 1, 20, 4, "fp32", True, True, "silu"),
    "l-lt-k-nostate": (2, 2, 20, 4, "fp32", False, True, "silu"),
    "l-lt-k-state-bf16": (2, 2, 20, 4, "bf16", True, True, "silu"),
    "tiles-ragged": (2, 70, 300, 4, "fp32", True, True, "silu"),  # 3 × 2 tiles, both ragged
    "tiles-ragged-bf16": (1, 70, 300, 4, "bf16", True, True, "silu"),
    "k3-nobias": (2, 33, 40, 3, "fp32", True, False, "silu"),
    "k2-noact-bf16": (2, 33, 40, 2, "bf16", False, True, None),
    "tiles-fp16": (1, 40, 300, 4, "fp16", True, True, "silu"),
}
# name: (b, l, h, p, ngroups, dtype, norm_before_gate)
NORM_CASES = {
    "one-row": (1, 1, 4, 8, 1, "fp32", False),
    "groups2": (2, 5, 6, 16, 2, "fp32", False),
    "group12-nonpow2": (2, 7, 4, 12, 4, "fp32", False),
    "norm-before-gate": (2, 3, 4, 12, 2, "fp32", True),
    "wide-bf16": (2, 3, 8, 64, 1, "bf16", False),
    "groups3-bf16": (1, 4, 6, 16, 3, "bf16", False),
    "wide-fp16": (2, 3, 8, 64, 2, "fp16", False),
}
# name: (d_model, d_state, headdim, ngroups, dtype)
MIXER_CASES = {
    "g2-fp32": (32, 8, 8, 2, "fp32"),
    "g1-fp32": (64, 16, 16, 1, "fp32"),
    "g1-bf16": (64, 16, 16, 1, "bf16"),
}


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def strided(t: torch.Tensor, extra: int = 37, offset: int = 11) -> torch.Tensor:
    """The same values as a view into a wider tensor: last-dim stride 1, row stride != width."""
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] + extra, dtype=t.dtype)
    wide[..., offset:offset + t.shape[-1]] = t
    return wide[..., offset:offset + t.shape[-1]]


# ------------------------------------------------------------------ child-process cases


def run_conv_case(b, l, c, k, dtype, with_state, with_bias, activation) -> dict:
    gen = torch.Generator().manual_seed(l * 1000 + c + k)
    dt = DTYPES[dtype]
    x = strided(torch.randn(b, l, c, generator=gen).to(dt))
    w = (0.5 * torch.randn(c, 1, k, generator=gen)).to(dt)
    bias = torch.randn(c, generator=gen).to(dt) if with_bias else None
    # a non-contiguous state, like a slice of the previous piece's input
    state = torch.randn(b, k - 1, c, generator=gen).to(dt).transpose(1, 2) if with_state else None
    y, s = triton_ops.causal_conv1d_silu_blc(x, w, bias, state, activation)
    y_ref, s_ref = ssm_ref.causal_conv1d_ref(x.transpose(1, 2), w, bias, state, activation)
    return {
        "err": max_rel(y, y_ref.transpose(1, 2)),
        "state_equal": torch.equal(s, s_ref),
        "dtype_ok": y.dtype == dt and s.dtype == dt,
        "contiguous": y.is_contiguous() and tuple(y.shape) == (b, l, c),
    }


def run_conv_streaming() -> dict:
    """Pieces (lengths 1, 2, 1, 36, 30) carrying the state == one pass == the reference."""
    gen = torch.Generator().manual_seed(5)
    b, l, c, k = 2, 70, 48, 4
    x = strided(torch.randn(b, l, c, generator=gen))
    w, bias = torch.randn(c, 1, k, generator=gen), torch.randn(c, generator=gen)
    y, s = triton_ops.causal_conv1d_silu_blc(x, w, bias)
    pieces, st = [], None
    for a, e in [(0, 1), (1, 3), (3, 4), (4, 40), (40, 70)]:
        out, st = triton_ops.causal_conv1d_silu_blc(x[:, a:e], w, bias, st)
        pieces.append(out)
    y_ref, _ = ssm_ref.causal_conv1d_ref(x.transpose(1, 2), w, bias)
    return {"err": max(max_rel(torch.cat(pieces, 1), y), max_rel(y, y_ref.transpose(1, 2))),
            "state_equal": torch.equal(st, s), "dtype_ok": True, "contiguous": True}


def run_norm_case(b, l, h, p, ngroups, dtype, norm_before_gate) -> dict:
    gen = torch.Generator().manual_seed(b * 100 + h * 10 + p)
    dt, d = DTYPES[dtype], h * p
    y = torch.randn(b, l, h, p, generator=gen).to(dt)  # the scan output (contiguous)
    x = strided(torch.randn(b, l, d, generator=gen).to(dt)).reshape(b, l, h, p)  # conv-output view
    z = strided(torch.randn(b, l, d, generator=gen).to(dt), extra=61, offset=5)  # in_proj view
    D = torch.randn(h, generator=gen)  # fp32, as in the mixer
    norm = GatedRMSNorm(d, eps=1e-5, group_size=d // ngroups, norm_before_gate=norm_before_gate)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen)
    norm = norm.to(dt)
    out = triton_ops.gated_rmsnorm_skip(y, x, D, z, norm.weight, norm.eps, norm.group_size,
                                        norm_before_gate, out_dtype=dt)
    with torch.no_grad():  # the mixer's torch path, including its rounding to dt before the norm
        ref = norm((y.float() + D[:, None] * x.float()).reshape(b, l, d).to(dt), z)
        oracle = GatedRMSNorm(d, 1e-5, d // ngroups, norm_before_gate).double()
        oracle.weight.copy_(norm.weight.double())
        exact = oracle((y.double() + D.double()[:, None] * x.double()).reshape(b, l, d), z.double())
    over = y.clone()  # written over its own input, as the mixer does with the scan output
    got = triton_ops.gated_rmsnorm_skip(over, x, D, z, norm.weight, norm.eps, norm.group_size, norm_before_gate,
                                        out_dtype=dt, out=over.view(b, l, d))
    return {"err": max_rel(out, ref), "err_exact": rel_l2(out, exact), "ref_err_exact": rel_l2(ref, exact),
            "inplace_equal": torch.equal(got, out) and got.data_ptr() == over.data_ptr(),
            "dtype_ok": out.dtype == dt,
            "contiguous": out.is_contiguous() and tuple(out.shape) == (b, l, d)}


def counting(backend: backends.SSMBackend, calls: dict) -> backends.SSMBackend:
    """``backend`` whose fused ops count their calls in ``calls``."""
    def wrap(name, fn):
        def call(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return call
    return dataclasses.replace(backend, **{n: wrap(n, getattr(backend, n)) for n in backend.fused})


def run_mixer_case(d_model, d_state, headdim, ngroups, dtype) -> dict:
    torch.manual_seed(d_model + ngroups)
    ref_backend = backends.select_backend("torch", "cpu")
    calls: dict = {}
    fused_backend = counting(backends.with_fused_ops(ref_backend), calls)
    m = Mamba2Mixer(d_model, d_state=d_state, headdim=headdim, ngroups=ngroups, chunk_size=8,
                    backend=ref_backend).to(DTYPES[dtype])
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.conv1d.weight.mul_(3)
    u = torch.randn(2, 29, d_model).to(DTYPES[dtype])
    with torch.no_grad():
        y_ref, st_ref = m(u)
        m.backend = fused_backend
        y, st = m(u)
        pieces, s = [], None
        for a, e in [(0, 1), (1, 3), (3, 20), (20, 29)]:
            out, s = m(u[:, a:e], s)
            pieces.append(out)
    y_grad, _ = m(u)  # grad enabled, parameters require grad: the fused ops must stay unused
    return {
        "fused": list(fused_backend.fused), "calls": calls,
        "err": max_rel(y, y_ref), "err_pieces": max_rel(torch.cat(pieces, 1), y_ref),
        "conv_state_equal": (torch.equal(st.conv_state, st_ref.conv_state)
                             and torch.equal(s.conv_state, st.conv_state)),
        "ssm_state_err": max(max_rel(st.ssm_state, st_ref.ssm_state),
                             max_rel(s.ssm_state, st_ref.ssm_state)),
        "grad_path_equal": torch.equal(y_grad, y_ref),
    }


def child_main() -> None:
    """Run every case (this file as a script, TRITON_INTERPRET=1); print one JSON object."""
    assert os.environ.get("TRITON_INTERPRET") == "1" and triton_ops.INTERPRETED
    jobs = {f"conv/{n}": (run_conv_case, a) for n, a in CONV_CASES.items()}
    jobs["conv/streaming"] = (run_conv_streaming, ())
    jobs.update({f"norm/{n}": (run_norm_case, a) for n, a in NORM_CASES.items()})
    jobs.update({f"mixer/{n}": (run_mixer_case, a) for n, a in MIXER_CASES.items()})
    results = {}
    for name, (fn, args) in jobs.items():
        try:
            results[name] = fn(*args)
        except Exception:  # reported by the test of that case
            results[name] = {"error": traceback.format_exc()}
    print(json.dumps(results))


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """Measurements of every case, computed by the kernels under Triton's CPU interpreter."""
    path = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    env.pop("VAMBA_EVAL_FUSED_OPS", None)
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"interpreter child failed:\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case(results: dict, name: str) -> dict:
    """One case's measurements; fails with the child's traceback if it raised."""
    row = results[name]
    assert "error" not in row, row.get("error")
    return row


@pytest.mark.parametrize("name", [*CONV_CASES, "streaming"])
def test_conv_matches_reference(interpreted, name):
    row = case(interpreted, f"conv/{name}")
    dtype = CONV_CASES[name][4] if name in CONV_CASES else "fp32"
    assert row["err"] < TOL[dtype], row
    assert row["state_equal"] and row["dtype_ok"] and row["contiguous"], row


@pytest.mark.parametrize("name", list(NORM_CASES))
def test_gated_norm_matches_reference(interpreted, name):
    row = case(interpreted, f"norm/{name}")
    dtype = NORM_CASES[name][5]
    assert row["err"] < TOL[dtype], row
    if dtype != "bf16":  # no rounding before the norm: as close to the exact value as the torch path
        assert row["err_exact"] <= 1.1 * row["ref_err_exact"] + 1e-7, row
    assert row["dtype_ok"] and row["contiguous"] and row["inplace_equal"], row


@pytest.mark.parametrize("name", list(MIXER_CASES))
def test_mixer_fused_path_matches_reference(interpreted, name):
    row = case(interpreted, f"mixer/{name}")
    dtype = MIXER_CASES[name][4]
    assert row["fused"] == ["conv1d_blc", "gated_norm"]
    assert row["calls"] == {"conv1d_blc": 5, "gated_norm": 5}, row  # 1 whole + 4 pieces; none with grad
    tol = 1e-5 if dtype == "fp32" else 3e-2
    assert row["err"] < tol and row["err_pieces"] < tol and row["ssm_state_err"] < tol, row
    assert row["conv_state_equal"] and row["grad_path_equal"], row


# ------------------------------------------------------------------ in-process (compiled mode)


def test_cpu_tensors_without_interpreter_explain():
    assert not triton_ops.INTERPRETED  # the pytest process never sets TRITON_INTERPRET
    x = torch.randn(1, 5, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        triton_ops.causal_conv1d_silu_blc(x, torch.randn(8, 1, 4))
    with pytest.raises(ValueError, match="activation"):
        triton_ops.causal_conv1d_silu_blc(x, torch.randn(8, 1, 4), activation="relu")
    y = torch.randn(1, 5, 2, 4)
    with pytest.raises(ValueError, match="group_size=3"):
        triton_ops.gated_rmsnorm_skip(y, y, torch.ones(2), x, torch.ones(8), 1e-5, group_size=3)
    with pytest.raises(ValueError, match="out must be"):
        triton_ops.gated_rmsnorm_skip(y, y, torch.ones(2), x, torch.ones(8), 1e-5, out=x.transpose(1, 2))


def test_with_fused_ops_attaches_and_env_switch_disables(monkeypatch):
    ref = backends.select_backend("torch", "cpu")
    monkeypatch.delenv(backends.FUSED_ENV_VAR, raising=False)
    fused = backends.with_fused_ops(ref)
    assert fused.fused == ("conv1d_blc", "gated_norm") and ref.fused == () and fused.name == "torch"
    monkeypatch.setenv(backends.FUSED_ENV_VAR, "0")
    assert backends.with_fused_ops(ref) is ref
    assert "VAMBA_EVAL_FUSED_OPS=0" in backends.fused_ops_problem()


def _compile_sm90(fn, types: dict, consts: dict, num_warps: int):
    """Compile a kernel for sm_90 with triton's bundled ptxas (no GPU needed); returns its PTX."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {n: types.get(n, "i32") for n in fn.arg_names}
    sig.update({n: "constexpr" for n in consts})
    # what Triton specialises at the 7B shapes: 16-aligned pointers, sizes and row strides
    div16 = [a for a in fn.arg_names
             if sig[a] != "constexpr" and a not in ("eps", "stride_wc", "stride_sc")]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    return kernel.asm["ptx"]


@pytest.mark.parametrize("dtype,k,flags", [("bf16", 4, True), ("fp32", 2, False), ("fp16", 3, True)])
def test_kernels_compile_for_h100(dtype, k, flags):
    """The compiled (non-interpreter) code path: the kernels lower to PTX with vector loads."""
    ptrs = {f"{n}_ptr": f"*{dtype}" for n in ("x", "w", "bias", "state", "y")}
    conv = _compile_sm90(triton_ops._conv_blc_kernel, ptrs, {
        "K": k, "HAS_BIAS": flags, "HAS_STATE": flags, "SILU": flags, "stride_xc": 1,
        "BLOCK_L": triton_ops.CONV_BLOCK_L, "BLOCK_C": triton_ops.CONV_BLOCK_C,
    }, triton_ops.CONV_WARPS)
    assert "ld.global.v4" in conv
    ptrs = {f"{n}_ptr": f"*{dtype}" for n in ("y", "x", "z", "w", "out")}
    ptrs |= {"d_ptr": "*fp32", "eps": "fp32"}
    norm = _compile_sm90(triton_ops._gated_norm_kernel, ptrs, {
        "P": 64, "GROUP": 7168, "BLOCK": 8192, "GATE_FIRST": flags,
        "stride_yp": 1, "stride_xp": 1, "stride_zd": 1,
    }, 8)
    assert "ld.global.v4" in norm


# ------------------------------------------------------------------ GPU (pytest -m gpu)


@pytest.mark.gpu
def test_fused_ops_on_cuda_7b_width():
    """Compiled kernels on the GPU at 7B width, strided inputs, a state, ragged length."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    b, l, c, k, h, p = 1, 4099, 7424, 4, 112, 64
    zxbcdt = torch.randn(b, l, 14704, device=dev, generator=gen).to(bf16)  # in_proj output
    z, xBC = zxbcdt[..., :7168], zxbcdt[..., 7168:7168 + c]
    w = (0.5 * torch.randn(c, 1, k, device=dev, generator=gen)).to(bf16)
    bias = torch.randn(c, device=dev, generator=gen).to(bf16)
    state = torch.randn(b, c, k - 1, device=dev, generator=gen).to(bf16)
    y, s = triton_ops.causal_conv1d_silu_blc(xBC, w, bias, state)
    y_ref, s_ref = ssm_ref.causal_conv1d_ref(xBC.transpose(1, 2), w, bias, state)
    assert max_rel(y, y_ref.transpose(1, 2)) < 1e-2 and torch.equal(s, s_ref)
    assert rel_l2(y, y_ref.transpose(1, 2)) < 1e-3
    x = y[..., :7168].reshape(b, l, h, p)  # view of the conv output, as in the mixer
    ys = torch.randn(b, l, h, p, device=dev, generator=gen).to(bf16)
    D = torch.rand(h, device=dev, generator=gen) + 0.5
    norm = GatedRMSNorm(7168, 1e-5, 7168, device=dev, dtype=bf16)
    out = triton_ops.gated_rmsnorm_skip(ys, x, D, z, norm.weight, 1e-5, 7168)
    with torch.no_grad():
        ref = norm((ys.float() + D[:, None] * x.float()).reshape(b, l, -1).to(bf16), z)
    assert out.dtype == bf16 and max_rel(out, ref) < 2e-2 and rel_l2(out, ref) < 5e-3


@pytest.mark.gpu
def test_mixer_fused_on_cuda_matches_reference_and_streams():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    name = "fla" if "fla" in backends.available_backends(dev) else "torch"
    plain = dataclasses.replace(backends.select_backend(name, dev), conv1d_blc=None, gated_norm=None,
                                mamba2_scan_fwd=None)
    fused = backends.with_fused_ops(plain)
    assert fused.fused[:2] == ("conv1d_blc", "gated_norm"), backends.fused_ops_problem()  # + fla: our SSD
    torch.manual_seed(0)
    m = Mamba2Mixer(3584, device=dev, dtype=torch.bfloat16, backend=plain)
    u = torch.randn(1, 3000, 3584, device=dev, dtype=torch.bfloat16)
    with torch.inference_mode():
        y_ref, st_ref = m(u)
        m.backend = fused
        y, st = m(u)
        pieces, s = [], None
        for a, e in [(0, 1000), (1000, 1001), (1001, 3000)]:
            out, s = m(u[:, a:e], s)
            pieces.append(out)
    assert rel_l2(y, y_ref) < 1e-2 and rel_l2(torch.cat(pieces, 1), y) < 2e-2
    assert torch.equal(s.conv_state, st.conv_state) and torch.equal(st.conv_state, st_ref.conv_state)
    assert rel_l2(st.ssm_state, st_ref.ssm_state) < 1e-2


if __name__ == "__main__":
    child_main()
