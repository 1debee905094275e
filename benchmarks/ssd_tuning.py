"""Launch shapes of our SSD scan kernels (``ssd_triton.Tiles``) at VAMBA-7B width, on the GPU.

For each variant (one field of the default changed): median time of ``ssd_scan`` at each length
(bf16, 112 heads × 64, d_state 128, chunk 256, with an initial state; the inputs of
``ssm_parity.py``), its relative error against the fp32 torch reference, and the GPU time per
kernel of the default (torch.profiler). JSON lines to --out; a table last.

    python benchmarks/ssd_tuning.py --out ssd_tuning.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from ssm_parity import WIDTH, make_inputs, reference, rel_err, time_ms  # noqa: E402
from vamba_eval.models.vamba import ssd_triton  # noqa: E402

VARIANTS = {
    "default": {},
    "pass_block=64": {"pass_block": 64}, "pass_block=256": {"pass_block": 256},
    "pass_group=32": {"pass_group": 32},
    "warps_pass=2": {"warps_pass": 2}, "warps_pass=8": {"warps_pass": 8},
    "warps_state=8": {"warps_state": 8}, "warps_scan=8": {"warps_scan": 8},
    "block_t=128": {"block_t": 128}, "block_t=128,stages=1": {"block_t": 128, "stages": 1},
    "block_t=32": {"block_t": 32},
    "max_block_p=32": {"max_block_p": 32},
    "stages=2": {"stages": 2}, "stages=4": {"stages": 4},
}


def kernel_times(inp: dict, tiles: ssd_triton.Tiles) -> dict[str, float]:
    """GPU milliseconds per kernel for one call (mean of 3)."""
    from torch.profiler import ProfilerActivity, profile

    args = (inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], WIDTH["chunk_size"], inp["initial_state"])
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            ssd_triton.ssd_scan(*args, tiles=tiles)
        torch.cuda.synchronize()
    out = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t and ev.key != "ProfilerStep*":
            out[ev.key[:48]] = round(t / 3 / 1e3, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="4784,153088")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    rows = []
    with open(args.out, "w") as fh, torch.inference_mode():
        for l in (int(v) for v in args.lengths.split(",")):
            inp = make_inputs(l, dev, 0)
            ref = reference(inp)
            for name, change in VARIANTS.items():
                tiles = dataclasses.replace(ssd_triton.TILES, **change)

                def call(tiles=tiles, inp=inp):
                    return ssd_triton.ssd_scan(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"],
                                               WIDTH["chunk_size"], inp["initial_state"], tiles=tiles)

                row = {"variant": name, "tiles": dataclasses.asdict(tiles), "seqlen": l,
                       "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
                try:
                    y, s = call()
                except Exception as exc:  # e.g. triton OutOfResources (shared memory) for a large tile
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                    rows.append(row)
                    fh.write(json.dumps(row) + "\n")
                    continue
                row.update(rel_err_y=rel_err(y, ref[0]), rel_err_state=rel_err(s, ref[1]),
                           ms_median=statistics.median(time_ms(call, dev, 2, args.repeats)))
                if name == "default":
                    row["kernels_ms"] = kernel_times(inp, tiles)
                    print(f"L={l} default kernels (ms): {row['kernels_ms']}", flush=True)
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
            del inp, ref
    print(f"{'variant':<18} {'seqlen':>7} {'ms':>8} {'rel err y':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<18} {r['seqlen']:>7} {r['error']}")
        else:
            print(f"{r['variant']:<18} {r['seqlen']:>7} {r['ms_median']:8.3f} {r['rel_err_y']:10.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
