"""``vamba-eval`` command line: run, score, report, list, demo-data. A thin layer over run.api."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from vamba_eval.registry import UnknownNameError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate long-video multimodal models (VAMBA and baselines) exactly, fast and resumably.")


from vamba_eval import cli_ablate, cli_bench, cli_extra, cli_interop  # noqa: E402

cli_extra.register(app)  # leaderboard, export, regress
cli_interop.register(app)  # import lmms-eval, parity
cli_bench.register(app)  # bench
cli_ablate.register(app)  # ablate


class UserError(Exception):
    """Errors whose message is the whole story (no traceback)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from vamba_eval.models.vamba.backends import BackendUnavailable
    from vamba_eval.run.dispatch import ExecutorChoiceError
    from vamba_eval.models.vamba.checkpoint import CheckpointError
    from vamba_eval.models.vamba.config import ConfigError
    from vamba_eval.run.config import ConfigFileError
    from vamba_eval.run.store import RunDirError
    from vamba_eval.task_api import DataError

    return (UserError, UnknownNameError, ConfigFileError, RunDirError, DataError, CheckpointError, ConfigError,
            BackendUnavailable, FileNotFoundError, ExecutorChoiceError)


def _print_summary(results: Any) -> None:
    for name, r in results.tasks.items():
        o = r.overall
        val = "n/a" if o.value is None else f"{o.value:.1f}"
        ci = f" [{o.ci95[0]:.1f}, {o.ci95[1]:.1f}]" if o.ci95 else ""
        typer.echo(f"{name:<16} {r.metric} {val}{ci}  n={r.n} scored={r.n_scored} failed={r.n_failed} "
                   f"unparsed={r.n_unparsed}")


