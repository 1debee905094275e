"""Qwen2-VL ViT attention at VAMBA-7B's streaming shape: which SDPA backend and layout is fastest.

One 32-frame chunk of 640×360 video = 16 temporal slices × 1,196 patches, 16 heads × 80 (bf16).
For each SDPA backend (flash, efficient, cudnn) and input layout — ``bshd`` (the transposed views
``vision_block`` makes from the fused qkv projection) and ``bhsd`` (contiguous copies) — the median
time of one call (CUDA events after warm-up), TFLOP/s (4·L²·d per slice and head), and the error
against the math backend in fp32. Writes JSON lines to --out and prints a table last.

    python benchmarks/vit_attention.py --out vit_attention.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}


def time_ms(fn, warmup: int = 3, repeats: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=1196)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    s, l, h, d = args.slices, args.tokens, 16, 80
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(s, l, 3, h, d, device="cuda", generator=g, dtype=torch.bfloat16)  # [S, L, 3, H, d]
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [S, H, L, d] views (bshd strides)
    layouts = {"bshd": (q, k, v), "bhsd": tuple(t.contiguous() for t in (q, k, v))}
    with sdpa_kernel([SDPBackend.MATH]):
        ref = sdpa(q.float(), k.float(), v.float())
    flops = 4 * s * h * l * l * d
    rows = []
    with open(args.out, "w") as fh, torch.inference_mode():
        for name, be in BACKENDS.items():
            for layout, (q_, k_, v_) in layouts.items():
                row = {"backend": name, "layout": layout, "shape": [s, h, l, d],
                       "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
                try:
                    with sdpa_kernel([be]):
                        out = sdpa(q_, k_, v_)
                        ms = time_ms(lambda: sdpa(q_, k_, v_))
                    err = ((out.float() - ref).norm() / ref.norm()).item()
                    med = statistics.median(ms)
                    row.update(ms_median=med, tflops=flops / med / 1e9, rel_err=err)
                except RuntimeError as exc:
                    row["error"] = str(exc).splitlines()[0][:160]
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
    print(f"{'backend':<10} {'layout':<6} {'ms':>8} {'TFLOP/s':>8} {'rel err':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<10} {r['layout']:<6} {r['error']}")
        else:
            print(f"{r['backend']:<10} {r['layout']:<6} {r['ms_median']:8.3f} {r['tflops']:8.1f} {r['rel_err']:9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
