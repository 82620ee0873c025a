"""Training configuration vs this data set: model choice, batch size, steps, learning rate.

Expectations are derived from the data size: a batch of half the training set gives two noisy updates
an epoch; 60 epochs of 2 steps is 120 updates, too few for AdamW at 1e-4 to move a randomly initialised LSTM.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from diagnostics.registry import register
from diagnostics.result import CheckResult, Status

if TYPE_CHECKING:
    from diagnostics.context import DiagContext, Thresholds

CHECK = "config"


def moola_cli_default_model() -> str:
    """The model ``moola train`` trains when --model is omitted, read from the CLI itself (torch-free)."""
    import typer

    from moola.cli import app

    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return str(next(p.default for p in train.params if p.name == "model"))


def legacy_default(
    default_model: str, legacy: bool, alternative: str | None, config_default: str | None = None
) -> CheckResult:
    """The moola CLI's default model must not be a legacy one: everyone who omits --model trains it.

    ``default_model`` is read from the ``moola train`` command itself; ``config_default`` is
    ``TrainConfig().model``, what the Python API trains. The two drifting apart is its own bug.
    """
    expected = "a non-legacy registered model, the same for `moola train` and TrainConfig"
    values = {"default_model": default_model, "legacy": legacy, "config_default": config_default}
    if legacy:
        return CheckResult(
            CHECK,
            "default_model",
            Status.FAIL,
            f"`moola train` defaults to {default_model} (legacy)",
            expected,
            hint=f"make {alternative} the default of `moola train --model` and TrainConfig.model"
            if alternative
            else "register a non-legacy model",
            values=values,
        )
    if config_default is not None and config_default != default_model:
        return CheckResult(
            CHECK,
            "default_model",
            Status.WARN,
            f"`moola train` defaults to {default_model}, TrainConfig.model to {config_default}",
            expected,
            hint="derive the CLI default from TrainConfig so both train the same model",
            values=values,
        )
    return CheckResult(
        CHECK,
        "default_model",
        Status.PASS,
        f"`moola train` defaults to {default_model}",
        expected,
        values=values,
    )


def legacy_selected(model: str, legacy: bool, alternative: str | None) -> CheckResult:
    if legacy:
        return CheckResult(
            CHECK,
            "model",
            Status.WARN,
            f"{model} is a legacy model",
            "a non-legacy registered model",
            hint=f"use --model {alternative}" if alternative else "",
            values={"model": model, "legacy": True},
        )
    return CheckResult(CHECK, "model", Status.PASS, f"{model} (not legacy)", "a non-legacy registered model")


def batch_steps(n_train: int, batch_size: int, thresholds: Thresholds) -> CheckResult:
    """Steps per epoch = ceil(N_train / batch); WARN below the minimum or at half the training set."""
    k = thresholds.min_steps_per_epoch
    steps = math.ceil(n_train / batch_size) if batch_size > 0 else 0
    # the largest batch that still gives k steps: ceil(n / b) >= k  <=>  b < n / (k - 1)
    max_batch = max(1, math.ceil(n_train / (k - 1)) - 1) if k > 1 else n_train
    values = {"n_train": n_train, "batch_size": batch_size, "steps_per_epoch": steps}
    measured = f"batch {batch_size} on {n_train} training windows = {steps} step(s)/epoch"
    expected = f">= {k} steps/epoch (batch <= {max_batch})"
    if batch_size < 1:
        status, hint = Status.FAIL, "batch_size must be >= 1"
    elif batch_size >= n_train / 2:
        status = Status.WARN
        hint = f"use batch_size <= {max_batch}: one or two updates an epoch give little gradient noise and few updates"
    else:
        status = Status.WARN if steps < k else Status.PASS
        hint = f"use batch_size <= {max_batch}"
    return CheckResult(CHECK, "batch_size", status, measured, expected, hint=hint, values=values)


def learning_rate(lr: float, thresholds: Thresholds) -> CheckResult:
    lo, hi = thresholds.lr_min, thresholds.lr_max
    measured = f"AdamW lr {lr:g}"
    expected = f"{lo:g} <= lr <= {hi:g}"
    if lr <= 0 or not math.isfinite(lr):
        return CheckResult(
            CHECK,
            "lr",
            Status.FAIL,
            measured,
            expected,
            hint="lr must be a positive number",
            values={"lr": lr},
        )
    if lr < lo:
        return CheckResult(
            CHECK,
            "lr",
            Status.WARN,
            measured,
            expected,
            hint=f"raise lr towards 1e-4..1e-3 (at {lr:g} weights barely move)",
            values={"lr": lr},
        )
    if lr > hi:
        return CheckResult(
            CHECK,
            "lr",
            Status.WARN,
            measured,
            expected,
            hint="lower lr to <= 1e-3: LSTMs under AdamW diverge or saturate above 1e-2",
            values={"lr": lr},
        )
    return CheckResult(CHECK, "lr", Status.PASS, measured, expected, values={"lr": lr})


def total_steps(n_epochs: int, steps_per_epoch: int, patience: int, thresholds: Thresholds) -> CheckResult:
    lo, hi = thresholds.min_total_steps, thresholds.max_total_steps
    total = n_epochs * steps_per_epoch
    measured = f"{n_epochs} epochs x {steps_per_epoch} steps = {total:,} updates"
    expected = f"{lo:,}..{hi:,} updates"
    values = {
        "n_epochs": n_epochs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "patience": patience,
    }
    if total < lo:
        need = math.ceil(lo / max(steps_per_epoch, 1))
        return CheckResult(
            CHECK, "total_steps", Status.WARN, measured, expected,
            hint=f"train >= {need} epochs (or use a smaller batch) so the optimizer takes >= {lo} steps",
            values=values,
        )  # fmt: skip
    if total > hi and patience <= 0:
        return CheckResult(
            CHECK, "total_steps", Status.WARN, measured, expected,
            hint="enable early stopping (early_stopping_patience > 0) or cut n_epochs: this only overfits 174-window data",
            values=values,
        )  # fmt: skip
    return CheckResult(CHECK, "total_steps", Status.PASS, measured, expected, values=values)


@register("config")
def check_config(ctx: DiagContext) -> list[CheckResult]:
    from diagnostics.checks.params import fitting_models, registry_counts, training_samples
    from moola.config import TrainConfig
    from moola.models import get_spec, list_models

    # The suggested replacement is a registered non-legacy model that fits this data's size.
    n_classes = ctx.dataset.n_classes
    counts = ctx.memo(f"params:registry:{n_classes}", lambda: registry_counts(n_classes))
    fits = fitting_models(counts, training_samples(ctx)[0], ctx.thresholds, exclude="")
    alternative = fits[0][0] if fits else next((s.name for s in list_models() if not s.legacy), None)
    cfg = ctx.config
    default = get_spec(ctx.cli_default_model)  # read from the `moola train` command by build_context
    selected = get_spec(ctx.model_name)
    n_train = len(ctx.train_idx)
    th = ctx.thresholds
    batch = batch_steps(n_train, cfg.batch_size, th)
    return [
        legacy_default(default.name, default.legacy, alternative, TrainConfig().model),
        legacy_selected(selected.name, selected.legacy, alternative),
        batch,
        learning_rate(cfg.lr, th),
        total_steps(cfg.n_epochs, batch.values["steps_per_epoch"], cfg.early_stopping_patience, th),
    ]
