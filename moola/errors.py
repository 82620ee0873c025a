"""The one user-facing error type.

Anything a user can fix (a bad file, a bad option, missing hardware they asked for) raises
``MoolaError`` with a one-line message naming the file/column/row or option. CLIs catch it at the
top, print the line and exit 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import traceback
from pathlib import Path


class MoolaError(Exception):
    """A user mistake or unusable input: printed as one line, exit code 2."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


def where_raised(exc: BaseException) -> str:
    """``file.py:LINE`` of the innermost frame in real source (not importlib's frozen internals)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised as a KeyboardInterrupt so every ``finally`` and cleanup still runs.

    ``message`` says what was kept (e.g. where partial results are); the exit code follows the shell
    convention 128 + signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.message = message
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
