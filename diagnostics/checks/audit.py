"""Audit a finished training run from what it recorded: a check family over a run directory.

Each finding measures (from the run's files, or by re-evaluating its checkpoint here) and a separate
condition judges it against what this run's model, data and recorded machine should give:
complete, reproduce, data, train_vs_val (+ leakage on the recorded split when the gap is real),
selection (+ quality), epoch_time, memory, params, config/*, curve/* and live.
Curve health lives in ``diagnostics.audit.curve``; reading and re-evaluating in ``diagnostics.audit``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from diagnostics.audit.context import CHECK, AuditContext, relabel
from diagnostics.audit.context import reported as _reported
from diagnostics.audit.cost import config_findings, epoch_time, memory, params_ratio
from diagnostics.audit.curve import curve_findings, finite
from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, skip

# --------------------------------------------------------------------------- complete


def completeness(ctx: AuditContext) -> CheckResult:
    rec = ctx.record
    n = len(rec.epochs)
    if rec.kind != "moola":
        return CheckResult(
            CHECK,
            "complete",
            Status.PASS,
            f"foreign {rec.kind} run: {n} epoch(s) in {rec.path.name}",
            "per-epoch metrics",
            values={"epochs": n, "kind": rec.kind},
        )
    planned = (rec.config or {}).get("n_epochs")
    if rec.complete:
        return CheckResult(
            CHECK,
            "complete",
            Status.PASS,
            f"{n} epoch(s) of {planned}; summary.json and model.pt present",
            "a finished run",
            values={"epochs": n, "planned": planned},
        )
    missing = [f for f, ok in (("summary.json", rec.summary), ("model.pt", rec.model_path)) if ok is None]
    return CheckResult(
        CHECK,
        "complete",
        Status.WARN,
        f"cut short after epoch {rec.epochs[-1]['epoch']} of {planned}: no {' and no '.join(missing)} "
        f"(stopped during epoch {rec.epochs[-1]['epoch'] + 1}); audited as far as it goes",
        "a finished run (summary.json, model.pt)",
        hint="findings that need the missing files SKIP; rerun the training to audit the weights",
        values={"epochs": n, "planned": planned, "missing": missing},
    )


# --------------------------------------------------------------------------- data and reproduce


def data_finding(ctx: AuditContext) -> CheckResult:
    rec, rp = ctx.record, ctx.replay
    if rec.kind != "moola":
        return skip(CHECK, "data", f"a foreign {rec.kind} run records no data fingerprint")
    recorded = (rec.data.get("fingerprint") or {}).get("arrays_sha256")
    if rp.fingerprint_now is None:
        return skip(CHECK, "data", rp.why.get("data", "data not loaded"))
    if recorded is None:
        return skip(
            CHECK,
            "data",
            f"the run predates data fingerprints; now {rp.fingerprint_now[:12]} ({rp.data_source})",
        )
    values = {"recorded": recorded, "now": rp.fingerprint_now, "source": rp.data_source}
    expected = "the windows and labels the run trained on (sha256 of X, y, classes)"
    if recorded != rp.fingerprint_now:
        return CheckResult(
            CHECK,
            "data",
            Status.FAIL,
            f"data changed since the run: sha256 {recorded[:12]} then, {rp.fingerprint_now[:12]} now ({rp.data_source})",
            expected,
            hint="audit against the file the run trained on (--data PATH), or retrain on this one",
            evidence=(f"recorded {recorded}", f"now      {rp.fingerprint_now}"),
            values=values,
        )
    return CheckResult(
        CHECK,
        "data",
        Status.PASS,
        f"unchanged: sha256 {recorded[:12]} ({rp.data_source})",
        expected,
        values=values,
    )


def reproduce(ctx: AuditContext) -> CheckResult:
    rec, rp = ctx.record, ctx.replay
    if rp.val is None:
        if rp.why.get("mismatch") == "architecture":
            return CheckResult(
                CHECK,
                "reproduce",
                Status.FAIL,
                rp.why["model"],
                "model.pt holds the recorded model's weights",
                hint="the checkpoint is not this run's: save model.state_dict() of the trained model",
            )
        return skip(CHECK, "reproduce", rp.why.get("model", "nothing to re-evaluate"))
    if rec.summary is None:
        return skip(CHECK, "reproduce", "no summary.json to compare with")
    reported = _reported(rec)
    n_val = len(rp.val_idx)
    same_device = str(rec.environment.get("device", "cpu")).startswith("cpu")
    rtol = ctx.loss_rtol * (1 if same_device else 10)
    rows = []
    bad = []
    for key, now in (
        ("val_acc", rp.val["acc"]),
        ("val_loss", rp.val["loss"]),
        ("train_acc_eval", rp.train["acc"]),
    ):
        then = reported.get(key)
        if then is None:
            continue
        if key.endswith("acc"):
            n = n_val if key == "val_acc" else len(rp.train_idx)
            ok = abs(now - then) * n <= (
                0.5 if same_device else 1.5
            )  # the same windows right (+-1 across devices)
        else:
            ok = abs(now - then) <= rtol * max(abs(then), 1e-12) + 1e-7
        rows.append(f"{key}: reported {then:.6g}, re-evaluated {now:.6g}" + ("" if ok else "  <- mismatch"))
        if not ok:
            bad.append(key)
    values = {
        "reported": {k: reported.get(k) for k in ("val_acc", "val_loss", "train_acc_eval")},
        "now": {"val_acc": rp.val["acc"], "val_loss": rp.val["loss"], "train_acc_eval": rp.train["acc"]},
        "n_val": n_val,
    }
    expected = (
        f"summary.json's figures, re-evaluated from model.pt on the {n_val} recorded validation rows "
        f"(accuracy to the window, loss within {rtol:.0e})"
    )
    evidence = (*rows, f"rows: {rp.split_source}; eval mode on cpu")
    if bad:
        return CheckResult(
            CHECK,
            "reproduce",
            Status.FAIL,
            f"model.pt gives val_acc {rp.val['acc']:.4f} / val_loss {rp.val['loss']:.4f}; summary.json reports "
            f"{reported.get('val_acc')} / {reported.get('val_loss')}",
            expected,
            hint="the weights are not the ones the metrics came from (saved at another epoch?), or the "
            "evaluation that produced the metrics differs from eval mode on these rows",
            evidence=evidence,
            values=values,
        )
    return CheckResult(
        CHECK,
        "reproduce",
        Status.PASS,
        f"model.pt reproduces val_acc {rp.val['acc']:.4f} and val_loss {rp.val['loss']:.4f} on {n_val} rows",
        expected,
        evidence=evidence,
        values=values,
    )


# --------------------------------------------------------------------------- train vs validation


def train_vs_val(ctx: AuditContext) -> list[CheckResult]:
    rec, rp, th = ctx.record, ctx.replay, ctx.thresholds
    reported = _reported(rec)
    val, running = reported.get("val_acc"), reported.get("train_acc_running")
    eval_acc = rp.train["acc"] if rp.train is not None else reported.get("train_acc_eval")
    if not finite(val) or not (finite(running) or finite(eval_acc)):
        return [skip(CHECK, "train_vs_val", "the run logs no train and validation accuracy")]
    limit = float(th.accuracy_gap)
    source = "re-evaluated from model.pt" if rp.train is not None else "recorded by the run"
    evidence = [f"logged train_acc_running {running} (running mean over augmented batches, dropout on)"]
    if finite(eval_acc):
        evidence.append(f"train_acc_eval {eval_acc:.4f}, eval mode, {source}")
    evidence.append(f"val_acc {val:.4f} (eval mode)")
    values = {"val_acc": val, "train_acc_running": running, "train_acc_eval": eval_acc, "limit": limit}
    expected = f"val_acc <= train accuracy measured the same way (eval mode) + {limit:g}"
    if finite(eval_acc):
        gap = val - eval_acc
        if gap > limit:
            out = [
                CheckResult(
                    CHECK,
                    "train_vs_val",
                    Status.FAIL,
                    f"val_acc {val:.3f} above eval-mode train_acc {eval_acc:.3f} by {gap:+.3f}",
                    expected,
                    hint="a real gap: see the leakage findings on the recorded split",
                    evidence=tuple(evidence),
                    values=values,
                )
            ]
            return out + leakage_on_recorded_split(ctx)
        if finite(running) and val - running > limit:
            return [
                CheckResult(
                    CHECK,
                    "train_vs_val",
                    Status.PASS,
                    f"val_acc {val:.3f} above the logged train_acc {running:.3f} is a measurement mismatch: "
                    f"measured the same way (eval mode), train is {eval_acc:.3f}",
                    expected,
                    evidence=tuple(evidence),
                    values=values,
                )
            ]
        return [
            CheckResult(
                CHECK,
                "train_vs_val",
                Status.PASS,
                f"val_acc {val:.3f} vs eval-mode train_acc {eval_acc:.3f} ({gap:+.3f})",
                expected,
                evidence=tuple(evidence),
                values=values,
            )
        ]
    gap = val - running
    if gap > limit:
        return [
            CheckResult(
                CHECK,
                "train_vs_val",
                Status.WARN,
                f"val_acc {val:.3f} above the logged train_acc {running:.3f} by {gap:+.3f}; no eval-mode "
                "train figure to tell a measurement mismatch from leakage",
                expected,
                hint="log train accuracy in eval mode at the end (or audit with a checkpoint); a logged "
                "running mean with dropout and augmentation reads low",
                evidence=tuple(evidence),
                values=values,
            )
        ]
    return [
        CheckResult(
            CHECK,
            "train_vs_val",
            Status.PASS,
            f"val_acc {val:.3f} vs logged train_acc {running:.3f} ({gap:+.3f})",
            expected,
            evidence=tuple(evidence),
            values=values,
        )
    ]


def leakage_on_recorded_split(ctx: AuditContext) -> list[CheckResult]:
    """The structural leakage findings (identical, shared ids, near-duplicate, shared bars, overlap) on the
    run's own train/validation rows."""
    from diagnostics.checks import leakage
    from diagnostics.commands import crash_result
    from diagnostics.context import DiagContext

    rp = ctx.replay
    if rp.dataset is None or rp.train_idx is None:
        return [skip(CHECK, "leakage", "the recorded split could not be rebuilt")]
    dctx = DiagContext(
        dataset=rp.dataset,
        train_idx=rp.train_idx,
        test_idx=rp.val_idx,
        split_kind="file",
        model_name=ctx.model_name or "jade_compact",
        thresholds=ctx.thresholds,
    )
    out = []
    for fn in (leakage.identical_windows, leakage.shared_ids, leakage.near_duplicate_windows):
        try:
            r = fn(dctx)
        except Exception as exc:  # a crashed finding proves nothing: FAIL it, keep the others
            r = crash_result("leakage", exc)
        out.append(relabel(r, f"leakage/{r.name}"))
    return out


