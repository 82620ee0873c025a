"""Pre-merge benchmark gate: ``run(base, head)`` -> ``GateReport`` (exit 0 pass, 1 regression, 2 error).

``run`` lives in :mod:`diagnostics.gate.core`, ``gate bisect``'s ``run`` in :mod:`diagnostics.gate.find`
(not ``bisect.py``: the worker runs as a script from this folder, where that name would shadow the
standard library's ``bisect``),
the statistics in :mod:`diagnostics.gate.stats`, the measurement subprocess (and the benchmark discovery
shared with the pytest-benchmark driver) in :mod:`diagnostics.gate.worker`, the typer command in
:mod:`diagnostics.gate.cli`, the power/false-alarm measurement in :mod:`diagnostics.gate.sensitivity`.
Nothing here imports torch, and the names below load on first use so ``moola-diag --help`` (which imports
the typer command) does not pay for numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WORKTREE": "diagnostics.gate.core",
    "run": "diagnostics.gate.core",
    "GateReport": "diagnostics.gate.report",
    "RevisionInfo": "diagnostics.gate.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
