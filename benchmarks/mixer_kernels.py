"""One Mamba-2 mixer at VAMBA-7B width: where its time goes, and the fused Triton ops vs today's path.

Builds one ``Mamba2Mixer`` from the released config (d_model 3584 → 112 heads × 64, d_state 128,
ngroups 1, conv width 4, chunk 256) in bf16 with random weights, input u [1, L, 3584], and for
each L times (CUDA events, median of --repeats after --warmup, inference mode):

- the whole forward with (a) ``reference``: today's glue (fused ops off), (b) ``fused_conv``:
  the Triton conv only, (c) ``fused_conv_norm``: Triton conv + Triton gated norm; each also
  streamed in pieces of --chunk-tokens carrying the state (how the prefill calls it);
- the components alone (in_proj, conv, dt, scan, D skip + gated norm, out_proj), reference and
  fused, so the table explains the totals; the scan is timed on both conv output layouts;
- the Triton conv with other tiles (--conv-tiles), and peak memory of each forward;
- errors of (b), (c) vs (a) (max abs, max |diff| / max |a|, relative L2; conv state equality,
  SSM state) and, for L <= --truth-max-len, of (a) and (c) vs the same mixer run in fp32.

Without fla (or not on CUDA) the SSM backend falls back to torch, said in the first line; without
triton the fused variants are skipped. JSON lines go to --out; a table is printed last.

    python benchmarks/mixer_kernels.py --out mixer_kernels.jsonl
    python benchmarks/mixer_kernels.py --out x.jsonl --lengths 153088 --repeats 20
    TRITON_INTERPRET=1 python benchmarks/mixer_kernels.py --out /tmp/x.jsonl --device cpu \\
        --d-model 64 --lengths 70 --chunk-tokens 32 --warmup 0 --repeats 1 --conv-tiles 16x64x4
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vamba_eval.models.vamba import backends, triton_ops  # noqa: E402
from vamba_eval.models.vamba.config import VambaConfig  # noqa: E402
from vamba_eval.models.vamba.mixers import Mamba2Mixer  # noqa: E402
from vamba_eval.models.vamba.tiny import VAMBA_7B  # noqa: E402

PACKAGES = ("torch", "triton", "fla-core", "flash-linear-attention", "mamba-ssm", "causal-conv1d")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON-lines output path")
    ap.add_argument("--lengths", default="38272,153088", help="comma-separated sequence lengths")
    ap.add_argument("--backend", default="fla", help="SSM backend for the scan (falls back to torch)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--d-model", type=int, default=None, help="override the 7B width (smoke runs)")
    ap.add_argument("--chunk-tokens", type=int, default=4784,
                    help="streamed-forward piece length (32 frames = 4784 tokens); 0 = skip")
    ap.add_argument("--conv-tiles", default="32x256x8,32x128x4,64x128x8,16x256x4",
                    help="Triton conv tiles BLOCK_LxBLOCK_CxWARPS to time; '' = skip")
    ap.add_argument("--truth-max-len", type=int, default=40000,
                    help="compare with an fp32 run of the mixer for L up to this")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def environment(device: torch.device) -> dict:
    """Device name and package versions (read from metadata)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "cuda": torch.version.cuda, "versions": versions}


def variants(name: str, device: torch.device) -> tuple[dict[str, backends.SSMBackend], list[str]]:
    """Backends over one scan: reference, fused_conv, fused_conv_norm, and fused_all (+ our SSD scan,
    when the base backend carries it: fla), and notes."""
    notes = []
    try:
        base = backends.select_backend(name, device)
    except backends.BackendUnavailable as exc:
        notes.append(f"backend {name!r} unavailable, using torch: {str(exc)[:160]}")
        base = backends.select_backend("torch", device)
    ref = dataclasses.replace(base, conv1d_blc=None, gated_norm=None, mamba2_scan_fwd=None)
    fused = backends.with_fused_ops(ref)  # honours VAMBA_EVAL_FUSED_OPS=0
    out = {"reference": ref}
    if not fused.fused:
        notes.append(f"fused variants skipped: {backends.fused_ops_problem()}")
    elif device.type != "cuda" and not triton_ops.INTERPRETED:
        notes.append("fused variants skipped: on the CPU they need TRITON_INTERPRET=1")
    else:
        out["fused_conv"] = dataclasses.replace(fused, gated_norm=None, mamba2_scan_fwd=None)
        out["fused_conv_norm"] = dataclasses.replace(fused, mamba2_scan_fwd=None)
        if fused.mamba2_scan_fwd is not None:
            out["fused_all"] = fused
    return out, notes


