"""CLI commands for leaderboards, submission export and regression gating.

Registered on the main app by ``vamba_eval.cli``:

    from vamba_eval.cli_extra import register
    register(app)

which adds ``vamba-eval leaderboard add|show|render|validate``, ``vamba-eval export`` and
``vamba-eval regress``. Exit codes: 0 ok; 1 a rejected submission / a regression; 2 a usage or
input error (bad run directory, unknown board or format, runs that cannot be compared).
Exit codes are raised as ``SystemExit`` (``cli.main`` runs click with ``standalone_mode=False``,
which would swallow ``typer.Exit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_BOARD = "long-video"

leaderboard_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                              help="Leaderboards of official-split results (specs in leaderboards/*.yaml).")

_ROOT_OPT = typer.Option(None, "--leaderboards-dir", help="Folder with the board specs and entries "
                         "(default: $VAMBA_EVAL_LEADERBOARDS or the source tree's leaderboards/).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@leaderboard_app.command("add")
def leaderboard_add(run_dir: Path = typer.Argument(..., help="A finished run directory."),
                    board: str = typer.Option(DEFAULT_BOARD, "--board", help="Board name (leaderboards/<name>.yaml)."),
                    name: Optional[str] = typer.Option(None, "--name", help="Display name (default: model + checkpoint)."),
                    root: Optional[Path] = _ROOT_OPT) -> None:
    """Validate RUN_DIR as a submission and add it; every problem is listed on rejection (exit 1)."""
    from vamba_eval.leaderboard import LeaderboardError, SubmissionRejected, add

    try:
        entry = add(run_dir, board, name=name, root=root)
    except SubmissionRejected as err:
        typer.echo(str(err), err=True)
        raise SystemExit(1)
    except LeaderboardError as err:
        _fail(str(err))
    for note in entry.notes:
        typer.echo(f"note: {note}", err=True)
    scores = ", ".join(f"{k} {s.value:.1f}" for k, s in entry.scores.items() if s.value is not None)
    typer.echo(f"added {entry.entry_id} to board {board}: {scores}")


@leaderboard_app.command("show")
def leaderboard_show(board: str = typer.Option(DEFAULT_BOARD, "--board", help="Board name."),
                     json_out: bool = typer.Option(False, "--json", help="Machine-readable rows instead of a table."),
                     root: Optional[Path] = _ROOT_OPT) -> None:
    """Print the board: measured entries with 95% CIs and reported numbers (marked †)."""
    from vamba_eval.leaderboard import LeaderboardError, entries_json, show

    try:
        typer.echo(entries_json(board, root) if json_out else show(board, root), nl=False)
    except LeaderboardError as err:
        _fail(str(err))


@leaderboard_app.command("render")
def leaderboard_render(board: str = typer.Option(DEFAULT_BOARD, "--board", help="Board name."),
                       out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                          help="HTML file (default ./leaderboard-<board>.html)."),
                       root: Optional[Path] = _ROOT_OPT) -> None:
    """Write the board as a self-contained, sortable HTML page linking to the run reports."""
    from vamba_eval.leaderboard import LeaderboardError, render

    try:
        typer.echo(str(render(board, out, root)))
    except LeaderboardError as err:
        _fail(str(err))


@leaderboard_app.command("validate")
def leaderboard_validate(board: Optional[str] = typer.Option(None, "--board", help="One board (default: all)."),
                         root: Optional[Path] = _ROOT_OPT) -> None:
    """Check board specs and their reference files; exit 1 on a problem."""
    from vamba_eval.leaderboard_spec import LeaderboardError, board_names, boards_root, check_board

    try:
        names = [board] if board else board_names(boards_root(root))
    except LeaderboardError as err:
        _fail(str(err))
    bad = False
    for name in names:
        problems, notes = check_board(name, root)
        for n in notes:
            typer.echo(f"{name}: note: {n}")
        for p in problems:
            typer.echo(f"{name}: {p}", err=True)
        bad |= bool(problems)
        typer.echo(f"{name}: {'INVALID' if problems else 'ok'}")
    if bad:
        raise SystemExit(1)


def export_cmd(run_dir: Path = typer.Argument(..., help="A run directory."),
               fmt: str = typer.Option(..., "--format", "-f", help="lvbench | lvbench-leaderboard | videomme | "
                                          "mlvu-test | longvideobench-test | mvbench"),
               out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                  help="Output file (default RUN_DIR/submissions/<name>.json).")) -> None:
    """Write the benchmark's official submission file from a run's saved responses."""
    from vamba_eval.export import ExportError, export, print_warnings
    from vamba_eval.run.store import RunDirError

    try:
        result = export(run_dir, fmt, out)
    except (ExportError, RunDirError) as err:
        _fail(str(err))
    print_warnings(result)
    typer.echo(f"{result.path} ({result.n_items} entries)")


def regress_cmd(baseline: Path = typer.Option(..., "--baseline", help="Baseline run directory."),
                candidate: Path = typer.Option(..., "--candidate", help="Candidate run directory."),
                alpha: float = typer.Option(0.05, "--alpha", help="Family-wise significance level (Holm)."),
                min_delta: float = typer.Option(0.5, "--min-delta", help="Smallest accuracy drop (points) that fails."),
                seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
                markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the summary here."),
                html: Optional[Path] = typer.Option(None, "--html", help="HTML page with the flipped samples.")) -> None:
    """Paired regression test (McNemar + Holm, video bootstrap CI). Exit 1 only for a significant drop ≥ min-delta;
    2 when the runs cannot be compared (different dataset revision, scoring mode, subtitles)."""
    from vamba_eval.regress import RegressError, compare, render_html, to_markdown
    from vamba_eval.run.store import atomic_write_text

    try:
        report = compare(baseline, candidate, alpha=alpha, min_delta=min_delta, seed=seed)
    except RegressError as err:
        _fail(str(err))
    text = to_markdown(report)
    typer.echo(text, nl=False)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(markdown, text)
    if html is not None:
        typer.echo(f"html: {render_html(report, html)}", err=True)
    if report.exit_code:
        raise SystemExit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``leaderboard``, ``export`` and ``regress`` to the main ``vamba-eval`` app."""
    app.add_typer(leaderboard_app, name="leaderboard")
    app.command("export")(export_cmd)
    app.command("regress")(regress_cmd)


__all__ = ["leaderboard_app", "export_cmd", "regress_cmd", "register"]
