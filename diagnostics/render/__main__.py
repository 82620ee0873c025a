"""Re-render a saved report: ``python -m diagnostics.render reports/report.json [--format html|md|text]``.

Reads a check report (``report.json``), a gate report (the gate's ``--json``) or the sensitivity tool's JSON.
``html`` (default) and ``md`` are written atomically (default: beside it, same stem), ``text`` (the terminal's
table) is printed. Every format comes from the one rendering layer the commands themselves use.
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


FORMATS = ("html", "md", "text")


def render_file(path: Path, out: Path | None = None, fmt: str = "html") -> Path | str:
    """Write the ``html``/``md`` rendering of a saved report (its path), or return the ``text`` one."""
    from moola.io import atomic_write_text

    if fmt not in FORMATS:
        raise MoolaError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MoolaError(f"{path}: cannot read a JSON report ({exc})") from None
    try:
        kind = kind_of(payload)
    except MoolaError as exc:
        raise MoolaError(f"{path}: {exc}") from None
    from diagnostics.render.report import render_payload

    rendered = render_payload(payload, kind, fmt)
    if fmt == "text":
        return rendered
    target = out or path.with_suffix(f".{fmt}")
    if target.resolve() == path.resolve():
        raise MoolaError(f"--out {target}: that is the report being read; choose another file")
    return atomic_write_text(target, rendered)


def render_command(
    report: Annotated[
        Path, typer.Argument(help="A saved report JSON (check, gate or sensitivity).", dir_okay=False)
    ],
    fmt: Annotated[
        str,
        typer.Option("--format", help="html or md (written to a file) or text (printed).", metavar="FORMAT"),
    ] = "html",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write html/md (default: beside it, .html/.md).", dir_okay=False),
    ] = None,
) -> None:
    """Render a saved moola-diag report JSON as its HTML page, its Markdown, or the terminal's table."""
    result = render_file(report, out, fmt)
    typer.echo(result if isinstance(result, str) else f"wrote {result}", nl=not isinstance(result, str))


app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)
app.command(cls=UserErrorCommand)(render_command)


if __name__ == "__main__":
    run_app(app, PROG)
