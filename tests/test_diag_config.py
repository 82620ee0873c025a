"""config check: legacy defaults, batch size / steps per epoch, learning rate, total updates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from diagnostics.checks.config import (
    batch_steps,
    check_config,
    learning_rate,
    legacy_default,
    moola_cli_default_model,
    total_steps,
)
from diagnostics.context import Thresholds
from diagnostics.loading import build_context
from diagnostics.result import Status
from moola.config import TrainConfig
from moola.models import get_spec

TH = Thresholds()


def by_name(results):
    return {r.name: r for r in results}


def test_clean_default_configuration_raises_no_alarm():
    found = by_name(check_config(build_context()))
    assert {r.status for r in found.values()} == {Status.PASS}, [
        r for r in found.values() if r.status is not Status.PASS
    ]
    assert found["batch_size"].values["steps_per_epoch"] == 9  # ceil(139 / 16)
    assert found["default_model"].values["default_model"] == TrainConfig().model
    assert not get_spec(TrainConfig().model).legacy


def test_legacy_cli_default_fails_and_legacy_selection_warns():
    ctx = build_context(model="enhanced_simple_lstm")
    ctx.cli_default_model = "enhanced_simple_lstm"
    found = by_name(check_config(ctx))
    assert found["default_model"].status is Status.FAIL
    assert "jade_compact" in found["default_model"].hint
    assert found["model"].status is Status.WARN
    assert "--model jade_compact" in found["model"].hint


def test_planted_bad_hyperparameters_each_warn():
    ctx = build_context()
    ctx.config = replace(ctx.config, batch_size=128, lr=0.1, n_epochs=3)
    found = by_name(check_config(ctx))
    assert found["batch_size"].status is Status.WARN
    assert "2 step(s)/epoch" in found["batch_size"].measured
    assert found["lr"].status is Status.WARN
    assert found["total_steps"].status is Status.WARN
    assert "6 updates" in found["total_steps"].measured


@pytest.mark.parametrize(
    ("n", "batch", "status"),
    [
        (139, 16, Status.PASS),
        (139, 34, Status.PASS),
        (139, 35, Status.WARN),
        (139, 70, Status.WARN),
        (10, 1, Status.PASS),
    ],
)
def test_batch_steps_thresholds(n, batch, status):
    assert batch_steps(n, batch, TH).status is status


@pytest.mark.parametrize(
    ("lr", "status"),
    [
        (1e-4, Status.PASS),
        (1e-5, Status.PASS),
        (1e-2, Status.PASS),
        (5e-6, Status.WARN),
        (0.05, Status.WARN),
        (0.0, Status.FAIL),
    ],
)
def test_learning_rate_range(lr, status):
    assert learning_rate(lr, TH).status is status


def test_total_steps_and_legacy_default_pure():
    assert total_steps(60, 9, 10, TH).status is Status.PASS
    warn = total_steps(10, 2, 10, TH)
    assert warn.status is Status.WARN and "100 epochs" in warn.hint
    assert total_steps(10_000, 100, 0, TH).status is Status.WARN
    assert total_steps(10_000, 100, 5, TH).status is Status.PASS
    assert legacy_default("x", False, "y").status is Status.PASS


def test_thresholds_come_from_the_context_not_module_constants():
    strict = replace(TH, min_steps_per_epoch=20, lr_max=1e-4, min_total_steps=10_000)
    assert batch_steps(139, 16, strict).status is Status.WARN  # 9 steps < 20
    assert learning_rate(1e-3, strict).status is Status.WARN
    assert total_steps(60, 9, 10, strict).status is Status.WARN


def test_default_model_is_read_from_the_moola_train_command(monkeypatch):
    import typer

    import moola.cli

    assert moola_cli_default_model() == TrainConfig().model
    legacy_app = typer.Typer()

    @legacy_app.command()
    def train(model: str = "enhanced_simple_lstm") -> None: ...

    @legacy_app.command()
    def models() -> None: ...

    monkeypatch.setattr(moola.cli, "app", legacy_app)
    assert moola_cli_default_model() == "enhanced_simple_lstm"
    found = by_name(check_config(build_context()))
    assert found["default_model"].status is Status.FAIL
    assert found["default_model"].values["config_default"] == TrainConfig().model


def test_cli_and_config_defaults_drifting_apart_warns():
    drift = legacy_default("jade", False, "jade_compact", config_default="jade_compact")
    assert drift.status is Status.WARN and "TrainConfig" in drift.hint
    assert legacy_default("jade_compact", False, "jade_compact", "jade_compact").status is Status.PASS
