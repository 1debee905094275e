"""Training through the ``vamba_eval.train`` stage functions, in-process.

Each call trains into a train "out" folder laid out as ``python -m vamba_eval.train`` lays it out
(``teacher/``, ``converted/``, ``stage1/``, ``stage2/``, ``recipe.json``, ``log.jsonl``); a cell's
folder reaches its seed's shared teacher through a ``teacher`` link (a copy where links are not
possible), so the teacher is trained once per seed and read by every cell of that seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch

CELL_STEPS = ("convert", "stage1", "stage2")
STEP_FOLDER = {"convert": "converted", "stage1": "stage1", "stage2": "stage2"}  # as vamba_eval.train.stages writes them


def data_identity(folder: Path) -> str:
    """Content identity of a cached training data folder (stable across machines and paths)."""
    folder = Path(folder)
    h = hashlib.sha256((folder / "videos.json").read_bytes())
    h.update(str((folder / "examples.jsonl").stat().st_size).encode())
    tok = folder / "tokenizer" / "tokenizer.json"
    if tok.is_file():
        h.update(tok.read_bytes())
    return h.hexdigest()[:12]


def data_ready(folder: Path) -> bool:
    return (Path(folder) / ".complete").is_file() and (Path(folder) / "tokenizer" / "tokenizer.json").is_file()


def ensure_data(folder: Path, recipe: Any, tasks: Optional[list[str]], workers: Optional[int],
                log: Callable[..., None]) -> Path:
    """Reuse ``folder`` when complete (``.complete`` + tokenizer), else build it with the train ``data`` stage."""
    folder = Path(folder)
    if data_ready(folder):
        return folder
    from vamba_eval.train.__main__ import run_data
    from vamba_eval.train.loop import Logger

    if workers:
        recipe.data.workers = int(workers)  # parallelism only: the data written is the same
    out = folder.parent / f"{folder.name}-build"
    out.mkdir(parents=True, exist_ok=True)
    args = types.SimpleNamespace(data=folder, out=out, tasks=",".join(tasks) if tasks else None)
    log(f"[ablate] building training data in {folder} (the train `data` stage; reused by later runs)")
    run_data(args, recipe, Logger(out))
    return folder


def write_recipe(folder: Path, recipe: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1) + "\n", encoding="utf-8")


def train_teacher(folder: Path, data: Path, recipe: Any, device: torch.device) -> Path:
    """Stage 0 into ``folder/teacher``."""
    from vamba_eval.train import stages
    from vamba_eval.train.loop import Logger

    write_recipe(folder, recipe)
    return stages.run_teacher(folder, data, recipe, device, Logger(folder))


def link_teacher(cell_train: Path, teacher_folder: Path) -> None:
    """``cell_train/teacher`` → the shared teacher checkpoint (relative link; a copy where links fail)."""
    cell_train.mkdir(parents=True, exist_ok=True)
    dest = cell_train / "teacher"
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)
    target = Path(os.path.relpath(Path(teacher_folder).resolve(), cell_train.resolve()))
    try:
        dest.symlink_to(target, target_is_directory=True)
    except OSError:
        shutil.copytree(teacher_folder, dest)


def train_step(step: str, folder: Path, data: Path, recipe: Any, device: torch.device) -> Path:
    """One of ``convert``, ``stage1``, ``stage2`` into ``folder/<step>`` (reads the previous step's folder)."""
    from vamba_eval.train import stages
    from vamba_eval.train.loop import Logger

    log = Logger(folder)
    if step == "convert":
        write_recipe(folder, recipe)
        return stages.run_convert(folder, recipe, log)
    if step in ("stage1", "stage2"):
        return stages.run_student(folder, data, recipe, device, log, step)
    raise ValueError(f"unknown training step {step!r}")


def steps_run(folder: Path) -> dict[str, Any]:
    """Optimiser steps actually run and the held-out numbers of a stage (its history.json)."""
    path = Path(folder) / "history.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text(encoding="utf-8"))
    steps = [r["step"] for r in rows if "step" in r]
    last = rows[-1] if rows else {}
    return {"steps": max(steps) if steps else 0,
            **{k: last[k] for k in ("val_first_token_acc", "val_lm") if k in last}}
