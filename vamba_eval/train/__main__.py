"""``python -m vamba_eval.train STAGE --out DIR``: the training command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from vamba_eval.train.loop import Logger
from vamba_eval.train.recipe import Recipe, apply_overrides, preset

STAGES = ("data", "teacher", "continue", "convert", "stage1", "stage2", "export")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vamba_eval.train", description=__doc__)
    p.add_argument("stage", choices=(*STAGES, "all", "install"),
                   help="one stage, or all of them in order; install: copy OUT/checkpoints/* into the package")
    p.add_argument("--out", required=True, type=Path, help="output folder (stage folders, logs, checkpoints)")
    p.add_argument("--data", type=Path, default=None, help="cached training data folder (default OUT/data; "
                   "built by the data stage, reused when complete)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--preset", choices=("gpu", "cpu", "test"), default=None,
                   help="recipe preset (default: gpu on CUDA, cpu otherwise)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set stage2.steps=500 --set variant=B (repeatable)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks for the data (default: every task "
                   "with a demo writer)")
    p.add_argument("--install", action="store_true", help="export: copy the checkpoints into the package")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def build_recipe(args: argparse.Namespace) -> Recipe:
    from vamba_eval.models.vamba.convert import VARIANTS

    name = args.preset or ("gpu" if str(args.device).startswith("cuda") else "cpu")
    recipe = apply_overrides(preset(name), args.overrides)
    if recipe.variant not in VARIANTS:
        raise ValueError(f"--set variant={recipe.variant}: unknown variant; use one of {', '.join(VARIANTS)}")
    return recipe


def run_data(args: argparse.Namespace, recipe: Recipe, log: Logger) -> Path:
    from vamba_eval.train.data import build_data, load_examples
    from vamba_eval.train.tokenizer import train_bpe, training_texts

    folder = args.data or args.out / "data"
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    build_data(folder, recipe.data, tasks, log=log)
    tok_dir = folder / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        train_bpe(training_texts(load_examples(folder)), recipe.data.vocab_size).save_pretrained(str(tok_dir))
    summary = data_summary(folder)
    (args.out / "data-summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    log(f"[data] {summary}")
    return folder


def data_summary(folder: Path) -> dict:
    from collections import Counter

    from vamba_eval.train.data import load_examples

    meta = json.loads((folder / "videos.json").read_text(encoding="utf-8"))
    examples = load_examples(folder)
    return {"videos": len(meta["videos"]), "frame_groups": meta["groups"], "tasks": meta.get("tasks"),
            "examples": dict(Counter(f"{e['kind']}:{e['source']}" for e in examples)),
            "frames_bytes_compressed": sum(p.stat().st_size for p in folder.glob("frames-*"))}


def run(stage: str, args: argparse.Namespace, recipe: Recipe, log: Logger) -> None:
    from vamba_eval.train import export, stages

    device = torch.device(args.device)
    data = args.data or args.out / "data"
    t0 = time.perf_counter()
    if stage == "data":
        run_data(args, recipe, log)
    elif stage == "teacher":
        stages.run_teacher(args.out, data, recipe, device, log)
    elif stage == "continue":
        stages.continue_teacher(args.out, data, recipe, device, log)
    elif stage == "convert":
        stages.run_convert(args.out, recipe, log)
    elif stage in ("stage1", "stage2"):
        stages.run_student(args.out, data, recipe, device, log, stage)
    elif stage == "export":
        export.run_export(args.out, recipe, log, " ".join(["python -m vamba_eval.train", *sys.argv[1:]]))
        if args.install:
            export.install(args.out, log)
    log(f"[{stage}] done in {time.perf_counter() - t0:.1f}s on {device}", stage=stage,
        seconds=round(time.perf_counter() - t0, 1), device=str(device))


def all_stages(recipe: Recipe) -> list[str]:
    """Every stage in order, ``continue`` once per teacher round after the first."""
    rounds = max(1, recipe.teacher_rounds)
    return [s for stage in STAGES for s in ([stage] * (rounds - 1) if stage == "continue" else [stage])]


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        recipe = build_recipe(args)
    except ValueError as err:  # a bad --set: say which and why, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    (args.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1) + "\n", encoding="utf-8")
    log = Logger(args.out)
    if args.stage == "install":
        from vamba_eval.train.export import install

        install(args.out, log)
        return 0
    from vamba_eval.models.vamba.checkpoint import CheckpointError
    from vamba_eval.models.vamba.config import ConfigError
    from vamba_eval.train.stages import TrainSetupError

    try:
        for stage in (all_stages(recipe) if args.stage == "all" else (args.stage,)):
            run(stage, args, recipe, log)
    except (TrainSetupError, ConfigError, CheckpointError) as err:  # what is on disk, not a bug: say what to run
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
