"""Sanity: is the training function actually training this model, and training it right?

Everything is measured on the shared short training run (diagnostics.training.short_training), observed
through hooks (diagnostics.instrument), so it works for the built-in trainer and for any ``--fit``. Each
finding is a public ``*_verdict`` function returning a CheckResult (tests call them directly):

  init_loss          loss of the untrained model vs ln(C) (uniform predictions)
  optimizer_steps    steps taken vs one per batch (or per k micro-batches when the fit accumulates gradients)
  samples_per_epoch  windows seen by training-mode forwards per epoch vs N
  coverage           DISTINCT training windows per epoch (exact row hashes) vs N: sampling with replacement
                     or a wrong index range repeats some windows and never shows others
  train_mode         the forwards feeding each optimizer step ran in train mode with gradients on
  gradients          every trainable parameter (not declared frozen) received a non-zero gradient
  grad_clearing      each step applies gradients cleared since the previous step: not piled up across steps
                     (zero_grad missing), not emptied between backward() and step()
  param_updates      every trainable parameter (not declared frozen) changed
  outside_updates    parameters change only inside optimizer.step() (no re-init, overwrite, clamp between steps)
  learning_rate      the recorded learning rates are not 0 (and non-zero gradients moved the weights)
  loss_inputs        logits reach cross_entropy / BCE-with-logits and log-probabilities reach nll_loss (a
                     softmax fed to a loss that applies its own log-softmax cannot reach 0)
  label_alignment    the loss trains each window toward its own label: the target read from dL/dlogits in the
                     first epoch vs the true label (permuted labels agree ~sum of squared class shares)
  divergence         losses, gradients and weights stay finite; the loss does not grow over the run
  weight_norm        the trainable weights' L2 norm does not collapse toward zero
  loss_decrease      training loss after the run vs at init
  overfit_batch      a separate tiny run: can this model memorise a handful of windows at all? (if not,
                     a second run on standardized features tells unscaled inputs from broken gradients)
  epoch_time         time per epoch vs the physical lower bound (diagnostics.physics) on this machine;
                     when far slower on CPU, a 1-thread vs N-thread step probe exposes oversubscription

A frozen-encoder fine-tune declares what it leaves untrained on the function: ``fit.moola_frozen =
("encoder",)`` (prefixes of parameter names); gradients/param_updates then expect nothing of those.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnostics.context import Thresholds
from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, plot_data, skip

CHECK = "sanity"
MAX_NAMES = 8  # parameter names shown in a finding (display only)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


def init_loss_verdict(st: Any, th: Thresholds) -> CheckResult:
    """The untrained model's loss vs ln(C) (near-uniform predictions)."""
    ln_c = math.log(st.n_classes) if st.n_classes > 1 else float("nan")
    dev = abs(st.init_loss - ln_c)
    tol = th.init_loss_tolerance
    ok = math.isfinite(st.init_loss) and dev <= tol * ln_c
    return CheckResult(
        CHECK,
        "init_loss",
        Status.PASS if ok else Status.WARN,
        measured=f"cross-entropy of the untrained model on {st.n_train} train windows: {st.init_loss:.4f}",
        expected=f"ln({st.n_classes}) = {ln_c:.4f} ± {tol * ln_c:.3f} (near-uniform predictions)",
        hint=""
        if ok
        else "the initial logits are large: scale down the last layer's init or standardize the input features",
        evidence=(f"untrained train accuracy {st.init_train_acc:.3f}",),
        values={"init_loss": st.init_loss, "ln_c": ln_c},
    )


