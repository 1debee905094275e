"""How fast the teacher's ViT learns to read frames (train/vision.py) on its own.

    python scripts/diagnostics/vision_probe.py --device cuda --set vision.max_seconds=45

Builds the gpu-preset teacher (a throwaway tokenizer of the drill texts; the text side is unused) and runs
the vision stage; prints held-out accuracy per attribute.
"""

from __future__ import annotations

import argparse
import time

import torch

from vamba_eval.train.loop import Logger
from vamba_eval.train.recipe import apply_overrides, preset
from vamba_eval.train.stages import new_teacher
from vamba_eval.train.vision import run_vision


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="gpu")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    recipe = apply_overrides(preset(args.preset), args.overrides)
    from vamba_eval.train.tokenizer import train_bpe

    tok = train_bpe(["a red circle", "the word SUN", "the number 7"], 300)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model = new_teacher(recipe, tok, recipe.seed).to(device).train()
    from vamba_eval.train.forward import batch_vision_attention

    batch_vision_attention(model)
    t0 = time.perf_counter()
    hist = run_vision(model, recipe, device, Logger(None))
    print(f"vision stage {time.perf_counter() - t0:.1f}s: {hist[-1]}")


if __name__ == "__main__":
    main()
