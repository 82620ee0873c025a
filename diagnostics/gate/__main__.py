"""``python -m diagnostics.gate --base REV ...``: the gate without the moola-diag app around it."""

from __future__ import annotations

import typer

from diagnostics.gate.cli import gate_command
from moola.clitools import UserErrorCommand, run_app

PROG = "python -m diagnostics.gate"
# The same root group as moola-diag's: user errors end here as one line, exit 2.
app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)
app.command(cls=UserErrorCommand)(gate_command)

if __name__ == "__main__":
    run_app(app, PROG)
