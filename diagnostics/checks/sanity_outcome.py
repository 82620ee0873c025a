"""Sanity, judged by outcome and dynamics against a reference: did the fit produce a model as good as this model
gets on these rows (the built-in recipe, diagnostics.reference), and did it train like one?

  outcome          eval-mode train loss and accuracy vs the reference's: a fit clearly outside it FAILs
                   whatever the cause, and so do a loss that grew or did not move and a one-class model
  update_size      the per-step net change of the weights relative to the weights, median over the run, vs the
                   reference's (net between step ends: a perturb-and-restore optimizer is judged by what stays)
  lr_schedule      the lr relative to its peak: collapsed (below 1% of it on most steps) or never arrived
  loss_trajectory  per-epoch mean training loss: flat, growing or oscillating, vs the reference's descent

The pattern findings (diagnostics.checks.sanity_findings, sanity_counts) then say where to look. Every finding that uses the
reference says so in its evidence, with the reference's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnostics.context import Thresholds
from diagnostics.reference import ReferencePoint, ReferenceRun
from diagnostics.result import CheckResult, Status, skip

CHECK = "sanity"


@dataclass(frozen=True)
class FitOutcome:
    """Where the fit ended: the trained model on the training rows, eval mode."""

    init_loss: float
    loss: float
    acc: float
    n_pred_classes: int
    majority: float  # share of the most common training class: what a one-class model scores
    n: int
    n_classes: int


def fit_outcome(st: Any) -> FitOutcome:
    y = np.asarray(st.y_train)
    majority = float(np.bincount(y).max() / len(y)) if len(y) else float("nan")
    return FitOutcome(
        st.init_loss,
        st.train_loss,
        st.train_acc,
        len(np.unique(st.pred_train)),
        majority,
        len(y),
        int(st.n_classes),
    )


@dataclass(frozen=True)
class ReferenceBand:
    """What the reference says this model reaches: today one run's point (``runs`` = 1); a distribution over
    seeds (diagnostics.quality) would set ``loss``/``acc`` to its worst plausible values instead."""

    loss: float
    acc: float
    n_pred_classes: int
    epoch: int
    runs: int = 1


def reference_band(point: ReferencePoint) -> ReferenceBand:
    """The one place a reference distribution plugs in: a single reference run is its own band."""
    return ReferenceBand(point.loss, point.acc, point.n_pred_classes, point.epoch)


def _acc_margin(u: FitOutcome) -> float:
    """An accuracy gain over the majority share that sampling noise on n windows does not explain."""
    m = u.majority
    return max(0.05, 2.0 * math.sqrt(max(m * (1 - m), 1e-12) / max(u.n, 1)))


def _acc_noise(u: FitOutcome, band: ReferenceBand) -> float:
    """Three standard errors of the difference of two accuracies on the same n windows."""
    p = min(max((u.acc + band.acc) / 2, 1e-6), 1 - 1e-6)
    return 3.0 * math.sqrt(2.0 * p * (1 - p) / max(u.n, 1))


def _ln_c(u: FitOutcome) -> float:
    return math.log(u.n_classes) if u.n_classes > 1 else 1.0


def accuracy_vouches(u: FitOutcome, band: ReferenceBand | None) -> bool:
    """The fit's accuracy alone shows that it trained the model: more than one class predicted, a gain over
    the majority share beyond sampling noise, and level with the reference's (within 3 SE) or above. A fit
    that optimizes another loss (BCE on one-hot targets, a margin loss) can then end with a higher
    cross-entropy: that is calibration, not a failed training, so the loss rules give way to accuracy."""
    return (
        band is not None
        and u.n_pred_classes > 1
        and u.acc - u.majority >= _acc_margin(u)
        and band.acc - u.acc <= _acc_noise(u, band)
    )


def outcome_failures(u: FitOutcome, band: ReferenceBand | None, th: Thresholds) -> list[str]:
    """The ways the fit's outcome is clearly outside the reference (empty: it is not)."""
    f, ln_c = th.outcome_gain_fraction, _ln_c(u)
    out = []
    gain = u.init_loss - u.loss
    if not math.isfinite(u.loss):
        return ["the trained model's loss is not finite"]
    judge_loss = not accuracy_vouches(u, band)
    if gain < -0.05 * ln_c and judge_loss:
        out.append(f"the loss grew: {u.init_loss:.4f} -> {u.loss:.4f}")
    if band is None:
        return out
    ref_gain = u.init_loss - band.loss
    ref_acc_gain = band.acc - u.majority
    if ref_gain >= th.outcome_min_ref_gain * ln_c and judge_loss:
        if abs(gain) < 0.01 * ln_c:
            out.append(f"the loss did not move: {u.init_loss:.4f} -> {u.loss:.4f}")
        elif gain < f * ref_gain and gain >= -0.05 * ln_c:
            out.append(f"the loss fell {gain:.4f}, under {f:.0%} of the reference's {ref_gain:.4f}")
    if ref_acc_gain >= _acc_margin(u):
        if u.n_pred_classes == 1 and band.n_pred_classes > 1:
            out.append("the model predicts one class for every window")
        elif u.acc - u.majority < f * ref_acc_gain and band.acc - u.acc > _acc_noise(u, band):
            out.append(
                f"accuracy {u.acc:.3f} gains {u.acc - u.majority:+.3f} over the majority share "
                f"{u.majority:.3f}, under {f:.0%} of the reference's {ref_acc_gain:+.3f}"
            )
    return out


