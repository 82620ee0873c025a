"""Sanity, the findings that do not read the fit's recording alone: can this model memorise a handful of
windows at all (a separate tiny run), and is an epoch as fast as this machine allows (physics)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnostics.result import CheckResult, Status

CHECK = "sanity"


# --------------------------------------------------------------------------- overfit one batch


@dataclass(frozen=True)
class OverfitResult:
    n: int
    steps: int
    loss: float
    acc: float
    initial_loss: float
    seconds: float
    standardized: bool
    target_loss: float
    lr: float

    @property
    def ok(self) -> bool:
        return self.acc == 1.0 and self.loss < self.target_loss


def _train_without_dropout(model: Any) -> None:
    """Training mode with every dropout at p=0. Not ``model.eval()``: cuDNN refuses an RNN's backward in eval
    mode ("cudnn RNN backward can only be called in training mode"), which CPU kernels allow."""
    import torch.nn as nn

    model.train()
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            m.dropout = 0.0  # between stacked layers, read at every forward
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)):
            m.p = 0.0


def overfit_batch(ctx: Any, standardize: bool = False) -> OverfitResult:
    """Train a fresh model on ``overfit_samples`` training windows (both classes) with AdamW, full batch,
    dropout off (memorising is the point), for at most ``overfit_steps`` steps at ``overfit_lr``,
    until loss < ``overfit_target_loss`` at 100% accuracy (all from ctx.thresholds).

    ``standardize``: z-score each feature with the training rows' mean/std first, to tell a model that
    cannot learn from one that cannot see its (tiny-valued) inputs.
    """
    import torch
    import torch.nn.functional as F

    from diagnostics.sampling import training_sample
    from diagnostics.training import fresh_model, model_features
    from moola.train.device import resolve_device

    th = ctx.thresholds
    n, max_steps, lr, target = th.overfit_samples, th.overfit_steps, th.overfit_lr, th.overfit_target_loss
    _, feats = model_features(ctx)
    train_idx = training_sample(ctx).train_rows  # the rows the shared run trains on
    y_all = ctx.dataset.y[train_idx]
    # Round-robin over classes so the batch is not single-class (which is trivially "memorised").
    rng = np.random.default_rng(ctx.config.seed)
    order = rng.permutation(len(y_all))
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(y_all):
        members = order[y_all[order] == c]
        rank[members] = np.arange(len(members))
    pick = order[np.lexsort((y_all[order], rank[order]))][:n]
    rows = train_idx[np.sort(pick)]
    X_np = np.asarray(feats[rows], dtype=np.float32)
    if standardize:
        ref = feats[train_idx]
        mean = ref.mean(axis=(0, 1), dtype=np.float64)
        std = ref.std(axis=(0, 1), dtype=np.float64)
        X_np = ((X_np - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    device = resolve_device(ctx.device)
    X = torch.from_numpy(np.ascontiguousarray(X_np)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[rows], dtype=np.int64)).to(device)
    # The model's own input statistics come from the training rows, as in a real run.
    stats_from = torch.from_numpy(np.ascontiguousarray(feats[train_idx], dtype=np.float32))
    model = fresh_model(ctx, int(X.shape[2]), X_train=None if standardize else stats_from).to(device)
    _train_without_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    initial = float("nan")
    loss_v, acc, steps = float("nan"), 0.0, 0
    for steps in range(1, max_steps + 1):
        logits = model(X)
        loss = F.cross_entropy(logits, y)
        loss_v = float(loss.detach())
        acc = float((logits.detach().argmax(dim=1) == y).float().mean())
        if steps == 1:
            initial = loss_v
        if loss_v < target and acc == 1.0:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return OverfitResult(
        len(rows), steps, loss_v, acc, initial, time.perf_counter() - t0, standardize, target, lr
    )


def _describe(r: OverfitResult) -> str:
    return (
        f"loss {r.initial_loss:.3f} -> {r.loss:.4f}, accuracy {r.acc:.0%} after {r.steps} full-batch AdamW steps"
        f" (lr {r.lr:g}, {r.seconds:.2f} s)"
    )


def overfit_verdict(ctx: Any) -> CheckResult:
    """Can this model memorise a handful of windows at all (independent of the --fit function)?"""
    th = ctx.thresholds
    raw: OverfitResult = ctx.memo("overfit_batch", lambda: overfit_batch(ctx))
    evidence = [f"as fed to --fit: {_describe(raw)}"]
    if raw.ok:
        status, hint = Status.PASS, ""
    else:
        std: OverfitResult = ctx.memo(
            "overfit_batch_standardized", lambda: overfit_batch(ctx, standardize=True)
        )
        evidence.append(f"with standardized features: {_describe(std)}")
        if std.ok:
            status = Status.WARN
            hint = (
                f"the model memorises {std.n} windows in {std.steps} steps once each feature is standardized "
                "(z-score with train mean/std): scale the inputs"
            )
        else:
            status = Status.FAIL
            hint = "the model cannot memorise a handful of windows even on scaled inputs: check gradient flow"
    evidence.append("independent of the --fit function; dropout off; no weight decay")
    return CheckResult(
        CHECK,
        "overfit_batch",
        status,
        measured=f"{ctx.model_name} on {raw.n} train windows: {_describe(raw)}",
        expected=f"100% accuracy and loss < {th.overfit_target_loss:g} within {th.overfit_steps} steps",
        hint=hint,
        evidence=tuple(evidence),
        values={"steps": raw.steps, "loss": raw.loss, "acc": raw.acc, "seconds": raw.seconds},
    )


# --------------------------------------------------------------------------- epoch time vs physics


def _machine_load() -> tuple[float | None, str]:
    """(1-minute load average or None, a line of evidence)."""
    import torch

    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None, f"{cpus} CPUs, {threads} torch threads"
    return load, f"load average {load:.1f} on {cpus} CPUs while measuring ({threads} torch threads)"


def epoch_time_verdict(ctx: Any, st: Any) -> CheckResult:
    """Time per epoch vs the physical lower bound on this machine."""
    from diagnostics.physics import (
        epoch_time_lower_bound,
        format_flops,
        format_seconds,
        measure_training_step,
    )

    rec = st.recording
    epoch_s = st.epoch_s
    split = (
        f"inside model forward {format_seconds(rec.forward_s)}, backward+step {format_seconds(rec.backward_step_s)}, "
        f"outside (data, Python, evaluation) {format_seconds(rec.other_s)} of {format_seconds(st.wall_s)} total"
    )
    if rec.forward_calls_train == 0 and rec.grad_events == 0:
        return CheckResult(
            CHECK,
            "epoch_time",
            Status.FAIL,
            measured=f"{format_seconds(epoch_s)} per epoch with no training forward and no gradient: no training work was done",
            expected="forward + backward over every training window each epoch",
            hint="the fit function returns without training: it must run forward, backward and step per batch",
            evidence=(split,),
            values={"epoch_s": epoch_s, "bound_s": None},
        )
    batch = rec.typical_train_batch or st.batch_size
    model = st.model
    args = (model, st.n_train, batch, st.window_length, st.n_features, st.device)
    bound = epoch_time_lower_bound(*args)
    if epoch_s < bound.seconds:
        # Re-measure the machine before calling anything impossible: a neighbour's burst during the
        # first measurement can only have made the bound too high.
        bound = epoch_time_lower_bound(*args, fresh=True)
    ev = bound.evidence
    evidence = (
        f"lower bound {format_seconds(bound.seconds)} = max(compute {format_seconds(bound.flops_part)}, "
        f"sequential {format_seconds(bound.latency_part)})",
        f"compute: {format_flops(ev['flops_per_epoch'])} per epoch (fwd+bwd, {st.n_train} windows) / "
        f"{format_flops(ev['peak_flops_per_s'])}/s peak matmul measured on {ev['device']}",
        f"sequential: {ev['sequential_steps']} dependent LSTM steps ({ev['full_batches']} full batches of {batch} x "
        f"{st.window_length} bars x fwd+bwd) x {format_seconds(ev['step_seconds'])} per step",
        *ev["lstm"],
        split,
    )
    load, load_line = _machine_load()
    evidence = (*evidence, load_line)
    ratio = epoch_s / bound.seconds if bound.seconds > 0 else math.inf
    slow = float(ctx.thresholds.epoch_slow_factor)
    expected_s, step_s = bound.seconds, None
    if ratio > slow and st.model is not None:
        # The bound leaves out dispatching and launching every op, which a GPU epoch of a small model is made of:
        # judge slowness against this model's own plain steps here (measured), never below the bound.
        X, y = _training_batch(ctx, st, st.device)
        step_s = measure_training_step(st.model, X, y)
        steps = math.ceil(st.n_train / int(X.shape[0]))
        expected_s = max(bound.seconds, steps * step_s)
        evidence = (
            *evidence,
            f"{steps} plain AdamW steps of this model at batch {int(X.shape[0])} on {st.device}: "
            f"{format_seconds(steps * step_s)} ({format_seconds(step_s)} each, best of 3)",
        )
    # Our own run accounts for about one unit of load per busy core; clearly more means neighbours.
    contended = load is not None and load > (os.cpu_count() or 1) + 1
    if epoch_s < bound.seconds:
        status = Status.FAIL
        hint = "an epoch cannot be this fast on this machine: the fit is not doing a full epoch of training"
    elif epoch_s > slow * expected_s:
        status = Status.WARN
        probe = thread_probe(ctx, st, threaded_s=step_s)  # the step just timed, with these threads
        if probe is not None:
            threads, many, one = probe
            evidence = (
                *evidence,
                f"one training step now: {format_seconds(many)} with {threads} threads, {format_seconds(one)} with 1",
            )
            contended = contended or one < 0.5 * many
        if st.device == "cpu" and contended:
            # Measured here: with a neighbour busy, 2 OpenMP threads on 2 cores made a jade_compact
            # epoch ~10x slower than 1 thread (threads wait on a descheduled sibling at every op).
            hint = (
                "other processes compete for the CPU cores (see load): re-run on an idle machine, "
                "or use fewer threads than free cores (torch.set_num_threads / OMP_NUM_THREADS)"
            )
        elif rec.other_s > rec.forward_s + rec.backward_step_s:
            hint = (
                "most time is spent outside the model: move data to the device once, avoid per-sample loops"
            )
        else:
            hint = "the model itself runs far below the hardware's speed: larger batches or fewer host syncs"
    else:
        status, hint = Status.PASS, ""
    return CheckResult(
        CHECK,
        "epoch_time",
        status,
        measured=f"{format_seconds(epoch_s)} per epoch = {ratio:.1f}x the lower bound {format_seconds(bound.seconds)}"
        + ("" if expected_s == bound.seconds else f", {epoch_s / expected_s:.1f}x its plain steps here"),
        expected=f">= the lower bound and <= {slow:g}x max(the bound, this model's plain steps per epoch here)",
        hint=hint,
        evidence=evidence,
        values={
            "epoch_s": epoch_s,
            "bound_s": bound.seconds,
            "flops_part_s": bound.flops_part,
            "latency_part_s": bound.latency_part,
            "ratio": ratio,
            "expected_s": expected_s,
            "forward_s": rec.forward_s,
            "backward_step_s": rec.backward_step_s,
            "other_s": rec.other_s,
            "plain_step_s": step_s,
            "plain_steps": None if step_s is None else steps,
        },
    )


def _training_batch(ctx: Any, st: Any, device: str) -> tuple[Any, Any]:
    """One batch of the fit's size (training rows, model features) as resident tensors on ``device``."""
    import torch

    from diagnostics.training import model_features

    _, feats = model_features(ctx)
    rows = st.sample.train_rows[: max(1, st.recording.typical_train_batch or st.batch_size)]
    X = torch.from_numpy(np.ascontiguousarray(feats[rows], dtype=np.float32)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[rows], dtype=np.int64)).to(device)
    return X, y


def thread_probe(
    ctx, st, repeats: int = 2, threaded_s: float | None = None
) -> tuple[int, float, float] | None:
    """(threads, seconds per training step with them, with 1 thread) on one training batch; ``threaded_s``:
    the step with the current threads, when the caller has just timed it on the CPU.

    A direct measurement of CPU oversubscription: when other processes busy the cores, torch's OpenMP
    threads wait for descheduled siblings at every small op, and one thread can be many times faster.
    """
    import torch

    from diagnostics.physics import measure_training_step

    threads = torch.get_num_threads()
    if st.device != "cpu" or threads <= 1 or st.model is None:
        return None
    X, y = _training_batch(ctx, st, "cpu")
    try:
        many = measure_training_step(st.model, X, y, repeats) if threaded_s is None else threaded_s
        torch.set_num_threads(1)
        one = measure_training_step(st.model, X, y, repeats)
    finally:
        torch.set_num_threads(threads)
    return threads, many, one
