"""What the run cost against what it should: epoch time and GPU memory against physics (with the speeds
recorded on the training machine), parameters per window and the training configuration, judged by the
params/config/gpu checks' own functions."""

from __future__ import annotations

import statistics
from typing import Any

from diagnostics.audit.context import CHECK, AuditContext, relabel
from diagnostics.audit.curve import finite
from diagnostics.result import CheckResult, Status, skip

# --------------------------------------------------------------------------- physics: time and memory


def _architecture(ctx: AuditContext) -> Any:
    """The recorded model (untrained; only its shapes matter here), or None."""
    rec = ctx.record
    if ctx.replay.model is not None:
        return ctx.replay.model
    hp = rec.architecture.get("hparams") or {}
    if not ctx.model_name:
        return None
    from moola.models import get_model

    if hp.get("input_size"):
        return get_model(
            ctx.model_name, n_features=int(hp["input_size"]), n_classes=int(hp.get("n_classes", 2))
        )
    ds = ctx.replay.dataset  # a foreign run given --model (and maybe --data)
    return get_model(ctx.model_name, n_classes=ds.n_classes if ds is not None else 2)


def _n_classes(ctx: AuditContext) -> int:
    classes = ctx.record.data.get("classes")
    if classes:
        return len(classes)
    return ctx.replay.dataset.n_classes if ctx.replay.dataset is not None else 2


def epoch_time(ctx: AuditContext) -> CheckResult:
    from diagnostics.physics import epoch_time_lower_bound, format_seconds

    rec = ctx.record
    if not rec.machine:
        why = "the run recorded no machine speeds" + (
            " (made before moola recorded them)" if rec.kind == "moola" else ""
        )
        return skip(CHECK, "epoch_time", f"{why}; this machine's would not be the training machine's")
    times = [(r["epoch"], r.get("train_time_s")) for r in rec.epochs if finite(r.get("train_time_s"))]
    model = _architecture(ctx)
    if not times or model is None:
        return skip(CHECK, "epoch_time", "no per-epoch training times or no recorded model to bound")
    cfg, hp = rec.config or {}, rec.architecture.get("hparams") or {}
    n_train = int(rec.data.get("n_train") or 0)
    T, batch = int(rec.data.get("window_length") or 105), int(cfg.get("batch_size") or 16)
    bound = epoch_time_lower_bound(
        model,
        n_train,
        batch,
        T,
        int(hp.get("input_size")),
        device="cpu",
        peak_flops_per_s=float(rec.machine["matmul_flops_per_s"]),
        step_latency_s=rec.machine.get("lstm_step_s") or {},
    )
    fast = [(e, t) for e, t in times if t < bound.seconds]
    ratios = [t / bound.seconds for _, t in times] if bound.seconds > 0 else []
    where = rec.machine.get("device_name") or rec.machine.get("device")
    evidence = (
        f"lower bound {format_seconds(bound.seconds)} = max(compute {format_seconds(bound.flops_part)}, "
        f"sequential {format_seconds(bound.latency_part)}) for {n_train} windows at batch {batch}",
        f"speeds recorded on the training machine ({where}): {rec.machine['matmul_flops_per_s'] / 1e9:.1f} "
        f"GFLOP/s matmul, LSTM step {rec.machine.get('lstm_step_s')}",
        f"speeds measured under load average {rec.machine.get('load_avg_1m')} on {rec.machine.get('cpus')} CPUs"
        + (" (then re-measured by the live rules)" if rec.machine.get("remeasured") else ""),
        *(f"epoch {e}: {format_seconds(t)} ({t / bound.seconds:.2f}x the bound)" for e, t in fast[:8]),
    )
    values = {
        "bound_s": bound.seconds,
        "fast_epochs": [e for e, _ in fast],
        "median_ratio": statistics.median(ratios) if ratios else None,
        "times_s": [t for _, t in times],
    }
    expected = (
        f">= {format_seconds(bound.seconds)} per epoch (the bound for this model, data and recorded machine)"
    )
    if fast:
        return CheckResult(
            CHECK,
            "epoch_time",
            Status.FAIL,
            f"{len(fast)} of {len(times)} epoch(s) faster than physically possible (fastest "
            f"{format_seconds(min(t for _, t in fast))} vs {format_seconds(bound.seconds)})",
            expected,
            hint="those epochs did not train on every window: a loop that breaks early, a subset, or a "
            "logged time that is not the epoch's",
            evidence=evidence,
            values=values,
        )
    return CheckResult(
        CHECK,
        "epoch_time",
        Status.PASS,
        f"every epoch above the bound: median {format_seconds(statistics.median([t for _, t in times]))} = "
        f"{values['median_ratio']:.1f}x {format_seconds(bound.seconds)}",
        expected,
        evidence=evidence,
        values=values,
    )