@app.command()
def run(
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="Comma-separated task names (see `list tasks`)."),
    model: Optional[str] = typer.Option(None, help="Model name (see `list models`); default vamba."),
    model_path: Optional[str] = typer.Option(None, help="Checkpoint folder; default: the bundled tiny model."),
    data_dir: Optional[list[str]] = typer.Option(None, help="Release folder root, or task=PATH (repeatable). "
                                                 "Default: the built-in synthetic demo data."),
    frames: Optional[int] = typer.Option(None, help="Frames per video (default: the task's paper setting)."),
    max_edge: Optional[int] = typer.Option(None, help="Longest frame edge cap in pixels."),
    min_edge: Optional[int] = typer.Option(None, help="Shortest frame edge floor in pixels."),
    limit: Optional[int] = typer.Option(None, help="Only the first N samples of each task."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory (default runs/<time>-…)."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue a killed run; skips finished samples."),
    seed: Optional[int] = typer.Option(None, help="Seed (demo data, untrained models, random fallbacks)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 …"),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 | float16 | float32."),
    ssm_backend: Optional[str] = typer.Option(None, help="VAMBA SSM kernels: auto | mamba_ssm | fla | torch."),
    chunk_frames: Optional[int] = typer.Option(None, help="VAMBA streaming-prefill chunk (frames; default: "
                                                 "the whole video up to 64 frames, 32 below 512 with the last "
                                                 "piece cut in two, 64 from 512)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                           help="VAMBA: torch.compile the video path (CUDA; faster prefill)."),
    scoring: Optional[str] = typer.Option(None, help="official (default) | lmms-eval."),
    subtitles: Optional[bool] = typer.Option(None, "--subtitles/--no-subtitles", help="Video-MME subtitles."),
    workers: Optional[int] = typer.Option(None, help="Background decode threads (per worker)."),
    executor: Optional[str] = typer.Option(None, help="local | ray | auto (Ray when --gpus > 1 or --ray-address)."),
    gpus: Optional[int] = typer.Option(None, help="GPUs to shard over (one Ray worker each)."),
    gpus_per_worker: Optional[float] = typer.Option(None, help="GPU fraction per Ray worker."),
    cpu_workers: Optional[int] = typer.Option(None, help="CPU-only Ray workers (laptops)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (e.g. auto)."),
    max_attempts: Optional[int] = typer.Option(None, help="Tries per sample when its worker dies."),
    oom_retry_frames: Optional[int] = typer.Option(None, help="On CUDA OOM, halve the frames up to N times (recorded)."),
    judge_model: Optional[str] = typer.Option(None, help="LLM judge model (G-VEval, MLVU generation)."),
    judge_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible judge endpoint."),
    judge_api_key_env: Optional[str] = typer.Option(None, help="Env var holding the judge API key "
                                                    "(default OPENAI_API_KEY; the key is never recorded)."),
    judge_prompts: Optional[str] = typer.Option(None, help="Folder with the benchmark authors' judge prompts "
                                                "(default: our labelled paraphrases)."),
    judge_cache: Optional[bool] = typer.Option(None, "--judge-cache/--no-judge-cache",
                                               help="Replay stored judge replies of identical requests (default on)."),
    gveval_mode: Optional[str] = typer.Option(None, help="G-VEval: reference-free | reference-only | combined."),
    gveval_accr: Optional[bool] = typer.Option(None, "--gveval-accr/--no-gveval-accr", help="G-VEval ACCR variant."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run.yaml with the same keys; flags override."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
) -> None:
    """Evaluate a model on tasks; writes config.json, samples.jsonl, results.json, report.html."""
    from vamba_eval.run.api import evaluate
    from vamba_eval.run.config import build_config, parse_data_dir

    overrides = dict(tasks=tasks, model=model, model_path=model_path, data_dir=parse_data_dir(data_dir or []),
                     frames=frames, max_edge=max_edge, min_edge=min_edge, limit=limit, output=output,
                     resume=resume, seed=seed, device=device, dtype=dtype, ssm_backend=ssm_backend,
                     chunk_frames=chunk_frames, compile=compile, scoring=scoring, subtitles=subtitles, workers=workers,
                     judge_model=judge_model, judge_base_url=judge_base_url, judge_api_key_env=judge_api_key_env,
                     judge_prompts=judge_prompts, judge_cache=judge_cache, gveval_mode=gveval_mode, gveval_accr=gveval_accr,
                     executor=executor, gpus=gpus, gpus_per_worker=gpus_per_worker, cpu_workers=cpu_workers,
                     ray_address=ray_address, max_attempts=max_attempts, oom_retry_frames=oom_retry_frames)
    cfg = build_config(config, overrides)
    from vamba_eval.registry import get_model_factory, get_task

    for name in cfg.tasks:
        get_task(name)  # did-you-mean before any work
    get_model_factory(cfg.model)
    _print_summary(evaluate(cfg, report=not no_report))


@app.command()
def score(run_dir: Path = typer.Argument(..., help="A run directory."),
          scoring: Optional[str] = typer.Option(None, help="official | lmms-eval (default: the run's).")) -> None:
    """Re-score a run from its saved responses (no model, no videos) and rewrite results.json."""
    from vamba_eval.run.api import rescore

    _print_summary(rescore(run_dir, scoring))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """(Re)write RUN_DIR/report.html from the run's files."""
    from vamba_eval.run.api import render

    typer.echo(str(render(run_dir)))


@app.command("list")
def list_(what: str = typer.Argument(..., help="tasks | models")) -> None:
    """List the known tasks or models."""
    from vamba_eval.registry import MODELS, did_you_mean, get_task, task_names

    if what == "tasks":
        for name in task_names():
            typer.echo(f"{name:<16} {get_task(name).title}")
    elif what == "models":
        for name, (desc, _) in sorted(MODELS.items()):
            typer.echo(f"{name:<16} {desc}")
    else:
        raise did_you_mean("list target", what, ["tasks", "models"])


@app.command("demo-data")
def demo_data(folder: Path = typer.Argument(..., help="Where to write the demo releases."),
              tasks: str = typer.Option("lvbench,videomme", help="Which tasks."),
              seed: int = typer.Option(0, help="World seed.")) -> None:
    """Write the synthetic demo releases (each in its benchmark's exact on-disk format)."""
    from vamba_eval.registry import get_task

    for name in [t.strip() for t in tasks.split(",") if t.strip()]:
        out = get_task(name).write_demo(folder / name, seed)
        typer.echo(f"{name}: {out}")


@app.command("gveval-meta")
def gveval_meta(
    file: Path = typer.Argument(..., help="MSVD-Eval-format JSON (human scores per annotator)."),
    video_root: Optional[Path] = typer.Option(None, help="Folder of the clips (default: <file dir>/YouTubeClips)."),
    mode: str = typer.Option("reference-only", help="reference-free | reference-only | combined."),
    accr: bool = typer.Option(True, "--accr/--no-accr", help="Score the four ACCR dimensions."),
    limit: Optional[int] = typer.Option(None, help="Only the first N items."),
    workers: int = typer.Option(4, help="Parallel judge requests."),
    judge_model: str = typer.Option(..., help="Judge model."),
    judge_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint."),
    judge_api_key_env: str = typer.Option("OPENAI_API_KEY", help="Env var holding the key."),
    judge_prompts: Optional[str] = typer.Option(None, help="The G-VEval authors' prompt folder."),
    out: Optional[Path] = typer.Option(None, help="Write the full JSON here."),
) -> None:
    """Meta-evaluate the G-VEval judge: Kendall τ-b against human scores (MSVD-Eval format)."""
    from vamba_eval.judge import make_judge
    from vamba_eval.tasks.gveval import meta_evaluate

    judge = make_judge(judge_model, judge_base_url, api_key_env=judge_api_key_env, prompts_dir=judge_prompts)
    result = meta_evaluate(file, judge, mode, accr=accr, video_root=video_root, limit=limit, workers=workers)
    typer.echo(json.dumps(result["correlations"], indent=2))
    if out is not None:
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except _user_errors() as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click's usage errors
        if isinstance(err, click_usage_errors()):
            err.show()
            sys.exit(err.exit_code)
        raise


def click_usage_errors() -> tuple[type, ...]:
    """click's usage-error base class, and typer's vendored copy of it (typer ≥ 0.25 ships its own click)."""
    import click

    classes: list[type] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        pass
    else:
        classes.append(VendoredClickException)
    return tuple(classes)


if __name__ == "__main__":
    main()


__all__ = ["app", "click_usage_errors", "main"]
