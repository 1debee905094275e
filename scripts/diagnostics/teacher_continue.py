"""Does the teacher's lettered QA leave chance with more video steps? Continue a trained teacher.

    python scripts/diagnostics/teacher_continue.py TEACHER_DIR DATA_DIR SECONDS [--chunks 4] [--set KEY=VALUE …]
        [--name NAME] [--save-dtype float16] [--grow N@K] [--swa FIRST] [--vision]

Loads TEACHER_DIR (its tokenizer must be DATA_DIR's), freezes the ViT as run_teacher does (unless the recipe
sets ``teacher_trains_vit``), and trains
the teacher's mix (recipe ``teacher`` with the overrides, the answer-content and option-verification losses
as the recipe sets them)
for SECONDS in CHUNKS chunks, printing the held-out lettered and open accuracy after each; saves the
result to ``$OUT/teacher`` (with --name: ``$OUT/teacher-NAME.tar``, for runs side by side).
``--grow N@K`` first inserts N identity-initialised decoder layers after the first K (train/grow.py).
``--vision`` first runs the vision stage again on the teacher's own ViT + merger (recipe ``vision``,
``data.vision_pairs``; fresh heads): the bundled teacher's 45 s stage ended with the shape loss still falling.
``--swa FIRST`` averages the weights at the ends of chunks FIRST … CHUNKS-1 (stochastic weight averaging),
validates the average after the last chunk and saves it instead of the last weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from vamba_eval.train import ckpt
from vamba_eval.train.batches import token_ids
from vamba_eval.train.forward import batch_vision_attention, teacher_forward
from vamba_eval.train.grow import grow_depth
from vamba_eval.train.loop import Logger, train, validate
from vamba_eval.train.recipe import apply_overrides, preset
from vamba_eval.train.stages import (_close, aux_setting, check_same_tokenizer, freeze_vit, load_tokenizer_from,
                                    teacher_step, verify_setting, with_probe)
from vamba_eval.train.stream import training_set


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("teacher", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("seconds", type=float)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--name", default="")
    p.add_argument("--save-dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="dtype of the saved teacher (float16 halves what the next device call carries)")
    p.add_argument("--grow", default=None, metavar="N@K", type=_grow_spec,
                   help="insert N identity-initialised decoder layers after the first K before training")
    p.add_argument("--vision", action="store_true",
                   help="run the vision stage (recipe.vision) on the teacher's ViT + merger before training")
    p.add_argument("--swa", type=int, default=None, metavar="FIRST",
                   help="save the average of the weights at the ends of chunks FIRST … CHUNKS-1")
    args = p.parse_args()
    try:
        check_same_tokenizer(args.teacher, args.data)
    except ValueError as err:
        sys.exit(str(err))
    recipe = apply_overrides(preset("gpu"), args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = load_tokenizer_from(args.teacher)
    model = ckpt.load_qwen2vl(args.teacher, device).train()
    if args.grow:
        n, after = args.grow
        grow_depth(model, n, after)
        print(f"[{args.name}] grown: {n} layers after layer {after} → "
              f"{model.config.text_config.num_hidden_layers} layers", flush=True)
    batch_vision_attention(model)
    log = Logger(None)
    if args.vision:
        from vamba_eval.train.vision import run_vision

        hist = run_vision(model, recipe, device, log)
        print(f"[{args.name}] vision stage: {hist[-1] if hist else 'skipped (vision.steps or data.vision_pairs = 0)'}",
              flush=True)
    if not recipe.teacher_trains_vit:
        freeze_vit(model)
    data = training_set(args.data, tok, args.data / "tokenizer", recipe, device)
    pad = token_ids(tok).video_pad
    stage = dataclasses.replace(recipe.teacher, max_seconds=args.seconds / args.chunks, warmup=20)
    fn = lambda b: teacher_forward(model, b, pad)[:2]  # noqa: E731
    verify = verify_setting(recipe, device)  # one probe across the chunks (None: option_verify_weight = 0)
    t0 = time.perf_counter()
    swa: dict[str, torch.Tensor] = {}
    try:
        for k in range(args.chunks):
            train(with_probe(model.parameters(), verify),
                  teacher_step(model, pad, recipe.video_norm_penalty, aux_setting(recipe), verify), data,
                  stage, device, recipe.seed + k, log, f"{args.name}continue{k}")
            print(f"[{args.name}] after chunk {k} ({time.perf_counter() - t0:.0f}s): {_scores(model, fn, data, device)}",
                  flush=True)
            if args.swa is not None and k >= args.swa:
                _accumulate(swa, model, k - args.swa)
        if swa:
            model.load_state_dict(swa)
            print(f"[{args.name}] swa of chunks {args.swa}…{args.chunks - 1}: {_scores(model, fn, data, device)}",
                  flush=True)
    finally:
        _close(data, log, "continue")
    out = Path(os.environ.get("OUT", "/tmp/out"))
    if not args.name:
        ckpt.save_qwen2vl(model.eval(), out / "teacher", tok, args.save_dtype)
        return
    import shutil
    import tarfile

    folder = ckpt.save_qwen2vl(model.eval(), Path("/tmp") / f"continued-{args.name}" / "teacher", tok, args.save_dtype)
    with tarfile.open(out / f"teacher-{args.name}.tar", "w") as tar:
        tar.add(folder, arcname="teacher")
    shutil.rmtree(folder.parent)


def _grow_spec(text: str) -> tuple[int, int]:
    try:
        n, after = (int(x) for x in text.split("@"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N@K, e.g. 2@4 (2 layers after the first 4)") from None
    return n, after


def _scores(model: torch.nn.Module, fn, data, device: torch.device) -> dict:
    model.eval()
    res = {**validate(fn, data, device, size=64), **validate(fn, data, device, size=64, kind="open"),
           **validate(fn, data, device, size=64, split="train")}  # train vs held-out: memorisation
    model.train()
    return res


def _accumulate(avg: dict[str, torch.Tensor], model: torch.nn.Module, seen: int) -> None:
    """Running mean of the state dict over ``seen + 1`` snapshots (float tensors; the rest copied)."""
    for key, value in model.state_dict().items():
        if key not in avg or not value.is_floating_point():
            avg[key] = value.detach().clone()
        else:
            avg[key] += (value.detach() - avg[key]) / (seen + 1)


if __name__ == "__main__":
    main()
