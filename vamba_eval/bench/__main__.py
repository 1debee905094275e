"""``python -m vamba_eval.bench [OPTIONS]``: the ``vamba-eval bench`` command without the main CLI
(for machines where the package is on PYTHONPATH but not installed)."""

from __future__ import annotations

import typer

from vamba_eval.cli_bench import bench_cmd


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(bench_cmd)
    app()


if __name__ == "__main__":
    main()
