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
    from diagnostics.context import DiagContext

CHECK = "config"
MIN_STEPS_PER_EPOCH = 5
LR_RANGE = (1e-5, 1e-2)  # AdamW on small LSTMs: below barely moves in a few hundred steps, above diverges
MIN_TOTAL_STEPS = 200
MAX_TOTAL_STEPS = 200_000


def legacy_default(default_model: str, legacy: bool, alternative: str | None) -> CheckResult:
    """The moola CLI's default model must not be a legacy one: everyone who omits --model trains it."""
    if legacy:
        return CheckResult(
            CHECK,
            "default_model",
            Status.FAIL,
            f"moola's default model is {default_model} (legacy)",
            "a non-legacy registered model",
            hint=f"set TrainConfig.model to {alternative}" if alternative else "register a non-legacy model",
            values={"default_model": default_model, "legacy": True},
        )
    return CheckResult(
        CHECK,
        "default_model",
        Status.PASS,
        f"moola's default model is {default_model}",
        "a non-legacy registered model",
        values={"default_model": default_model, "legacy": False},
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


def batch_steps(n_train: int, batch_size: int) -> CheckResult:
    """Steps per epoch = ceil(N_train / batch); WARN if the batch is half the training set or more."""
    steps = math.ceil(n_train / batch_size) if batch_size > 0 else 0
    # the largest batch that still gives MIN_STEPS_PER_EPOCH steps: ceil(n / b) >= k  <=>  b < n / (k - 1)
    max_batch = max(1, math.ceil(n_train / (MIN_STEPS_PER_EPOCH - 1)) - 1)
    values = {"n_train": n_train, "batch_size": batch_size, "steps_per_epoch": steps}
    measured = f"batch {batch_size} on {n_train} training windows = {steps} step(s)/epoch"
    expected = f">= {MIN_STEPS_PER_EPOCH} steps/epoch (batch <= {max_batch})"
    if batch_size < 1:
        return CheckResult(
            CHECK,
            "batch_size",
            Status.FAIL,
            measured,
            expected,
            hint="batch_size must be >= 1",
            values=values,
        )
    if batch_size >= n_train / 2:
        return CheckResult(
            CHECK,
            "batch_size",
            Status.WARN,
            measured,
            expected,
            hint=f"use batch_size <= {max_batch}: one or two updates an epoch "
            "give little gradient noise and few updates",
            values=values,
        )
    status = Status.WARN if steps < MIN_STEPS_PER_EPOCH else Status.PASS
    hint = f"use batch_size <= {max_batch}" if status is Status.WARN else ""
    return CheckResult(CHECK, "batch_size", status, measured, expected, hint=hint, values=values)


def learning_rate(lr: float) -> CheckResult:
    lo, hi = LR_RANGE
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


def total_steps(n_epochs: int, steps_per_epoch: int, patience: int) -> CheckResult:
    total = n_epochs * steps_per_epoch
    measured = f"{n_epochs} epochs x {steps_per_epoch} steps = {total:,} updates"
    expected = f"{MIN_TOTAL_STEPS:,}..{MAX_TOTAL_STEPS:,} updates"
    values = {
        "n_epochs": n_epochs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "patience": patience,
    }
    if total < MIN_TOTAL_STEPS:
        need = math.ceil(MIN_TOTAL_STEPS / max(steps_per_epoch, 1))
        return CheckResult(
            CHECK, "total_steps", Status.WARN, measured, expected,
            hint=f"train >= {need} epochs (or use a smaller batch) so the optimizer takes >= {MIN_TOTAL_STEPS} steps",
            values=values,
        )  # fmt: skip
    if total > MAX_TOTAL_STEPS and patience <= 0:
        return CheckResult(
            CHECK, "total_steps", Status.WARN, measured, expected,
            hint="enable early stopping (early_stopping_patience > 0) or cut n_epochs: this only overfits 174-window data",
            values=values,
        )  # fmt: skip
    return CheckResult(CHECK, "total_steps", Status.PASS, measured, expected, values=values)


@register("config")
def check_config(ctx: DiagContext) -> list[CheckResult]:
    from diagnostics.checks.params import fitting_models, registry_counts, training_samples
    from moola.models import get_spec, list_models

    # The suggested replacement is a registered non-legacy model that fits this data's size.
    n_classes = ctx.dataset.n_classes
    counts = ctx.memo(f"params:registry:{n_classes}", lambda: registry_counts(n_classes))
    fits = fitting_models(counts, training_samples(ctx)[0], ctx.thresholds, exclude="")
    alternative = fits[0][0] if fits else next((s.name for s in list_models() if not s.legacy), None)
    cfg = ctx.config
    default = get_spec(ctx.cli_default_model)
    selected = get_spec(ctx.model_name)
    n_train = len(ctx.train_idx)
    batch = batch_steps(n_train, cfg.batch_size)
    return [
        legacy_default(default.name, default.legacy, alternative),
        legacy_selected(selected.name, selected.legacy, alternative),
        batch,
        learning_rate(cfg.lr),
        total_steps(cfg.n_epochs, batch.values["steps_per_epoch"], cfg.early_stopping_patience),
    ]
