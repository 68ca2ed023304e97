"""The `prunehead` command line: a thin typer app; each command lives in `prunehead/commands/` and calls the
library function of the same name (`prunehead.api`).

Commands import torch and transformers inside their bodies, so `--help`, `--version` and option errors
answer at once. Every error is one line on stderr starting with `error:` (exit 1; usage errors exit 2), a
traceback only with PRUNEHEAD_DEBUG=1; Ctrl-C prints `interrupted` (and, where it applies, how to resume)
and exits 130.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from . import __version__
from .errors import Interrupted, PruneheadError

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings=SETTINGS,
                  help="Score, prune, evaluate and export attention heads of speech transformers.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prunehead {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Score, prune, evaluate and export attention heads of speech transformers."""


def _register() -> None:
    from .commands import data, demo, evaluate, export, finetune, prune, score, sweep

    app.command("demo")(demo.demo)
    app.add_typer(data.app, name="data")
    app.command("finetune")(finetune.finetune_cmd)
    app.command("eval")(evaluate.eval_cmd)
    app.command("score")(score.score)
    app.command("prune")(prune.prune)
    app.command("sweep")(sweep.sweep_cmd)
    app.add_typer(export.app, name="export")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors raised by a command into one line and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = os.environ.get("PRUNEHEAD_DEBUG") == "1"
        try:
            from .progress import library_bars

            library_bars()  # transformers / datasets bars follow prunehead's rule: only on a terminal
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Interrupted as err:
            typer.secho(f"interrupted; {err}", err=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
        except PruneheadError as err:
            if debug:
                raise
            _fail(str(err))
        except Exception as err:  # noqa: BLE001 - the last line of defence for users
            if debug:
                raise
            message = str(err).splitlines()[0] if str(err) else ""
            _fail(f"{type(err).__name__}: {message} (set PRUNEHEAD_DEBUG=1 for the traceback)")

    return wrapper


def _wrap_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = friendly(info.callback)
    for group in typer_app.registered_groups:
        _wrap_all(group.typer_instance)


_register()
_wrap_all(app)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings as `warning: <message>` (the library's warnings are written for users)."""
    return f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}\n"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors as one line (exit 2), Ctrl-C anywhere as `interrupted` (exit 130)."""
    import warnings

    warnings.formatwarning = _one_line_warning
    click = sys.modules[typer.BadParameter.__module__]  # click's exceptions (typer may vendor click)
    try:
        from .output_guard import install_sigterm_handler

        install_sigterm_handler()  # SIGTERM runs the `finally` blocks that remove temporary outputs
        command = typer.main.get_command(app)
        code = command.main(args=argv, prog_name="prunehead", standalone_mode=False)
    except click.NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help() if err.ctx else "")
        code = 0
    except click.UsageError as err:
        where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
        typer.secho(f"error: {err.format_message()}{where}", err=True, fg="red")
        code = 2
    except typer.Exit as err:
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.secho("interrupted", err=True)
        code = 130
    except click.ClickException as err:
        typer.secho(f"error: {err.format_message()}", err=True, fg="red")
        code = err.exit_code
    sys.exit(code if isinstance(code, int) else 0)
