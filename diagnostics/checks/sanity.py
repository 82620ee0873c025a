"""Sanity: is the training function actually training this model, and training it right?

Everything is measured on the shared short training run (diagnostics.training.short_training), observed
through hooks (diagnostics.instrument), so it works for the built-in trainer and for any ``--fit``. First
the outcome and the dynamics, judged against what this model does under the built-in recipe on the same rows
(diagnostics.reference; diagnostics.checks.sanity_outcome):

  outcome          eval-mode train loss and accuracy vs the reference's (also: loss grew / did not move /
                   one class predicted)
  update_size      per-step net weight change relative to the weights, median over the run, vs the reference's
  lr_schedule      the lr relative to its peak: collapsed or never arrived
  loss_trajectory  per-epoch mean training loss: flat, growing, oscillating, vs the reference's descent

then the pattern findings, which say where to look (diagnostics.checks.sanity_findings and sanity_counts; counts
observed, not assumed: epochs actually run, windows actually given to the optimizer, a hold-out the fit keeps itself):

  init_loss          loss of the untrained model vs ln(C) (uniform predictions)
  optimizer_steps    steps taken vs one per batch (or per k micro-batches when the fit accumulates gradients)
  samples_per_epoch  windows seen by training-mode forwards per epoch vs N
  coverage           training windows never trained on over the run (exact row hashes) vs what sampling with
                     replacement leaves: a wrong index range never shows some (per-epoch distinct: evidence)
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
and the machine findings (diagnostics.checks.sanity_machine):

  overfit_batch      a separate tiny run: can this model memorise a handful of windows at all? (if not,
                     a second run on standardized features tells unscaled inputs from broken gradients)
  epoch_time         time per epoch vs the physical lower bound (diagnostics.physics) on this machine;
                     when far slower on CPU, a 1-thread vs N-thread step probe exposes oversubscription

A frozen-encoder fine-tune declares what it leaves untrained on the function: ``fit.moola_frozen =
("encoder",)`` (prefixes of parameter names); gradients/param_updates then expect nothing of those.
"""

from __future__ import annotations

from typing import Any

from diagnostics.checks.sanity_counts import (
    ObservedCounts,
    coverage_verdict,
    observed_counts,
    optimizer_steps_verdict,
    samples_per_epoch_verdict,
)
from diagnostics.checks.sanity_findings import (
    divergence_verdict,
    grad_clearing_verdict,
    gradients_verdict,
    init_loss_verdict,
    label_alignment_verdict,
    learning_rate_verdict,
    loss_decrease_verdict,
    loss_inputs_verdict,
    outside_updates_verdict,
    param_updates_verdict,
    train_mode_verdict,
    weight_norm_verdict,
)
from diagnostics.checks.sanity_machine import (
    OverfitResult,
    epoch_time_verdict,
    overfit_batch,
    overfit_verdict,
    thread_probe,
)
from diagnostics.checks.sanity_outcome import (
    loss_trajectory_verdict,
    lr_schedule_verdict,
    outcome_decider,
    outcome_verdict,
    reference_band,
    update_size_verdict,
)
from diagnostics.registry import register
from diagnostics.result import CheckResult

CHECK = "sanity"

__all__ = [
    "ObservedCounts",
    "OverfitResult",
    "check_sanity",
    "coverage_verdict",
    "divergence_verdict",
    "epoch_time_verdict",
    "grad_clearing_verdict",
    "gradients_verdict",
    "init_loss_verdict",
    "label_alignment_verdict",
    "learning_rate_verdict",
    "loss_decrease_verdict",
    "loss_inputs_verdict",
    "loss_trajectory_verdict",
    "lr_schedule_verdict",
    "observed_counts",
    "optimizer_steps_verdict",
    "outcome_verdict",
    "outside_updates_verdict",
    "overfit_batch",
    "overfit_verdict",
    "param_updates_verdict",
    "reference_band",
    "samples_per_epoch_verdict",
    "thread_probe",
    "train_mode_verdict",
    "update_size_verdict",
    "weight_norm_verdict",
]


@register(CHECK)
def check_sanity(ctx: Any) -> list[CheckResult]:
    from diagnostics.reference import reference_run
    from diagnostics.training import short_training

    st = short_training(ctx)
    th = ctx.thresholds
    ref = reference_run(ctx, st, outcome_decider(st, th))
    against_reference = (outcome_verdict, update_size_verdict, lr_schedule_verdict, loss_trajectory_verdict)
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
    return (
        [f(st, ref, th) for f in against_reference]
        + [f(st, th) for f in per_run]
        + [overfit_verdict(ctx), epoch_time_verdict(ctx, st)]
    )
