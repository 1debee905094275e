"""Our Triton SSD scan (``ssd_triton.ssd_scan``) against the plain recurrence, on CPU via Triton's interpreter.

Same arrangement as tests/test_triton_ops.py: the kernels run in a child process (this file as a
script, ``TRITON_INTERPRET=1``) that prints one JSON object of measurements per case. The
interpreter's bf16 ``tl.dot`` is wrong (numpy has no bf16), so there the kernels round the matmul
operands to bf16/fp16 exactly as on the GPU and multiply in fp32 (``ssd_triton.DOT_UPCAST``); the
compiled tensor-core path is covered by the PTX test here and by ``-m gpu``.
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

from test_triton_ops import _compile_sm90, max_rel, rel_l2, strided  # noqa: E402  (tests/)

from vamba_eval.models.vamba import backends, ssd_triton, ssm_ref, triton_ops  # noqa: E402
from vamba_eval.models.vamba.mixers import Mamba2Mixer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# name: (b, l, h, p, g, n, chunk, dtype, with_initial_state)
CASES = {
    "one-step": (1, 1, 2, 16, 1, 16, 256, "fp32", True),
    "short-chunk-shrinks": (1, 20, 4, 16, 1, 16, 256, "fp32", False),
    "ragged-groups2": (2, 100, 4, 16, 2, 16, 32, "fp32", True),
    "nonpow2-p-n": (1, 130, 2, 24, 1, 20, 64, "fp32", True),
    "many-chunks": (1, 300, 3, 16, 1, 32, 16, "fp32", True),
    "wide-p-two-tiles": (1, 70, 2, 80, 1, 16, 64, "fp32", True),
    "chunk-48-tiles-32": (1, 70, 2, 16, 1, 16, 48, "fp32", True),  # any chunk size: a power of two ≤ it
    "chunk-8-tiles-16": (1, 40, 2, 16, 1, 16, 8, "fp32", True),
    "bf16": (1, 130, 4, 16, 1, 16, 64, "bf16", True),
    "bf16-groups2": (2, 90, 4, 32, 2, 32, 32, "bf16", False),
    "fp16": (1, 130, 4, 16, 1, 16, 64, "fp16", True),
}
TOL = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 4e-3}  # max |y − exact| / max |exact|


def inputs(b, l, h, p, g, n, dtype, with_state, seed=0) -> dict:
    """x/B/C as views into one wider tensor (like the conv output), fp32 dt / A / state."""
    gen = torch.Generator().manual_seed(seed + l * 7 + h)
    dt_ = DTYPES[dtype]
    xbc = strided(torch.randn(b, l, h * p + 2 * g * n, generator=gen).to(dt_))  # [b, l, conv_dim]
    x, B, C = torch.split(xbc, [h * p, g * n, g * n], dim=-1)
    return {
        "x": x.reshape(b, l, h, p),  # [b, l, h·p] -> [b, l, h, p]
        "dt": torch.rand(b, l, h, generator=gen) * 0.2 + 0.01,
        "A": -(torch.rand(h, generator=gen) * 4 + 0.5),
        "B": B.reshape(b, l, g, n), "C": C.reshape(b, l, g, n),  # [b, l, g·n] -> [b, l, g, n]
        "initial_state": torch.randn(b, h, p, n, generator=gen) if with_state else None,
    }


def exact(inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-step recurrence in float64."""
    d = {k: (v.double() if v is not None else None) for k, v in inp.items()}
    return ssm_ref.ssd_sequential(d["x"], d["dt"], d["A"], d["B"], d["C"], None, d["initial_state"])


# ------------------------------------------------------------------ child-process cases


def run_case(b, l, h, p, g, n, chunk, dtype, with_state) -> dict:
    inp = inputs(b, l, h, p, g, n, dtype, with_state)
    y, s = ssd_triton.ssd_scan(**inp, chunk_size=chunk)
    y_ex, s_ex = exact(inp)
    y_ref, _ = ssm_ref.ssd_chunked(**inp, chunk_size=chunk)  # the torch path, same input dtype
    return {"err": max_rel(y, y_ex), "state_err": max_rel(s, s_ex), "ref_err": max_rel(y_ref, y_ex),
            "l2": rel_l2(y, y_ex), "dtype_ok": y.dtype == DTYPES[dtype] and s.dtype == torch.float32,
            "shape_ok": tuple(y.shape) == (b, l, h, p) and tuple(s.shape) == (b, h, p, n)}


