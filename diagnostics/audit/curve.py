"""Curve health of a run's per-epoch figures: non-finite values, a flat or growing loss, the onset of
overfitting, and where (early) stopping stopped. Pure functions of a RunRecord; no torch."""

from __future__ import annotations

import math
from typing import Any

from diagnostics.audit.reader import RunRecord
from diagnostics.result import CheckResult, Status, skip

CHECK = "audit"
FLAT_REL_CHANGE = 0.01  # training loss moved less than 1% of its first value: it did not learn
GROWTH_FACTOR = 1.5  # training loss ending 1.5x above its minimum: diverging
OVERFIT_MARGIN = 0.05  # kept weights whose val_loss is 5% above the run's minimum: kept past the onset
MIN_EPOCHS = 5  # fewer epochs than this cannot show a trend


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def nonfinite(record: RunRecord) -> CheckResult:
    bad = [
        (r["epoch"], k, r[k])
        for r in record.epochs
        for k in ("train_loss_running", "val_loss", "val_acc", "train_acc_running")
        if k in r and r[k] is not None and not finite(r[k])
    ]
    expected = "finite losses and accuracies in every epoch"
    if bad:
        e, k, v = bad[0]
        return CheckResult(
            CHECK,
            "curve/nonfinite",
            Status.FAIL,
            f"{k} is {v} from epoch {e} ({len(bad)} value(s))",
            expected,
            hint="the run diverged: lower the lr, clip gradients, check the inputs for NaN/inf",
            evidence=tuple(f"epoch {e}: {k} = {v}" for e, k, v in bad[:8]),
            values={"first_epoch": e},
        )
    return CheckResult(
        CHECK, "curve/nonfinite", Status.PASS, f"{len(record.epochs)} epoch(s), all finite", expected
    )


def loss_trend(record: RunRecord) -> CheckResult:
    loss = [r.get("train_loss_running") for r in record.epochs]
    loss = [v for v in loss if finite(v)]
    if len(loss) < MIN_EPOCHS:
        return skip(
            CHECK,
            "curve/loss_trend",
            f"{len(loss)} epoch(s) with a finite training loss: too few for a trend",
        )
    first, last, low = loss[0], loss[-1], min(loss)
    moved = (first - low) / abs(first) if first else 0.0
    values = {"first": first, "last": last, "min": low, "rel_drop": moved}
    measured = f"training loss {first:.4f} -> {last:.4f} (min {low:.4f}) over {len(loss)} epochs"
    expected = f"falls by >= {FLAT_REL_CHANGE:.0%} and ends < {GROWTH_FACTOR:g}x its minimum"
    if last > GROWTH_FACTOR * low:
        return CheckResult(
            CHECK,
            "curve/loss_trend",
            Status.FAIL,
            measured + ": growing",
            expected,
            hint="the optimisation diverges: lower the lr",
            values=values,
        )
    if moved < FLAT_REL_CHANGE:
        return CheckResult(
            CHECK,
            "curve/loss_trend",
            Status.WARN,
            measured + ": flat",
            expected,
            hint="the model did not learn: lr too low, frozen weights, or labels the inputs cannot explain",
            values=values,
        )
    return CheckResult(CHECK, "curve/loss_trend", Status.PASS, measured, expected, values=values)


def overfitting(record: RunRecord) -> CheckResult:
    val = [r.get("val_loss") for r in record.epochs]
    if sum(finite(v) for v in val) < MIN_EPOCHS:
        return skip(CHECK, "curve/overfitting", "too few epochs with a validation loss")
    idx = [i for i, v in enumerate(val) if finite(v)]
    best = min(idx, key=lambda i: val[i])
    onset = record.epochs[best]["epoch"]
    kept = record.kept_index()
    kept = idx[-1] if kept is None else kept
    after = len(idx) - 1 - idx.index(best)
    values = {"onset_epoch": onset, "min_val_loss": val[best], "kept_epoch": record.epochs[kept]["epoch"]}
    expected = f"the kept weights' val_loss within {OVERFIT_MARGIN:.0%} of the run's minimum"
    if after == 0:
        return CheckResult(
            CHECK,
            "curve/overfitting",
            Status.PASS,
            f"validation loss still falling at the last epoch ({onset}): no overfitting yet",
            expected,
            values=values,
        )
    kept_loss = val[kept]
    measured = (
        f"validation loss lowest at epoch {onset} ({val[best]:.4f}), overfitting after it for {after} epoch(s); "
        f"kept epoch {record.epochs[kept]['epoch']} ({kept_loss:.4f})"
    )
    if finite(kept_loss) and kept_loss > val[best] * (1 + OVERFIT_MARGIN):
        return CheckResult(
            CHECK,
            "curve/overfitting",
            Status.WARN,
            measured,
            expected,
            hint=f"keep the epoch-{onset} weights (early stopping on val_loss) or stop earlier",
            values=values,
        )
    return CheckResult(CHECK, "curve/overfitting", Status.PASS, measured, expected, values=values)


def stopping(record: RunRecord) -> CheckResult:
    cfg = record.config or {}
    planned, patience = cfg.get("n_epochs"), cfg.get("early_stopping_patience")
    n = len(record.epochs)
    last = record.epochs[-1]["epoch"] if record.epochs else 0
    summary = record.summary or {}
    if record.kind != "moola":
        return CheckResult(
            CHECK,
            "curve/stopping",
            Status.PASS,
            f"the log ends at epoch {last}",
            "-",
            values={"last_epoch": last},
        )
    if not record.complete:
        measured = f"cut short at epoch {last} of {planned}: early stopping had not fired"
    elif summary.get("stopped_early"):
        measured = (
            f"early stopping (patience {patience}) stopped at epoch {last} of {planned}, keeping epoch "
            f"{summary.get('best_epoch')}"
        )
    else:
        measured = f"ran all {n} of {planned} epochs; kept epoch {summary.get('best_epoch')}"
    values = {
        "last_epoch": last,
        "planned": planned,
        "patience": patience,
        "best_epoch": summary.get("best_epoch"),
    }
    return CheckResult(
        CHECK, "curve/stopping", Status.PASS, measured, "where training stopped, and why", values=values
    )


def curve_findings(record: RunRecord) -> list[CheckResult]:
    return [nonfinite(record), loss_trend(record), overfitting(record), stopping(record)]
