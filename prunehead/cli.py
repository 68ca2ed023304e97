"""The `prunehead` command line: a thin typer app; each command lives in `prunehead/commands/`.

Every command's `PruneheadError` becomes one line on stderr and exit code 1 (a traceback only with
PRUNEHEAD_DEBUG=1); unexpected errors likewise, with a hint to set PRUNEHEAD_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import typer

from .errors import PruneheadError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score, prune, evaluate and export attention heads of speech transformers.")


@app.callback()
def _root() -> None:
    """Score, prune, evaluate and export attention heads of speech transformers."""


def _register() -> None:
    from .commands import demo, prune, sweep

    app.command("demo")(demo.demo)
    app.command("prune")(prune.prune)
    app.command("sweep")(sweep.sweep_cmd)
    from .commands import data, evaluate, finetune  # noqa: E402 - issue 3: data, eval, finetune
    app.command("eval")(evaluate.eval_cmd)
    app.command("finetune")(finetune.finetune_cmd)
    app.add_typer(data.app, name="data")
    from .commands import score  # noqa: E402 - issue 4: score
    app.command("score")(score.score)
    from .commands import export  # noqa: E402 - issue 6: export onnx
    app.add_typer(export.app, name="export")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors raised by a command into one line and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except PruneheadError as err:
            if os.environ.get("PRUNEHEAD_DEBUG") == "1":
                raise
            typer.secho(f"error: {err}", err=True, fg="red")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - the last line of defence for users
            if os.environ.get("PRUNEHEAD_DEBUG") == "1":
                raise
            message = str(err).splitlines()[0] if str(err) else ""
            typer.secho(f"error: {type(err).__name__}: {message} (set PRUNEHEAD_DEBUG=1 for the traceback)",
                        err=True, fg="red")
            raise typer.Exit(1) from None

    return wrapper


def _wrap_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = friendly(info.callback)
    for group in typer_app.registered_groups:
        _wrap_all(group.typer_instance)


_register()
_wrap_all(app)


def main() -> None:
    """Console entry point."""
    app()