def outcome_decider(st: Any, th: Thresholds):
    """For the reference run: stop once the comparison cannot change. FAIL is decided as soon as the fit is
    clearly worse than the reference so far (the reference only gets better with training: an assumption,
    and the evidence says after how many epochs); PASS as soon as the fit beats the best the reference could
    reach at all (loss 0, accuracy 1)."""
    u = fit_outcome(st)
    f = th.outcome_gain_fraction
    best = ReferenceBand(0.0, 1.0, u.n_classes, 0)
    beats_best = not outcome_failures(u, best, th) and u.init_loss - u.loss >= f * u.init_loss

    def decide(point: ReferencePoint) -> str:
        if beats_best:
            return "the fit already beats any reference by the outcome rule"
        if outcome_failures(u, reference_band(point), th):
            return "the fit is already clearly outside the reference"
        return ""

    return decide


def outcome_verdict(st: Any, ref: ReferenceRun | None, th: Thresholds) -> CheckResult:
    """The fit's eval-mode train loss and accuracy vs what this model reaches under the built-in recipe."""
    u = fit_outcome(st)
    band = None if ref is None or ref.same_as_fit else reference_band(ref.final)
    fails = outcome_failures(u, band, th)
    f = th.outcome_gain_fraction
    measured = (
        f"train loss {u.init_loss:.4f} -> {u.loss:.4f}, accuracy {u.acc:.3f} (eval mode, {u.n} windows, "
        f"{u.n_pred_classes} class(es) predicted) after {st.epochs} epoch(s)"
    )
    evidence = [f"majority share {u.majority:.3f}; untrained accuracy {st.init_train_acc:.3f}"]
    if band is not None and accuracy_vouches(u, band) and u.loss > band.loss:
        evidence.append(
            f"cross-entropy {u.loss:.4f} against the reference's {band.loss:.4f}, but accuracy {u.acc:.3f} is "
            f"level with the reference's {band.acc:.3f} or above: judged on accuracy (a fit that optimizes "
            "another loss ends with another calibration)"
        )
    if ref is not None:
        evidence.insert(0, ref.describe())
        if not ref.same_as_fit:
            evidence.append(f"reference run {ref.wall_s:.2f} s for {ref.epochs_run} epoch(s)")
    if fails:
        status = Status.FAIL
        measured += ": " + "; ".join(fails)
        hint = (
            "this fit trains the model far worse than the built-in recipe does on the same rows: the other "
            "sanity findings say where to look (updates, lr, labels, loss inputs, gradients)"
        )
    else:
        status, hint = Status.PASS, ""
    expected = (
        f"within the reference: >= {f:.0%} of its loss drop and of its accuracy gain over the majority share; "
        "a loss that falls; more than one class predicted"
        if band is not None
        else "a loss that does not grow (no --fit: the run is the built-in recipe, its own reference)"
    )
    return CheckResult(
        CHECK,
        "outcome",
        status,
        measured=measured,
        expected=expected,
        hint=hint,
        evidence=tuple(evidence),
        values={
            "init_loss": u.init_loss,
            "loss": u.loss,
            "acc": u.acc,
            "ref_loss": None if band is None else band.loss,
            "ref_acc": None if band is None else band.acc,
            "ref_epoch": None if band is None else band.epoch,
            "ref_seconds": None if ref is None else ref.wall_s,
            "failures": fails,
        },
    )