def _steps_range(st: Any, batch: int, k: int) -> tuple[int, int]:
    """Optimizer steps per epoch a correct loop takes: one per k micro-batches, last batch kept or dropped."""
    n = st.n_train
    if not batch:
        return 0, 0
    return (n // batch) // k, math.ceil(math.ceil(n / batch) / k)


def optimizer_steps_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Steps per epoch vs one per (accumulated) batch."""
    rec = st.recording
    if not rec.optimizer_hooks:
        return skip(CHECK, "optimizer_steps", "this torch has no global optimizer step hooks")
    n, epochs = st.n_train, st.epochs
    per_epoch = rec.optimizer_steps / epochs if epochs else float("nan")
    batch = st.batch_size if st.builtin else (rec.typical_train_batch or st.batch_size)
    k = 1 if st.builtin else rec.accumulation
    lo, hi = _steps_range(st, batch, k)
    expected = math.ceil(math.ceil(n / batch) / k) if batch else 0
    evidence = [
        f"{rec.optimizer_steps} optimizer step(s) in {epochs} epoch(s) = {per_epoch:.2f} per epoch",
        f"training batch size {'(built-in) ' if st.builtin else 'observed '}{batch}: ceil({n} / {batch}) = "
        f"{math.ceil(n / batch) if batch else 0} batches",
    ]
    if k > 1:
        evidence.append(f"gradient accumulation: {k} training forwards per step (median)")
    if rec.other_optimizer_steps:
        evidence.append(
            f"{rec.other_optimizer_steps} step(s) of optimizers holding none of this model's parameters "
            "(built on a copy of the model?)"
        )
    if rec.optimizer_steps == 0:
        status, hint = Status.FAIL, "call optimizer.step() after loss.backward() for every batch"
    elif st.builtin:
        ok = math.isclose(per_epoch, expected)
        status = Status.PASS if ok else Status.FAIL
        hint = "" if ok else "the built-in trainer must take ceil(N / batch) steps per epoch: report a bug"
    elif lo - 1e-9 <= per_epoch <= hi + 1e-9:
        status, hint = Status.PASS, ""
    else:
        # A custom sampler can legitimately differ: say so, do not fail.
        status, hint = (
            Status.WARN,
            "one optimizer step per (accumulated) batch is expected; check for skipped or extra steps",
        )
    span = f"{expected}" if lo == hi or st.builtin else f"{lo}..{hi}"
    return CheckResult(
        CHECK,
        "optimizer_steps",
        status,
        measured=f"{per_epoch:.2f} optimizer steps per epoch",
        expected=f"{span} per epoch (one per {'' if k == 1 else f'{k} '}batch{'' if k == 1 else 'es'}, last batch kept or dropped)",
        hint=hint,
        evidence=tuple(evidence),
        values={
            "steps": rec.optimizer_steps,
            "steps_per_epoch": per_epoch,
            "expected_per_epoch": expected,
            "accumulation": k,
        },
    )


def samples_per_epoch_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Windows through training-mode forwards per epoch vs N."""
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
    if seen < th.samples_fail_fraction * n:
        status = Status.FAIL
        hint = "each epoch must iterate over all training windows (is the loop over batches missing?)"
    elif low <= seen <= th.samples_excess_fraction * n:
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


def coverage_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Distinct training windows reaching training forwards per epoch (exact row identity), vs N."""
    rec = st.recording
    seq = rec.row_sequence
    if not rec.rows_reference or len(seq) == 0:
        return skip(
            CHECK, "coverage", "no training-mode forward carried rows shaped like the training windows"
        )
    matched = float(np.mean(seq >= 0))
    if matched < 0.95:
        return skip(
            CHECK,
            "coverage",
            f"only {matched:.0%} of the rows reaching the model are training windows as given (the fit "
            "transforms its inputs: augmentation, rescaling), so they cannot be identified",
            matched=matched,
        )
    n, epochs = st.n_train, max(st.epochs, 1)
    rows = seq[seq >= 0]
    # A black-box fit has no visible epochs: split the training-forward stream into `epochs` equal parts.
    distinct = np.array([len(np.unique(part)) for part in np.array_split(rows, epochs)], dtype=np.int64)
    mean_distinct = float(distinct.mean())
    never = n - len(np.unique(rows))
    batch = rec.typical_train_batch or st.batch_size
    low = max(n - batch + 1, 1)
    evidence = (
        f"{len(rows)} identified windows in {epochs} epoch(s); distinct per epoch: min {int(distinct.min())}, "
        f"mean {mean_distinct:.1f}, max {int(distinct.max())}",
        f"{never} of {n} training windows never reached a training forward",
        f"{len(rows) / epochs:.1f} windows per epoch in all (repeats included)",
    )
    if mean_distinct < th.coverage_fail_fraction * n:
        status = Status.FAIL
        hint = (
            "epochs repeat some windows and skip others (sampling with replacement, a wrong index range): "
            "iterate over a permutation of all windows each epoch (DataLoader(shuffle=True) or torch.randperm)"
        )
    elif mean_distinct < low or never >= batch:
        status = Status.WARN
        hint = "some training windows are skipped every epoch: check the batch index range and drop_last"
    else:
        status, hint = Status.PASS, ""
    return CheckResult(
        CHECK,
        "coverage",
        status,
        measured=f"{mean_distinct:.1f} distinct training windows per epoch ({mean_distinct / n:.0%} of {n})",
        expected=f"{n} (>= {low} with a dropped last batch; FAIL below {th.coverage_fail_fraction:.0%})",
        hint=hint,
        evidence=evidence,
        values={"distinct_per_epoch": mean_distinct, "never_seen": never, "n_train": n},
    )


def train_mode_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Forwards feeding each optimizer step ran in train mode with gradients."""
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


def _frozen_note(st: Any, names: list[str]) -> str:
    """A hint for parameters the fit froze itself (requires_grad False at exit) without declaring it."""
    froze = [n for n in names if n in set(st.recording.frozen_at_exit)]
    if not froze:
        return ""
    prefix = froze[0].split(".")[0]
    return (
        f"; the fit set requires_grad=False on {len(froze)} of them: if that freeze is intended, declare it "
        f"with FUNC.moola_frozen = ({prefix!r},)"
    )


def gradients_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Every trainable (not declared frozen) parameter received a non-zero gradient."""
    rec = st.recording
    frozen = set(getattr(st, "frozen", ()) or ())
    expected_names = [n for n in rec.trainable if n not in frozen]
    never = [n for n in rec.grad_never if n not in frozen]
    ok = not never and bool(expected_names)
    evidence = [f"{rec.grad_events} gradient accumulation(s) observed ({rec.grad_hooks} hooks)"]
    if frozen:
        evidence.append(
            f"{len(frozen)} tensor(s) declared frozen by the fit (moola_frozen): {_names(sorted(frozen))}"
        )
    if ok:
        hint = ""
    elif rec.grad_events == 0:
        hint = "no gradient reached the model: call loss.backward() on a loss computed with gradients"
    else:
        hint = (
            "these parameters are cut off from the loss (detached path, unused layer): freeze or remove them"
            + _frozen_note(st, never)
        )
    return CheckResult(
        CHECK,
        "gradients",
        Status.PASS if ok else Status.FAIL,
        measured=f"{len(expected_names) - len(never)} of {len(expected_names)} trainable tensors got a non-zero gradient"
        + (f"; never: {_names(never)}" if never else ""),
        expected="every trainable parameter receives a non-zero gradient",
        hint=hint,
        evidence=tuple(evidence),
        values={"never": never, "grad_events": rec.grad_events, "declared_frozen": sorted(frozen)},
    )


def param_updates_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Every trainable (not declared frozen) parameter changed."""
    rec = st.recording
    frozen = set(getattr(st, "frozen", ()) or ())
    expected_names = [n for n in rec.trainable if n not in frozen]
    unchanged = [n for n in rec.unchanged if n not in frozen]
    ok = not unchanged and bool(expected_names)
    biggest = max(rec.max_abs_update.values(), default=0.0)
    return CheckResult(
        CHECK,
        "param_updates",
        Status.PASS if ok else Status.FAIL,
        measured=f"{len(expected_names) - len(unchanged)} of {len(expected_names)} trainable tensors changed"
        + (f"; unchanged: {_names(unchanged)}" if unchanged else ""),
        expected="every trainable parameter changes during training",
        hint=""
        if ok
        else "these weights were never updated (an optimizer over a subset of the parameters?): see "
        "optimizer_steps, gradients and learning_rate" + _frozen_note(st, unchanged),
        evidence=(f"largest absolute change of any weight: {biggest:.3g}",),
        values={"unchanged": unchanged, "max_abs_update": biggest},
    )


def grad_clearing_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Gradients are cleared once per optimizer step: not never (they pile up), not between backward and step."""
    rec = st.recording
    if not rec.optimizer_hooks or rec.optimizer_steps == 0:
        return skip(CHECK, "grad_clearing", "no optimizer step to judge gradient clearing against")
    k = rec.accumulation
    stale, checked = rec.stale_grad_steps, rec.stale_checked_steps
    cleared, steps = rec.cleared_before_step, rec.optimizer_steps
    frac = th.stale_grad_fraction
    evidence = (
        f"{stale} of {checked} step(s) after the first began from .grad still holding an earlier step's gradient",
        f"{cleared} of {steps} step(s) found every .grad zero although backward() ran since the previous step",
        f"{k} training forward(s) per step (median); backward passes per step: "
        f"{int(np.median(rec.backwards_per_step)) if rec.backwards_per_step else 0}",
    )
    if checked and stale / checked > frac:
        status = Status.FAIL
        measured = (
            f"gradients are not cleared between steps: {stale} of {checked} steps add to the previous step's"
        )
        hint = (
            "call optimizer.zero_grad() once per optimizer step (before backward, or right after step() when "
            "accumulating micro-batches): gradients keep piling up"
        )
    elif steps and cleared / steps > frac:
        status = Status.FAIL
        measured = (
            f"{cleared} of {steps} steps applied all-zero gradients: cleared after backward(), before step()"
        )
        hint = "move optimizer.zero_grad() before loss.backward() (or after optimizer.step())"
    elif stale or cleared:
        status = Status.WARN
        measured = f"{stale} step(s) from un-cleared and {cleared} from cleared-too-early gradients"
        hint = "clear gradients exactly once per optimizer step"
    else:
        status, hint = Status.PASS, ""
        acc = f", accumulated over {k} micro-batches" if k > 1 else ""
        measured = f"every step applied fresh gradients{acc}"
    return CheckResult(
        CHECK,
        "grad_clearing",
        status,
        measured=measured,
        expected=f"each step starts from cleared gradients (un-cleared or emptied in <= {frac:.0%} of steps)",
        hint=hint,
        evidence=evidence,
        values={
            "stale_steps": stale,
            "checked_steps": checked,
            "cleared_before_step": cleared,
            "accumulation": k,
        },
    )


def loss_inputs_verdict(st: Any, th: Thresholds) -> CheckResult:
    """What reaches torch's losses: logits (cross_entropy, BCE-with-logits) or log-probabilities (nll_loss)."""
    rec = st.recording
    calls = rec.loss_calls
    if not calls:
        return skip(
            CHECK,
            "loss_inputs",
            "no torch cross_entropy / nll_loss / binary_cross_entropy[_with_logits] call with gradients was seen "
            "(a hand-written loss is not inspected)",
        )
    frac = th.loss_input_fraction
    c = st.n_classes
    # Softmax outputs q in [0, 1] into a log-softmax: the best case is q = one-hot, loss log(1 + (C-1)/e).
    floor = math.log(1 + (c - 1) / math.e)
    share = {name: rec.loss_prob_inputs.get(name, 0) / n for name, n in calls.items() if n}
    nll_raw = rec.nll_not_log_prob / calls["nll_loss"] if calls.get("nll_loss") else 0.0
    losses = np.asarray(rec.losses, dtype=np.float64)
    lowest = float(np.nanmin(losses)) if losses.size and np.isfinite(losses).any() else float("nan")
    evidence = (
        "calls: " + ", ".join(f"{name} {n}" for name, n in sorted(calls.items())),
        "fed probabilities (rows in [0, 1] summing to 1; [0, 1] for BCE-with-logits): "
        + ", ".join(f"{name} {rec.loss_prob_inputs.get(name, 0)}" for name in sorted(calls)),
        f"lowest loss value seen: {lowest:.4f}",
    )
    status, hint = Status.PASS, ""
    measured = "logits reach cross_entropy / BCE-with-logits, log-probabilities reach nll_loss"
    if share.get("cross_entropy", 0.0) >= frac:
        status = Status.FAIL
        measured = (
            f"softmax outputs fed to cross_entropy in {share['cross_entropy']:.0%} of calls: it applies its own "
            f"log-softmax, so the loss cannot fall below {floor:.3f} and its gradients vanish"
        )
        hint = "pass the raw logits to cross_entropy / nn.CrossEntropyLoss (drop the softmax)"
    elif share.get("nll_loss", 0.0) >= frac:
        status = Status.FAIL
        measured = (
            f"probabilities fed to nll_loss in {share['nll_loss']:.0%} of calls: it expects log-probabilities"
        )
        hint = "use log_softmax (not softmax) before nll_loss, or cross_entropy on the logits"
    elif nll_raw >= frac:
        status = Status.FAIL
        measured = (
            f"nll_loss fed rows that are not log-probabilities (logsumexp != 0) in {nll_raw:.0%} of calls"
        )
        hint = "apply log_softmax before nll_loss, or use cross_entropy on the logits: raw scores make it unbounded"
    elif share.get("binary_cross_entropy_with_logits", 0.0) >= frac:
        status = Status.FAIL
        measured = (
            f"probabilities (all in [0, 1]) fed to binary_cross_entropy_with_logits in "
            f"{share['binary_cross_entropy_with_logits']:.0%} of calls: it applies its own sigmoid"
        )
        hint = (
            "pass the raw logits to binary_cross_entropy_with_logits / BCEWithLogitsLoss (drop the sigmoid)"
        )
    return CheckResult(
        CHECK,
        "loss_inputs",
        status,
        measured=measured,
        expected=f"inputs a loss can drive to 0 (probability-shaped inputs in < {frac:.0%} of calls)",
        hint=hint,
        evidence=evidence,
        values={"calls": dict(calls), "probability_share": share, "nll_not_log_prob_share": nll_raw},
    )


def label_alignment_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Does the loss train each window toward its own label? Read from the sign of dL/dlogits in epoch 1."""
    rec = st.recording
    if not rec.rows_reference:
        return skip(CHECK, "label_alignment", "training rows were not tracked")
    rows, implied = rec.implied_rows, rec.implied_labels
    n = len(rows)
    if n < th.label_min_rows:
        return skip(
            CHECK,
            "label_alignment",
            f"only {n} training window(s) could be identified with a gradient at the logits in the first epoch "
            "(the fit transforms its inputs, or no backward reaches the logits)",
            identified=n,
        )
    y = np.asarray(st.y_train)
    agree = float(np.mean(implied == y[rows]))
    shares = np.bincount(y, minlength=st.n_classes) / max(len(y), 1)
    chance = float(np.sum(shares**2))  # agreement of labels permuted apart from their windows
    counts = np.bincount(implied, minlength=st.n_classes)
    majority = float(shares.max())
    evidence = (
        f"targets the loss pushed toward (first {n} identified windows): "
        + ", ".join(f"class {i}: {int(v)}" for i, v in enumerate(counts)),
        "true labels of those windows: "
        + ", ".join(
            f"class {i}: {int(v)}" for i, v in enumerate(np.bincount(y[rows], minlength=st.n_classes))
        ),
        f"permuted labels would agree ~{chance:.2f} (sum of squared class shares); constant labels {majority:.2f}",
        f"train accuracy on the true labels after the fit {st.train_acc:.3f} vs majority share {majority:.3f}",
    )
    ok = agree >= th.label_agreement_min
    if ok:
        hint = ""
    elif agree < chance / 2:
        # Far below what unrelated labels give: the loss pushes windows away from their own labels.
        hint = (
            "the loss pushes windows away from their own labels: is its sign flipped ((-loss).backward()) "
            "or are the labels inverted?"
        )
    else:
        hint = (
            "the labels reaching the loss are not these windows' labels (permuted, constant, shifted or "
            "re-encoded): index X and y with the same indices (one TensorDataset, one permutation)"
        )
    return CheckResult(
        CHECK,
        "label_alignment",
        Status.PASS if ok else Status.FAIL,
        measured=f"the loss trained {agree:.0%} of {n} identified windows toward their own label",
        expected=f">= {th.label_agreement_min:.0%} (labels travel with their windows)",
        hint=hint,
        evidence=evidence,
        values={"agreement": agree, "identified": n, "chance_agreement": chance},
    )


def divergence_verdict(st: Any, th: Thresholds) -> CheckResult:
    """NaN/inf losses, gradients or weights, or a loss that grows over the run."""
    rec = st.recording
    losses = np.asarray(rec.losses, dtype=np.float64)
    gnorms = np.asarray(rec.grad_norms, dtype=np.float64)
    bad_loss = int(np.sum(~np.isfinite(losses)))
    bad_grad = int(np.sum(~np.isfinite(gnorms)))
    rise = th.divergence_loss_rise
    evidence = [
        f"{len(losses)} loss value(s) from torch's loss functions, {bad_loss} not finite",
        f"gradient L2 norm before each of {len(gnorms)} step(s): {bad_grad} not finite"
        + (
            f"; first {gnorms[0]:.3g}, max {np.nanmax(gnorms):.3g}, last {gnorms[-1]:.3g}"
            if len(gnorms)
            else ""
        ),
        f"final train loss (cross-entropy, eval mode) {st.train_loss:.4f} vs {st.init_loss:.4f} at init",
    ]
    first = last = float("nan")
    finite = losses[np.isfinite(losses)]
    if len(finite) >= 10:
        k = max(1, len(finite) // 10)
        first, last = float(np.median(finite[:k])), float(np.median(finite[-k:]))
        evidence.insert(1, f"median loss over the first tenth of calls {first:.4f}, last tenth {last:.4f}")
    if rec.nonfinite_params:
        status = Status.FAIL
        measured = f"weights became NaN/inf: {_names(rec.nonfinite_params)}"
    elif bad_loss or bad_grad or not math.isfinite(st.train_loss):
        status = Status.FAIL
        measured = f"the loss or gradients became NaN/inf ({bad_loss} loss value(s), {bad_grad} step(s))"
    elif math.isfinite(first) and last > rise * max(first, 1e-12):
        status = Status.FAIL
        measured = f"the loss grew {last / first:.1f}x over the run ({first:.4f} -> {last:.4f})"
    else:
        status = Status.PASS
        measured = "losses, gradients and weights stayed finite and the loss did not grow" + (
            "" if math.isfinite(first) else " (no torch loss function seen: judged on gradients and weights)"
        )
    hint = (
        ""
        if status is Status.PASS
        else "training diverges: lower the learning rate, clip gradients, and check the loss's sign "
        "(minimise it: loss.backward(), not (-loss).backward())"
    )
    return CheckResult(
        CHECK,
        "divergence",
        status,
        measured=measured,
        expected=f"finite throughout; the last tenth's median loss <= {rise:g}x the first tenth's",
        hint=hint,
        evidence=tuple(evidence),
        values={
            "loss_first": first,
            "loss_last": last,
            "nonfinite_losses": bad_loss,
            "nonfinite_grads": bad_grad,
        },
    )


def outside_updates_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Parameters change only inside optimizer.step(): compared at each step's start with the previous step's end."""
    rec = st.recording
    if not rec.optimizer_hooks or rec.outside_intervals == 0:
        return skip(CHECK, "outside_updates", "fewer than two optimizer steps: no interval between steps")
    k, n = rec.outside_change_intervals, rec.outside_intervals
    evidence = (
        f"{n} interval(s) between consecutive optimizer steps checked; parameters changed in {k}",
        f"largest change outside a step: {rec.outside_max_change:.3g}",
    )
    if k:
        return CheckResult(
            CHECK,
            "outside_updates",
            Status.FAIL,
            measured=f"parameters changed outside optimizer.step() in {k} of {n} intervals: "
            f"{_names(rec.outside_changed)}",
            expected="weights change only inside optimizer.step()",
            hint="something else writes the weights between steps (re-initialisation, load_state_dict, in-place "
            "clamp/projection or decay): remove it, or express it through the optimizer",
            evidence=evidence,
            values={"intervals_changed": k, "intervals": n, "names": rec.outside_changed},
        )
    return CheckResult(
        CHECK,
        "outside_updates",
        Status.PASS,
        measured=f"no parameter changed between steps ({n} intervals)",
        expected="weights change only inside optimizer.step()",
        evidence=evidence,
        values={"intervals_changed": 0, "intervals": n, "names": []},
    )


def weight_norm_verdict(st: Any, th: Thresholds) -> CheckResult:
    """The trainable weights' L2 norm did not collapse toward zero."""
    rec = st.recording
    before, after = rec.param_norm_before, rec.param_norm_after
    if rec.nonfinite_params or before <= 0:
        return skip(CHECK, "weight_norm", "weights not finite (see divergence) or zero at init")
    ratio = after / before
    ok = ratio >= th.weight_collapse_ratio
    return CheckResult(
        CHECK,
        "weight_norm",
        Status.PASS if ok else Status.FAIL,
        measured=f"L2 norm of the trainable weights {before:.3g} -> {after:.3g} ({ratio:.2f}x)",
        expected=f">= {th.weight_collapse_ratio:g}x its initial value",
        hint=""
        if ok
        else "the weights collapse toward zero: weight decay x lr is far too large (AdamW shrinks by lr*wd per "
        "step), or a penalty or manual shrink dominates the loss",
        evidence=(f"{len(rec.trainable)} trainable tensor(s)",),
        values={"norm_before": before, "norm_after": after, "ratio": ratio},
    )


def learning_rate_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Recorded learning rates are not 0, and steps with non-zero gradients moved the weights."""
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


def loss_decrease_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Training loss (eval mode) after the run vs at init."""
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
        values={
            "init_loss": before,
            "final_loss": after,
            "test_loss": getattr(st, "test_loss", None),  # a stubbed run may have none
            "epoch_loss": _epoch_losses(st),
        },
    )


