"""Sanity, the per-run findings: each recognizes one way a training loop goes wrong, from the recording of the
shared instrumented run (see diagnostics.checks.sanity for the list); the counting findings (steps, samples,
coverage) live in diagnostics.checks.sanity_counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from diagnostics.context import Thresholds
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