def run_pieces_and_chunks() -> dict:
    """Pieces carrying the state == one pass; chunk 16 == chunk 128 (fp32)."""
    inp = inputs(1, 150, 4, 16, 2, 16, "fp32", True, seed=3)
    y, s = ssd_triton.ssd_scan(**inp, chunk_size=128)
    y16, s16 = ssd_triton.ssd_scan(**inp, chunk_size=16)
    pieces, st = [], inp["initial_state"]
    for a, e in [(0, 1), (1, 40), (40, 41), (41, 150)]:
        part = {k: inp[k][:, a:e] for k in ("x", "dt", "B", "C")}
        out, st = ssd_triton.ssd_scan(**part, A=inp["A"], chunk_size=64, initial_state=st)
        pieces.append(out)
    big = torch.full((2, 170, 4, 16), float("nan"))  # out: a slice of a larger buffer (as mixer_halves passes)
    y_out, s_out = ssd_triton.ssd_scan(**inp, chunk_size=128, out=big[1:, 10:160])
    untouched = torch.isnan(big[0]).all() and torch.isnan(big[1, :10]).all() and torch.isnan(big[1, 160:]).all()
    return {"pieces": max(max_rel(torch.cat(pieces, 1), y), max_rel(st, s)),
            "chunks": max(max_rel(y16, y), max_rel(s16, s)),
            "out_equal": bool(torch.equal(y_out, y) and torch.equal(s_out, s) and untouched
                              and y_out.data_ptr() == big[1:, 10:160].data_ptr())}


def run_mixer(dtype: str) -> dict:
    """The mixer with the fused scan attached: same output as the torch path, used only without grad."""
    torch.manual_seed(1)
    ref = backends.select_backend("torch", "cpu")
    calls = {"scan": 0}

    def counted(*args, **kwargs):
        calls["scan"] += 1
        return ssd_triton.ssd_scan(*args, **kwargs)

    fused = dataclasses.replace(ref, mamba2_scan_fwd=counted)
    m = Mamba2Mixer(64, d_state=16, headdim=16, ngroups=2, chunk_size=16, backend=ref).to(DTYPES[dtype])
    u = torch.randn(2, 45, 64).to(DTYPES[dtype])
    with torch.no_grad():
        y_ref, st_ref = m(u)
        m.backend = fused
        y, st = m(u)
        y1, s1 = m(u[:, :20])
        y2, s2 = m(u[:, 20:], s1)
    y_grad, _ = m(u)  # grad enabled: the backend's own (differentiable) scan
    row = {"err": max_rel(y, y_ref), "err_pieces": max_rel(torch.cat([y1, y2], 1), y_ref),
           "state_err": max(max_rel(st.ssm_state, st_ref.ssm_state), max_rel(s2.ssm_state, st_ref.ssm_state)),
           "calls": calls["scan"], "grad_path_equal": torch.equal(y_grad, y_ref)}
    m.backend = dataclasses.replace(backends.with_fused_ops(ref), mamba2_scan_fwd=counted)  # + fused gated norm
    with torch.no_grad():
        yh, sh = m(u)  # 45 tokens, chunk 16: scanned and gated as 16 + 29 (mixer_halves)
    return {**row, "halves_calls": calls["scan"] - 3, "halves_err": max_rel(yh, y_ref),
            "halves_state_err": max_rel(sh.ssm_state, st_ref.ssm_state)}


def child_main() -> None:
    """Run every case (this file as a script, TRITON_INTERPRET=1); print one JSON object."""
    assert os.environ.get("TRITON_INTERPRET") == "1" and triton_ops.INTERPRETED
    jobs = {f"scan/{name}": (run_case, args) for name, args in CASES.items()}
    jobs["pieces"] = (run_pieces_and_chunks, ())
    jobs.update({f"mixer/{d}": (run_mixer, (d,)) for d in ("fp32", "bf16")})
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
    path = f"{ROOT}{os.pathsep}{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"interpreter child failed:\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case(results: dict, name: str) -> dict:
    row = results[name]
    assert "error" not in row, row.get("error")
    return row


@pytest.mark.parametrize("name", list(CASES))
def test_scan_matches_exact_recurrence(interpreted, name):
    row = case(interpreted, f"scan/{name}")
    dtype = CASES[name][7]
    assert row["dtype_ok"] and row["shape_ok"], row
    assert row["err"] < TOL[dtype] and row["state_err"] < TOL[dtype], row
    if dtype != "fp32":  # rounding the matmul operands costs at most a few bf16/fp16 ulps more
        assert row["l2"] < 0.5 * TOL[dtype], row


def test_scan_in_pieces_and_any_chunk_size_agree(interpreted):
    row = case(interpreted, "pieces")
    assert row["pieces"] < 1e-5 and row["chunks"] < 1e-5 and row["out_equal"], row


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_mixer_uses_fused_scan_without_grad_only(interpreted, dtype):
    row = case(interpreted, f"mixer/{dtype}")
    assert row["calls"] == 3, row  # whole + two pieces; not the grad-enabled call
    tol = 1e-5 if dtype == "fp32" else 3e-2
    assert row["err"] < tol and row["err_pieces"] < tol and row["state_err"] < tol, row
    assert row["halves_calls"] == 2 and row["halves_err"] < tol and row["halves_state_err"] < tol, row
    assert row["grad_path_equal"], row


