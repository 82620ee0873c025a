"""Re-render a saved report: ``python -m diagnostics.render reports/report.json [--out report.html]``.

Reads a check report (``report.json``), a gate report (the gate's ``--json``) or the sensitivity tool's JSON,
and writes its HTML page (default: beside it, same stem, ``.html``), atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from moola.clitools import UserErrorCommand, run_app
from moola.errors import MoolaError

PROG = "python -m diagnostics.render"


def kind_of(payload: object) -> str:
    """Which report a JSON payload is: "check", "gate" or "sensitivity"."""
    if isinstance(payload, dict):
        if "results" in payload and "schema_version" in payload:
            return "check"
        if "timings" in payload and "status" in payload:
            return "gate"
        if "slow" in payload and "settings" in payload:  # a run cut short has no summary yet
            return "sensitivity"
    raise MoolaError("not a moola-diag check, gate or sensitivity report")


def render_file(path: Path, out: Path | None = None) -> Path:
    from diagnostics.render.report import write_html

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MoolaError(f"{path}: cannot read a JSON report ({exc})") from None
    try:
        kind = kind_of(payload)
    except MoolaError as exc:
        raise MoolaError(f"{path}: {exc}") from None
    return write_html(out or path.with_suffix(".html"), payload, kind)


def render_command(
    report: Annotated[
        Path, typer.Argument(help="A saved report JSON (check, gate or sensitivity).", dir_okay=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the page (default: beside it, .html).", dir_okay=False),
    ] = None,
) -> None:
    """Render a saved moola-diag report JSON as its self-contained HTML page."""
    typer.echo(f"wrote {render_file(report, out)}")


app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)
app.command(cls=UserErrorCommand)(render_command)


if __name__ == "__main__":
    run_app(app, PROG)