def build_mixer(args, device: torch.device) -> Mamba2Mixer:
    """The 7B Mamba-2 mixer (bf16) with random weights; D and the norm weight away from 1."""
    kwargs = VambaConfig.from_dict(VAMBA_7B).mixer_kwargs()
    if args.d_model:
        kwargs["d_model"] = args.d_model
    torch.manual_seed(args.seed)
    m = Mamba2Mixer(**kwargs, device=device, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        m.D.uniform_(0.5, 1.5)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds per call after warm-up (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return times


def peak_gb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak allocated GB during one call, above what was allocated before (CUDA only)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 1e9


def streamed(m: Mamba2Mixer, u: torch.Tensor, chunk: int):
    """The forward in pieces of ``chunk`` tokens carrying the state (the prefill's calls)."""
    state, out = None, None
    for s in range(0, u.shape[1], chunk):
        out, state = m(u[:, s:s + chunk], state)
    return out, state


def errors(a: torch.Tensor, ref: torch.Tensor) -> dict:
    """max abs, max |a − ref| / max |ref|, ‖a − ref‖ / ‖ref‖ (fp32)."""
    d = (a.float() - ref.float())
    return {"max_abs": d.abs().max().item(), "max_rel": (d.abs().max() / ref.float().abs().max()).item(),
            "rel_l2": (d.norm() / ref.float().norm()).item()}


def components(m: Mamba2Mixer, u: torch.Tensor, variants: dict, timer) -> list[dict]:
    """Each stage of the forward alone, reference and fused (the mixer's own helpers)."""
    kinds = {"reference": variants["reference"]}
    if "fused_conv_norm" in variants:
        kinds["fused"] = variants.get("fused_all", variants["fused_conv_norm"])
    h, g, n = m.nheads, m.ngroups, m.d_state
    b, l, _ = u.shape
    zxbcdt = m.in_proj(u)
    z, xBC, dt_raw = torch.split(zxbcdt, [m.d_inner, m.conv_dim, h], dim=-1)
    dt = F.softplus(dt_raw.float() + m.dt_bias.float())
    A = -torch.exp(m.A_log.float())
    rows = [("in_proj", "", lambda: m.in_proj(u)),
            ("dt softplus", "", lambda: F.softplus(dt_raw.float() + m.dt_bias.float()))]
    ys = {}
    for kind, be in kinds.items():
        conv_out, _ = m._conv(be, xBC, None)  # [b, l, conv_dim]
        x, B, C = torch.split(conv_out, [m.d_inner, g * n, g * n], dim=-1)
        x, B, C = x.reshape(b, l, h, m.headdim), B.reshape(b, l, g, n), C.reshape(b, l, g, n)
        scan = be.mamba2_scan_fwd or be.mamba2_scan
        y, _ = scan(x, dt, A, B, C, m.chunk_size, None)
        ys[kind] = (y, x)
        rows.append((f"conv [{kind}]", kind, lambda be=be: m._conv(be, xBC, None)))
        rows.append((f"scan [{kind} layout]", kind,
                     lambda scan=scan, x=x, B=B, C=C: scan(x, dt, A, B, C, m.chunk_size, None)))
        rows.append((f"skip+norm [{kind}]", kind,
                     lambda be=be, y=y, x=x: m._skip_and_norm(be, y, x, z, u.dtype)))
    y_norm = m._skip_and_norm(kinds["reference"], *ys["reference"], z, u.dtype)
    rows.append(("out_proj", "", lambda: m.out_proj(y_norm)))
    return [{"what": "component", "name": name, "kind": kind, **timer(fn)} for name, kind, fn in rows]


def conv_tiles(m: Mamba2Mixer, u: torch.Tensor, tiles: str, timer) -> list[dict]:
    """The Triton conv alone with other tiles (module constants, restored afterwards)."""
    xBC = torch.split(m.in_proj(u), [m.d_inner, m.conv_dim, m.nheads], dim=-1)[1]
    saved = (triton_ops.CONV_BLOCK_L, triton_ops.CONV_BLOCK_C, triton_ops.CONV_WARPS)
    rows = []
    try:
        for tile in filter(None, tiles.split(",")):
            bl, bc, nw = (int(v) for v in tile.split("x"))
            triton_ops.CONV_BLOCK_L, triton_ops.CONV_BLOCK_C, triton_ops.CONV_WARPS = bl, bc, nw
            rows.append({"what": "conv_tile", "name": f"conv tile {tile}", **timer(
                lambda: triton_ops.causal_conv1d_silu_blc(xBC, m.conv1d.weight, m.conv1d.bias))})
    finally:
        triton_ops.CONV_BLOCK_L, triton_ops.CONV_BLOCK_C, triton_ops.CONV_WARPS = saved
    return rows


def accuracy(m: Mamba2Mixer, u: torch.Tensor, kinds: dict, truth_max_len: int) -> list[dict]:
    """Errors of the fused variants vs the reference (and of both vs an fp32 run)."""
    outs = {}
    for kind, be in kinds.items():
        m.backend = be
        outs[kind] = m(u)
    ref_y, ref_st = outs["reference"]
    rows = []
    for kind, (y, st) in outs.items():
        if kind != "reference":
            rows.append({"what": "error_vs_reference", "kind": kind, **errors(y, ref_y),
                         "conv_state_equal": torch.equal(st.conv_state, ref_st.conv_state),
                         "ssm_state_rel_l2": errors(st.ssm_state, ref_st.ssm_state)["rel_l2"]})
    if u.shape[1] <= truth_max_len:
        m32 = copy.deepcopy(m).float()
        m32.backend = kinds["reference"]
        y32, _ = m32(u.float())
        del m32
        for kind, (y, _) in outs.items():
            rows.append({"what": "error_vs_fp32", "kind": kind, **errors(y, y32)})
    return rows


def run_length(m: Mamba2Mixer, l: int, kinds: dict, device: torch.device, args) -> list[dict]:
    """All measurements at one sequence length."""
    gen = torch.Generator(device=device).manual_seed(args.seed + l)
    u = torch.randn(1, l, m.d_model, device=device, generator=gen).to(torch.bfloat16)

    def timer(fn):
        times = time_ms(fn, device, args.warmup, args.repeats)
        return {"ms_median": statistics.median(times), "ms_all": [round(t, 3) for t in times]}

    rows = []
    for kind, be in kinds.items():
        m.backend = be
        rows.append({"what": "forward", "name": f"forward [{kind}]", "kind": kind,
                     **timer(lambda: m(u)), "peak_gb": peak_gb(lambda: m(u), device)})
        if args.chunk_tokens and args.chunk_tokens < l:
            rows.append({"what": "forward_streamed", "name": f"streamed {args.chunk_tokens} [{kind}]",
                         "kind": kind, **timer(lambda: streamed(m, u, args.chunk_tokens))})
    rows += components(m, u, kinds, timer)
    if "fused_conv" in kinds and args.conv_tiles:
        rows += conv_tiles(m, u, args.conv_tiles, timer)
    rows += accuracy(m, u, kinds, args.truth_max_len)
    return [{"bench": "mixer_kernels", "seqlen": l, **r} for r in rows]


def print_table(rows: list[dict], header: str) -> None:
    """The summary (last thing printed): times per length, then errors."""
    print(f"\n{header}")
    for l in sorted({r["seqlen"] for r in rows}):
        print(f"\nL = {l}")
        print(f"{'what':<34} {'ms':>9} {'peak GB':>8}")
        for r in rows:
            if r["seqlen"] == l and "ms_median" in r:
                peak = f"{r['peak_gb']:8.2f}" if r.get("peak_gb") is not None else f"{'':>8}"
                print(f"{r['name']:<34} {r['ms_median']:9.3f} {peak}")
        for r in rows:
            if r["seqlen"] == l and r["what"].startswith("error"):
                extra = (f"  conv state equal {r['conv_state_equal']}, "
                         f"ssm state rel L2 {r['ssm_state_rel_l2']:.1e}" if "conv_state_equal" in r else "")
                print(f"{r['what']} [{r['kind']}]: max abs {r['max_abs']:.2e}, max rel {r['max_rel']:.2e}, "
                      f"rel L2 {r['rel_l2']:.2e}{extra}")


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu (with TRITON_INTERPRET=1) for a smoke run",
              file=sys.stderr)
        return 2
    kinds, notes = variants(args.backend, device)
    m = build_mixer(args, device)
    env = {**environment(device), "backend": kinds["reference"].name, "variants": list(kinds),
           "notes": notes, "d_model": m.d_model, "nheads": m.nheads, "headdim": m.headdim,
           "d_state": m.d_state, "conv_dim": m.conv_dim,
           "conv_tile": [triton_ops.CONV_BLOCK_L, triton_ops.CONV_BLOCK_C, triton_ops.CONV_WARPS]}
    versions = env["versions"]
    header = (f"{env['device']} · torch {versions.get('torch')} · triton {versions.get('triton')} · "
              f"fla {versions.get('fla-core')} · scan backend {env['backend']} · d_model {m.d_model} bf16"
              + "".join(f"\nNOTE: {n}" for n in notes))
    print(header, flush=True)
    rows = []
    t0 = time.perf_counter()
    with open(args.out, "w") as out, torch.inference_mode():
        out.write(json.dumps({"bench": "mixer_kernels", "what": "environment", **env}) + "\n")
        for l in (int(v) for v in args.lengths.split(",")):
            try:
                new = run_length(m, l, kinds, device, args)
            except torch.cuda.OutOfMemoryError as exc:
                new = [{"bench": "mixer_kernels", "seqlen": l, "what": "error", "error": str(exc)[:300]}]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            for r in new:
                out.write(json.dumps(r) + "\n")
            out.flush()
            rows += new
            print(f"L={l} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    print_table([r for r in rows if r["what"] != "error"], header)
    for r in rows:
        if r["what"] == "error":
            print(f"L={r['seqlen']}: {r['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
