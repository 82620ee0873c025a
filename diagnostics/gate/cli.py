"""``moola-diag gate``: the pre-merge benchmark gate as a typer command (registered by diagnostics/cli.py).

Importing this module is cheap (typer only); torch is loaded by the worker subprocesses, never here.
Also runnable alone: ``python -m diagnostics.gate --base origin/main``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from diagnostics.gate.report import GateReport


def print_report(report: GateReport, console: Console) -> None:
    """The rich tables: one row per timing and per exact counter, then the verdict line."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(f"benchmark gate: base {report.base.spec} vs head {report.head.spec}"),
        title_justify="left",
    )
    for col, justify in (
        ("benchmark", "left"),
        ("base", "right"),
        ("head", "right"),
        ("head/base", "right"),
        ("95% CI / change", "right"),
        ("p (slower)", "right"),
        ("verdict", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"regression": "bold red", "improvement": "green", "unchanged": "", "missing": "bold yellow"}
    for tm in report.timings:
        t.add_row(
            escape(tm.name),
            f"{tm.base_median * 1e3:.1f} ms",
            f"{tm.head_median * 1e3:.1f} ms",
            f"{tm.ratio:.3f}",
            f"{tm.ci_low:.3f}-{tm.ci_high:.3f}",
            f"{tm.p_slower:.2g}",
            f"[{style[tm.verdict]}]{tm.verdict}[/]" if style[tm.verdict] else tm.verdict,
        )
    for c in report.counters:
        ratio = "" if c.base in (None, 0) or c.head is None else f"{c.head / c.base:.3f}"
        change = "" if c.change is None else f"{c.change:+.2%}"
        t.add_row(
            escape(c.name) + " (exact)",
            "—" if c.base is None else f"{int(c.base):,}",
            "—" if c.head is None else f"{int(c.head):,}",
            ratio,
            change,
            "",
            f"[{style[c.verdict]}]{c.verdict}[/]" if style[c.verdict] else c.verdict,
        )
    if t.row_count:
        console.print(t)
    for err in report.all_errors():
        console.print(f"[bold yellow]error:[/] {escape(err)}")
    verdict = {
        "pass": "[green]PASS[/]: no regression",
        "regression": "[bold red]REGRESSION[/]: " + escape("; ".join(report.regressions)),
        "error": "[bold yellow]ERROR[/]: could not measure, the gate fails closed (exit 2)",
    }[report.status]
    console.print(f"{verdict}  ({report.wall_s:.0f} s)")


def gate_command(
    base: Annotated[
        str,
        typer.Option(
            "--base", help="Baseline git revision (branch, tag or sha), e.g. origin/main.", metavar="REV"
        ),
    ],
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="Revision to check. HEAD = the committed HEAD (a dirty tree is ignored); WORKTREE = the "
            "current working tree with uncommitted changes.",
            metavar="REV",
        ),
    ] = "HEAD",
    factor: Annotated[
        float,
        typer.Option("--factor", help="Slowdown (head/base) that counts as a regression when significant."),
    ] = 1.10,
    rounds: Annotated[
        int, typer.Option("--rounds", help="Interleaved timed rounds per revision (after burn-in).", min=2)
    ] = 15,
    epochs_per_round: Annotated[
        int, typer.Option("--epochs-per-round", help="jade_compact training epochs timed per round.", min=1)
    ] = 4,
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha",
            help="Significance level of the one-sided Wilcoxon signed-rank test on the paired rounds.",
        ),
    ] = 0.01,
    model: Annotated[
        str, typer.Option("--model", help="Registered model to train.", metavar="NAME")
    ] = "jade_compact",
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Write the Markdown summary (for a PR comment) here.", dir_okay=False
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.", dir_okay=False)
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="Git repository (default: the one around the cwd).", file_okay=False),
    ] = None,
) -> None:
    """Pre-merge benchmark gate: time HEAD against a base revision, interleaved in subprocesses.

    Exit 0: no regression; 1: a significant slowdown beyond --factor, or any increase of an exact counter (parameters, FLOPs per epoch, bytes allocated per epoch); 2: bad revision/option, or it could not measure (a crashing benchmark never passes).
    """
    from rich.console import Console
    from rich.markup import escape

    from diagnostics.gate.core import run

    console = Console(width=None if Console().is_terminal else 140, stderr=False)
    report = run(
        base,
        head,
        factor,
        rounds=rounds,
        epochs_per_round=epochs_per_round,
        alpha=alpha,
        model=model,
        repo=repo,
        markdown=markdown,
        json_path=json_path,
        progress=lambda msg: console.print(f"[dim]{escape(msg)}[/]"),
    )
    print_report(report, console)
    if markdown is not None:
        console.print(f"wrote {markdown}")
    if report.exit_code:
        raise typer.Exit(report.exit_code)
