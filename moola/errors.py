"""The one user-facing error type.

Anything a user can fix (a bad file, a bad option, missing hardware they asked for) raises
``MoolaError`` with a one-line message naming the file/column/row or option. CLIs catch it at the
top, print the line and exit 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MoolaError(Exception):
    """A user mistake or unusable input: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
