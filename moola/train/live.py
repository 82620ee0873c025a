"""Cheap rules evaluated inside ``moola train`` after every epoch, on the epoch's row only.

Each rule reads numbers the trainer already has on the host at the end of an epoch (no extra host sync,
nothing per step). A rule that fires is written to ``findings.jsonl`` in the run directory at once
(atomically, the whole file each time) and handed to ``notify`` once; it does not fire again.

Rules: a non-finite loss; an epoch faster than the floor computed from the speeds measured at the start
(``record.epoch_floor_s``); a training loss that has not moved; on a GPU, parameters not on it or a GPU
that is mostly idle; the onset of overfitting (validation loss rising while training loss falls).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moola.io import atomic_write_text, json_safe

FLAT_AFTER_EPOCHS = 5  # judge "not moved" only once a few epochs have run
FLAT_REL_CHANGE = 0.01  # training loss range below 1% of its first value
IDLE_UTIL_PCT = 10.0  # NVML: a kernel ran less than this share of the time
IDLE_EPOCHS = 3  # ... for this many epochs in a row (the first epoch is warm-up and not counted)
OVERFIT_EPOCHS = 3  # validation loss above its minimum this many epochs in a row, training loss falling


@dataclass(frozen=True)
class Finding:
    epoch: int
    rule: str
    level: str  # "FAIL" | "WARN" | "INFO"
    message: str
    values: dict[str, Any] = field(default_factory=dict)


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


class LiveRules:
    """Training callback; ``configure`` (called by ``train_run``) gives it the run directory, the
    device and the epoch floor before training starts."""

    def __init__(self, notify: Callable[[Finding], None] | None = None):
        self.notify = notify
        self.path: Path | None = None
        self.floor_s: float | None = None
        self.device_type = "cpu"
        self.patience = 0
        self.findings: list[Finding] = []
        self.remeasure: Callable[[], float] | None = None
        self._fired: set[str] = set()

    def configure(
        self,
        run_dir: Path,
        device_type: str,
        floor_s: float | None,
        patience: int,
        remeasure: Callable[[], float] | None = None,
    ) -> None:
        """``remeasure()`` measures the machine again and returns the new floor; called once, before the
        first epoch would be called impossible."""
        self.path = Path(run_dir) / "findings.jsonl"
        self.device_type, self.floor_s, self.patience = device_type, floor_s, patience
        self.remeasure = remeasure

    def _fire(self, epoch: int, rule: str, level: str, message: str, **values: Any) -> None:
        if rule in self._fired:
            return
        self._fired.add(rule)
        finding = Finding(epoch, rule, level, message, values)
        self.findings.append(finding)
        if self.path is not None:
            lines = (json.dumps(json_safe(asdict(f)), sort_keys=True) for f in self.findings)
            atomic_write_text(self.path, "\n".join(lines) + "\n")
        if self.notify is not None:
            self.notify(finding)

    def on_train_start(self, state: Any) -> None:
        if self.device_type != "cuda":
            return
        off = sorted({str(p.device) for p in state.model.parameters() if p.device.type != "cuda"})
        if off:
            self._fire(
                0, "params_not_on_gpu", "FAIL", f"training on cuda with parameters on {', '.join(off)}"
            )

    def on_epoch_end(self, state: Any) -> None:
        rows = state.history
        row, epoch = rows[-1], rows[-1]["epoch"]
        for key in ("train_loss_running", "val_loss"):
            value = row.get(key)
            if value is not None and not _finite(value):
                self._fire(epoch, "nonfinite_loss", "FAIL", f"{key} is {value} at epoch {epoch}", key=key)
        t = row.get("train_time_s")
        if self.floor_s and _finite(t) and t < self.floor_s and self.remeasure is not None:
            self.floor_s = min(self.floor_s, self.remeasure())
            self.remeasure = None
        if self.floor_s and _finite(t) and t < self.floor_s:
            self._fire(
                epoch,
                "epoch_too_fast",
                "FAIL",
                f"epoch {epoch} trained in {t * 1e3:.1f} ms, below the {self.floor_s * 1e3:.1f} ms this machine "
                "needs for it: not a full epoch of training",
                train_time_s=t,
                floor_s=self.floor_s,
            )
        losses = [r.get("train_loss_running") for r in rows]
        if len(rows) >= FLAT_AFTER_EPOCHS and all(_finite(v) for v in losses) and losses[0]:
            moved = (max(losses) - min(losses)) / abs(losses[0])
            if moved < FLAT_REL_CHANGE:
                self._fire(
                    epoch,
                    "loss_not_moved",
                    "WARN",
                    f"training loss moved {moved:.2%} in {len(rows)} epochs (stuck at {losses[-1]:.4f}): "
                    "lr too low, frozen weights or labels the inputs cannot explain",
                    rel_change=moved,
                )
        if self.device_type == "cuda":
            utils = [r.get("gpu_util_pct") for r in rows[1:]]
            recent = utils[-IDLE_EPOCHS:]
            if len(recent) == IDLE_EPOCHS and all(_finite(u) and u < IDLE_UTIL_PCT for u in recent):
                self._fire(
                    epoch,
                    "gpu_idle",
                    "WARN",
                    f"GPU busy {max(recent):.0f}% or less for {IDLE_EPOCHS} epochs: the loop waits on the host "
                    "(data, Python, syncs)",
                    util_pct=recent,
                )
        self._overfitting(rows)

    def _overfitting(self, rows: list[dict[str, Any]]) -> None:
        val = [r.get("val_loss") for r in rows]
        train = [r.get("train_loss_running") for r in rows]
        if len(rows) <= OVERFIT_EPOCHS or not all(_finite(v) for v in val + train):
            return
        best = min(range(len(val)), key=val.__getitem__)
        tail = range(len(rows) - OVERFIT_EPOCHS, len(rows))
        rising = len(rows) - 1 - best >= OVERFIT_EPOCHS and all(val[i] > val[best] for i in tail)
        if rising and train[-1] < train[best]:
            onset = rows[best]["epoch"]
            stop = (
                f"early stopping keeps epoch {onset} and stops by epoch {onset + self.patience}"
                if self.patience > 0
                else "no early stopping: the last epoch's weights will be kept"
            )
            self._fire(
                rows[-1]["epoch"],
                "overfitting_onset",
                "INFO" if self.patience > 0 else "WARN",
                f"validation loss rising since epoch {onset} ({val[best]:.4f} -> {val[-1]:.4f}) while training "
                f"loss falls: overfitting; {stop}",
                onset_epoch=onset,
            )
