"""The terminal: one rich table of findings, the evidence behind each WARN/FAIL, and the verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from diagnostics import PROG
from diagnostics.render.common import (
    STATUS_STYLE,
    as_rows,
    evidence_lines,
    meta_line,
    split_line,
    verdict_line,
)
from diagnostics.result import CheckResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

Findings = Sequence[CheckResult | Mapping[str, Any]]


def render_table(results: Findings, title: str | None = None) -> Table:
    """One row per finding: check, finding, status (coloured), measured, expected, hint."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("measured", ratio=3)
    table.add_column("expected", ratio=2)
    table.add_column("hint", ratio=3)
    for r in as_rows(results):
        table.add_row(
            r["check"],
            r["name"],
            Text(r["status"], style=STATUS_STYLE[r["status"]]),
            r["measured"],
            r["expected"],
            r["hint"],
        )
    return table


def print_report(results: Findings, meta: Mapping[str, Any], console: Console) -> None:
    """Terminal output: the split and why, the table, the evidence behind each WARN/FAIL, and the verdict."""
    from rich.text import Text

    rows = as_rows(results)
    if split_line(meta):
        console.print(Text(split_line(meta)))
    if meta.get("training_sample"):  # what the training findings were measured on (diagnostics.sampling)
        console.print(Text(meta["training_sample"]))
    console.print(render_table(rows, title=f"{PROG} · {meta_line(meta)}" if meta else PROG))
    for r in rows:
        if r["status"] in ("WARN", "FAIL") and r["evidence"]:
            console.print(Text(f"{r['status']} {r['check']}/{r['name']}:", style=STATUS_STYLE[r["status"]]))
            for line in evidence_lines(r["evidence"]):
                console.print(Text(f"  {line}"))
    line = verdict_line(rows)
    console.print(Text(f"verdict {line}", style=STATUS_STYLE[line.split(":")[0]]))
