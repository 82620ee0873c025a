"""`moola-diag audit` on a corpus of real run directories made by `moola train`, then altered the way
things go wrong; each must be judged right. Bad input is one line and exit 2.

The runs are made once per session (tiny settings: ~120 windows, batch 8, a few seconds of CPU).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diagnostics.audit.run import run_audit
from diagnostics.cli import app as diag_app
from moola.cli import app as moola_app
from tests import helpers

runner = CliRunner()
HEALTHY = ["--n-epochs", "25", "--lr", "1e-3", "--batch-size", "8", "--patience", "5"]


def _train(data: Path, out: Path, *args: str) -> Path:
    result = runner.invoke(moola_app, ["train", "--data", str(data), "--out-dir", str(out), *args])
    assert result.exit_code == 0, result.output
    (run_dir,) = list(out.iterdir())
    return run_dir


@pytest.fixture(autouse=True)
def _no_quality_cache(monkeypatch):
    """Hermetic: the audit's quality lookup must not read this machine's cache (tests that want one set it)."""
    monkeypatch.setenv("MOOLA_QUALITY_CACHE", "off")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = root / "data.parquet"
    other = root / "other.parquet"
    for path, seed in ((data, 0), (other, 1)):
        result = runner.invoke(
            moola_app, ["data", "generate", "--out", str(path), "--n-windows", "120", "--seed", str(seed)]
        )
        assert result.exit_code == 0, result.output
    healthy = _train(data, root / "runs", *HEALTHY)
    one_epoch = _train(data, root / "runs1", "--n-epochs", "1", "--batch-size", "8")
    return {"root": root, "data": data, "other": other, "healthy": healthy, "one_epoch": one_epoch}


def _copy(corpus, name: str) -> Path:
    dst = corpus["root"] / "cases" / name
    shutil.copytree(corpus["healthy"], dst)
    return dst


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _write_rows(run: Path, rows: list[dict]) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _audit(run: Path, *args: str, tmp: Path | None = None):
    out = run.parent / f"{run.name}-report"
    result = runner.invoke(diag_app, ["audit", str(run), "--report-dir", str(out), *args])
    return result, out


def _by_name(report_dir: Path) -> dict[str, dict]:
    report = json.loads((report_dir / "report.json").read_text())
    return {r["name"]: r for r in report["results"]}


def test_a_healthy_run_passes(corpus):
    result, out = _audit(corpus["healthy"])
    assert result.exit_code == 0, result.output
    found = _by_name(out)
    statuses = {name: r["status"] for name, r in found.items()}
    assert "FAIL" not in statuses.values() and "WARN" not in statuses.values(), statuses
    for name in ("complete", "data", "reproduce", "train_vs_val", "selection", "epoch_time", "params"):
        assert statuses[name] == "PASS", (name, found[name])
    assert statuses["memory"] == "SKIP" and "cpu" in found["memory"]["measured"]
    assert statuses["quality"] == "SKIP"
    assert found["epoch_time"]["values"]["median_ratio"] > 1
    assert (out / "report.md").read_text().startswith("## moola-diag: PASS")


def test_the_run_directory_records_what_the_audit_needs(corpus):
    run = corpus["healthy"]
    config = json.loads((run / "config.json").read_text())
    assert len(config["data"]["fingerprint"]["arrays_sha256"]) == 64
    assert config["machine"]["matmul_flops_per_s"] > 1e8 and config["machine"]["lstm_step_s"]["encoder"] > 0
    assert config["environment"]["device_name"]
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == 120 and not set(split["train"]) & set(split["val"])
    row = _rows(run)[0]
    assert {"train_loss_running", "train_acc_running", "train_time_s", "samples_per_s"} <= set(row)
    assert "train_acc" not in row
    summary = json.loads((run / "summary.json").read_text())
    assert {"train_acc_running", "train_acc_eval", "train_loss_eval", "val_acc"} <= set(summary["metrics"])


def test_a_checkpoint_that_does_not_match_its_metrics_fails(corpus):
    run = _copy(corpus, "wrong_weights")
    shutil.copy(corpus["one_epoch"] / "model.pt", run / "model.pt")  # another run's (1-epoch) weights
    result, out = _audit(run)
    assert result.exit_code == 1, result.output
    found = _by_name(out)
    assert found["reproduce"]["status"] == "FAIL"
    assert found["data"]["status"] == "PASS"


def test_data_changed_since_the_run_is_one_finding_with_both_fingerprints(corpus):
    result, out = _audit(corpus["healthy"], "--data", str(corpus["other"]))
    assert result.exit_code == 1, result.output
    found = _by_name(out)
    data = found["data"]
    assert data["status"] == "FAIL" and data["values"]["recorded"] != data["values"]["now"]
    assert (
        data["values"]["recorded"][:12] in data["measured"] and data["values"]["now"][:12] in data["measured"]
    )
    assert found["reproduce"]["status"] == "SKIP" and "changed" in found["reproduce"]["measured"]


def test_epoch_times_faster_than_the_bound_fail(corpus):
    run = _copy(corpus, "too_fast")
    rows = _rows(run)
    for r in rows[:3]:
        r["train_time_s"] = 1e-5
    _write_rows(run, rows)
    result, out = _audit(run)
    assert result.exit_code == 1, result.output
    found = _by_name(out)["epoch_time"]
    assert found["status"] == "FAIL" and found["values"]["fast_epochs"] == [1, 2, 3]


def test_the_epoch_bound_uses_the_speeds_recorded_on_the_training_machine(corpus):
    """Real epoch times against a recorded machine 1000x slower than this one: impossible there."""
    run = _copy(corpus, "slow_machine")
    config = json.loads((run / "config.json").read_text())
    config["machine"]["lstm_step_s"] = {k: v * 1000 for k, v in config["machine"]["lstm_step_s"].items()}
    config["machine"]["matmul_flops_per_s"] /= 1000
    (run / "config.json").write_text(json.dumps(config))
    result, out = _audit(run)
    assert result.exit_code == 1
    assert _by_name(out)["epoch_time"]["status"] == "FAIL"


def test_a_run_cut_short_mid_epoch_is_audited_as_far_as_it_goes(corpus):
    from moola.config import TrainConfig
    from moola.data.loader import load_windows
    from moola.train.run import train_run

    class Kill:
        def on_step_end(self, state) -> None:
            if state.epoch == 4 and state.step_in_epoch == 3:
                raise KeyboardInterrupt  # Ctrl-C in the middle of epoch 4

    out_dir = corpus["root"] / "killed"
    config = TrainConfig(n_epochs=10, batch_size=8, lr=1e-3, device="cpu", out_dir=str(out_dir))
    with pytest.raises(KeyboardInterrupt):
        train_run(config, load_windows(corpus["data"]), callbacks=[Kill()])
    (run,) = list(out_dir.iterdir())
    assert not (run / "summary.json").exists() and not (run / "model.pt").exists()
    result, report = _audit(run)
    assert result.exit_code == 0, result.output
    found = _by_name(report)
    assert found["complete"]["status"] == "WARN"
    assert "cut short after epoch 3 of 10" in found["complete"]["measured"]
    assert "epoch 4" in found["complete"]["measured"]
    assert found["reproduce"]["status"] == "SKIP" and "model.pt" in found["reproduce"]["measured"]
    assert found["data"]["status"] == "PASS" and found["epoch_time"]["status"] == "PASS"
    assert "cut short" in result.output


def test_a_metric_inflated_by_selection_warns_with_an_estimate(corpus):
    run = _copy(corpus, "selected")
    summary = json.loads((run / "summary.json").read_text())
    rows = _rows(run)
    for r in rows:  # the kept epoch stands out from its neighbours: a lucky epoch picked on these rows
        if r["epoch"] != summary["best_epoch"]:
            r["val_acc"] = summary["metrics"]["val_acc"] - 0.3
    _write_rows(run, rows)
    result, out = _audit(run)
    assert result.exit_code == 0, result.output
    found = _by_name(out)
    sel = found["selection"]
    assert sel["status"] == "WARN" and "inflated by selection" in sel["measured"]
    assert sel["values"]["gap"] == pytest.approx(0.3)
    assert found["reproduce"]["status"] == "PASS"  # the summary still matches the weights


def _lightning_csv(rows: list[dict], path: Path) -> None:
    """As Lightning's CSVLogger writes: step rows with train_loss_step, epoch rows with the rest."""
    fields = [
        "epoch",
        "step",
        "train_loss_step",
        "train_loss_epoch",
        "train_acc_epoch",
        "val_loss",
        "val_acc",
    ]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"epoch": i, "step": 10 * i + 5, "train_loss_step": r["train_loss_running"] + 0.01})
            w.writerow({"epoch": i, "step": 10 * i + 9, "val_loss": r["val_loss"], "val_acc": r["val_acc"]})
            w.writerow(
                {
                    "epoch": i,
                    "step": 10 * i + 9,
                    "train_loss_epoch": r["train_loss_running"],
                    "train_acc_epoch": r["train_acc_running"],
                }
            )


