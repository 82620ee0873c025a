"""Sanity, the counting findings: optimizer steps, windows per epoch and windows never trained on. Counts are
OBSERVED (``observed_counts``), not assumed from the request: the epochs the fit actually ran, the windows it
actually gave the optimizer (a forward re-running the same step's rows is not a new window), a hold-out it
carved out of the rows itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnostics.context import Thresholds
from diagnostics.result import CheckResult, Status, skip

CHECK = "sanity"


@dataclass(frozen=True)
class ObservedCounts:
    """What the fit actually did, observed rather than assumed from the request."""

    epochs: int  # epochs the fit ran: the requested ones, or fewer when it evidently stopped early
    epochs_source: str
    n_given: int  # training windows the fit trains on: all given, less a hold-out it carved out itself
    held_out: int
    samples: int  # windows given to the optimizer (a repeat of the same step's rows is not a new one)
    batch: int


def observed_counts(st: Any, th: Thresholds) -> ObservedCounts:
    """Epochs run and windows trained on, as observed. A hold-out = training windows that only ever reach
    forwards that cannot train (eval mode / no gradients), up to ``holdout_max_fraction`` of them. Fewer
    epochs than requested are believed when the fit evaluated after each one (early stopping) and the
    training between evaluations adds up to one pass over the windows it trains on."""
    rec = st.recording
    n, requested = st.n_train, max(st.epochs, 1)
    held = len(rec.held_out_rows)
    if not held or held > th.holdout_max_fraction * n:
        held = 0
    n_given = n - held
    samples = rec.samples_given_train
    batch = st.batch_size if st.builtin else (rec.typical_train_batch or st.batch_size)
    epochs, source = requested, "as requested"
    phases = rec.eval_phases
    if (
        1 <= phases < requested
        and n_given - batch <= samples / phases <= th.samples_excess_fraction * n_given
    ):
        epochs, source = (
            phases,
            f"{phases} evaluation passes, each after one pass over the windows (stopped early)",
        )
    return ObservedCounts(epochs, source, n_given, held, samples, batch)


def _counts_evidence(c: ObservedCounts, st: Any) -> str:
    held = (
        f"; {c.held_out} held out by the fit (seen only without gradients or in eval mode)"
        if c.held_out
        else ""
    )
    return f"{c.epochs} of {st.epochs} requested epoch(s) run ({c.epochs_source}); {c.n_given} of {st.n_train} windows trained on{held}"


def _steps_range(n: int, batch: int, k: int) -> tuple[int, int]:
    """Optimizer steps per epoch a correct loop takes: one per k micro-batches, last batch kept or dropped."""
    if not batch:
        return 0, 0
    return (n // batch) // k, math.ceil(math.ceil(n / batch) / k)


def optimizer_steps_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Steps per epoch run vs one per (accumulated) batch of the windows trained on."""
    rec = st.recording
    if not rec.optimizer_hooks:
        return skip(CHECK, "optimizer_steps", "this torch has no global optimizer step hooks")
    c = observed_counts(st, th)
    n, epochs, batch = c.n_given, c.epochs, c.batch
    per_epoch = rec.optimizer_steps / epochs if epochs else float("nan")
    k = 1 if st.builtin else rec.accumulation
    lo, hi = _steps_range(n, batch, k)
    expected = math.ceil(math.ceil(n / batch) / k) if batch else 0
    evidence = [
        f"{rec.optimizer_steps} optimizer step(s) in {epochs} epoch(s) = {per_epoch:.2f} per epoch",
        f"training batch size {'(built-in) ' if st.builtin else 'observed '}{batch}: ceil({n} / {batch}) = "
        f"{math.ceil(n / batch) if batch else 0} batches",
        _counts_evidence(c, st),
    ]
    if k > 1:
        evidence.append(f"gradient accumulation: {k} training forwards per step (median)")
    if rec.repeat_forwards:
        evidence.append(
            f"{rec.repeat_forwards} forward(s) re-ran the rows of an earlier forward of the same step "
            "(a re-evaluated closure, sharpness-aware minimization): not counted as micro-batches"
        )
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
            "epochs_run": epochs,
        },
    )


def samples_per_epoch_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Windows given to the optimizer per epoch run vs the windows the fit trains on."""
    rec = st.recording
    c = observed_counts(st, th)
    n, epochs = c.n_given, c.epochs
    seen = c.samples / epochs if epochs else float("nan")
    low = max(n - c.batch + 1, 1)  # drop_last may skip one partial batch
    evidence = (
        f"{c.samples} windows given to the optimizer through {rec.forward_calls_train} training-mode forward(s) "
        f"with gradients in {epochs} epoch(s)"
        + (
            f" ({rec.repeat_samples} more re-ran rows already fed to the same step)"
            if rec.repeat_samples
            else ""
        ),
        _counts_evidence(c, st),
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
        expected=f"{n} (the windows trained on; >= {low} with a dropped last batch)",
        hint=hint,
        evidence=evidence,
        values={"samples_per_epoch": seen, "n_train": st.n_train, "n_given": n, "epochs_run": epochs},
    )


def coverage_verdict(st: Any, th: Thresholds) -> CheckResult:
    """Training windows that never reached a training forward over the whole run (exact row identity), vs
    what even sampling with replacement leaves unseen after the same number of draws."""
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
    c = observed_counts(st, th)
    n, epochs = c.n_given, max(c.epochs, 1)
    rows = seq[seq >= 0]
    held = set(rec.held_out_rows.tolist()) if c.held_out else set()
    never = n - len(set(np.unique(rows).tolist()) - held)
    # Draws with replacement leave each window unseen with probability (1 - 1/n)^draws: the most any
    # legitimate sampler leaves (a permutation per epoch leaves none).
    draws = c.samples
    expect = n * (1.0 - 1.0 / n) ** draws if n else 0.0
    allowed = max(th.coverage_never_fraction * n, 2.0 * (expect + 3.0 * math.sqrt(expect)))
    # Per epoch (informational: weighted or with-replacement samplers repeat windows within one).
    distinct = np.array([len(np.unique(part)) for part in np.array_split(rows, epochs)], dtype=np.int64)
    evidence = (
        f"{never} of {n} training windows never reached a training forward in {epochs} epoch(s) "
        f"({draws} windows drawn)",
        f"sampling with replacement would leave ~{expect:.1f} unseen after {draws} draws; a permutation per epoch 0",
        f"distinct per epoch (informational): min {int(distinct.min())}, mean {float(distinct.mean()):.1f}, "
        f"max {int(distinct.max())}",
        _counts_evidence(c, st),
    )
    if never > allowed:
        status = Status.FAIL
        hint = (
            "training never shows these windows (a wrong index range, a slice of the data): iterate over all "
            "windows each epoch (DataLoader(shuffle=True) or torch.randperm)"
        )
    elif never >= max(c.batch, 1) and never > expect + 3.0 * math.sqrt(expect):
        status = Status.WARN
        hint = "some training windows are never trained on: check the batch index range and drop_last"
    else:
        status, hint = Status.PASS, ""
    return CheckResult(
        CHECK,
        "coverage",
        status,
        measured=f"{never} of {n} training windows never trained on ({never / max(n, 1):.0%})",
        expected=f"<= ~{expect:.1f} (what sampling with replacement leaves after {draws} draws); FAIL above {allowed:.1f}",
        hint=hint,
        evidence=evidence,
        values={
            "never_seen": never,
            "expected_unseen": expect,
            "distinct_per_epoch": float(distinct.mean()),
            "n_train": st.n_train,
            "n_given": n,
        },
    )
