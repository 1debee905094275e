"""``python -m vamba_eval.ablate SPEC.yaml ...`` — the ``vamba-eval ablate`` command on its own."""

from __future__ import annotations

import sys

import typer

from vamba_eval.cli_ablate import ablate_cmd


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(ablate_cmd)
    try:
        app(standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # click's usage errors
        from vamba_eval.cli import click_usage_errors

        if isinstance(err, click_usage_errors()):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
