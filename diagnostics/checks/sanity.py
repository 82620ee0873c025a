"""Sanity: is the training function actually training this model?

Everything is measured on the shared short training run (diagnostics.training.short_training), observed
through hooks (diagnostics.instrument), so it works for the built-in trainer and for any ``--fit``:

  init_loss          loss of the untrained model vs ln(C) (uniform predictions)
  optimizer_steps    steps taken vs ceil(N / batch) per epoch
  samples_per_epoch  windows seen by training-mode forwards per epoch vs N
  train_mode         the forwards feeding each optimizer step ran in train mode with gradients on
  gradients          every trainable parameter received a non-zero gradient
  param_updates      every trainable parameter changed
  learning_rate      the recorded learning rates are not 0 (and non-zero gradients moved the weights)
  loss_decrease      training loss after the run vs at init
  overfit_batch      a separate tiny run: can this model memorise a handful of windows at all? (if not,
                     a second run on standardized features tells unscaled inputs from broken gradients)
  epoch_time         time per epoch vs the physical lower bound (diagnostics.physics) on this machine;
                     when far slower on CPU, a 1-thread vs N-thread step probe exposes oversubscription
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, skip

CHECK = "sanity"
INIT_LOSS_TOLERANCE = 0.5  # |loss - ln C| / ln C beyond this: the initial predictions are not near-uniform
OVERFIT_SAMPLES = 8
OVERFIT_STEPS = 60
OVERFIT_LR = 1e-2
OVERFIT_TARGET_LOSS = 0.1
MAX_NAMES = 8


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


def _init_loss(st) -> CheckResult:
    ln_c = math.log(st.n_classes) if st.n_classes > 1 else float("nan")
    dev = abs(st.init_loss - ln_c)
    ok = math.isfinite(st.init_loss) and dev <= INIT_LOSS_TOLERANCE * ln_c
    return CheckResult(
        CHECK,
        "init_loss",
        Status.PASS if ok else Status.WARN,
        measured=f"cross-entropy of the untrained model on {st.n_train} train windows: {st.init_loss:.4f}",
        expected=f"ln({st.n_classes}) = {ln_c:.4f} ± {INIT_LOSS_TOLERANCE * ln_c:.3f} (near-uniform predictions)",
        hint=""
        if ok
        else "the initial logits are large: scale down the last layer's init or standardize the input features",
        evidence=(f"untrained train accuracy {st.init_train_acc:.3f}",),
        values={"init_loss": st.init_loss, "ln_c": ln_c},
    )


def _optimizer_steps(st) -> CheckResult:
    rec = st.recording
    if not rec.optimizer_hooks:
        return skip(CHECK, "optimizer_steps", "this torch has no global optimizer step hooks")
    n, epochs = st.n_train, st.epochs
    per_epoch = rec.optimizer_steps / epochs if epochs else float("nan")
    batch = st.batch_size if st.builtin else (rec.typical_train_batch or st.batch_size)
    expected = math.ceil(n / batch) if batch else 0
    evidence = [
        f"{rec.optimizer_steps} optimizer step(s) in {epochs} epoch(s) = {per_epoch:.2f} per epoch",
        f"training batch size {'(built-in) ' if st.builtin else 'observed '}{batch}: ceil({n} / {batch}) = {expected}",
    ]
    if rec.other_optimizer_steps:
        evidence.append(
            f"{rec.other_optimizer_steps} step(s) of optimizers holding none of this model's parameters "
            "(built on a copy of the model?)"
        )
    if rec.optimizer_steps == 0:
        status, hint = Status.FAIL, "call optimizer.step() after loss.backward() for every batch"
    elif math.isclose(per_epoch, expected):
        status, hint = Status.PASS, ""
    elif st.builtin:
        status, hint = (
            Status.FAIL,
            "the built-in trainer must take ceil(N / batch) steps per epoch: report a bug",
        )
    else:
        # Gradient accumulation or a custom sampler can legitimately differ: say so, do not fail.
        status, hint = (
            Status.WARN,
            "one optimizer step per batch is expected; check for skipped or extra steps",
        )
    return CheckResult(
        CHECK,
        "optimizer_steps",
        status,
        measured=f"{per_epoch:.2f} optimizer steps per epoch",
        expected=f"{expected} per epoch (ceil(N / batch))",
        hint=hint,
        evidence=tuple(evidence),
        values={"steps": rec.optimizer_steps, "steps_per_epoch": per_epoch, "expected_per_epoch": expected},
    )


def _samples_per_epoch(st) -> CheckResult:
    rec = st.recording
    n, epochs = st.n_train, st.epochs
    seen = rec.samples_seen_train / epochs if epochs else float("nan")
    batch = rec.typical_train_batch or st.batch_size
    low = max(n - batch + 1, 1)  # drop_last may skip one partial batch
    evidence = (
        f"{rec.samples_seen_train} windows through {rec.forward_calls_train} training-mode forward(s) with "
        f"gradients in {epochs} epoch(s)",
        f"all forwards: {rec.forward_calls} calls, {rec.samples_seen} windows "
        f"({rec.forward_calls_eval_mode} in eval mode, {rec.forward_calls_no_grad} without gradients)",
    )
    if seen < 0.5 * n:
        status = Status.FAIL
        hint = "each epoch must iterate over all training windows (is the loop over batches missing?)"
    elif low <= seen <= 1.05 * n:
        status, hint = Status.PASS, ""
    else:
        status, hint = Status.WARN, "an epoch should see each training window once"
    return CheckResult(
        CHECK,
        "samples_per_epoch",
        status,
        measured=f"{seen:.1f} training windows per epoch",
        expected=f"{n} (the training set; >= {low} with a dropped last batch)",
        hint=hint,
        evidence=evidence,
        values={"samples_per_epoch": seen, "n_train": n},
    )


def _train_mode(st) -> CheckResult:
    rec = st.recording
    if not rec.optimizer_hooks:
        return skip(CHECK, "train_mode", "this torch has no global optimizer step hooks")
    if rec.optimizer_steps == 0:
        return skip(CHECK, "train_mode", "no optimizer step to attribute forwards to")
    no_grad, eval_mode = rec.steps_after_no_grad_forward, rec.steps_after_eval_forward
    evidence = (
        f"{rec.optimizer_steps} step(s): {no_grad} after a forward without gradients, "
        f"{eval_mode} after a forward in eval mode, {rec.steps_without_forward} with no forward since the last step",
        f"forwards: {rec.forward_calls} ({rec.forward_calls_train} train mode with gradients, "
        f"{rec.forward_calls_eval_mode} eval mode, {rec.forward_calls_no_grad} without gradients)",
    )
    if no_grad:
        status = Status.FAIL
        measured = f"{no_grad} of {rec.optimizer_steps} steps follow a forward run under torch.no_grad/inference_mode"
        hint = "run the training forward with gradients enabled (no torch.no_grad() around the training loop)"
    elif eval_mode:
        status = Status.FAIL
        measured = f"{eval_mode} of {rec.optimizer_steps} steps follow a forward with the model in eval mode"
        hint = "call model.train() before each training epoch (model.eval() only for evaluation)"
    else:
        status, measured, hint = Status.PASS, "every step follows a train-mode forward with gradients", ""
    return CheckResult(
        CHECK,
        "train_mode",
        status,
        measured=measured,
        expected="model.train() and gradients enabled for the forwards that feed optimizer.step()",
        hint=hint,
        evidence=evidence,
        values={"steps_after_no_grad": no_grad, "steps_after_eval": eval_mode},
    )


def _gradients(st) -> CheckResult:
    rec = st.recording
    never = rec.grad_never
    ok = not never and rec.trainable
    return CheckResult(
        CHECK,
        "gradients",
        Status.PASS if ok else Status.FAIL,
        measured=f"{len(rec.trainable) - len(never)} of {len(rec.trainable)} trainable tensors got a non-zero gradient"
        + (f"; never: {_names(never)}" if never else ""),
        expected="every trainable parameter receives a non-zero gradient",
        hint=""
        if ok
        else (
            "no gradient reached the model: call loss.backward() on a loss computed with gradients"
            if rec.grad_events == 0
            else "these parameters are cut off from the loss (detached path, unused layer): freeze or remove them"
        ),
        evidence=(f"{rec.grad_events} gradient accumulation(s) observed ({rec.grad_hooks} hooks)",),
        values={"never": never, "grad_events": rec.grad_events},
    )


def _param_updates(st) -> CheckResult:
    rec = st.recording
    unchanged = rec.unchanged
    ok = not unchanged and rec.trainable
    biggest = max(rec.max_abs_update.values(), default=0.0)
    return CheckResult(
        CHECK,
        "param_updates",
        Status.PASS if ok else Status.FAIL,
        measured=f"{len(rec.changed)} of {len(rec.trainable)} trainable tensors changed"
        + (f"; unchanged: {_names(unchanged)}" if unchanged else ""),
        expected="every trainable parameter changes during training",
        hint=""
        if ok
        else "these weights were never updated: see optimizer_steps, gradients and learning_rate",
        evidence=(f"largest absolute change of any weight: {biggest:.3g}",),
        values={"unchanged": unchanged, "max_abs_update": biggest},
    )


def _learning_rate(st) -> CheckResult:
    rec = st.recording
    if not rec.optimizer_hooks:
        return skip(CHECK, "learning_rate", "this torch has no global optimizer step hooks")
    if rec.optimizer_steps == 0:
        return skip(CHECK, "learning_rate", "no optimizer step was taken")
    lrs = np.asarray(rec.lrs, dtype=np.float64)
    lo, hi = float(lrs.min()), float(lrs.max())
    evidence = (
        f"lr over {len(lrs)} steps: first {lrs[0]:.3g}, last {lrs[-1]:.3g}, min {lo:.3g}, max {hi:.3g}",
    )
    if hi == 0.0:
        status, measured = Status.FAIL, "learning rate is 0 at every step"
        hint = "set a positive learning rate (the built-in trainer uses 1e-4 with AdamW)"
    elif rec.grad_nonzero and not rec.changed:
        status = Status.FAIL
        measured = f"{rec.optimizer_steps} steps with lr up to {hi:.3g} and non-zero gradients left every weight unchanged"
        hint = "the effective learning rate is 0, or gradients are cleared between backward() and step()"
    else:
        status, measured, hint = Status.PASS, f"lr {lo:.3g}..{hi:.3g}", ""
    return CheckResult(
        CHECK,
        "learning_rate",
        status,
        measured=measured,
        expected="lr > 0 and steps that move the weights",
        hint=hint,
        evidence=evidence,
        values={"lr_min": lo, "lr_max": hi},
    )


def _loss_decrease(st) -> CheckResult:
    before, after = st.init_loss, st.train_loss
    if not math.isfinite(after):
        status, hint = Status.FAIL, "the loss diverged (NaN/inf): lower the learning rate or clip gradients"
    elif after < before:
        status, hint = Status.PASS, ""
    else:
        status, hint = Status.WARN, "training did not lower the training loss: see the other sanity findings"
    return CheckResult(
        CHECK,
        "loss_decrease",
        status,
        measured=f"train loss {before:.4f} -> {after:.4f} after {st.epochs} epoch(s) ({after - before:+.4f})",
        expected="lower than at init",
        hint=hint,
        evidence=(f"train accuracy {st.init_train_acc:.3f} -> {st.train_acc:.3f} (eval mode)",),
        values={"init_loss": before, "final_loss": after},
    )


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

    @property
    def ok(self) -> bool:
        return self.acc == 1.0 and self.loss < OVERFIT_TARGET_LOSS


def overfit_batch(
    ctx,
    n: int = OVERFIT_SAMPLES,
    max_steps: int = OVERFIT_STEPS,
    lr: float = OVERFIT_LR,
    standardize: bool = False,
) -> OverfitResult:
    """Train a fresh model on ``n`` training windows (both classes) with AdamW, full batch, eval mode
    (dropout off: memorising is the point), until loss < OVERFIT_TARGET_LOSS at 100% accuracy.

    ``standardize``: z-score each feature with the training rows' mean/std first, to tell a model that
    cannot learn from one that cannot see its (tiny-valued) inputs.
    """
    import torch
    import torch.nn.functional as F

    from diagnostics.training import fresh_model, model_features
    from moola.train.device import resolve_device

    _, feats = model_features(ctx)
    train_idx = np.asarray(ctx.train_idx)
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
    model.eval()
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
        if loss_v < OVERFIT_TARGET_LOSS and acc == 1.0:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return OverfitResult(len(rows), steps, loss_v, acc, initial, time.perf_counter() - t0, standardize)


def _describe(r: OverfitResult) -> str:
    return (
        f"loss {r.initial_loss:.3f} -> {r.loss:.4f}, accuracy {r.acc:.0%} after {r.steps} full-batch AdamW steps"
        f" (lr {OVERFIT_LR:g}, {r.seconds:.2f} s)"
    )


def _overfit(ctx) -> CheckResult:
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
        expected=f"100% accuracy and loss < {OVERFIT_TARGET_LOSS} within {OVERFIT_STEPS} steps",
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


def _epoch_time(ctx, st) -> CheckResult:
    from diagnostics.physics import epoch_time_lower_bound, format_flops, format_seconds

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
    # Our own run accounts for about one unit of load per busy core; clearly more means neighbours.
    contended = load is not None and load > (os.cpu_count() or 1) + 1
    if epoch_s < bound.seconds:
        status = Status.FAIL
        hint = "an epoch cannot be this fast on this machine: the fit is not doing a full epoch of training"
    elif ratio > slow:
        status = Status.WARN
        probe = thread_probe(ctx, st)
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
        measured=f"{format_seconds(epoch_s)} per epoch = {ratio:.1f}x the lower bound {format_seconds(bound.seconds)}",
        expected=f">= the lower bound and <= {slow:g}x it",
        hint=hint,
        evidence=evidence,
        values={
            "epoch_s": epoch_s,
            "bound_s": bound.seconds,
            "flops_part_s": bound.flops_part,
            "latency_part_s": bound.latency_part,
            "ratio": ratio,
            "forward_s": rec.forward_s,
            "backward_step_s": rec.backward_step_s,
            "other_s": rec.other_s,
        },
    )


def thread_probe(ctx, st, repeats: int = 2) -> tuple[int, float, float] | None:
    """(threads, seconds per forward+backward step with them, with 1 thread) on one training batch.

    A direct measurement of CPU oversubscription: when other processes busy the cores, torch's OpenMP
    threads wait for descheduled siblings at every small op, and one thread can be many times faster.
    """
    import copy

    import torch
    import torch.nn.functional as F

    from diagnostics.training import model_features

    threads = torch.get_num_threads()
    if st.device != "cpu" or threads <= 1 or st.model is None:
        return None
    _, feats = model_features(ctx)
    rows = np.asarray(ctx.train_idx)[: max(1, st.recording.typical_train_batch or st.batch_size)]
    X = torch.from_numpy(np.ascontiguousarray(feats[rows], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[rows], dtype=np.int64))
    model = copy.deepcopy(st.model).cpu().train()

    def step_time() -> float:
        best = math.inf
        for _ in range(repeats + 1):  # the first one warms up
            t0 = time.perf_counter()
            F.cross_entropy(model(X), y).backward()
            best = min(best, time.perf_counter() - t0)
        return best

    try:
        with torch.random.fork_rng(devices=[]):
            many = step_time()
            torch.set_num_threads(1)
            one = step_time()
    finally:
        torch.set_num_threads(threads)
    return threads, many, one


@register(CHECK)
def check_sanity(ctx) -> list[CheckResult]:
    from diagnostics.training import short_training

    st = short_training(ctx)
    return [
        _init_loss(st),
        _optimizer_steps(st),
        _samples_per_epoch(st),
        _train_mode(st),
        _gradients(st),
        _param_updates(st),
        _learning_rate(st),
        _loss_decrease(st),
        _overfit(ctx),
        _epoch_time(ctx, st),
    ]
