"""Where does VAMBA's streamed prefill make the host wait for the GPU? (CUDA; run deliberately.)

A host-device synchronisation inside the prefill drains the launch queue: the host's per-layer work then adds to
the GPU's time instead of overlapping it, which is what makes small streamed pieces slow. This builds a small
VAMBA (the released 7B's layer shapes are not needed: the code paths are the same) on the GPU with the selected
SSM backend, streams pinned host frames through ``encode_video`` + one text pass under
``torch.cuda.set_sync_debug_mode("warn")``, eager and then compiled, and prints each distinct call site of a
synchronising op with how often it ran.

    python benchmarks/sync_check.py [--frames 64] [--chunk 16] [--backend fla]
"""

from __future__ import annotations

import argparse
import collections
import traceback
import warnings

import torch
from transformers import DynamicCache

from vamba_eval.models.vamba.backends import select_backend
from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration
from vamba_eval.models.vamba.tiny import tiny_vamba_config


def build(backend: str | None) -> VambaForConditionalGeneration:
    model = VambaForConditionalGeneration(VambaConfig.from_dict(tiny_vamba_config("mamba2", layers=4)))
    model.init_weights(0)
    model.release_unused_video_mixer()
    model.to("cuda", torch.bfloat16)
    model.set_ssm_backend(select_backend(backend, torch.device("cuda")))
    return model.eval()


def prefill_sites(model, frames: torch.Tensor, ids: torch.Tensor, chunk: int) -> collections.Counter:
    """Call sites (our innermost frames, and the op's) of every synchronising op in one prefill."""
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        stack = traceback.extract_stack()[:-1]  # the Python stack of the op that synchronised
        ours = [f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in stack if "vamba_eval" in f.filename]
        op = f"{stack[-1].filename.split('/')[-1]}:{stack[-1].lineno} {stack[-1].name}" if stack else "?"
        sites[(str(message).splitlines()[0][:90], op, " <- ".join(reversed(ours[-3:])))] += 1

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            video = model.encode_video(frames, chunk_frames=chunk)
            with torch.inference_mode():
                model.text_step(ids, video, DynamicCache(), start=0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sites


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--backend", default=None)
    args = ap.parse_args()
    model = build(args.backend)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (args.frames, 56, 84, 3), dtype=torch.uint8, generator=g).pin_memory()
    ids = torch.randint(0, 256, (1, 12), generator=g).cuda()
    print(f"backend {model.ssm_backend.name}, fused ops {list(model.ssm_backend.fused)}; {args.frames} frames in "
          f"pieces of {args.chunk}", flush=True)
    for label in ("eager", "compiled"):
        if label == "compiled":
            model.compile_video_path()
        prefill_sites(model, frames, ids, args.chunk)  # warm-up (compile, autotune)
        sites = prefill_sites(model, frames, ids, args.chunk)
        print(f"\n{label}: {sum(sites.values())} synchronising calls in one prefill", flush=True)
        for (message, where, ours), n in sites.most_common():
            print(f"  {n:5d} × {where}: {message}\n          our code: {ours or '(none on the stack)'}", flush=True)


if __name__ == "__main__":
    main()
