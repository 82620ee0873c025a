"""Progress: plain lines when the output is not a terminal (CI logs), a live display when it is."""

from __future__ import annotations

import io

from rich.console import Console

from diagnostics.render.progress import progress


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with progress(Console(file=out, force_terminal=False, width=40), total=2) as say:
        say("running sanity ...")
        say("a message far longer than the forty columns of this console, kept on one line")
    assert out.getvalue().splitlines() == [
        "moola-diag: running sanity ...",
        "moola-diag: a message far longer than the forty columns of this console, kept on one line",
    ]


def test_a_live_display_on_a_terminal_and_no_plain_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with progress(console, total=3) as say:
        for name in ("config", "params", "data"):
            say(f"running {name} ...")
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: a live display, redrawn in place
    assert "running data ..." in text and "2/3" in text  # the current step and the steps done
    assert "moola-diag: running config ...\n" not in text  # the CI line is not printed on a terminal


def test_keep_lines_prints_the_log_above_the_live_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with progress(console, label="", keep_lines=True) as say:
        say("base 0123456789: 27 benchmarks")
    assert "base 0123456789: 27 benchmarks\n" in out.getvalue()
