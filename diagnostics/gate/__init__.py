"""Pre-merge benchmark gate: ``run(base, head)`` -> ``GateReport`` (exit 0 pass, 1 regression, 2 error).

``run`` lives in :mod:`diagnostics.gate.core`, the statistics in :mod:`diagnostics.gate.stats`, the
measurement subprocess in :mod:`diagnostics.gate.worker`, the typer command in :mod:`diagnostics.gate.cli`.
Nothing here imports torch.
"""

from __future__ import annotations

from diagnostics.gate.core import WORKTREE, run
from diagnostics.gate.report import GateReport, RevisionInfo

__all__ = ["WORKTREE", "GateReport", "RevisionInfo", "run"]