def memory(ctx: AuditContext) -> CheckResult:
    from diagnostics.checks.gpu import memory_verdict
    from diagnostics.physics import training_memory_bytes

    rec = ctx.record
    peaks = [r.get("gpu_peak_mem_bytes") for r in rec.epochs if finite(r.get("gpu_peak_mem_bytes"))]
    if not peaks:
        device = rec.environment.get("device", "unknown device")
        return skip(CHECK, "memory", f"no GPU memory recorded (trained on {device})")
    model = _architecture(ctx)
    if model is None:
        return skip(CHECK, "memory", "no recorded model to compute the footprint of")
    cfg, hp = rec.config or {}, rec.architecture.get("hparams") or {}
    T, F = int(rec.data.get("window_length") or 105), int(hp.get("input_size"))
    est = training_memory_bytes(model, int(cfg.get("batch_size") or 16), T, F)
    n = int(rec.data.get("n_train") or 0) + int(rec.data.get("n_val") or 0)
    data_bytes = n * T * F * 4 + n * 8  # float32 windows + int64 labels, resident for the run
    detail = {
        "params": est.params,
        "grads": est.grads,
        "adamw": est.optimizer_state,
        "activations": est.activations,
    }
    return relabel(
        memory_verdict(int(max(peaks)), est.total, data_bytes, detail, thresholds=ctx.thresholds), "memory"
    )


# --------------------------------------------------------------------------- ratio and configuration


def params_ratio(ctx: AuditContext) -> CheckResult:
    from diagnostics.checks.params import fitting_models, format_ratio, ratio_status, registry_counts

    rec, th = ctx.record, ctx.thresholds
    n_params = (rec.summary or {}).get("n_params_trainable")
    model = _architecture(ctx)
    if n_params is None and model is not None:
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_samples = int(
        rec.data.get("n_windows") or (len(ctx.replay.dataset) if ctx.replay.dataset is not None else 0)
    )
    if not n_params or not n_samples:
        return skip(
            CHECK, "params", "needs the model and the data (pass --model and --data for a foreign run)"
        )
    ratio = n_params / n_samples
    status = ratio_status(ratio, th)
    hint = ""
    if status is not Status.PASS:
        fits = fitting_models(registry_counts(_n_classes(ctx)), n_samples, th, ctx.model_name or "")
        hint = f"use --model {fits[0][0]} ({fits[0][1]:,} params, {format_ratio(fits[0][2])})" if fits else ""
    return CheckResult(
        CHECK,
        "params",
        status,
        f"{n_params:,} params / {n_samples:,} windows = {format_ratio(ratio)}",
        f"<= {format_ratio(th.params_warn_ratio)} (WARN above), <= {format_ratio(th.params_fail_ratio)} (FAIL above)",
        hint=hint,
        values={"params": n_params, "n_samples": n_samples, "ratio": ratio},
    )


def config_findings(ctx: AuditContext) -> list[CheckResult]:
    from diagnostics.checks import config as cfg_check
    from moola.models import get_spec, list_models

    rec, th = ctx.record, ctx.thresholds
    if rec.config is None:
        return [skip(CHECK, "config", f"a foreign {rec.kind} run records no training configuration")]
    cfg = rec.config
    spec = get_spec(cfg["model"])
    alternative = next((s.name for s in list_models() if not s.legacy), None)
    n_train = int(rec.data.get("n_train") or 0)
    batch = cfg_check.batch_steps(n_train, int(cfg["batch_size"]), th)
    found = [
        cfg_check.legacy_selected(spec.name, spec.legacy, alternative),
        batch,
        cfg_check.learning_rate(float(cfg["lr"]), th),
        cfg_check.total_steps(
            int(cfg["n_epochs"]), batch.values["steps_per_epoch"], int(cfg["early_stopping_patience"]), th
        ),
    ]
    return [relabel(r, f"config/{r.name}") for r in found]
