"""Training data from the synthetic world, cached once as compressed frames + a JSONL of examples.

Per task (every task module that has a demo writer): ``TASK.write_train_release(folder, seed)`` (a smaller
release in the demo's format; else ``TASK.write_demo``) for seeds ``first_seed …`` (the demo uses seed 0), ``TASK.load`` → ``TASK.prompt`` → the gold reply in the
task's official format; frames decoded with the run's own video layer and frame spec
(``run.plan.frame_spec``, ``video.load_frames``). Captions (``synth.world.caption``) come for the
same videos where the task's synth module exposes ``plan_release``, and for extra random scripts.

Layout of ``DIR``::

    videos.json                 {"groups": {"8x84x168": count, …}, "videos": [[group, row], …]}
    frames-<T>x<H>x<W>.u8.xz    lzma-compressed uint8 [count, T, H, W, 3] per frame shape
    examples.jsonl              {"kind": "qa"|"open"|"drill"|"caption", "source", "video", "prompt", "target",
                                 "answer" (the gold option's text, where there is one)}
    .complete
"""

from __future__ import annotations

import contextlib
import json
import lzma
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from vamba_eval.train.formats import (CAPTION_PROMPT, gold_response, gold_text, open_question, option_texts,
                                      prompt_dict, template_variant)
from vamba_eval.train.recipe import DataRecipe
from vamba_eval.types import Prompt

Job = tuple[str, int]  # (task name | "caption", seed)
Chunk = tuple[list[np.ndarray], list[dict[str, Any]]]  # frames per local video, examples (local video ids)


