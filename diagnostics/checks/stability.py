"""Stability: what training produces, judged as a distribution over fresh seeds, never one seed's number.

The measurement is ``diagnostics.quality.estimate``: the recipe ``moola train`` runs, trained once per seed
on k-fold splits that follow the data's split policy, each model scored on rows it never trained on.
The conditions below judge that distribution:

* ``accuracy`` / ``log_loss``: does the model beat the majority class (accuracy) and the class prior
  (log-loss, a proper score) across runs? FAIL when on average it does not; WARN when the 95% interval
  of the per-run gain reaches zero, or when the spread over seeds is as large as the gain itself.
* ``pointers``: the same for the pointer head against the best constant (the training rows' median
  pointers), which also needs a gain of ``Thresholds.pointer_min_gain`` of the constant's error.
* ``reported_run``: where the single number check-all reports sits among the runs.
* ``label_noise``: windows every run got wrong (each scored at least twice): label-noise candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, skip

if TYPE_CHECKING:
    from diagnostics.context import DiagContext
    from diagnostics.quality import MetricSummary, Plan, QualityEstimate

CHECK = "stability"


def sample_rows(ctx: DiagContext) -> np.ndarray:
    """The rows the runs train on: all of them, or a stratified, seeded sample of
    ``Thresholds.stability_max_windows`` (``diagnostics.sampling``, as the other training findings), so
    the runs' cost stays bounded as the data grows; the report says so."""
    from diagnostics.sampling import stratified_subsample

    rows = np.arange(len(ctx.dataset), dtype=np.int64)
    cap = int(ctx.thresholds.stability_max_windows)
    return stratified_subsample(rows, ctx.dataset.y, cap, int(ctx.config.seed))


def _data(ctx: DiagContext):
    rows = sample_rows(ctx)
    return ctx.dataset if len(rows) == len(ctx.dataset) else ctx.dataset.subset(rows)


def _plan(ctx: DiagContext) -> Plan:
    from dataclasses import replace

    from diagnostics import quality

    config = replace(
        ctx.config,
        model=ctx.model_name,
        # Every registered model has a pointer head: judge it whenever the data has pointers.
        predict_pointers=ctx.dataset.pointers is not None,
    )
    split = ctx.split_kind if ctx.split_kind in ("random", "temporal", "purged") else None
    runs = int(ctx.thresholds.stability_runs)
    return quality.default_plan(_data(ctx), config, runs, split, first_seed=int(ctx.config.seed))


def quality_estimate(ctx: DiagContext) -> QualityEstimate:
    """The context's quality distribution (memoized: the audit and sanity read the same one); started in
    the background by ``prefetch`` in check-all, computed here otherwise."""
    from diagnostics import quality

    def compute() -> QualityEstimate:
        pending = ctx.cache.get("quality_pending")
        if pending is not None:
            est = pending.result()
        else:
            est = quality.estimate(_data(ctx), _plan(ctx), executor=ctx.executor, workers=ctx.workers)
        if est.n_windows < len(ctx.dataset):
            est.description += (
                f" (a stratified sample of {est.n_windows:,} of {len(ctx.dataset):,} windows, seed "
                f"{ctx.config.seed}; Thresholds.stability_max_windows)"
            )
        return est

    return ctx.memo("quality", compute)


def prefetch(ctx: DiagContext) -> None:
    """Train the runs in a process pool while the checks before this one run (both cores busy)."""
    import threading
    from concurrent.futures import Future

    from diagnostics import quality

    if "quality" in ctx.cache or "quality_pending" in ctx.cache:
        return
    plan = _plan(ctx)  # a bad plan is a user error: raise it here, on the main thread
    workers = min(ctx.workers or quality.default_workers(), len(plan.seeds))
    pool = ctx.executor
    if pool is None and workers > 1:
        if quality.lookup(_data(ctx), plan) is not None:
            return  # every run is cached: the check reads them; no pool, and this process keeps its cores
        pool = ctx.cache["quality_pool"] = quality.local_pool(workers)  # before torch: it imports meanwhile
        import torch

        # The pool's processes take their cores: the checks in this process get what is left (>= 1),
        # rather than torch threads spinning against them.
        torch.set_num_threads(max(1, quality.default_workers() - workers))
    pending: Future[QualityEstimate] = Future()

    def work() -> None:
        try:
            pending.set_result(quality.estimate(_data(ctx), plan, executor=pool, workers=workers))
        except BaseException as exc:  # handed to the main thread, which raises it in the check
            pending.set_exception(exc)
        finally:
            own = ctx.cache.pop("quality_pool", None)
            if own is not None:
                own.shutdown(wait=False)

    ctx.cache["quality_pending"] = pending
    threading.Thread(target=work, name="moola-quality", daemon=True).start()