def test_a_foreign_lightning_csv_run_is_judged_where_it_can_be(corpus):
    run = corpus["root"] / "lightning" / "version_0"
    run.mkdir(parents=True)
    rows = _rows(corpus["healthy"])
    _lightning_csv(rows, run / "metrics.csv")
    result, out = _audit(run, "--model", "jade_compact", "--data", str(corpus["data"]))
    assert result.exit_code == 0, result.output
    found = _by_name(out)
    assert found["complete"]["values"] == {"epochs": len(rows), "kind": "lightning-csv"}
    assert found["curve/loss_trend"]["status"] == "PASS"
    assert found["curve/loss_trend"]["values"]["first"] == pytest.approx(rows[0]["train_loss_running"])
    assert found["params"]["status"] == "PASS" and found["params"]["values"]["n_samples"] == 120
    assert found["train_vs_val"]["status"] == "PASS"
    for name in ("reproduce", "data", "selection", "epoch_time", "memory", "config"):
        assert found[name]["status"] == "SKIP" and found[name]["measured"], name


def test_a_keras_csv_log_with_a_diverging_loss_fails(corpus):
    path = corpus["root"] / "keras" / "training.log"
    path.parent.mkdir()
    losses = [0.7, 0.6, 0.55, 0.9, 1.4, float("nan")]
    lines = ["epoch,accuracy,loss,val_accuracy,val_loss"]
    lines += [f"{i},0.6,{v},0.6,{v}" for i, v in enumerate(losses)]
    path.write_text("\n".join(lines) + "\n")
    result, out = _audit(path)
    assert result.exit_code == 1, result.output
    found = _by_name(out)
    assert found["curve/nonfinite"]["status"] == "FAIL" and "epoch 6" in found["curve/nonfinite"]["measured"]
    assert found["params"]["status"] == "SKIP"


