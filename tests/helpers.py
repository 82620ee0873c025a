"""Assertions shared by the CLI tests."""

from __future__ import annotations

from typing import Any


def one_line_error(result: Any, prog: str) -> str:
    """The single stderr line a user mistake must produce (``<prog>: error: ...``), with no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]
