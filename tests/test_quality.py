"""The quality estimator: runs mirror `moola train`, are deterministic, cached, and fan out to any Executor."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from diagnostics import quality
from moola.config import TrainConfig
from moola.data.splits import kfold_split
from moola.data.synthetic import generate
from moola.errors import MoolaError

# Tiny recipe: 3 epochs of jade_compact on 60 windows is ~0.3 s a run and still trains.
TINY = TrainConfig(n_epochs=3, early_stopping_patience=0, predict_pointers=True)


@pytest.fixture(scope="module")
def ds():
    return generate(60, seed=7)


def no_cache() -> quality.RunCache:
    return quality.RunCache(None)


def test_every_row_is_held_out_once_per_repeat(ds):
    for kind in ("random", "temporal", "purged"):
        held = np.zeros(len(ds), dtype=int)
        for fold in range(5):
            train, val = kfold_split(ds, kind, 5, fold, seed=2)
            assert not np.intersect1d(train, val).size
            held[val] += 1
        assert (held == 1).all(), kind
    # Purging drops training windows near the held-out block, never the block itself.
    train_p, val_p = kfold_split(ds, "purged", 5, 2, seed=0)
    train_t, val_t = kfold_split(ds, "temporal", 5, 2, seed=0)
    np.testing.assert_array_equal(val_p, val_t)
    assert set(train_p) < set(train_t)


def test_random_folds_are_stratified_and_reseeded(ds):
    shares = [ds.y[kfold_split(ds, "random", 5, f, seed=0)[1]].mean() for f in range(5)]
    assert max(shares) - min(shares) < 0.15
    a = kfold_split(ds, "random", 5, 0, seed=0)[1]
    b = kfold_split(ds, "random", 5, 0, seed=1)[1]
    assert not np.array_equal(a, b)


def test_a_run_is_exactly_moola_trains_fit_on_that_split(ds):
    """The estimator scores the recipe users run: same fit, same seed -> the same validation accuracy."""
    import torch

    from moola.features import transform
    from moola.models import get_model
    from moola.train.trainer import fit

    plan = quality.default_plan(ds, TINY, runs=1, first_seed=3)
    est = quality.estimate(ds, plan, workers=1, cache=no_cache())
    run = est.runs[0]
    train, val = kfold_split(ds, "purged", 5, 0, seed=3)
    feats = ds.with_features(transform(ds.X, "relative11"))
    config = replace(TINY, seed=3, split="purged", device="cpu")
    torch.manual_seed(3)
    model = get_model("jade_compact", n_features=11, n_classes=2)
    result = fit(model, feats.subset(train), feats.subset(val), config)
    assert run.scores["val"]["acc"] == pytest.approx(result.history[-1]["val_acc"])
    assert run.scores["val"]["pointer_mae_bars"] == pytest.approx(
        result.history[-1]["pointer_mae_bars"], rel=1e-5
    )
    assert list(run.val_rows) == list(val)


def test_deterministic_cached_and_executor_agnostic(ds, tmp_path, monkeypatch):
    plan = quality.default_plan(ds, TINY, runs=3)
    first = quality.estimate(ds, plan, workers=1, cache=quality.RunCache(tmp_path))
    assert first.cached_runs == 0
    # Any concurrent.futures.Executor can run the jobs (a distributed engine's pool is one).
    with ThreadPoolExecutor(2) as pool:
        other = quality.estimate(ds, plan, executor=pool, cache=no_cache())
    assert [r.scores for r in other.runs] == [r.scores for r in first.runs]

    def must_not_train(job):
        raise AssertionError("trained although every run was cached")

    monkeypatch.setattr(quality, "train_and_score", must_not_train)
    again = quality.estimate(ds, plan, workers=1, cache=quality.RunCache(tmp_path))
    assert again.cached_runs == 3 and [r.scores for r in again.runs] == [r.scores for r in first.runs]
    assert quality.lookup(ds, plan, cache=quality.RunCache(tmp_path)) is not None
    more = quality.default_plan(ds, TINY, runs=4)
    assert quality.lookup(ds, more, cache=quality.RunCache(tmp_path)) is None


def test_a_local_process_pool_gives_the_in_process_numbers(ds):
    plan = quality.default_plan(ds, TINY, runs=2, first_seed=11)
    serial = quality.estimate(ds, plan, workers=1, cache=no_cache())
    pooled = quality.estimate(ds, plan, workers=2, cache=no_cache())
    assert pooled.workers == 2
    assert [r.scores for r in pooled.runs] == [r.scores for r in serial.runs]


ORPHAN_SCRIPT = """
import sys, time
from diagnostics import quality
if __name__ == "__main__":
    pool = quality.local_pool(2)
    futures = [pool.submit(time.sleep, 120) for _ in range(2)]
    time.sleep(1.0)  # both workers started and sleeping
    print(" ".join(str(p.pid) for p in pool._processes.values()), flush=True)
    time.sleep(120)