def test_an_old_run_directory_without_the_audit_fields_still_audits(corpus):
    run = _copy(corpus, "schema1")
    rows = _rows(run)
    for r in rows:
        r["train_loss"], r["train_acc"] = r.pop("train_loss_running"), r.pop("train_acc_running")
        del r["samples_per_s"]
    _write_rows(run, rows)
    summary = json.loads((run / "summary.json").read_text())
    m = summary["metrics"]
    m["train_loss"], m["train_acc"] = m.pop("train_loss_running"), m.pop("train_acc_running")
    for k in ("train_loss_eval", "train_acc_eval", "train_macro_f1_eval"):
        del m[k]
    (run / "summary.json").write_text(json.dumps(summary))
    config = json.loads((run / "config.json").read_text())
    for k in ("machine", "metrics_schema"):
        del config[k]
    del config["data"]["fingerprint"]
    (run / "config.json").write_text(json.dumps(config))
    (run / "split.json").unlink()
    (run / "findings.jsonl").unlink(missing_ok=True)
    outcome = run_audit(run, report_dir=None)
    found = {r.name: r for r in outcome.results}
    assert outcome.exit_code == 0
    assert found["reproduce"].status.value == "PASS"  # the split re-derived from the recorded seed
    assert "re-derived" in " ".join(found["reproduce"].evidence)
    assert found["train_vs_val"].values["train_acc_running"] == rows[summary["best_epoch"] - 1]["train_acc"]
    for name in ("epoch_time", "data", "live"):
        assert found[name].status.value == "SKIP", name


