"""Run what is missing of an ablation, reuse what exists, evaluate every cell × seed.

Layout of the ablation directory ``OUT``::

    spec.yaml                      the spec as last run (provenance)
    log.jsonl                      one event per line: start / done / skip / stop / failed, with seconds
    teachers/seed<S>-<key>/        a seed's teacher (train out folder: teacher/, recipe.json, log.jsonl)
    cells/<cell>/seed<S>/          one unit: state.json, train/ (converted, stage1, stage2, teacher → link),
                                   run/ (the evaluation's run directory: config, samples, results, report)
    ablation.json, ablation.html   the matrix (``vamba_eval.ablate.page``)

Finished steps are recorded in each unit's ``state.json`` only once their files are complete; a
unit whose spec changed (different recipe, data or teacher) starts over. Work is seed-major (every
cell of seed 0, then of seed 1, …) so a partial run already holds complete single-seed matrices.
``max_minutes`` stops cleanly between steps; the same command continues.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from vamba_eval.ablate import training
from vamba_eval.ablate.spec import AblationSpec, Cell, cell_recipe, digest, recipe_identity, resolve, teacher_key
from vamba_eval.ablate.state import EventLog, LockedError, UnitLock, UnitState

EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3


class StopRequested(Exception):
    """The time budget is spent; the next run of the same command continues."""


@dataclass
class Options:
    out: Path
    device: str = "cpu"
    only: Optional[list[str]] = None
    seeds: Optional[list[int]] = None
    max_minutes: Optional[float] = None
    jobs: int = 1
    threads: Optional[int] = None
    render: bool = True
    part: str = "main"


@dataclass
class Outcome:
    code: int = EXIT_OK
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    stopped: bool = False
    page: Optional[Path] = None


@dataclass
class Context:
    spec: AblationSpec
    base: Path
    opts: Options
    log: EventLog
    outcome: Outcome
    t0: float = field(default_factory=time.perf_counter)
    data: Optional[Path] = None
    data_id: Optional[str] = None
    starts: int = 0  # steps started by this process (training steps, teachers, evaluations)

    def start(self, msg: str, **record: Any) -> None:
        self.starts += 1
        self.log(msg, event="start", **record)

    @property
    def out(self) -> Path:
        return Path(self.opts.out)

    @property
    def device(self) -> torch.device:
        return torch.device(self.opts.device)

    def check_budget(self, what: str) -> None:
        m = self.opts.max_minutes
        if m is not None and time.perf_counter() - self.t0 > 60 * m:
            raise StopRequested(what)


# --------------------------------------------------------------------------- planning


def select_cells(spec: AblationSpec, only: Optional[list[str]]) -> list[Cell]:
    if only:
        names = [c.name for c in spec.cells]
        unknown = [n for n in only if n not in names]
        if unknown:
            from vamba_eval.registry import did_you_mean

            raise did_you_mean("cell", unknown[0], names)
    cells = [c for c in spec.cells if not only or c.name in only]
    return sorted(cells, key=lambda c: c.name != spec.reference)  # the reference first (stable otherwise)


def plan(spec: AblationSpec, only: Optional[list[str]] = None, seeds: Optional[list[int]] = None) -> list[tuple[Cell, int]]:
    """(cell, seed) units, seed-major, the reference cell first within a seed."""
    cells = select_cells(spec, only)
    all_seeds = sorted({s for c in cells for s in spec.seeds_of(c)}, key=lambda s: (s not in spec.seeds, s))
    if seeds is not None:
        all_seeds = [s for s in all_seeds if s in seeds]
    return [(c, s) for s in all_seeds for c in cells if s in spec.seeds_of(c)]


def unit_dir(out: Path, cell: Cell, seed: int) -> Path:
    return Path(out) / "cells" / cell.name / f"seed{seed}"


# --------------------------------------------------------------------------- data and teachers


def ensure_data(ctx: Context) -> Path:
    if ctx.data is None:
        spec = ctx.spec
        folder = resolve(ctx.base, spec.data) if spec.data else ctx.out / "data"
        recipe = cell_recipe(spec, None, spec.seeds[0], ctx.opts.device)
        t0 = time.perf_counter()
        was_ready = training.data_ready(folder)
        ctx.data = training.ensure_data(folder, recipe, spec.data_tasks, spec.data_workers, ctx.log)
        if not was_ready:
            ctx.log(f"[ablate] data built in {time.perf_counter() - t0:.0f}s", event="done", unit="data",
                    seconds=round(time.perf_counter() - t0, 1))
        ctx.data_id = training.data_identity(ctx.data)
    return ctx.data


def teacher_identity(ctx: Context, seed: int, recipe: Any) -> str:
    external = ctx.spec.teachers.get(seed)
    if external:
        return f"external:{external}"
    ensure_data(ctx)
    return f"trained:{teacher_key(recipe)}:{ctx.data_id}"


def ensure_teacher(ctx: Context, seed: int, recipe: Any) -> Path:
    """The seed's teacher checkpoint folder: the spec's, or trained once into ``teachers/`` and reused."""
    external = ctx.spec.teachers.get(seed)
    if external:
        folder = resolve(ctx.base, external)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"teachers.{seed}: {folder} holds no checkpoint (config.json)")
        return folder
    data = ensure_data(ctx)
    key = teacher_key(recipe)
    unit = ctx.out / "teachers" / f"seed{seed}-{key}"
    name = f"teacher seed{seed}"
    identity = teacher_identity(ctx, seed, recipe)
    with UnitLock(unit):
        st = UnitState(unit)
        if st.identity != identity or not st.done("teacher") or not (unit / "teacher" / "config.json").is_file():
            ctx.check_budget(name)
            st.reset(identity, seed=seed)
            ctx.start(f"[ablate] {name}: training", unit=name)
            t0 = time.perf_counter()
            training.train_teacher(unit, data, recipe, ctx.device)
            secs = round(time.perf_counter() - t0, 1)
            st.mark("teacher", seconds=secs, **training.steps_run(unit / "teacher"))
            ctx.log(f"[ablate] {name}: trained in {secs}s", event="done", unit=name, seconds=secs)
        else:
            ctx.log(f"[ablate] {name}: reusing {unit / 'teacher'}", event="skip", unit=name)
    return unit / "teacher"


# --------------------------------------------------------------------------- one unit


def cell_identity(ctx: Context, cell: Cell, seed: int, recipe: Any) -> str:
    if cell.kind == "checkpoint":
        return digest({"kind": "checkpoint", "path": cell.checkpoint, "model": cell.model})
    teacher = teacher_identity(ctx, seed, recipe)
    if cell.kind == "teacher":
        return digest({"kind": "teacher", "teacher": teacher})
    return digest({"kind": "recipe", "recipe": recipe_identity(recipe), "data": ctx.data_id, "teacher": teacher,
                   "eval_stage": cell.eval_stage})


def train_cell(ctx: Context, cell: Cell, seed: int, recipe: Any, unit: Path, st: UnitState) -> Path:
    """The missing training steps of a recipe cell; returns the checkpoint to evaluate."""
    steps = training.CELL_STEPS[:training.CELL_STEPS.index(cell.eval_stage) + 1]
    train = unit / "train"
    folder = training.STEP_FOLDER
    # each step reads only the one before it: resume after the furthest finished step whose checkpoint is there
    # (a part carried to another machine may leave the earlier checkpoints behind)
    done = 0
    while done < len(steps) and st.done(steps[done]):
        done += 1
    while done and not (train / folder[steps[done - 1]] / "config.json").is_file():
        done -= 1
    name = f"cell {cell.name} seed{seed}"
    if done == len(steps):
        ctx.log(f"[ablate] {name}: trained ({', '.join(steps)}), reusing", event="skip", unit=name, step="train")
        return train / folder[steps[-1]]
    redo = steps[done:]
    for s in redo:
        shutil.rmtree(train / folder[s], ignore_errors=True)
    shutil.rmtree(unit / "run", ignore_errors=True)
    st.forget(*redo, "eval")
    data = ensure_data(ctx)
    ctx.check_budget(name)
    training.link_teacher(train, ensure_teacher(ctx, seed, recipe))
    for s in redo:
        ctx.check_budget(f"{name} {s}")
        ctx.start(f"[ablate] {name}: {s}", unit=name, step=s)
        t0 = time.perf_counter()
        training.train_step(s, train, data, recipe, ctx.device)
        secs = round(time.perf_counter() - t0, 1)
        st.mark(s, seconds=secs, **training.steps_run(train / folder[s]))
        ctx.log(f"[ablate] {name}: {s} done in {secs}s", event="done", unit=name, step=s, seconds=secs)
    return train / folder[steps[-1]]


def evaluation_id(ctx: Context, st: UnitState, model: str) -> str:
    return digest({"unit": st.identity, "tasks": ctx.spec.tasks, "eval": ctx.spec.eval, "model": model})


def evaluated(ctx: Context, unit: Path, st: UnitState, model: str) -> bool:
    """The unit's evaluation under the current settings is complete (its results are on disk)."""
    return (st.done("eval") and st.info("eval").get("id") == evaluation_id(ctx, st, model)
            and (unit / "run" / "results.json").is_file())


