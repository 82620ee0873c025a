"""Curve health of a run's per-epoch figures, and the reader's format rules, on hand-made records (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.audit import curve
from diagnostics.audit.reader import RunRecord, normalise, read_csv
from moola.errors import MoolaError


def _record(train, val, best=None, patience=0, stopped=False):
    epochs = [
        {"epoch": i, "train_loss_running": t, "val_loss": v}
        for i, (t, v) in enumerate(zip(train, val, strict=True), 1)
    ]
    summary = {"best_epoch": best or len(epochs), "stopped_early": stopped}
    config = {"n_epochs": 20, "early_stopping_patience": patience}
    return RunRecord(Path("run"), "moola", epochs, config=config, summary=summary, model_path=Path("m"))


def test_a_falling_curve_is_healthy():
    rec = _record([0.7 - 0.05 * i for i in range(8)], [0.7 - 0.04 * i for i in range(8)])
    statuses = [r.status.value for r in curve.curve_findings(rec)]
    assert statuses == ["PASS"] * 4


def test_a_flat_loss_warns_and_a_growing_one_fails():
    flat = _record([0.6931] * 6, [0.69] * 6)
    assert curve.loss_trend(flat).status.value == "WARN"
    growing = _record([0.7, 0.5, 0.4, 0.5, 0.7, 0.9], [0.7] * 6)
    assert curve.loss_trend(growing).status.value == "FAIL"


def test_weights_kept_past_the_overfitting_onset_warn_and_early_stopping_passes():
    train = [0.7 - 0.05 * i for i in range(10)]
    val = [0.7, 0.6, 0.5, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    kept_last = curve.overfitting(_record(train, val))
    assert kept_last.status.value == "WARN" and kept_last.values["onset_epoch"] == 4
    stopped = curve.overfitting(_record(train, val, best=4, patience=6, stopped=True))
    assert stopped.status.value == "PASS" and "kept epoch 4" in stopped.measured
    where = curve.stopping(_record(train, val, best=4, patience=6, stopped=True))
    assert "stopped at epoch 10 of 20, keeping epoch 4" in where.measured


def test_a_nan_loss_fails_naming_the_first_epoch():
    rec = _record([0.7, 0.6, float("nan"), float("nan")], [0.7, 0.6, 0.5, 0.4])
    found = curve.nonfinite(rec)
    assert found.status.value == "FAIL" and "from epoch 3" in found.measured


def test_other_loggers_names_map_to_running_figures_and_bad_cells_are_one_line(tmp_path):
    row = normalise({"epoch": 0, "loss": "0.5", "accuracy": 0.7, "val_accuracy": 0.6}, "f", epoch_base=0)
    assert row == {"epoch": 1, "train_loss_running": 0.5, "train_acc_running": 0.7, "val_acc": 0.6}
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,0.5\n1,oops\n")
    with pytest.raises(MoolaError, match=r"log.csv, line 3, 'loss': expected a number"):
        read_csv(path)
    path.write_text("step,loss\n0,0.5\n")
    with pytest.raises(MoolaError, match="'epoch' column"):
        read_csv(path)
