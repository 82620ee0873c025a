"""The one result type every check returns, and the verdict arithmetic over a list of them."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1  # bump when the JSON shape of CheckResult / Report changes


class Status(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"

    @property
    def severity(self) -> int:
        return {"SKIP": 0, "PASS": 1, "WARN": 2, "FAIL": 3}[self.value]


@dataclass(frozen=True)
class CheckResult:
    """One finding: what was measured, what this model/data/machine should give, and what to do about it.

    check     the registered check that produced it ("params", "leakage", ...)
    name      the finding within the check ("ratio", "identical_windows", "epoch_time", ...)
    status    PASS / WARN / FAIL / SKIP
    measured  human-readable measurement ("565,636 params / 174 samples = 3,251:1")
    expected  human-readable expectation or threshold ("<= 1,000:1 (WARN), <= 3,000:1 (FAIL)")
    hint      one-line fix ("use jade_compact (56,210 params, 323:1)"); empty when PASS
    evidence  short lines backing the verdict (rows, ids, per-layer counts); kept small
    values    machine-readable numbers for the JSON report (ratios, seconds, bytes)
    """

    check: str
    name: str
    status: Status
    measured: str
    expected: str
    hint: str = ""
    evidence: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The one place the rule lives: a PASS asks nothing of the user, so it carries no fix hint.
        # Checks may build the hint unconditionally; a PASS drops it here.
        if self.status is Status.PASS and self.hint:
            object.__setattr__(self, "hint", "")

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON form: numpy scalars become numbers and NaN/inf become null."""
        from moola.io import json_safe

        payload = asdict(self)
        payload["status"] = self.status.value
        payload["evidence"] = list(self.evidence)
        payload["values"] = json_safe(self.values)
        return payload


def skip(check: str, name: str, reason: str, **values: Any) -> CheckResult:
    """A SKIP carries its reason in ``measured`` so the table shows why nothing was measured."""
    return CheckResult(check, name, Status.SKIP, measured=reason, expected="-", values=dict(values))


def worst(results: Iterable[CheckResult]) -> Status:
    """The overall verdict: the most severe status (SKIP only if everything skipped or nothing ran)."""
    statuses = [r.status for r in results]
    return max(statuses, key=lambda s: s.severity) if statuses else Status.SKIP


def exit_code(results: Iterable[CheckResult]) -> int:
    """0 when nothing FAILs, 1 when something does (2 is reserved for user errors, raised as MoolaError)."""
    return 1 if worst(results) is Status.FAIL else 0


def plot_data(values: Any, limit: int = 400, ordered: bool = False, digits: int = 4) -> list[float]:
    """A small, JSON-safe copy of an array for a report's plot: at most ``limit`` finite values to
    ``digits`` significant digits. A distribution (``ordered=False``) keeps its quantiles (sorted, min and
    max included); a series (``ordered=True``) keeps evenly spaced points in order."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if not ordered:
        x = np.sort(x)
    if len(x) > limit:
        x = x[np.linspace(0, len(x) - 1, limit).round().astype(np.int64)]
    return [float(f"{v:.{digits}g}") for v in x]