def evaluate_unit(ctx: Context, name: str, unit: Path, st: UnitState, model: str, checkpoint: Path) -> None:
    from vamba_eval.run.api import evaluate
    from vamba_eval.run.config import RunConfig
    from vamba_eval.run.store import RunDirError

    run_dir = unit / "run"
    eval_id = evaluation_id(ctx, st, model)
    if evaluated(ctx, unit, st, model):
        ctx.log(f"[ablate] {name}: evaluated, reusing {run_dir}", event="skip", unit=name, step="eval")
        return
    if st.done("eval"):  # evaluated under other settings: start the run over
        shutil.rmtree(run_dir, ignore_errors=True)
        st.forget("eval")
    ctx.check_budget(f"{name} eval")
    cfg = RunConfig.model_validate({"progress": False, **ctx.spec.eval, "tasks": ctx.spec.tasks, "model": model,
                                    "model_path": str(checkpoint), "output": str(run_dir), "resume": True,
                                    "device": ctx.opts.device})
    ctx.start(f"[ablate] {name}: evaluating {','.join(ctx.spec.tasks)}", unit=name, step="eval")
    t0 = time.perf_counter()
    try:
        record = evaluate(cfg)
    except RunDirError as err:  # an unfinished run of other settings (e.g. another checkout path): restart it
        ctx.log(f"[ablate] {name}: {err}; restarting the evaluation")
        shutil.rmtree(run_dir, ignore_errors=True)
        record = evaluate(cfg)
    secs = round(time.perf_counter() - t0, 1)
    scores = {t: r.overall.value for t, r in record.tasks.items()}
    st.mark("eval", id=eval_id, seconds=secs, device=ctx.opts.device, scores=scores)
    ctx.log(f"[ablate] {name}: evaluated in {secs}s {scores}", event="done", unit=name, step="eval", seconds=secs)


