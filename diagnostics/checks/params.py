"""Capacity vs data: trainable parameters per training sample.

A 565,636-parameter model fitted on 174 windows has ~3,251 free parameters per example: it can memorize
the training set many times over, so its validation numbers are noise. The expectation is a ratio
threshold, and the fix is a concrete registered model that fits this data set.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from diagnostics.registry import register
from diagnostics.result import CheckResult, Status

if TYPE_CHECKING:
    from torch import nn

    from diagnostics.context import DiagContext, Thresholds

_LSTM_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)_(l\d+(?:_reverse)?)$")


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_breakdown(model: nn.Module) -> list[tuple[str, int]]:
    """Trainable parameters per layer: one row per module holding parameters, LSTMs split per layer
    and direction (``encoder.l1_reverse``), in registration order."""
    rows: dict[str, int] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        module, _, leaf = name.rpartition(".")
        match = _LSTM_PARAM.match(leaf)
        key = f"{module}.{match.group(3)}" if match else (module or leaf)
        rows[key] = rows.get(key, 0) + p.numel()
    return list(rows.items())


def format_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}:1"


def ratio_status(ratio: float, thresholds: Thresholds) -> Status:
    if ratio > thresholds.params_fail_ratio:
        return Status.FAIL
    if ratio > thresholds.params_warn_ratio:
        return Status.WARN
    return Status.PASS


def training_samples(ctx: DiagContext) -> tuple[int, str]:
    """N for the ratio and where it comes from.

    For one data set (default or --data) N is every labeled window -- the number people quote
    ("565,636 / 174") and an upper bound on what any split trains on; for --train/--test it is the
    training file's rows.
    """
    if ctx.split_kind == "given":
        return len(ctx.train_idx), "rows of the --train file"
    return len(
        ctx.dataset
    ), f"labeled windows in the data set (the {ctx.split_kind} split trains on {len(ctx.train_idx)})"


def registry_counts(n_classes: int) -> list[tuple[Any, int]]:
    """(ModelSpec, trainable params) for every registered model built for this many classes."""
    from moola.models import get_model, list_models

    return [(spec, trainable_parameters(get_model(spec.name, n_classes=n_classes))) for spec in list_models()]


def fitting_models(
    counts: list[tuple[Any, int]], n_samples: int, thresholds: Thresholds, exclude: str
) -> list[tuple[str, int, float]]:
    """Non-legacy registered models under the WARN ratio, smallest ratio first."""
    fits = [
        (spec.name, n, n / n_samples)
        for spec, n in counts
        if not spec.legacy and spec.name != exclude and n / n_samples <= thresholds.params_warn_ratio
    ]
    return sorted(fits, key=lambda row: row[2])


@register("params")
def check_params(ctx: DiagContext) -> list[CheckResult]:
    from moola.models import get_model

    th = ctx.thresholds
    n_classes = ctx.dataset.n_classes
    model = ctx.memo(
        f"params:model:{ctx.model_name}:{n_classes}", lambda: get_model(ctx.model_name, n_classes=n_classes)
    )
    n_params = trainable_parameters(model)
    n_samples, n_source = training_samples(ctx)
    ratio = n_params / max(n_samples, 1)
    status = ratio_status(ratio, th)

    evidence = [f"N = {n_samples:,} {n_source}", f"{ctx.model_name} layers (trainable params):"]
    width = max((len(name) for name, _ in layer_breakdown(model)), default=0)
    evidence += [f"  {name:<{width}}  {count:>9,}" for name, count in layer_breakdown(model)]

    hint = ""
    fits: list[tuple[str, int, float]] = []
    if status is not Status.PASS:
        counts = ctx.memo(f"params:registry:{n_classes}", lambda: registry_counts(n_classes))
        fits = fitting_models(counts, n_samples, th, exclude=ctx.model_name)
        if fits:
            name, n, r = fits[0]
            hint = f"use --model {name} ({n:,} params, {format_ratio(r)})"
            evidence.append(
                "registry models under the WARN ratio: "
                + ", ".join(f"{m} {c:,} ({format_ratio(q)})" for m, c, q in fits)
            )
        else:
            budget = int(th.params_warn_ratio * n_samples)
            hint = f"no registered model fits: shrink hidden_size/num_layers to <= {budget:,} params, or get more data"

    return [
        CheckResult(
            check="params",
            name="params_per_sample",
            status=status,
            measured=f"{n_params:,} params / {n_samples:,} samples = {format_ratio(ratio)}",
            expected=f"<= {format_ratio(th.params_warn_ratio)} (WARN above), <= {format_ratio(th.params_fail_ratio)} (FAIL above)",
            hint=hint,
            evidence=tuple(evidence),
            values={
                "model": ctx.model_name,
                "params": n_params,
                "n_samples": n_samples,
                "ratio": ratio,
                "warn_ratio": th.params_warn_ratio,
                "fail_ratio": th.params_fail_ratio,
                "layers": dict(layer_breakdown(model)),
                "fitting_models": [{"model": m, "params": c, "ratio": q} for m, c, q in fits],
            },
        )
    ]
