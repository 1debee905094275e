"""Mamba-2 SSD scan: parity and speed of every available SSM backend at VAMBA-7B width.

For each backend and sequence length (bf16 inputs, 112 heads × 64, d_state 128, ngroups 1,
chunk 256, batch 1, with a random initial state): relative error of y and of the final state
against the torch reference computed in fp32, median time over repeats (CUDA events, after
warm-up) and peak GPU memory. Writes one JSON line per measurement to --out and prints a
table last.

    python benchmarks/ssm_parity.py --out ssm_parity.jsonl
    python benchmarks/ssm_parity.py --out /tmp/x.jsonl --device cpu --lengths 600 --repeats 1
"""

from __future__ import annotations

import argparse
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

from vamba_eval.models.vamba import ssm_ref  # noqa: E402
from vamba_eval.models.vamba.backends import (  # noqa: E402
    BackendUnavailable,
    available_backends,
    select_backend,
)

WIDTH = {"nheads": 112, "headdim": 64, "d_state": 128, "ngroups": 1, "chunk_size": 256}
PACKAGES = ("torch", "triton", "fla-core", "flash-linear-attention", "mamba-ssm", "causal-conv1d")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON-lines output path")
    ap.add_argument("--lengths", default="16384,153088", help="comma-separated sequence lengths")
    ap.add_argument("--backends", default=None, help="comma-separated; default: all available")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also print each backend's GPU kernels (torch.profiler, "
                    "3 calls at the last length)")
    return ap.parse_args()


def environment(device: torch.device) -> dict:
    """Device name and package versions (read from metadata: nothing is imported)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "cuda": torch.version.cuda, "versions": versions}


def make_inputs(l: int, device: torch.device, seed: int) -> dict:
    """bf16 x/B/C, fp32 dt (mamba's dt init range + noise) / A in -[1, 16] / initial state."""
    gen = torch.Generator(device=device).manual_seed(seed)
    h, p, n, g = WIDTH["nheads"], WIDTH["headdim"], WIDTH["d_state"], WIDTH["ngroups"]
    u = torch.rand(h, device=device, generator=gen)
    dt0 = torch.exp(u * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(0.001))).item()
                    + torch.log(torch.tensor(0.001)).item())  # [h] log-uniform in [1e-3, 1e-1]
    dt_bias = dt0 + torch.log(-torch.expm1(-dt0))  # inverse softplus
    return {
        "x": torch.randn(1, l, h, p, device=device, generator=gen).bfloat16(),
        "dt": F.softplus(0.5 * torch.randn(1, l, h, device=device, generator=gen) + dt_bias),
        "A": -(1 + 15 * torch.rand(h, device=device, generator=gen)),
        "B": torch.randn(1, l, g, n, device=device, generator=gen).bfloat16(),
        "C": torch.randn(1, l, g, n, device=device, generator=gen).bfloat16(),
        "initial_state": 0.1 * torch.randn(1, h, p, n, device=device, generator=gen),
    }


def reference(inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """torch SSD in fp32 from the same (bf16-rounded) inputs; results kept on the CPU."""
    y, s = ssm_ref.ssd_chunked(
        inp["x"].float(), inp["dt"], inp["A"], inp["B"].float(), inp["C"].float(),
        WIDTH["chunk_size"], inp["initial_state"],
    )
    return y.cpu(), s.cpu()


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """‖a − ref‖ / ‖ref‖ (computed on the CPU in fp32)."""
    a = a.float().cpu()
    return ((a - ref).norm() / ref.norm()).item()


def time_ms(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """Milliseconds per call after warm-up (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return times
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def scan_fn(name: str, device: torch.device) -> Callable:
    """The scan of backend ``name``; "ssd_triton" is our forward-only SSD kernel (``ssd_triton.ssd_scan``,
    which the fla backend uses for inference)."""
    if name == "ssd_triton":
        from vamba_eval.models.vamba import ssd_triton

        return ssd_triton.ssd_scan
    return select_backend(name, device).mamba2_scan


def measure(name: str, inp: dict, ref: tuple, device: torch.device, args) -> dict:
    """Error, median time and peak memory of one backend on one input."""
    scan = scan_fn(name, device)

    def call():
        return scan(
            inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], WIDTH["chunk_size"],
            inp["initial_state"],
        )

    row: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    y, s = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_gb=peak / 1e9, extra_gb=(peak - base) / 1e9)
    row.update(rel_err_y=rel_err(y, ref[0]), rel_err_state=rel_err(s, ref[1]))
    del y, s
    times = time_ms(call, device, args.warmup, args.repeats)
    row.update(ms_median=statistics.median(times), ms_all=[round(t, 3) for t in times])
    return row


def kernel_profile(names: list[str], inp: dict, device: torch.device) -> None:
    """GPU time per kernel of 3 calls of each backend (printed)."""
    from torch.profiler import ProfilerActivity, profile

    for name in names:
        scan = scan_fn(name, device)
        args = (inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], WIDTH["chunk_size"], inp["initial_state"])
        scan(*args)
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                scan(*args)
            torch.cuda.synchronize(device)
        print(f"--- {name}, seqlen {inp['x'].shape[1]}: 3 calls", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50), flush=True)


def print_table(rows: list[dict]) -> None:
    """The summary table (last thing printed)."""
    head = (f"{'backend':<10} {'seqlen':>7} {'rel err y':>10} {'rel err st':>10} "
            f"{'ms':>9} {'peak GB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<10} {r['seqlen']:>7} {r['error']}")
            continue
        peak = f"{r['peak_gb']:8.2f}" if "peak_gb" in r else f"{'-':>8}"
        print(f"{r['backend']:<10} {r['seqlen']:>7} {r['rel_err_y']:10.2e} "
              f"{r['rel_err_state']:10.2e} {r['ms_median']:9.2f} {peak}")


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu for a smoke run", file=sys.stderr)
        return 2
    names = args.backends.split(",") if args.backends else available_backends(device)
    if not args.backends and device.type == "cuda":
        names.append("ssd_triton")
    env = environment(device)
    print(f"device {env['device']}, backends {names}, versions {env['versions']}", flush=True)
    rows = []
    with open(args.out, "w") as out, torch.inference_mode():
        for l in (int(v) for v in args.lengths.split(",")):
            inp = make_inputs(l, device, args.seed)
            ref = reference(inp)
            for name in names:
                row = {"bench": "ssm_parity", "backend": name, "seqlen": l, "batch": 1,
                       "dtype": "bfloat16", **WIDTH, **env}
                try:
                    row.update(measure(name, inp, ref, device, args))
                except (BackendUnavailable, torch.cuda.OutOfMemoryError) as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(json.dumps({k: row.get(k) for k in ("backend", "seqlen", "rel_err_y",
                                                          "ms_median", "peak_gb", "error")}),
                      flush=True)
            if args.profile and device.type == "cuda":
                kernel_profile(names, inp, device)
            del inp, ref
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