# --------------------------------------------------------------------------- selection and quality


def selection(ctx: AuditContext) -> list[CheckResult]:
    rec = ctx.record
    reported = _reported(rec)
    acc = reported.get("val_acc")
    if rec.kind != "moola":
        return [skip(CHECK, "selection", f"a {rec.kind} log does not say how the reported epoch was chosen")]
    if rec.summary is None:
        return [skip(CHECK, "selection", "no summary.json: nothing was reported")]
    patience = int((rec.config or {}).get("early_stopping_patience") or 0)
    n_val = int(rec.summary.get("n_val") or rec.data.get("n_val") or 0)
    if patience <= 0 or n_val == 0 or not finite(acc):
        return [
            CheckResult(
                CHECK,
                "selection",
                Status.PASS,
                "the last epoch is reported: not selected on the validation rows",
                "a reported metric not chosen on the rows it is measured on",
            )
        ]
    accs = [r.get("val_acc") for r in rec.epochs]
    k = rec.kept_index()
    k = len(accs) - 1 if k is None else k
    near = [a for i, a in enumerate(accs) if i != k and abs(i - k) <= patience and finite(a)]
    reference = statistics.median(near) if near else None
    sd = math.sqrt(max(acc * (1 - acc), 1.0 / n_val) / n_val)  # binomial sd of an accuracy on n_val rows
    n_cand = sum(finite(a) for a in accs)
    order_stat = sd * math.sqrt(2 * math.log(n_cand)) if n_cand > 1 else 0.0  # E[max of k] ~ sd sqrt(2 ln k)
    gap = acc - reference if reference is not None else None
    limit = max(2 * sd, 2.0 / n_val)
    evidence = (
        f"epoch {rec.epochs[k]['epoch']} kept by min val_loss among {n_cand} epochs, on the same {n_val} rows "
        "its val_acc is reported on",
        f"median val_acc of the other epochs within the patience ({patience}) of it: "
        + ("-" if reference is None else f"{reference:.4f} (from {len(near)} epochs)"),
        f"order statistic: the best of {n_cand} equally good epochs reads ~{order_stat:.3f} high "
        f"(sd {sd:.3f} x sqrt(2 ln {n_cand}))",
        f"last epoch's val_acc {accs[-1]}",
    )
    values = {
        "reported": acc,
        "reference": reference,
        "gap": gap,
        "order_stat_optimism": order_stat,
        "sd": sd,
        "n_val": n_val,
        "n_epochs": n_cand,
    }
    expected = f"the reported val_acc within {limit:.3f} (2 sd on {n_val} rows) of its neighbouring epochs"
    base = f"val_acc {acc:.3f} comes from the epoch early stopping selected on the same rows"
    if gap is not None and gap > limit:
        result = CheckResult(
            CHECK,
            "selection",
            Status.WARN,
            f"{base}; it stands {gap:+.3f} above its neighbours' median {reference:.3f}: inflated by selection",
            expected,
            hint=f"report ~{reference:.3f} (or score a held-out test split the selection never saw)",
            evidence=evidence,
            values=values,
        )
    else:
        est = f"{gap:+.3f} vs its neighbours, " if gap is not None else ""
        result = CheckResult(
            CHECK,
            "selection",
            Status.PASS,
            f"{base}; estimated optimism {est}~{order_stat:.3f} by order statistics",
            expected,
            evidence=evidence,
            values=values,
        )
    return [result, quality_placement(ctx, acc)]