def test_recorded_gpu_memory_is_judged_against_the_footprint(corpus):
    run = _copy(corpus, "gpu_memory")
    config = json.loads((run / "config.json").read_text())
    config["environment"]["device"] = "cuda:0"
    (run / "config.json").write_text(json.dumps(config))
    rows = _rows(run)
    for peak, status in ((30 * 2**20, "PASS"), (4 * 2**30, "WARN")):
        for r in rows:
            r["gpu_peak_mem_bytes"] = peak
        _write_rows(run, rows)
        found = {r.name: r for r in run_audit(run, report_dir=None).results}
        assert found["memory"].status.value == status, found["memory"]


# --------------------------------------------------------------------------- bad input: one line, exit 2


def _one_line(result) -> str:
    return helpers.one_line_error(result, "moola-diag")


def test_no_such_run_directory_is_one_line(tmp_path):
    result, _ = _audit(tmp_path / "nope")
    assert result.exit_code == 2
    assert "nope" in _one_line(result)


def test_a_malformed_metrics_jsonl_names_the_line(corpus):
    run = _copy(corpus, "malformed")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result, _ = _audit(run)
    assert result.exit_code == 2
    assert "metrics.jsonl, line 2" in _one_line(result)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.marker),))


def test_a_model_pt_that_is_not_a_state_dict_is_one_line_and_never_unpickled(corpus):
    run = _copy(corpus, "pickled")
    _Evil.marker = str(run / "pwned")
    torch.save({"model": _Evil()}, run / "model.pt")
    result, _ = _audit(run)
    assert result.exit_code == 2 and "model.pt" in _one_line(result)
    assert not (run / "pwned").exists()
    torch.save([torch.zeros(3)], run / "model.pt")  # loads under weights_only, but is not a state dict
    result, _ = _audit(run)
    assert result.exit_code == 2 and "not a state dict" in _one_line(result)


# --------------------------------------------------------------------------- train against validation


def _context(run: Path):
    from diagnostics.audit.context import AuditContext
    from diagnostics.audit.reader import read_run
    from diagnostics.audit.replay import replay

    record = read_run(run)
    return AuditContext(record, replay(record), record.model_name)


def test_validation_above_the_logged_running_train_accuracy_is_explained_as_a_measurement(corpus):
    """The users' "train 0.475 vs test 0.771": the logged figure is a running mean with dropout on."""
    from diagnostics.checks.audit import train_vs_val

    run = _copy(corpus, "low_running")
    summary = json.loads((run / "summary.json").read_text())
    summary["metrics"]["train_acc_running"] = summary["metrics"]["val_acc"] - 0.3
    (run / "summary.json").write_text(json.dumps(summary))
    (found,) = train_vs_val(_context(run))
    assert found.status.value == "PASS" and "measurement mismatch" in found.measured