def task_jobs(recipe: DataRecipe, videos_per_release: dict[str, int]) -> list[Job]:
    """Releases of each task (seeds from ``first_seed``) until ``videos_per_task`` videos, then captions."""
    jobs = []
    for task, per in videos_per_release.items():
        want = recipe.task_videos.get(task, recipe.videos_per_task)
        n = max(1, -(-want // max(1, per)))
        jobs += [(task, recipe.first_seed + i) for i in range(n)]
    jobs += [("caption", recipe.first_seed + i) for i in range(recipe.caption_videos)]
    return jobs


def demo_tasks() -> list[str]:
    """Every registered task with a demo writer and multiple-choice samples."""
    from vamba_eval.registry import get_task, task_names

    return [n for n in task_names() if getattr(get_task(n), "write_demo", None) is not None]


def _scripts_by_key(task: str, seed: int) -> dict[str, Any]:
    """Video stem → script, when ``vamba_eval.synth.<task>.plan_release(seed)`` exists."""
    import importlib

    try:
        module = importlib.import_module(f"vamba_eval.synth.{task}")
        sized = (module.TRAIN_VIDEOS,) if hasattr(module, "TRAIN_VIDEOS") else ()  # the training release's size
        plans = module.plan_release(seed, *sized)
    except (ImportError, AttributeError, TypeError):
        return {}
    out = {}
    for plan in plans:
        for attr in ("key", "video_key", "video_id", "name"):
            if isinstance(getattr(plan, attr, None), str) and hasattr(plan, "script"):
                out[getattr(plan, attr)] = plan.script
    return out


def _caption_example(video: int, script: Any, source: str) -> dict[str, Any]:
    from vamba_eval.synth.world import caption

    return {"kind": "caption", "source": source, "video": video,
            "prompt": prompt_dict(Prompt(user=CAPTION_PROMPT)), "target": caption(script)}


def task_chunk(task_name: str, seed: int, copies: int, fast: bool = False, drills: int = 0) -> Chunk:
    """One training release of ``task_name``: frames of its videos and its examples.

    ``fast``: the release is written under ``synth.render.capture_scripts()`` (annotations only) and
    the sampled frames of every captured video are drawn from its script (``synth_frames``); videos
    the writer makes another way (gif, frame folders) are decoded as usual. ``drills``: option-binding
    drills per question (``train/drills.py``). Every labelled question also comes as an ``open`` example:
    asked without its options, answered with the gold option's text (``formats.open_question``)."""
    from vamba_eval.registry import get_task
    from vamba_eval.run.config import RunConfig
    from vamba_eval.run.plan import frame_spec
    from vamba_eval.synth.render import capture_scripts
    from vamba_eval.task_api import PromptContext
    from vamba_eval.train.drills import drill_examples
    from vamba_eval.video import load_frames

    task = get_task(task_name)
    spec = frame_spec(task, RunConfig(tasks=[task_name]), True)
    rng = np.random.default_rng([seed, 7])
    frames: list[np.ndarray] = []
    index: dict[tuple, tuple[int, tuple[float, ...]]] = {}
    examples: list[dict[str, Any]] = []
    scripts = {} if fast else _scripts_by_key(task_name, seed)
    capture = capture_scripts() if fast else contextlib.nullcontext(None)
    with tempfile.TemporaryDirectory(prefix=f"train-{task_name}-") as tmp, capture as captured:
        folder = (task.write_train_release or task.write_demo)(Path(tmp) / "release", seed)
        for sample in task.load(Path(folder)):
            ref = sample.video
            key = (ref.path, ref.start, ref.end, ref.fps)
            if key not in index:
                if captured is not None and str(ref.path) in captured:
                    got, times = synth_frames(captured[str(ref.path)], spec, ref.start, ref.end)
                    scripts[Path(ref.path).stem] = captured[str(ref.path)][0]
                else:
                    decoded = load_frames(ref.path, spec, ref.start, ref.end, None, folder_fps=ref.fps)
                    got, times = decoded.frames, tuple(decoded.times)
                index[key] = (len(frames), times)
                frames.append(got)
                stem = Path(ref.path).stem
                if stem in scripts and ref.start is None:
                    examples.append(_caption_example(len(frames) - 1, scripts[stem], task_name))
            vid, times = index[key]
            if not sample.answer or not sample.options:
                continue  # unlabelled / open-ended items: nothing to supervise
            prompt = task.prompt(sample, PromptContext(times, False))
            answer = gold_text(sample)  # the answer's content, whatever the reply format (answer_token)
            others = [t for t in option_texts(sample) if t != answer]  # the distractors' texts (answer_token)
            examples.append({"kind": "qa", "source": task_name, "video": vid, "prompt": prompt_dict(prompt),
                             "target": gold_response(task, sample, prompt), "answer": answer, "others": others})
            for _ in range(copies):
                variant = template_variant(sample, rng)
                if variant is not None:
                    examples.append({"kind": "qa", "source": f"{task_name}:template", "video": vid,
                                     "prompt": prompt_dict(variant[0]), "target": variant[1], "answer": answer,
                                     "others": others})
            examples.extend(drill_examples(task, sample, vid, times, drills, rng))
            opened = open_question(sample)
            if opened is not None:
                examples.append({"kind": "open", "source": f"{task_name}:open", "video": vid,
                                 "prompt": prompt_dict(opened[0]), "target": opened[1], "answer": answer,
                                 "others": others})
    return frames, examples


def synth_frames(captured: tuple, spec: Any, start_s: Optional[float] = None,
                 end_s: Optional[float] = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The frames ``load_frames`` would return for a rendered script, drawn without encoding:
    same sampler, odd rule and resize; chroma subsampled like the yuv420p encode."""
    from vamba_eval.synth.render import frame_count, render_frame
    from vamba_eval.video.cache import frame_size_for
    from vamba_eval.video.decode import _resize
    from vamba_eval.video.meta import VideoMeta
    from vamba_eval.video.sampling import apply_odd_rule, frame_times, sample_indices

    script, width, height, fps = captured
    n = frame_count(script, fps)
    meta = VideoMeta(path="<script>", num_frames=n, fps=float(fps), duration_s=n / fps, width=width, height=height)
    indices = apply_odd_rule(sample_indices(meta, spec, start_s, end_s), spec.drop_odd)
    size = frame_size_for(meta, spec)
    out = np.stack([_resize(yuv420(render_frame(script, i / fps, width, height)), size) for i in indices])
    return out, tuple(frame_times(meta, indices))


def yuv420(rgb: np.ndarray) -> np.ndarray:
    """RGB → YCbCr with chroma at half resolution → RGB: the colour blur of a yuv420p encode."""
    from PIL import Image

    y, cb, cr = Image.fromarray(rgb).convert("YCbCr").split()
    half = (max(1, y.width // 2), max(1, y.height // 2))
    cb, cr = (c.resize(half, Image.BILINEAR).resize(y.size, Image.BILINEAR) for c in (cb, cr))
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))


def caption_chunk(seed: int, long_frames: int, fast: bool = False) -> Chunk:
    """One random script rendered like the demo videos (160×96, 4 fps), captioned."""
    from vamba_eval.synth.render import render
    from vamba_eval.synth.world import random_script
    from vamba_eval.video import FrameSpec, load_frames

    rng = np.random.default_rng([seed, 11])
    script = random_script(rng, int(rng.integers(4, 25)) * 5)
    n = long_frames if seed % 4 == 0 else 8
    if fast:
        frames, _ = synth_frames((script, 160, 96, 4), FrameSpec(num_frames=n, max_edge=224))
        return [frames], [_caption_example(0, script, "caption")]
    with tempfile.TemporaryDirectory(prefix="train-caption-") as tmp:
        path = render(script, Path(tmp) / "v.mp4")
        decoded = load_frames(path, FrameSpec(num_frames=n, max_edge=224), None, None, None)
    return [decoded.frames], [_caption_example(0, script, "caption")]


def run_job(job: Job, recipe: DataRecipe) -> Chunk:
    name, seed = job
    if name == "caption":
        return caption_chunk(seed, recipe.caption_long_frames, recipe.fast_render)
    return task_chunk(name, seed, recipe.template_copies, recipe.fast_render, recipe.binding_drills)


def _run_job_star(args: tuple[Job, DataRecipe]) -> Chunk:
    return run_job(*args)


def iter_chunks(jobs: list[Job], recipe: DataRecipe) -> Iterator[Chunk]:
    if recipe.workers <= 1:
        for job in jobs:
            yield run_job(job, recipe)
        return
    import multiprocessing

    # spawn, not fork: forking a process that has torch's thread pools running can deadlock a child
    # (seen on the 16-core GPU machine: the data stage hung for 10 minutes at job 150 of 438)
    with ProcessPoolExecutor(recipe.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_run_job_star, [(j, recipe) for j in jobs], chunksize=4)


def _chain(head: list[Chunk], tail: Iterator[Chunk]) -> Iterator[Chunk]:
    yield from head
    yield from tail


def shape_key(frames: np.ndarray) -> str:
    t, h, w, _ = frames.shape
    return f"{t}x{h}x{w}"


def build_data(out: Path, recipe: DataRecipe, tasks: Optional[list[str]] = None, log: Any = print) -> Path:
    """Write the cached training data under ``out`` (skipped when ``out/.complete`` exists)."""
    out = Path(out)
    if (out / ".complete").exists():
        log(f"[data] reusing {out}")
        return out
    tasks = tasks if tasks is not None else demo_tasks()
    t0 = time.perf_counter()
    first = {t: run_job((t, recipe.first_seed), recipe) for t in tasks}  # also sizes each task's releases
    skipped = [t for t, (_, exs) in first.items() if not any(e["kind"] == "qa" for e in exs)]
    if skipped:
        log(f"[data] no labelled multiple-choice items in the demo of {skipped}: not used")
    first = {t: c for t, c in first.items() if t not in skipped}
    tasks = list(first)
    jobs = task_jobs(recipe, {t: len(chunk[0]) for t, chunk in first.items()})
    groups: dict[str, list[np.ndarray]] = {}
    videos: list[tuple[str, int]] = []
    examples: list[dict[str, Any]] = []
    rest = [j for j in jobs if not (j[0] in first and j[1] == recipe.first_seed)]
    for k, (frames, exs) in enumerate(_chain(list(first.values()), iter_chunks(rest, recipe))):
        local = []
        for f in frames:
            key = shape_key(f)
            groups.setdefault(key, []).append(f)
            local.append(len(videos))
            videos.append((key, len(groups[key]) - 1))
        examples += [{**e, "video": local[e["video"]]} for e in exs]
        if (k + 1) % 50 == 0:
            log(f"[data] {k + 1}/{len(jobs)} jobs, {len(videos)} videos, {time.perf_counter() - t0:.0f}s")
    write_data(out, groups, videos, examples, tasks)
    log(f"[data] {len(videos)} videos, {len(examples)} examples from tasks {tasks} in {time.perf_counter() - t0:.0f}s")
    return out


def write_data(out: Path, groups: dict[str, list[np.ndarray]], videos: list[tuple[str, int]],
               examples: list[dict[str, Any]], tasks: list[str]) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for key, frames in groups.items():
        with lzma.open(tmp / f"frames-{key}.u8.xz", "wb", preset=1) as f:
            f.write(np.stack(frames).tobytes())
    meta = {"groups": {k: len(v) for k, v in groups.items()}, "videos": videos, "tasks": tasks}
    (tmp / "videos.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    with open(tmp / "examples.jsonl", "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def load_frames_cache(folder: Path) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """Frame arrays per shape group and the (group, row) of every video."""
    meta = json.loads((Path(folder) / "videos.json").read_text(encoding="utf-8"))
    groups = {}
    for key, count in meta["groups"].items():
        t, h, w = (int(v) for v in key.split("x"))
        with lzma.open(Path(folder) / f"frames-{key}.u8.xz", "rb") as f:
            groups[key] = np.frombuffer(bytearray(f.read()), dtype=np.uint8).reshape(count, t, h, w, 3)
    return groups, [tuple(v) for v in meta["videos"]]


def load_examples(folder: Path) -> list[dict[str, Any]]:
    with open(Path(folder) / "examples.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