def _epoch_losses(st: Any) -> list[float]:
    """The fit's own loss calls, averaged per epoch (for the report's training curve)."""
    losses = np.asarray(st.recording.losses, dtype=np.float64)
    if not len(losses) or not st.epochs:
        return []
    return plot_data(
        [part.mean() for part in np.array_split(losses, min(st.epochs, len(losses)))], ordered=True
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

    from diagnostics.training import fresh_model, model_features
    from moola.train.device import resolve_device

    th = ctx.thresholds
    n, max_steps, lr, target = th.overfit_samples, th.overfit_steps, th.overfit_lr, th.overfit_target_loss
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
    rows = np.asarray(ctx.train_idx)[: max(1, st.recording.typical_train_batch or st.batch_size)]
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


@register(CHECK)
def check_sanity(ctx: Any) -> list[CheckResult]:
    from diagnostics.training import short_training

    st = short_training(ctx)
    th = ctx.thresholds
    per_run = (
        init_loss_verdict,
        optimizer_steps_verdict,
        samples_per_epoch_verdict,
        coverage_verdict,
        train_mode_verdict,
        gradients_verdict,
        grad_clearing_verdict,
        param_updates_verdict,
        outside_updates_verdict,
        learning_rate_verdict,
        loss_inputs_verdict,
        label_alignment_verdict,
        divergence_verdict,
        weight_norm_verdict,
        loss_decrease_verdict,
    )
    return [f(st, th) for f in per_run] + [overfit_verdict(ctx), epoch_time_verdict(ctx, st)]