def test_a_real_gap_in_eval_mode_fails_and_runs_leakage_on_the_recorded_split(corpus):
    from diagnostics.checks.audit import train_vs_val

    ctx = _context(corpus["healthy"])
    ctx.replay.train = {**ctx.replay.train, "acc": 0.3}  # the kept weights score 0.3 on their training rows
    found = train_vs_val(ctx)
    assert found[0].status.value == "FAIL" and "eval-mode train_acc 0.300" in found[0].measured
    names = [r.name for r in found[1:]]
    assert len(names) == 3 and all(n.startswith("leakage/") for n in names) and "leakage/crashed" not in names
    assert all(r.check == "audit" and r.status.value == "PASS" for r in found[1:])  # a clean split


# --------------------------------------------------------------------------- quality distribution


def test_the_reported_metric_is_placed_in_a_cached_quality_distribution(corpus, monkeypatch):
    """The estimator's cache is stood in for (training its runs costs minutes); the lookup is called with
    the run's own recipe and data."""
    from diagnostics import quality
    from diagnostics.checks.audit import quality_placement

    ctx = _context(corpus["healthy"])
    asked = []

    def lookup(dataset, plan, cache=None):
        asked.append((len(dataset), plan.config.lr, plan.config.seed))
        runs = [
            quality.RunQuality(s, 0, 96, 24, 10, 5, 1.0, {"val": {"acc": a}}, (), ())
            for s, a in enumerate([0.6, 0.62, 0.64, 0.66, 0.7, 0.6, 0.62, 0.64, 0.66, 0.7])
        ]
        return quality.QualityEstimate({}, "10 run(s) of jade_compact", "d", "c", 120, runs)

    monkeypatch.setattr(quality, "lookup", lookup)
    high = quality_placement(ctx, 0.95)
    assert asked[0] == (120, 1e-3, ctx.record.config["seed"])
    assert high.status.value == "WARN" and "100th percentile" in high.measured
    assert quality_placement(ctx, 0.65).status.value == "PASS"
    monkeypatch.setattr(quality, "lookup", lambda dataset, plan, cache=None: None)
    assert quality_placement(ctx, 0.65).status.value == "SKIP"


def test_a_json_lines_log_of_another_trainer_is_read_and_judged(corpus):
    path = corpus["root"] / "jsonl" / "history.jsonl"
    path.parent.mkdir()
    rows = [
        {"epoch": e, "loss": 0.7 - 0.05 * e, "val_loss": 0.69 - 0.04 * e, "val_accuracy": 0.5 + 0.03 * e}
        for e in range(1, 9)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, out = _audit(path.parent, "--model", "jade_compact")
    assert result.exit_code == 0, result.output
    found = _by_name(out)
    assert found["complete"]["values"]["kind"] == "jsonl"
    assert found["curve/loss_trend"]["status"] == "PASS" and found["curve/overfitting"]["status"] == "PASS"
    assert found["train_vs_val"]["status"] == "SKIP"  # no train accuracy in this log
    assert found["params"]["status"] == "SKIP"  # --model without --data: no window count


def test_quality_placement_reads_the_estimators_own_cache_for_the_runs_recipe(corpus, tmp_path, monkeypatch):
    """End to end on a 1-epoch recipe (5 runs, ~2 s): estimate once, then the audit finds it."""
    from diagnostics import quality
    from diagnostics.checks.audit import quality_placement
    from moola.config import TrainConfig

    monkeypatch.setenv("MOOLA_QUALITY_CACHE", str(tmp_path / "cache"))
    ctx = _context(corpus["one_epoch"])
    assert quality_placement(ctx, 0.6).status.value == "SKIP"  # nothing cached yet
    recipe = TrainConfig.from_dict(ctx.record.config)
    plan = quality.default_plan(ctx.replay.dataset, recipe, ctx.thresholds.stability_runs, recipe.split, 0)
    est = quality.estimate(ctx.replay.dataset, plan, workers=1)
    found = quality_placement(ctx, est.summary("acc").mean)
    assert found.status.value == "PASS" and f"of {len(plan.seeds)} runs" in found.measured