def _not_better(st: Any, ref: ReferenceRun) -> bool:
    """The fit did not end better than the reference (a collapsed lr or tiny updates after the fit has
    already beaten the reference are a choice, not a fault). Better: at least the reference's accuracy, and
    a lower loss unless the accuracy vouches for the training (``accuracy_vouches``)."""
    if st.train_acc < ref.final.acc:
        return True
    return not (
        st.train_loss < ref.final.loss or accuracy_vouches(fit_outcome(st), reference_band(ref.final))
    )


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def update_size_verdict(st: Any, ref: ReferenceRun | None, th: Thresholds) -> CheckResult:
    """Median over the run of ||w_k - w_{k-1}|| / ||w_{k-1}|| between step ends, vs the reference's."""
    rec = st.recording
    u = np.asarray(rec.update_ratios, dtype=np.float64)
    if not u.size:
        return skip(CHECK, "update_size", "no optimizer step was taken")
    r = np.asarray(ref.recording.update_ratios if ref is not None else [], dtype=np.float64)
    med, r_med = _median(u), _median(r)
    q = np.nanpercentile(u, [10, 90])
    tail = _median(u[-max(1, len(u) // 4) :])
    evidence = [
        f"per-step ||dw||/||w|| over {len(u)} steps: median {med:.3g}, 10%..90% {q[0]:.3g}..{q[1]:.3g}, "
        f"last quarter median {tail:.3g}",
        "measured between consecutive step ends: weights perturbed and restored inside a step "
        "(sharpness-aware minimization) count only by the change that stays",
    ]
    if ref is not None:
        evidence.insert(0, ref.describe())
        evidence.append(f"reference per-step ||dw||/||w||: median {r_med:.3g} over {len(r)} steps")
    floor = th.update_ratio_floor
    if ref is None or ref.same_as_fit or not math.isfinite(r_med) or r_med <= 0:
        status, hint = Status.PASS, ""
        expected = "updates of the size the built-in recipe makes (the fit is the reference)"
    else:
        ceiling = th.update_ratio_ceiling
        expected = (
            f"{floor:g}x..{ceiling:g}x the reference's median {r_med:.3g} (= {floor * r_med:.3g}.."
            f"{ceiling * r_med:.3g})"
        )
        if not (med >= floor * r_med) and _not_better(st, ref):
            status = Status.FAIL
            hint = (
                "the weights barely move per step: an lr scaled toward 0 (a schedule stepped too often, a loss "
                "divided by a huge factor under SGD) or gradients clipped to a tiny norm"
            )
        elif med > ceiling * r_med and _not_better(st, ref):
            status = Status.FAIL
            hint = (
                "each step rewrites a large share of the weights: weight decay x lr or a penalty far too "
                "strong, or an lr far too large for this model"
            )
        else:
            status, hint = Status.PASS, ""
    ratio = med / r_med if ref is not None and r_med and math.isfinite(r_med) else float("nan")
    return CheckResult(
        CHECK,
        "update_size",
        status,
        measured=f"median update {med:.3g} of the weights' norm per step"
        + (f" = {ratio:.3g}x the reference's" if math.isfinite(ratio) else ""),
        expected=expected,
        hint=hint,
        evidence=tuple(evidence),
        values={"median_ratio": med, "ref_median_ratio": r_med, "tail_ratio": tail},
    )


def lr_schedule_verdict(st: Any, ref: ReferenceRun | None, th: Thresholds) -> CheckResult:
    """The lr relative to its peak over the run: collapsed early, or never reached the lr it was set to."""
    rec = st.recording
    if not rec.optimizer_hooks or not rec.lrs:
        return skip(CHECK, "lr_schedule", "no optimizer step with a learning rate was recorded")
    lrs = np.asarray(rec.lrs, dtype=np.float64)
    seen_peak = float(lrs.max())
    declared = float(rec.lr_declared_peak)
    peak = max(seen_peak, declared)
    frac = th.lr_collapse_fraction
    if peak <= 0:
        return skip(CHECK, "lr_schedule", "the lr is 0 at every step (see learning_rate)")
    rel = lrs / peak
    low = rel < frac
    share_low = float(low.mean())
    first_low = int(np.argmax(low)) if low.any() else -1
    evidence = [
        f"lr over {len(lrs)} steps: first {lrs[0]:.3g}, peak {seen_peak:.3g}, last {lrs[-1]:.3g}"
        + (f"; the schedule's own peak (initial_lr / max_lr) {declared:.3g}" if declared else ""),
        f"below {frac:.0%} of the peak on {share_low:.0%} of the steps"
        + (f", first at step {first_low + 1}" if first_low >= 0 else ""),
    ]
    if ref is not None:
        r = np.asarray(ref.recording.lrs, dtype=np.float64)
        r_share = float((r < frac * r.max()).mean()) if r.size and r.max() > 0 else float("nan")
        evidence.insert(0, ref.describe())
        evidence.append(
            f"reference lr {r.min() if r.size else float('nan'):.3g}..{r.max() if r.size else float('nan'):.3g}: "
            f"below {frac:.0%} of its peak on {r_share:.0%} of its steps"
        )
    collapsed = share_low > th.lr_low_share
    never_arrived = declared > 0 and seen_peak < 0.1 * declared
    guilty = ref is None or ref.same_as_fit or _not_better(st, ref)
    if (collapsed or never_arrived) and guilty:
        status = Status.FAIL
        if never_arrived:
            measured = f"the lr never arrived: its peak {seen_peak:.3g} is {seen_peak / declared:.2g} of the {declared:.3g} it was set to"
            hint = "the warm-up is longer than the run (total_iters / warmup steps counted in batches vs epochs?)"
        else:
            measured = (
                f"the lr collapsed: below {frac:.0%} of its peak {peak:.3g} on {share_low:.0%} of the steps "
                f"(from step {first_low + 1} of {len(lrs)}; last {lrs[-1]:.3g})"
            )
            hint = (
                "the schedule decays far too fast: a per-epoch scheduler stepped per batch (step_size / T_max / "
                "gamma meant for epochs), or a decay rate off by orders of magnitude"
            )
    else:
        status, hint = Status.PASS, ""
        measured = f"lr {lrs.min():.3g}..{seen_peak:.3g}; below {frac:.0%} of the peak on {share_low:.0%} of the steps"
        if collapsed or never_arrived:
            measured += " (the fit still ended better than the reference)"
    return CheckResult(
        CHECK,
        "lr_schedule",
        status,
        measured=measured,
        expected=f"the lr reaches its peak and stays above {frac:.0%} of it on >= {1 - th.lr_low_share:.0%} of "
        "the steps (the reference: at its peak throughout)",
        hint=hint,
        evidence=tuple(evidence),
        values={"share_low": share_low, "peak": peak, "declared_peak": declared, "last": float(lrs[-1])},
    )


def _epoch_means(losses: list[float], epochs: int) -> np.ndarray:
    x = np.asarray(losses, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return x
    return np.array([c.mean() for c in np.array_split(x, max(1, min(epochs, len(x))))])


def loss_trajectory_verdict(st: Any, ref: ReferenceRun | None, th: Thresholds) -> CheckResult:
    """Per-epoch mean of the fit's training losses: falling like the reference's, or flat / growing /
    oscillating."""
    from diagnostics.checks.sanity_counts import observed_counts

    rec = st.recording
    epochs = observed_counts(st, th).epochs
    m = _epoch_means(rec.losses, epochs)
    if m.size < 2:
        return skip(
            CHECK, "loss_trajectory", "fewer than two epochs of torch loss-function values were recorded"
        )
    drop = (m[0] - m[-1]) / max(abs(m[0]), 1e-12)
    steps = np.diff(m)
    ups, downs = float(steps[steps > 0].sum()), float(-steps[steps < 0].sum())
    osc = ups / (ups + downs) if ups + downs > 0 else 0.0
    # A flat curve moves up about as often as down too: oscillation needs swings that matter (mean
    # epoch-to-epoch move relative to the loss's level).
    swing = (ups + downs) / len(steps) / max(float(np.mean(np.abs(m))), 1e-12)
    evidence = [
        f"mean training loss per epoch ({len(m)}): "
        + ", ".join(f"{v:.4f}" for v in (m if len(m) <= 8 else np.r_[m[:4], m[-4:]]))
        + ("" if len(m) <= 8 else " (first and last four)"),
        f"relative change first -> last epoch {-drop:+.1%}; rises make up {osc:.0%} of the epoch-to-epoch movement "
        f"(mean move {swing:.1%} of the level)",
    ]
    r_drop = float("nan")
    if ref is not None and len(ref.epoch_losses) >= 2:
        rm = np.asarray(ref.epoch_losses, dtype=np.float64)
        r_drop = float((rm[0] - rm[-1]) / max(abs(rm[0]), 1e-12))
        evidence.insert(0, ref.describe())
        evidence.append(
            f"reference mean training loss per epoch: {rm[0]:.4f} -> {rm[-1]:.4f} over {len(rm)} epoch(s) "
            f"({-r_drop:+.1%})"
        )
    # The reference must itself have descended clearly for "flat" to mean anything.
    compare = ref is not None and not ref.same_as_fit and math.isfinite(r_drop) and r_drop >= 0.05
    guilty = compare and _not_better(st, ref)
    if m[-1] > m[0] * 1.1 and guilty:
        status, shape = Status.FAIL, "growing"
        hint = (
            "the training loss rises while the reference's falls: check the loss's sign, the lr, the labels"
        )
    elif compare and guilty and drop < 0.1 * r_drop:
        status, shape = Status.FAIL, "flat"
        hint = (
            "the training loss does not fall while the reference's does over fewer epochs: the updates do "
            "not reach the weights (see update_size, lr_schedule, learning_rate)"
        )
    elif len(m) >= 4 and osc > 0.45 and swing > 0.05 and drop < 0.5 * (r_drop if compare else 1.0):
        status, shape = Status.WARN, "oscillating"
        hint = "the epoch loss goes up about as much as down: lower the lr or raise the batch size"
    else:
        status, shape, hint = Status.PASS, "falling" if drop > 0 else "not falling", ""
    return CheckResult(
        CHECK,
        "loss_trajectory",
        status,
        measured=f"{shape}: epoch mean training loss {m[0]:.4f} -> {m[-1]:.4f} ({-drop:+.1%}) over {len(m)} epoch(s)",
        expected="falling, by >= 10% of the reference's relative drop (computed for this model on these rows)"
        if compare
        else "falling",
        hint=hint,
        evidence=tuple(evidence),
        values={
            "epoch_means": m.tolist(),
            "drop": drop,
            "ref_drop": r_drop,
            "oscillation": osc,
            "swing": swing,
        },
    )
