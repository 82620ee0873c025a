"""``python -m diagnostics.gate --base REV ...``: the gate without the moola-diag app around it."""

from __future__ import annotations

import typer

from diagnostics.gate.cli import gate_command

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(gate_command)

if __name__ == "__main__":
    app(prog_name="python -m diagnostics.gate")