def quality_placement(ctx: AuditContext, reported: float | None) -> CheckResult:
    """Where the reported val_acc falls in the quality distribution of this recipe on this data, when the
    quality estimator (``moola-diag stability``) has every run of it cached. Never trains."""
    try:
        from diagnostics.quality import default_plan, lookup, place
    except ImportError:
        return skip(CHECK, "quality", "no quality estimator installed (diagnostics.quality)")
    from moola.config import TrainConfig

    ds = ctx.replay.dataset
    if ds is None or ctx.record.config is None or not finite(reported):
        return skip(CHECK, "quality", "needs the run's recipe, its data and a reported val_acc")
    config = TrainConfig.from_dict(ctx.record.config)
    # The recipe as trained, and as `moola-diag stability` spells it (pointer head on when the data has
    # pointers); its seeds from the run's seed, or from moola-diag's default --seed 0.
    runs = ctx.thresholds.stability_runs
    candidates = [
        (recipe, first_seed)
        for recipe in (config, replace(config, predict_pointers=ds.pointers is not None))
        for first_seed in dict.fromkeys((config.seed, 0))
    ]
    est = None
    try:
        for recipe, first_seed in candidates:
            est = lookup(ds, default_plan(ds, recipe, runs, recipe.split, first_seed=first_seed))
            if est is not None:
                break
    except Exception as exc:  # the estimator's cache is its own business: say why and go on
        return skip(CHECK, "quality", f"quality lookup failed: {type(exc).__name__}: {exc}")
    if est is None:
        return skip(
            CHECK,
            "quality",
            "no quality distribution cached for this recipe and data (run `moola-diag stability` with it)",
        )
    summary = est.summary("acc")
    placement = place(float(reported), summary)
    outside = placement.above == 0 and summary.n >= 10
    return CheckResult(
        CHECK,
        "quality",
        Status.WARN if outside else Status.PASS,
        f"reported val_acc {placement.describe()}",
        "one run is one draw of its recipe: inside the distribution of fresh-seed runs",
        hint=f"above every run of this recipe: expect ~{summary.mean:.3f} (selection or a lucky split)",
        evidence=(est.description, summary.describe()),
        values={"reported": reported, "percentile": placement.percentile, "summary": summary.to_dict()},
    )


def live(ctx: AuditContext) -> CheckResult:
    found = ctx.record.live_findings
    if found is None:
        return skip(CHECK, "live", "the run predates the live rules (no findings.jsonl)")
    worst = [f for f in found if f.get("level") in ("FAIL", "WARN")]
    lines = tuple(
        f"epoch {f.get('epoch')}: {f.get('level')} {f.get('rule')}: {f.get('message')}" for f in found
    )
    status = Status.WARN if worst else Status.PASS
    return CheckResult(
        CHECK,
        "live",
        status,
        f"{len(found)} live finding(s) during training" + (f", {len(worst)} WARN/FAIL" if worst else ""),
        "no live rule fired",
        hint="see the evidence: each line is what moola train reported as it happened",
        evidence=lines,
        values={"findings": found},
    )


@register(CHECK)
def check_audit(ctx: AuditContext) -> list[CheckResult]:
    results = [completeness(ctx), data_finding(ctx), reproduce(ctx)]
    results += train_vs_val(ctx)
    results += selection(ctx)
    results += [epoch_time(ctx), memory(ctx), params_ratio(ctx)]
    results += config_findings(ctx)
    results += [relabel(r, r.name) for r in curve_findings(ctx.record)]
    results.append(live(ctx))
    return results