def run_unit(ctx: Context, cell: Cell, seed: int) -> None:
    recipe = cell_recipe(ctx.spec, cell, seed, ctx.opts.device)
    unit = unit_dir(ctx.out, cell, seed)
    name = f"cell {cell.name} seed{seed}"
    identity = cell_identity(ctx, cell, seed, recipe)
    with UnitLock(unit):
        st = UnitState(unit)
        if st.identity != identity:
            if st.identity is not None:
                ctx.log(f"[ablate] {name}: the spec changed for this cell (recipe, data or teacher); starting over")
            st.reset(identity, cell=cell.name, seed=seed, kind=cell.kind)
        if cell.kind == "recipe" and evaluated(ctx, unit, st, "vamba"):
            # scored already: its checkpoints are not needed again (an ablation moved between machines
            # may carry only the run directories and the teachers)
            ctx.log(f"[ablate] {name}: evaluated, reusing {unit / 'run'}", event="skip", unit=name, step="eval")
            return
        if cell.kind == "recipe":
            checkpoint, model = train_cell(ctx, cell, seed, recipe, unit, st), "vamba"
        elif cell.kind == "teacher":
            checkpoint, model = ensure_teacher(ctx, seed, recipe), "qwen2vl"
        else:
            checkpoint, model = resolve(ctx.base, cell.checkpoint), cell.model
            if not (checkpoint / "config.json").is_file():
                raise FileNotFoundError(f"cells[{cell.name}].checkpoint: {checkpoint} holds no checkpoint (config.json)")
        evaluate_unit(ctx, name, unit, st, model, checkpoint)


# --------------------------------------------------------------------------- the whole matrix


