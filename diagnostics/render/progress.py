"""Progress of long work (check-all's checks and training run, the gate's rounds, the sensitivity trials):
a live rich display on a terminal, plain lines otherwise (CI logs keep one line per step)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from diagnostics import PROG

if TYPE_CHECKING:
    from rich.console import Console


@contextlib.contextmanager
def progress(
    console: Console, total: int | None = None, label: str = PROG, keep_lines: bool = False
) -> Iterator[Callable[[str], None]]:
    """``say(message)`` for each step. Not a terminal: each message is one dim line ``label: message``.
    A terminal: one live line with a spinner, the current message, the elapsed time and, given ``total``,
    a bar of the steps begun; ``keep_lines`` also prints each message above it (the gate's log)."""
    from rich.markup import escape

    prefix = f"{escape(label)}: " if label else ""
    if not console.is_terminal:
        yield lambda message: console.print(f"[dim]{prefix}{escape(message)}[/]", soft_wrap=True)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(escape(label) or "working", total=total)
        begun = [0]

        def say(message: str) -> None:
            if keep_lines:
                bar.console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)
            if total and begun[0]:
                bar.advance(task)  # the previous step is done
            begun[0] += 1
            bar.update(task, description=f"{prefix}{escape(message)}")

        yield say
