"""The audit's context: the run as recorded, what was re-measured, and the helpers every finding shares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from diagnostics.audit.reader import RunRecord
from diagnostics.audit.replay import Replay
from diagnostics.context import Thresholds
from diagnostics.result import CheckResult

CHECK = "audit"


@dataclass
class AuditContext:
    record: RunRecord
    replay: Replay
    model_name: str | None = None  # the run's model, or --model for a foreign run
    thresholds: Thresholds = field(default_factory=Thresholds)
    # Reproduce tolerance: |delta loss| within this share (x10 across devices), accuracy within one window.
    loss_rtol: float = 1e-4


def relabel(result: CheckResult, name: str) -> CheckResult:
    """A finding computed by another check's function, reported under the audit."""
    return replace(result, check=CHECK, name=name)


def kept_row(record: RunRecord) -> dict[str, Any]:
    i = record.kept_index()
    if i is not None:
        return record.epochs[i]
    return record.epochs[-1] if record.epochs else {}


def reported(record: RunRecord) -> dict[str, Any]:
    """The figures the run reports: summary.json's metrics (schema 1 spells train_* without a suffix)."""
    if record.summary is None:
        return dict(kept_row(record))
    metrics = dict(record.summary.get("metrics") or {})
    for short in ("train_loss", "train_acc"):
        if short in metrics and f"{short}_running" not in metrics:
            metrics[f"{short}_running"] = metrics.pop(short)
    return metrics
