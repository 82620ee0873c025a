"""``moola-diag gate``: the pre-merge benchmark gate as a typer command (registered by diagnostics/cli.py).

Importing this module is cheap (typer only); torch is loaded by the worker subprocesses, never here.
Also runnable alone: ``python -m diagnostics.gate --base origin/main``. ``gate bisect --good --bad``
is the same command with the action argument (diagnostics/cli.py registers one command).
A MoolaError ends the program once, in the root group/command of each app (moola.clitools).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from diagnostics.gate.report import GateReport


def print_report(report: GateReport, console: Console) -> None:
    """The terminal's tables and verdict line, rendered from the report's JSON like its Markdown and HTML."""
    from diagnostics.render.gate import print_table
    from diagnostics.render.report import as_saved

    print_table(as_saved(report.to_dict()), console)


def gate_command(
    action: Annotated[
        str | None,
        typer.Argument(
            help="Leave out to compare --base with --head; 'bisect' to find the first regressing commit"
            " between --good and --bad.",
            metavar="[bisect]",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="Baseline git revision (branch, tag or sha), e.g. origin/main.", metavar="REV"
        ),
    ] = None,
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="Revision to check. HEAD = the committed HEAD (a dirty tree is ignored); WORKTREE = the "
            "current working tree with uncommitted changes.",
            metavar="REV",
        ),
    ] = "HEAD",
    good: Annotated[
        str | None, typer.Option("--good", help="bisect: a revision without the regression.", metavar="REV")
    ] = None,
    bad: Annotated[
        str | None, typer.Option("--bad", help="bisect: a later revision with it.", metavar="REV")
    ] = None,
    bench: Annotated[
        str | None,
        typer.Option(
            "--bench",
            help="Regular expression (re.search) selecting benchmarks by name, e.g. 'TrainEpoch|Load';"
            " default: all of them.",
            metavar="REGEX",
        ),
    ] = None,
    factor: Annotated[
        float | None,
        typer.Option(
            "--factor",
            help="Override every benchmark's slowdown factor (head/base; default: each benchmark's"
            " gate_factor, 1.10 unless it sets one).",
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds",
            help="Interleaved samples per benchmark and revision, for every benchmark (default: each"
            " benchmark's gate_rounds, 15 unless it sets one).",
            min=2,
            show_default=False,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            help="Worker pairs per run, one after another, sharing the rounds: a process's own speed"
            " (code and heap layout) then averages out instead of biasing every pair.",
            min=1,
        ),
    ] = 2,
    burn_in: Annotated[
        int, typer.Option("--burn-in", help="Untimed samples per benchmark before the rounds.", min=0)
    ] = 1,
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha",
            help="Family-wise significance level over all timed benchmarks (one-sided paired Wilcoxon,"
            " Holm-adjusted).",
        ),
    ] = 0.05,
    quality_alpha: Annotated[
        float,
        typer.Option(
            "--quality-alpha",
            help="Family-wise significance level over the quality benchmarks (base and head as two"
            " independent samples of fresh-seed runs; one-sided Mann-Whitney, Holm-adjusted).",
        ),
    ] = 0.02,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Write the Markdown summary (for a PR comment) here.", dir_okay=False
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.", dir_okay=False)
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write a self-contained HTML page (each benchmark's samples and HL interval plotted) here.",
            dir_okay=False,
        ),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="Git repository (default: the one around the cwd).", file_okay=False),
    ] = None,
) -> None:
    """Pre-merge benchmark gate: every benchmark in benchmarks/, base vs head, interleaved in subprocesses.

    Exit 0: no regression; 1: a significant slowdown beyond the benchmark's factor, a significant drop in a quality benchmark's distribution beyond its threshold, or a counter (parameters, FLOPs, bytes allocated, peak live bytes, ...) beyond its tolerance and not accepted in benchmarks/accepted.json; 2: bad revision/option, a --bench that selects nothing, a malformed acceptance file, or it could not measure (a crashing benchmark never passes). `gate bisect --good REV --bad REV` names the first commit that regresses.
    """
    from rich.console import Console
    from rich.markup import escape

    from diagnostics.render.progress import progress
    from moola.errors import MoolaError

    console = Console(width=None if Console().is_terminal else 160, stderr=False)
    # A live line (spinner, current round, elapsed) under the log on a terminal; the plain log otherwise.
    display = progress(console, label="", keep_lines=True)

    options = {
        "bench": bench,
        "factor": factor,
        "rounds": rounds,
        "processes": processes,
        "burn_in": burn_in,
        "alpha": alpha,
        "quality_alpha": quality_alpha,
    }
    if action == "bisect":
        from diagnostics.gate.find import run as bisect_run
        from diagnostics.render.report import write_html
        from moola.io import atomic_write_json, atomic_write_text

        if good is None or bad is None:
            raise MoolaError("gate bisect needs --good REV and --bad REV")
        with display as say:
            result = bisect_run(good, bad, repo=repo, progress=say, **options)
        if result.report is not None:
            print_report(result.report, console)
        if result.first_bad:
            console.print(f"first regressing commit: {result.first_bad[:10]} {escape(result.subject)}")
        elif result.exit_code == 0:
            console.print(f"{escape(bad)} does not regress against {escape(good)}: nothing to bisect")
        if json_path is not None:
            atomic_write_json(json_path, result.to_dict())
        if markdown is not None and result.report is not None:
            atomic_write_text(markdown, result.report.to_markdown())
        if html is not None and result.report is not None:
            write_html(html, result.report.to_dict(), "gate")
        if result.exit_code:
            raise typer.Exit(result.exit_code)
        return
    if action is not None:
        raise MoolaError(f"unknown gate action {action!r} (the only one is 'bisect')")
    if base is None:
        raise MoolaError("gate needs --base REV (or: gate bisect --good REV --bad REV)")
    from diagnostics.gate.core import run

    with display as say:
        report = run(base, head, repo=repo, markdown=markdown, json_path=json_path, progress=say, **options)
    print_report(report, console)
    if html is not None:
        from diagnostics.render.report import write_html

        write_html(html, report.to_dict(), "gate")
    for path in (markdown, html):
        if path is not None:
            console.print(f"wrote {path}")
    if report.exit_code:
        raise typer.Exit(report.exit_code)