def test_fla_backend_carries_the_fused_scan_and_env_turns_it_off(monkeypatch):
    fla_like = dataclasses.replace(backends.select_backend("torch", "cpu"), name="fla")
    for var in (backends.FUSED_ENV_VAR, backends.FUSED_SSD_ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    assert backends.with_fused_ops(fla_like).fused == ("conv1d_blc", "gated_norm", "mamba2_scan_fwd")
    monkeypatch.setenv(backends.FUSED_SSD_ENV_VAR, "0")
    assert backends.with_fused_ops(fla_like).fused == ("conv1d_blc", "gated_norm")
    monkeypatch.delenv(backends.FUSED_SSD_ENV_VAR)
    mamba_like = dataclasses.replace(fla_like, name="mamba_ssm")  # keeps its own shared-B/C SSD kernels
    assert backends.with_fused_ops(mamba_like).fused == ("conv1d_blc", "gated_norm")


def test_tiles_refuse_shapes_tl_dot_cannot_take():
    with pytest.raises(ValueError, match="pass_group.*powers of two"):
        ssd_triton.Tiles(pass_group=8)
    with pytest.raises(ValueError, match="block_t"):
        ssd_triton.Tiles(block_t=48)


def test_bad_arguments_explain():
    x = torch.randn(1, 5, 2, 16)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):  # CPU tensors, no interpreter
        ssd_triton.ssd_scan(x, torch.rand(1, 5, 2), -torch.ones(2), torch.randn(1, 5, 1, 16),
                            torch.randn(1, 5, 1, 16), 64)
    with pytest.raises(ValueError, match="out must be"):
        ssd_triton.ssd_scan(x, torch.rand(1, 5, 2), -torch.ones(2), torch.randn(1, 5, 1, 16),
                            torch.randn(1, 5, 1, 16), 64, out=torch.empty(1, 5, 16, 2).transpose(2, 3))


@pytest.mark.parametrize("dtype,dot", [("bf16", ssd_triton.DOT_NATIVE), ("fp32", ssd_triton.DOT_IEEE)])
def test_kernels_compile_for_h100(dtype, dot):
    """The compiled code path lowers to PTX with tensor-core MMAs at the 7B tile sizes."""
    io = {"x_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "c_ptr": f"*{dtype}", "y_ptr": f"*{dtype}",
          "dt_ptr": "*fp32", "cum_ptr": "*fp32", "st_ptr": "*fp32", "init_ptr": "*fp32", "final_ptr": "*fp32",
          "cb_ptr": "*fp32"}
    tiles = {"BLOCK_P": 64, "BLOCK_N": 128, "DOT": dot, "Q": 256, "sxp": 1}
    state = _compile_sm90(ssd_triton._chunk_state_kernel, io, {**tiles, "BLOCK_S": 64, "sbn": 1}, 4)
    scan = _compile_sm90(ssd_triton._chunk_scan_kernel, io, {**tiles, "BLOCK_T": 64, "sCn": 1, "HAS_INIT": True}, 4)
    cb = _compile_sm90(ssd_triton._chunk_cb_kernel, io, {"Q": 256, "BLOCK_T": 64, "BLOCK_N": 128, "DOT": dot,
                                                         "sbn": 1, "sCn": 1}, 4)
    passing = _compile_sm90(ssd_triton._state_pass_kernel, io, {"Q": 256, "HAS_INIT": True, "BLOCK": 128, "GROUP": 16}, 4)
    tensor_cores = dot == ssd_triton.DOT_NATIVE  # exact fp32 dots run on the FMA units
    assert ("mma" in state and "mma" in scan and "mma" in cb) == tensor_cores and "ld.global" in passing


# ------------------------------------------------------------------ GPU (pytest -m gpu)


@pytest.mark.gpu
def test_scan_on_cuda_at_7b_width():
    """Compiled kernels at 7B width (112 heads × 64, d_state 128), strided bf16 inputs, a state, ragged."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    b, l, h, p, n = 1, 5000, 112, 64, 128
    xbc = torch.randn(b, l, h * p + 2 * n + 8, device=dev, generator=gen).bfloat16()
    x, B, C = xbc[..., :h * p].reshape(b, l, h, p), xbc[..., h * p:h * p + n], xbc[..., h * p + n:h * p + 2 * n]
    B, C = B.reshape(b, l, 1, n), C.reshape(b, l, 1, n)
    dt = torch.rand(b, l, h, device=dev, generator=gen) * 0.1 + 0.001
    A = -(1 + 15 * torch.rand(h, device=dev, generator=gen))
    h0 = 0.1 * torch.randn(b, h, p, n, device=dev, generator=gen)
    y, s = ssd_triton.ssd_scan(x, dt, A, B, C, 256, h0)
    y_ref, s_ref = ssm_ref.ssd_chunked(x.float(), dt, A, B.float(), C.float(), 256, h0)
    assert rel_l2(y, y_ref) < 1e-2 and rel_l2(s, s_ref) < 1e-2


if __name__ == "__main__":
    child_main()
