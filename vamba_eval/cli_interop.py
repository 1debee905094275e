"""CLI commands for lmms-eval interoperability.

Registered on the main app by ``vamba_eval.cli``:

    from vamba_eval.cli_interop import register as register_interop
    register_interop(app)

which adds ``vamba-eval import lmms-eval OUTPUT_PATH`` (an lmms-eval ``--output_path`` folder, run with
``--log_samples``, into a vamba-eval run directory) and ``vamba-eval parity RUN_DIR`` (official vs
lmms-eval scoring on the run's responses → ``parity.html``). Exit codes: 0 ok; 2 a usage or input
error, raised as ``SystemExit`` (``cli.main`` runs click with ``standalone_mode=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Import runs of other harnesses as vamba-eval run directories.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _task_options(values: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """``--task LMMS=OURS`` (a mapping) or ``--task NAME`` (import only that task)."""
    mapping = dict(v.split("=", 1) for v in values if "=" in v)
    only = tuple(v for v in values if "=" not in v) + tuple(mapping)
    return {k.strip(): v.strip() for k, v in mapping.items()}, only if any("=" not in v for v in values) else ()


@import_app.command("lmms-eval")
def import_lmms_eval_cmd(
    output_path: Path = typer.Argument(..., help="lmms-eval's --output_path folder (or one <date>_results.json in it); "
                                       "lmms-eval must have run with --log_samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory to write "
                                       "(default runs/<time>-lmms-eval-<model>)."),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="LMMS_TASK=TASK maps a renamed lmms-eval task "
                                             "to a vamba-eval task; a plain NAME imports only that task (repeatable)."),
    data_dir: Optional[list[str]] = typer.Option(None, help="The release lmms-eval evaluated: a root folder, or "
                                                 "task=PATH / task=hf:ORG/NAME@REV (repeatable), as for `run`."),
    scoring: str = typer.Option("official", help="official | lmms-eval: the rules the imported verdicts use."),
    skip_unmatched: bool = typer.Option(False, "--skip-unmatched", help="Import the docs that map to a release "
                                        "sample and list the others (default: stop)."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Also write RUN_DIR/parity.html."),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write RUN_DIR/report.html."),
) -> None:
    """Read lmms-eval's results and per-sample logs into a vamba-eval run (official sample ids, our scorer)."""
    from vamba_eval.interop.lmms_import import ImportOptions, LmmsImportError, import_lmms_eval
    from vamba_eval.interop.lmms_output import LmmsOutputError
    from vamba_eval.run.config import ConfigFileError, parse_data_dir
    from vamba_eval.task_api import DataError

    if scoring not in ("official", "lmms-eval"):
        _fail(f"--scoring {scoring!r}: use official or lmms-eval")
    try:
        mapping, only = _task_options(task or [])
        options = ImportOptions(out=out, task_map=mapping, data_dir=parse_data_dir(data_dir or []), scoring=scoring,
                                skip_unmatched=skip_unmatched, only=only)
        result = import_lmms_eval(output_path, options)
    except (LmmsImportError, LmmsOutputError, ConfigFileError, DataError, FileNotFoundError) as err:
        _fail(str(err))
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    for name, r in result.results.tasks.items():
        b = result.tasks[name]
        val = "n/a" if r.overall.value is None else f"{r.overall.value:.1f}"
        typer.echo(f"{name:<16} {r.scoring} {r.metric} {val}  n={r.n} scored={r.n_scored} unparsed={r.n_unparsed}  "
                   f"(from lmms-eval {', '.join(b.lmms_tasks)})")
    if report:
        from vamba_eval.run.api import render

        typer.echo(f"report: {render(result.run_dir)}", err=True)
    if parity:
        from vamba_eval.interop.parity import render as render_parity

        typer.echo(f"parity: {render_parity(result.run_dir)}", err=True)
    typer.echo(str(result.run_dir))


def parity_cmd(run_dir: Path = typer.Argument(..., help="A run directory (native or imported)."),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default RUN_DIR/parity.html).")
               ) -> None:
    """Official vs lmms-eval scoring on the run's saved responses: which samples differ and why (parity.html)."""
    from vamba_eval.interop.parity import ParityError, compute, summary_lines, write_report

    try:
        report = compute(run_dir)
    except ParityError as err:
        _fail(str(err))
    page = write_report(report, out)
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"parity: {page}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``import lmms-eval`` and ``parity`` to the main ``vamba-eval`` app."""
    app.add_typer(import_app, name="import")
    app.command("parity")(parity_cmd)


__all__ = ["import_app", "parity_cmd", "register"]