def cancel(ctx: DiagContext) -> None:
    """Interrupted: stop the pool's processes now rather than after their current run."""
    from diagnostics import quality

    pool = ctx.cache.pop("quality_pool", None)
    if pool is not None:
        quality.terminate_pool(pool)


def _gain_status(gain: MetricSummary, spread: float, min_gain: float = 0.0) -> Status:
    if gain.n == 0:
        return Status.SKIP
    if gain.mean <= 0:
        return Status.FAIL
    if gain.n < 2 or gain.ci_low <= 0 or gain.mean < min_gain or spread >= gain.mean:
        return Status.WARN
    return Status.PASS


def _runs_line(est: QualityEstimate) -> str:
    cached = f"; {est.cached_runs} from the cache" if est.cached_runs else ""
    line = (
        f"{est.description}; {len(est.runs)} run(s) in {est.wall_s:.1f} s on {est.workers} worker(s){cached}"
    )
    # What the wall time is made of: every optimizer step of every run, at the runs' own measured pace.
    batch = int(est.plan.get("config", {}).get("batch_size") or 0)
    steps = sum(r.epochs_run * -(-r.n_train // batch) for r in est.runs) if batch > 0 else 0
    trained_s = sum(r.train_time_s for r in est.runs)
    if steps and trained_s > 0:
        line += (
            f"; {steps:,} training steps at {1000 * trained_s / steps:.1f} ms each (1 thread per run),"
            f" {trained_s:.1f} s of training in all"
        )
    return line


def _beats(est: QualityEstimate, metric: str, baseline: str) -> str:
    gain = est.gaps(metric, baseline)
    wins = sum(1 for v in gain.values if v > 0)
    return f"{wins}/{gain.n} runs beat the baseline"


def classification(est: QualityEstimate, metric: str, baseline: str, name: str) -> CheckResult:
    score, base = est.summary(metric), est.summary(baseline)
    gain = est.gaps(metric, baseline)
    status = _gain_status(gain, score.sd)
    label = "accuracy" if metric == "acc" else "log-loss"
    base_label = "majority-class accuracy" if baseline == "majority_acc" else "class-prior log-loss"
    hints = {
        Status.FAIL: f"across seeds the model is no better than the {base_label}: it has not learned the task "
        "(check the features, the labels and the training with `moola-diag sanity`)",
        Status.WARN: f"the gain over the {base_label} is not clear of the seed-to-seed spread: report the "
        f"interval, not one run, and raise --runs for a tighter one",
    }
    return CheckResult(
        CHECK,
        name,
        status,
        measured=f"{label} {score.describe()}; gain over the baseline {gain.describe()}",
        expected=f"beats the {base_label} ({base.mean:.3f}) across runs: 95% CI of the per-run gain above 0, "
        "and the spread (sd) below the gain",
        hint=hints.get(status, ""),
        evidence=(
            _runs_line(est),
            f"{_beats(est, metric, baseline)}; per run: "
            + ", ".join(f"{v:.3f}" for v in score.values[:20])
            + (" ..." if score.n > 20 else ""),
        ),
        values={
            "metric": metric,
            "summary": score.to_dict(),
            "baseline": base.to_dict(),
            "gain": gain.to_dict(),
            "runs": len(est.runs),
            # each run's train/val curves per epoch, for the report's plot (the first 10 runs)
            **({"curves": [r.curves for r in est.runs[:10]]} if metric == "acc" else {}),
        },
    )


def pointers(est: QualityEstimate, min_gain: float) -> CheckResult:
    mae = est.summary("pointer_mae_bars")
    if mae.n == 0:
        return skip(
            CHECK, "pointers", "pointer head not trained (no pointer columns, or a model without one)"
        )
    const = est.summary("pointer_baseline_mae_bars")
    gain = est.gaps("pointer_mae_bars", "pointer_baseline_mae_bars")
    relative = gain.mean / const.mean if const.mean > 0 else float("nan")
    status = _gain_status(gain, mae.sd, min_gain * const.mean)
    return CheckResult(
        CHECK,
        "pointers",
        status,
        measured=f"pointer MAE {mae.describe(1)} bars; the constant {const.mean:.1f} bars; "
        f"gain {gain.mean:+.2f} bars ({relative:+.0%})",
        expected=f"beats always predicting the training rows' median pointers by >= {min_gain:.0%} "
        "(95% CI of the per-run gain above 0)",
        hint={
            Status.FAIL: "the pointer head is no better than a constant: it has learned nothing about where "
            "patterns start and end (check the pointer columns and pointer_loss_weight)",
            Status.WARN: "the pointer head barely beats a constant guess: its MAE is not evidence of skill",
        }.get(status, ""),
        evidence=(_runs_line(est), _beats(est, "pointer_mae_bars", "pointer_baseline_mae_bars")),
        values={
            "summary": mae.to_dict(),
            "baseline": const.to_dict(),
            "gain": gain.to_dict(),
            "relative": relative,
        },
    )


def reported_run(est: QualityEstimate, ctx: DiagContext) -> CheckResult:
    from diagnostics.quality import place
    from diagnostics.training import short_training

    st = short_training(ctx)
    placement = place(st.test_acc, est.summary("acc"))
    pct = placement.percentile
    # Where one run falls is information, not a fault; a number outside every run is worth a look.
    outside = placement.below == 0 or placement.above == 0
    status = Status.WARN if outside and len(est.runs) >= 10 else Status.PASS
    return CheckResult(
        CHECK,
        "reported_run",
        status,
        measured=f"check-all's run: test accuracy {placement.describe()}",
        expected="one run is one draw from the distribution: quote the interval, not the run",
        hint="the reported run lies outside every run of the distribution: its split or recipe is unusual",
        evidence=(
            f"check-all's shared run: {st.epochs} epochs of {st.fit_name} on {st.n_train} rows, "
            f"{st.n_test} test rows (no augmentation or early stopping)",
            _runs_line(est),
        ),
        values={"value": st.test_acc, "percentile": pct},
    )


def label_noise(est: QualityEstimate, ctx: DiagContext) -> CheckResult:
    rows, scored, missed = est.window_errors()
    judged = scored >= 2
    if not judged.any():
        return skip(
            CHECK,
            "label_noise",
            f"each window scored {int(scored.max(initial=0))} time(s); needs >= 2 "
            f"(--runs {2 * int(est.plan['k'])})",
        )
    always = sample_rows(ctx)[rows[judged & (missed == scored)]]  # rows of ctx.dataset
    share = len(always) / int(judged.sum())
    ids = ctx.dataset.window_id[always]
    labels = [ctx.dataset.classes[int(c)] for c in ctx.dataset.y[always]]
    listed = [
        f"row {r} ({i!s}, labelled {lab!r})" for r, i, lab in zip(always[:20], ids, labels, strict=False)
    ]
    limit = float(ctx.thresholds.label_noise_share)
    return CheckResult(
        CHECK,
        "label_noise",
        Status.WARN if share > limit else Status.PASS,
        measured=f"{len(always)} of {int(judged.sum())} windows wrong in every run that scored them ({share:.1%})",
        expected=f"<= {limit:.0%} of windows always wrong (a few hard windows are normal)",
        hint="inspect these windows' labels: a window every model gets wrong is often mislabelled",
        evidence=tuple(listed) + ((f"... and {len(always) - 20} more",) if len(always) > 20 else ()),
        values={"rows": [int(r) for r in always], "share": share},
    )


@register(CHECK, prefetch=prefetch, cancel=cancel)
def check_stability(ctx: DiagContext) -> list[CheckResult]:
    est = quality_estimate(ctx)
    th = ctx.thresholds
    return [
        classification(est, "acc", "majority_acc", "accuracy"),
        classification(est, "log_loss", "prior_log_loss", "log_loss"),
        pointers(est, float(th.pointer_min_gain)),
        reported_run(est, ctx),
        label_noise(est, ctx),
    ]
