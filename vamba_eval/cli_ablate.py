"""``vamba-eval ablate SPEC.yaml``: run an ablation matrix (train what is missing, evaluate, render).

Registered on the main app by ``vamba_eval.cli``::

    from vamba_eval.cli_ablate import register
    register(app)

Also runnable alone: ``python -m vamba_eval.ablate SPEC.yaml ...``. Exit codes: 0 every selected
cell is evaluated; 1 some cell failed (the others ran; see OUT/log.jsonl); 2 a bad spec or option;
3 stopped by ``--max-minutes`` or a cell locked by another process (run the same command again to
continue). Exit codes are raised as ``SystemExit`` (``cli.main`` runs click with
``standalone_mode=False``, which would swallow ``typer.Exit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _ints(value: Optional[str], flag: str) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        _fail(f"{flag}: expected comma-separated integers, got {value!r}")
    return None


def ablate_cmd(
    spec_file: Path = typer.Argument(..., help="Ablation spec (YAML): cells, seeds, tasks, reference; see ablations/."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ablation directory (default runs/ablate-<spec name>)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N (training and evaluation)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated cells to run (the rest is left as is)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds to run (default: the spec's)."),
    render_only: bool = typer.Option(False, "--render-only", help="Only re-render ablation.html from what exists."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Start no new step after this many "
                                                "minutes (exit 3); the same command continues later."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes, one seed group each (one GPU is shared)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process."),
    no_render: bool = typer.Option(False, "--no-render", hidden=True),
    part: str = typer.Option("main", "--part", hidden=True),
) -> None:
    """Train what is missing, evaluate every cell × seed, and write OUT/ablation.html."""
    from vamba_eval.ablate.page import render
    from vamba_eval.ablate.runner import Options, run
    from vamba_eval.ablate.spec import SpecError, load_spec
    from vamba_eval.registry import UnknownNameError

    try:
        spec, base = load_spec(spec_file)
    except SpecError as err:
        _fail(str(err))
    out_dir = out or Path("runs") / f"ablate-{spec.name}"
    if render_only:
        page = render(spec, base, out_dir)
        typer.echo(f"[ablate] page: {page}")
        return
    opts = Options(out=out_dir, device=device, only=[c.strip() for c in only.split(",") if c.strip()] if only else None,
                   seeds=_ints(seeds, "--seeds"), max_minutes=max_minutes, jobs=jobs, threads=threads,
                   render=not no_render, part=part)
    try:
        outcome = run(spec_file, spec, base, opts)
    except UnknownNameError as err:
        _fail(f"--only: {err}")
    if outcome.failed:
        typer.echo(f"[ablate] failed: {', '.join(outcome.failed)} (details in {out_dir / 'log.jsonl'})", err=True)
    if outcome.code:
        raise SystemExit(outcome.code)


def register(app: typer.Typer) -> None:
    """Add ``ablate`` to ``app``."""
    app.command("ablate")(ablate_cmd)