"""


def test_killing_the_caller_kills_its_pool_workers(tmp_path):
    """A SIGKILLed check-all or gate worker cannot clean up: its runs must not train on as orphans."""
    import subprocess
    import sys

    import psutil

    script = tmp_path / "caller.py"
    script.write_text(ORPHAN_SCRIPT)
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in caller.stdout.readline().split()]
    finally:
        caller.kill()
        caller.wait()
    assert len(pids) == 2
    alive = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    _, still = psutil.wait_procs(alive, timeout=30)
    assert not [p for p in still if p.status() != psutil.STATUS_ZOMBIE]


EAGER_SCRIPT = """
import psutil
from diagnostics import quality
if __name__ == "__main__":
    pool = quality.local_pool(2)  # nothing submitted yet
    print(sum("forkserver" in " ".join(c.cmdline()) for c in psutil.Process().children()), flush=True)
    pool.shutdown()
"""


def test_the_pool_server_starts_importing_before_the_first_run_is_submitted(tmp_path):
    """check-all plans and fingerprints the data before it submits: the server's torch import overlaps that."""
    import subprocess
    import sys

    script = tmp_path / "eager.py"
    script.write_text(EAGER_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_the_cache_key_moves_with_data_recipe_and_seed(ds, tmp_path):
    cache = quality.RunCache(tmp_path)
    plan = quality.default_plan(ds, TINY, runs=1)
    quality.estimate(ds, plan, workers=1, cache=cache)
    assert quality.lookup(ds, plan, cache=cache) is not None
    assert quality.lookup(ds, replace(plan, seeds=(5,)), cache=cache) is None
    assert quality.lookup(ds, replace(plan, config=replace(TINY, lr=2e-4)), cache=cache) is None
    flipped = replace(ds, y=1 - ds.y)
    assert quality.lookup(flipped, plan, cache=cache) is None
    # A damaged entry is a miss, never an error.
    for path in tmp_path.rglob("*.json"):
        path.write_text("{not json")
    assert quality.lookup(ds, plan, cache=cache) is None


def test_scores_and_baselines_are_what_they_say(ds):
    plan = quality.default_plan(ds, TINY, runs=2)
    hold = generate(50, seed=99)
    est = quality.estimate(ds, plan, holdout=hold, workers=1, cache=no_cache())
    for run in est.runs:
        val = run.scores["val"]
        y_val = ds.y[list(run.val_rows)]
        assert val["acc"] == pytest.approx(np.mean(run.val_correct))
        assert 0 <= val["brier"] <= 2 and val["log_loss"] > 0
        train = np.setdiff1d(np.arange(len(ds)), run.val_rows)
        majority = np.bincount(ds.y[train]).argmax()
        assert val["majority_acc"] == pytest.approx(np.mean(y_val == majority), abs=0.2)  # purged train
        assert val["pointer_baseline_mae_bars"] > 0 and val["pointer_mae_bars"] > 0
        assert set(run.scores) == {"val", "holdout"}
    _, scored, missed = est.window_errors()
    assert (missed <= scored).all() and scored.sum() == sum(r.n_val for r in est.runs)


def test_summary_interval_and_placement():
    s = quality.summarize("acc", [0.8, 0.85, 0.9, 0.75, 0.8])
    assert s.n == 5 and s.mean == pytest.approx(0.82)
    # Student t with 4 df: 2.776 * sd / sqrt(5)
    assert s.ci_high - s.mean == pytest.approx(2.776 * s.sd / 5**0.5, rel=1e-3)
    from diagnostics.quality.summary import t_quantile  # Student's t table: 1, 3 and 30 df

    assert [round(t_quantile(0.975, df), 3) for df in (1, 3, 30)] == [12.706, 3.182, 2.042]
    p = quality.place(0.9, s)
    assert (p.below, p.equal, p.above) == (4, 1, 0) and p.percentile == pytest.approx(90.0)
    # An accuracy's interval stays inside [0, 1]; a gain (a difference) may be negative.
    high = quality.summarize("acc", [1.0, 0.9, 1.0, 0.95])
    assert high.ci_high == 1.0 and high.mean + 3.18 * high.sd / 2 > 1.0
    assert quality.summarize("gain", [-0.2, 0.1, 0.3]).ci_low < -0.5


def test_a_time_fold_whose_training_has_one_class_is_one_line(ds):
    one_class_first = replace(ds, y=np.r_[np.zeros(50, dtype=np.int64), np.ones(10, dtype=np.int64)])
    plan = quality.default_plan(one_class_first, TINY, runs=5, split="temporal")
    order = np.argsort(one_class_first.bar_start, kind="stable")
    one_class_first = replace(one_class_first, y=one_class_first.y[np.argsort(order)])
    with pytest.raises(MoolaError, match="training windows hold one class"):
        quality.estimate(one_class_first, plan, workers=1, cache=no_cache())
