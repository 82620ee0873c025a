"""stability: the conditions judge a distribution of runs; a real estimate of an unlearnable task FAILs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from diagnostics.checks import stability
from diagnostics.context import DiagContext, Thresholds
from diagnostics.quality import QualityEstimate, RunQuality
from diagnostics.result import Status
from moola.config import TrainConfig
from moola.data.splits import make_split
from moola.data.synthetic import generate


def fake_estimate(acc, majority=0.57, log_loss=None, mae=None, const_mae=20.0, rows_wrong=()):
    runs = []
    for i, a in enumerate(acc):
        val = {
            "acc": a,
            "majority_acc": majority,
            "log_loss": 0.7 - (a - majority) if log_loss is None else log_loss[i],
            "prior_log_loss": 0.68,
            "pointer_mae_bars": None if mae is None else mae[i],
            "pointer_baseline_mae_bars": None if mae is None else const_mae,
        }
        rows = (0, 1, 2, 3)
        correct = tuple(r not in rows_wrong for r in rows)
        runs.append(RunQuality(i, i % 5, 100, 4, 60, 60, 1.0, {"val": val}, rows, correct))
    return QualityEstimate({"k": 5}, "fake runs", "d", "c", 10, runs)


@pytest.mark.parametrize(
    ("acc", "status"),
    [
        ([0.84, 0.86, 0.80, 0.88, 0.83], Status.PASS),  # clear gain, small spread
        ([0.55, 0.57, 0.56, 0.58, 0.54], Status.FAIL),  # at or below the majority share on average
        ([0.52, 0.75, 0.50, 0.70, 0.55], Status.WARN),  # a gain on average, but inside the seed spread
    ],
)
def test_accuracy_against_the_majority_across_runs(acc, status):
    result = stability.classification(fake_estimate(acc), "acc", "majority_acc", "accuracy")
    assert result.status is status, result.measured
    assert result.values["summary"]["n"] == 5


def test_one_lucky_seed_does_not_pass_a_model_that_does_not_learn():
    acc = [0.57, 0.57, 0.57, 0.57, 0.80]  # four runs at the majority share, one lucky
    result = stability.classification(fake_estimate(acc), "acc", "majority_acc", "accuracy")
    assert result.status is Status.WARN


def test_log_loss_is_judged_against_the_class_prior():
    est = fake_estimate([0.8] * 5, log_loss=[0.70, 0.71, 0.69, 0.72, 0.70])  # worse than the prior 0.68
    assert stability.classification(est, "log_loss", "prior_log_loss", "log_loss").status is Status.FAIL


@pytest.mark.parametrize(
    ("mae", "status"),
    [
        ([12.0, 12.5, 11.8, 12.2, 12.4], Status.PASS),  # 40% better than the constant
        ([19.2, 19.8, 19.0, 19.6, 19.4], Status.WARN),  # better, but by 3%: no evidence of skill
        ([20.5, 21.0, 20.2, 20.8, 19.9], Status.FAIL),  # no better than always guessing the median
    ],
)
def test_the_pointer_head_against_the_best_constant(mae, status):
    result = stability.pointers(fake_estimate([0.8] * 5, mae=mae), min_gain=0.10)
    assert result.status is status, result.measured


def test_pointers_skip_without_a_pointer_head():
    assert stability.pointers(fake_estimate([0.8] * 5), 0.1).status is Status.SKIP


def test_label_noise_lists_windows_every_run_gets_wrong():
    ds = generate(10, seed=1)
    ctx = DiagContext(ds, np.arange(8), np.arange(8, 10))
    est = fake_estimate([0.8] * 10, rows_wrong=(2,))
    result = stability.label_noise(est, ctx)
    assert result.values["rows"] == [2] and "row 2" in result.evidence[0]
    assert result.status is Status.WARN  # 1 of 4 windows > 5%
    # Scored once each (one pass of k folds) is not enough to call a window mislabelled.
    once = fake_estimate([0.8], rows_wrong=(2,))
    assert stability.label_noise(once, ctx).status is Status.SKIP


def test_a_task_with_shuffled_labels_fails_stability_end_to_end():
    """Labels carry no signal: whatever the seed, the model cannot beat the majority class."""
    ds = generate(60, seed=5)
    rng = np.random.default_rng(0)
    noise = replace(ds, y=rng.permutation(ds.y))
    train, test = make_split(noise, "random")
    th = replace(Thresholds(), stability_runs=5)
    config = TrainConfig(n_epochs=4, early_stopping_patience=0)
    ctx = DiagContext(noise, train, test, device="cpu", thresholds=th, config=config, workers=1)
    by = {r.name: r for r in stability.check_stability(ctx)}
    assert by["accuracy"].status in (Status.FAIL, Status.WARN)
    assert by["log_loss"].status is Status.FAIL  # a proper score sees that nothing was learned
    assert by["pointers"].status in (Status.FAIL, Status.WARN)


def test_large_data_trains_on_a_stated_stratified_sample():
    ds = generate(300, seed=2)
    train, test = make_split(ds, "random")
    th = replace(Thresholds(), stability_max_windows=80)
    ctx = DiagContext(ds, train, test, thresholds=th)
    rows = stability.sample_rows(ctx)
    assert len(rows) == 80 and len(np.unique(rows)) == 80
    assert abs(ds.y[rows].mean() - ds.y.mean()) < 0.03  # the class shares are kept
    np.testing.assert_array_equal(rows, stability.sample_rows(ctx))  # seeded
    small = DiagContext(ds, train, test, thresholds=replace(th, stability_max_windows=1000))
    assert len(stability.sample_rows(small)) == 300


def test_the_runs_line_accounts_for_the_time_in_training_steps():
    """The wall time is explained by what the runs did: steps (epochs x batches) at their measured pace."""
    est = fake_estimate([0.84, 0.86, 0.80, 0.88, 0.83])
    est = replace(est, plan={"k": 5, "config": {"batch_size": 16}}, wall_s=3.0, workers=2)
    line = stability.classification(est, "acc", "majority_acc", "accuracy").evidence[0]
    # 5 runs x 60 epochs x ceil(100 / 16) = 7 batches, 1.0 s of training each
    assert "2,100 training steps at 2.4 ms each" in line and "5.0 s of training in all" in line


def test_prefetch_starts_no_pool_when_every_run_is_cached(tmp_path, monkeypatch):
    """A warm check-all reads its runs: a pool would only spend a core importing torch for nothing."""
    monkeypatch.setenv("MOOLA_QUALITY_CACHE", str(tmp_path))
    ds = generate(60, seed=5)
    train, test = make_split(ds, "random")
    th = replace(Thresholds(), stability_runs=2)
    config = TrainConfig(n_epochs=2, early_stopping_patience=0)
    cold = DiagContext(ds, train, test, device="cpu", thresholds=th, config=config, workers=2)
    stability.prefetch(cold)
    assert "quality_pending" in cold.cache  # nothing cached yet: the runs train in the background
    first = stability.quality_estimate(cold)
    warm = DiagContext(ds, train, test, device="cpu", thresholds=th, config=config, workers=2)
    stability.prefetch(warm)
    assert "quality_pool" not in warm.cache and "quality_pending" not in warm.cache
    again = stability.quality_estimate(warm)
    assert again.cached_runs == 2 and [r.scores for r in again.runs] == [r.scores for r in first.runs]
