"""What both CLIs (``moola`` and ``moola-diag``) share: one-line user errors and a torch-free entry point.

A ``MoolaError`` anywhere under a command becomes ``<prog>: error: <message>`` on stderr and exit code 2;
``--debug`` (a root option of each app) keeps the traceback instead. Usage errors from the parser get
the same one-line shape. Everything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from moola.errors import Interrupted, MoolaError


class _State:
    debug: bool = False


state = _State()


def set_debug(enabled: bool) -> None:
    state.debug = enabled


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    typer.echo(f"{prog}: error: {message}", err=True)
    raise typer.Exit(code)


class _UserErrors:
    """The one place where a ``MoolaError`` ends a command, as one line and exit 2, and an interrupt
    becomes its exit code. Mixed into the root of every app, so commands and sub-apps mounted under it
    (the gate) need nothing of their own; works the same under the console script and ``CliRunner``."""

    def invoke(self, ctx: Any) -> Any:
        prog = ctx.find_root().info_name
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except MoolaError as err:
            if state.debug:
                raise
            fail(prog, str(err))
        except KeyboardInterrupt as err:
            raise typer.Exit(report_interrupt(prog, err)) from None


class UserErrorGroup(_UserErrors, TyperGroup):
    """Root of a multi-command app: ``typer.Typer(cls=UserErrorGroup)``."""


class UserErrorCommand(_UserErrors, TyperCommand):
    """Root of a single-command app: ``app.command(cls=UserErrorCommand)``."""


def report_interrupt(prog: str, err: BaseException) -> int:
    """Print one line saying what an interrupt left behind; return the exit code, 128 + signal number."""
    message = getattr(err, "message", "")
    typer.echo(f"{prog}: interrupted{': ' + message if message else ''}", err=True)
    return int(getattr(err, "exit_code", 130))


def _raise_interrupted(signum: int, _frame: Any) -> NoReturn:
    raise Interrupted(signum=signum)


def handle_sigterm() -> None:
    """Deliver SIGTERM (CI cancellation, ``kill``) like Ctrl-C, so the same cleanup and partial-report
    paths run instead of the process vanishing mid-write."""
    with contextlib.suppress(ValueError):  # only possible from the main thread
        signal.signal(signal.SIGTERM, _raise_interrupted)


def run_app(app: typer.Typer, prog: str) -> NoReturn:
    """Console-script entry: parse, run, and turn parser errors into one line with exit 2."""
    handle_sigterm()
    try:
        result = app(prog_name=prog, standalone_mode=False)
    except typer.TyperException as err:  # typer's (vendored click) usage errors
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `prog`: show help, as the parser would
            err.show()  # type: ignore[attr-defined]
            sys.exit(0)
        typer.echo(f"{prog}: error: {err.format_message()} (see '{prog} --help')", err=True)  # type: ignore[attr-defined]
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt) as err:  # outside a command; click wraps it in Abort
        sys.exit(report_interrupt(prog, err.__cause__ or err))
    sys.exit(result if isinstance(result, int) else 0)
