"""Small training-data folders and tiny model pairs shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vamba_eval.train.data import task_chunk, write_data
from vamba_eval.train.recipe import Recipe, mixer_overrides, preset
from vamba_eval.train.stages import new_teacher
from vamba_eval.train.tokenizer import train_bpe, training_texts


def write_releases(folder: Path, tasks: tuple[str, ...], seed: int, copies: int = 0, drills: int = 0,
                   fast: bool = True, vocab: int = 500) -> tuple[list[dict[str, Any]], Any]:
    """One training release per task (``data.task_chunk``) written as a data folder → (examples, BPE tokenizer)."""
    frames, examples = [], []
    for task in tasks:
        f, e = task_chunk(task, seed, copies, fast=fast, drills=drills)
        examples += [{**x, "video": x["video"] + len(frames)} for x in e]
        frames += f
    write_data(folder, {"8x84x168": frames}, [("8x84x168", i) for i in range(len(frames))], examples, list(tasks))
    return examples, train_bpe(training_texts(examples), vocab)


def teacher_and_student(tok: Any) -> tuple[Recipe, Any, Any]:
    """The test preset, its randomly initialised tiny teacher and that teacher converted to VAMBA variant D."""
    from vamba_eval.models.vamba.convert import vamba_from_qwen2vl

    recipe = preset("test")
    teacher = new_teacher(recipe, tok, 0)
    return recipe, teacher, vamba_from_qwen2vl(teacher, "self_attn", "mamba2", 0, mixer_overrides(recipe.model))