def run(spec_path: Path, spec: AblationSpec, base: Path, opts: Options) -> Outcome:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    log = EventLog(out, opts.part)
    outcome = Outcome()
    ctx = Context(spec, base, opts, log, outcome)
    if opts.part == "main" and Path(spec_path).resolve() != (out / "spec.yaml").resolve():
        shutil.copyfile(spec_path, out / "spec.yaml")
    units = plan(spec, opts.only, opts.seeds)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(f"[ablate] {spec.name}: {len(units)} cell × seed unit(s) on {opts.device} → {out}", event="begin",
        units=len(units), max_minutes=opts.max_minutes, jobs=opts.jobs)
    if opts.jobs > 1 and len({s for _, s in units}) > 1:
        _run_parallel(ctx, spec_path, units)
    else:
        _run_serial(ctx, units)
    if outcome.failed:
        outcome.code = EXIT_FAILED
    elif outcome.stopped or outcome.locked:
        outcome.code = EXIT_STOPPED
    log(f"[ablate] {spec.name}: finished in {time.perf_counter() - ctx.t0:.0f}s "
        f"({'complete' if outcome.code == EXIT_OK else 'incomplete: run the same command again to continue'})",
        event="end", seconds=round(time.perf_counter() - ctx.t0, 1), code=outcome.code)
    if opts.render:
        from vamba_eval.ablate.page import render

        outcome.page = render(spec, base, out)
        log(f"[ablate] page: {outcome.page}")
    return outcome


def _run_serial(ctx: Context, units: list[tuple[Cell, int]]) -> None:
    for cell, seed in units:
        name = f"cell {cell.name} seed{seed}"
        try:
            before = ctx.starts
            run_unit(ctx, cell, seed)
            (ctx.outcome.ran if ctx.starts > before else ctx.outcome.skipped).append(name)
        except StopRequested as stop:
            ctx.outcome.stopped = True
            ctx.log(f"[ablate] time budget of {ctx.opts.max_minutes} min spent before {stop}; "
                    "run the same command again to continue", event="stop", unit=str(stop))
            return
        except LockedError as err:
            ctx.outcome.locked.append(name)
            ctx.log(f"[ablate] {name}: skipped, {err}", event="locked", unit=name)
        except Exception as err:  # noqa: BLE001 - one broken cell must not lose the others; recorded, exit 1
            ctx.outcome.failed.append(name)
            ctx.log(f"[ablate] {name}: FAILED {type(err).__name__}: {err}", event="failed", unit=name,
                    error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8))


def _run_parallel(ctx: Context, spec_path: Path, units: list[tuple[Cell, int]]) -> None:
    """``jobs`` worker processes, each a seed group (the seed's teacher and cells stay in one process)."""
    if any(c.kind != "checkpoint" for c, _ in units):
        ensure_data(ctx)  # once, before the workers start
    seeds = list(dict.fromkeys(s for _, s in units))
    jobs = min(ctx.opts.jobs, len(seeds))
    groups = [seeds[i::jobs] for i in range(jobs)]
    logs = ctx.out / "logs"
    logs.mkdir(exist_ok=True)
    threads = ctx.opts.threads or max(1, (torch.get_num_threads() or 1) // jobs)
    only = sorted({c.name for c, _ in units})
    procs = []
    for k, group in enumerate(groups):
        cmd = [sys.executable, "-m", "vamba_eval.ablate", str(spec_path), "--out", str(ctx.out), "--device",
               ctx.opts.device, "--seeds", ",".join(map(str, group)), "--only", ",".join(only), "--no-render",
               "--jobs", "1", "--threads", str(threads), "--part", f"part{k}"]
        if ctx.opts.max_minutes is not None:
            left = ctx.opts.max_minutes - (time.perf_counter() - ctx.t0) / 60
            cmd += ["--max-minutes", f"{max(0.0, left):.2f}"]
        fh = open(logs / f"part{k}.log", "a", encoding="utf-8")
        procs.append((k, group, fh, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)))
        ctx.log(f"[ablate] part{k}: seeds {group} (log {logs / f'part{k}.log'})", event="spawn", seeds=group)
    for k, group, fh, proc in procs:
        code = proc.wait()
        fh.close()
        if code == EXIT_STOPPED:
            ctx.outcome.stopped = True
        elif code != EXIT_OK:
            ctx.outcome.failed.append(f"part{k} (seeds {group}, exit {code})")
