"""The `prunehead` command line: a thin typer app; each command lives in `prunehead/commands/`."""

from __future__ import annotations

import os
import sys

import typer

from .errors import PruneheadError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score, prune, evaluate and export attention heads of speech transformers.")


def _register() -> None:
    from .commands import prune

    app.command("prune")(prune.prune)


_register()


def main() -> None:
    """Console entry point: one-line errors unless PRUNEHEAD_DEBUG=1."""
    try:
        app(standalone_mode=False)
    except PruneheadError as err:
        if os.environ.get("PRUNEHEAD_DEBUG") == "1":
            raise
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
