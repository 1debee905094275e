"""Run the real lmms-eval CLI on vamba-eval's synthetic demo releases, offline.

lmms-eval's video tasks read their docs from the hub (``lmms-eval/Video-MME``, ``OpenGVLab/MVBench``)
and their videos from ``$HF_HOME/<cache_dir>``. Offline, we keep each task's own YAML (prompt,
``doc_to_visual``, ``process_results``, aggregation — lmms-eval's code, unchanged) and only point its
``dataset_path`` at the local demo annotation file, through a small YAML that ``include:``s the
installed one under a new task name (lmms-eval indexes its own tasks first, so a same-named task in
``--include_path`` would be ignored). The videos are symlinked where ``doc_to_visual`` looks.

Used by ``tests/test_lmms_eval_plugin.py`` (needs lmms-eval) and to regenerate the committed fixture
``tests/data/lmms_eval_output/`` (see its NOTE.md):

    python tests/lmms_fixture.py OUT_DIR   # with lmms-eval installed (the lmms-eval venv)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

SEED = 0
MVBENCH_SUBTASKS = {"action_sequence": ("star/Charades_segment", "star/Charades_v1_480"),
                    "object_existence": ("clevrer/video_validation", "clevrer/video_validation")}
TASKS = ["videomme_vambademo"] + [f"mvbench_{s}_vambademo" for s in MVBENCH_SUBTASKS]
# importer mapping of the renamed tasks (also found automatically from their metric names)
TASK_MAP = {"videomme_vambademo": "videomme", **{f"mvbench_{s}_vambademo": "mvbench" for s in MVBENCH_SUBTASKS}}
MODEL_ARGS = f"max_frames_num=4,max_edge=56,min_edge=none,seed={SEED}"


def write_releases(root: Path) -> dict[str, Path]:
    """The releases the committed output was made on (deterministic for a seed), as vamba-eval reads them: the
    demo's format at its pre-2026-11-25 size, which the training data keeps (``TaskDef.write_train_release``)."""
    from vamba_eval.registry import get_task

    return {name: get_task(name).write_train_release(root / name, SEED) for name in ("videomme", "mvbench")}


def lmms_tasks_dir() -> Path:
    import lmms_eval

    return Path(lmms_eval.__file__).parent / "tasks"


def write_task_yamls(include_dir: Path, releases: dict[str, Path]) -> None:
    """One YAML per task: lmms-eval's own, with dataset_path pointing at the local demo file."""
    tasks = lmms_tasks_dir()
    include_dir.mkdir(parents=True, exist_ok=True)
    vm = releases["videomme"]
    (include_dir / "videomme_vambademo.yaml").write_text(
        f"include: {tasks / 'videomme' / 'videomme.yaml'}\n"
        "task: videomme_vambademo\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n  cache_dir: videomme\n  video: true\n"
        f"  data_files:\n    test: {vm / 'videomme' / 'test-00000-of-00001.parquet'}\n", encoding="utf-8")
    mv = releases["mvbench"]
    for sub in MVBENCH_SUBTASKS:
        (include_dir / f"mvbench_{sub}_vambademo.yaml").write_text(
            f"include: {tasks / 'mvbench' / f'mvbench_{sub}.yaml'}\n"
            f"task: mvbench_{sub}_vambademo\n"
            "dataset_path: json\n"
            f"dataset_name: null\n"
            "dataset_kwargs:\n  cache_dir: mvbench_video\n  video: true\n"
            f"  data_files:\n    train: {mv / 'json' / f'{sub}.json'}\n", encoding="utf-8")


def link_videos(hf_home: Path, releases: dict[str, Path]) -> None:
    """Videos where lmms-eval's doc_to_visual looks: $HF_HOME/<cache_dir>/…"""
    (hf_home / "videomme").mkdir(parents=True, exist_ok=True)
    _link(hf_home / "videomme" / "data", releases["videomme"] / "data")
    for _, (theirs, ours) in MVBENCH_SUBTASKS.items():
        _link(hf_home / "mvbench_video" / theirs, releases["mvbench"] / "video" / ours)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(target, link)


def run_lmms_eval(work: Path, out: Path, tasks: Optional[list[str]] = None, model: str = "vamba",
                  model_args: str = MODEL_ARGS, timeout: int = 900) -> subprocess.CompletedProcess:
    """``lmms-eval --model vamba … --log_samples`` on the demo releases; returns the finished process."""
    releases = write_releases(work / "releases")
    write_task_yamls(work / "include", releases)
    hf_home = work / "hf_home"
    link_videos(hf_home, releases)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_DATASETS_CACHE": str(work / "hf_datasets"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args,
           "--tasks", ",".join(tasks or TASKS), "--include_path", str(work / "include"),
           "--batch_size", "1", "--device", "cpu", "--output_path", str(out), "--log_samples", "--seed", str(SEED)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


if __name__ == "__main__":
    import shutil
    import tempfile

    target = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_lmms_eval(Path(tmp), Path(tmp) / "out")
        sys.stdout.write(proc.stdout[-4000:])
        sys.stderr.write(proc.stderr[-4000:])
        if proc.returncode:
            raise SystemExit(proc.returncode)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(tmp) / "out", target)
    print(f"wrote {target}")
