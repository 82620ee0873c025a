"""The quality estimator: what a training recipe produces on a dataset, as a distribution over fresh seeds.

One seed's validation accuracy is one draw: on the default set it lands anywhere in a 14-point range.
``estimate`` trains the recipe ``runs`` times, each run with its own seed for the split, the init, the
batch order and the augmentation (Bouthillier et al. 2021: randomize every source of variance), and
scores each trained model on rows it never trained on.

* Splits follow the policy the data calls for (``moola.data.splits.kfold_split``): stratified k-fold for
  independent windows; blocked, purged k-fold where windows carry time. Run ``r`` is fold ``r % k`` of
  repeat ``r // k``, so every k runs hold each row out once and per-window correctness pools cleanly.
* Each run mirrors ``moola train`` exactly (the same ``fit``, early stopping on its held-out rows), so the
  distribution is of the numbers users see.
* Per run: accuracy, macro-F1, log-loss and Brier (proper scores: far less variance than 0/1 accuracy on
  35 windows), the majority-class baseline and the class-prior log-loss beside them; with pointers on,
  the pointer MAE in bars and the best constant's (the training rows' median pointers). Optionally the
  same scores on an extra ``holdout`` set (the gate scores on a large fresh synthetic set, so binomial
  noise of 35 windows does not drown a code change).
* Runs fan out over an ``concurrent.futures.Executor``: a local process pool by default (spawned, one
  torch thread per run, so a run's numbers do not depend on where it ran), or any compatible pool from
  a distributed engine passed as ``executor``.
* Deterministic for a given seed list, and cached per run by (code revision, data fingerprint, recipe,
  split, seed): a second call costs nothing, a call with more runs pays only for the new ones.

The checks (stability, sanity's outcome finding, the audit) and the gate's quality benchmarks call this
module; it calls only ``moola``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from diagnostics.quality.cache import RunCache, code_revision, data_fingerprint, run_key
from diagnostics.quality.runs import RunJob, RunQuality, train_and_score
from diagnostics.quality.summary import (
    HIGHER_IS_BETTER,
    METRIC_DOCS,
    MetricSummary,
    Placement,
    QualityEstimate,
    place,
    summarize,
)
from moola.config import TrainConfig
from moola.errors import MoolaError

if TYPE_CHECKING:
    from moola.data.dataset import WindowDataset

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_DOCS",
    "MetricSummary",
    "Placement",
    "Plan",
    "QualityEstimate",
    "RunCache",
    "RunJob",
    "RunQuality",
    "code_revision",
    "data_fingerprint",
    "default_plan",
    "estimate",
    "lookup",
    "place",
    "run_key",
    "summarize",
    "train_and_score",
]

# ----------------------------------------------------------------------------------------------
# What is estimated


@dataclass(frozen=True)
class Plan:
    """A recipe (``config``: model, epochs, lr, batch, early stopping, augmentation, pointers) trained
    on ``split`` k-fold splits, one run per seed of ``seeds``."""

    config: TrainConfig
    split: str = "random"  # random | temporal | purged
    k: int = 5
    seeds: tuple[int, ...] = tuple(range(5))

    def describe(self) -> str:
        c = self.config
        pointers = ", pointer head on" if c.predict_pointers else ""
        stop = f", early stopping (patience {c.early_stopping_patience})" if c.early_stopping_patience else ""
        return (
            f"{len(self.seeds)} run(s) of {c.model} ({c.n_epochs} epochs{stop}{pointers}) on {self.split} "
            f"{self.k}-fold splits, seeds {_seed_range(self.seeds)}"
        )


def _seed_range(seeds: Sequence[int]) -> str:
    if seeds and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def default_plan(
    dataset: WindowDataset, config: TrainConfig, runs: int, split: str | None = None, first_seed: int = 0
) -> Plan:
    """The plan for ``runs`` runs of ``config`` on ``dataset``: split policy from the data (purged k-fold
    when windows carry time, else stratified), k from the recipe's validation fraction."""
    if runs < 1:
        raise MoolaError(f"--runs {runs}: need at least one run")
    if split is None:
        split = "purged" if dataset.bar_start is not None else "random"
    k = max(2, round(1.0 / config.val_fraction))
    return Plan(config=config, split=split, k=k, seeds=tuple(range(first_seed, first_seed + runs)))


# ----------------------------------------------------------------------------------------------
# Estimating


def _features(dataset: WindowDataset, config: TrainConfig) -> WindowDataset:
    from moola.features import transform
    from moola.models import get_spec

    if dataset.feature_type is not None:
        return dataset
    name = config.features or get_spec(config.model).feature_set
    return dataset.with_features(transform(dataset.X, name))


def jobs_for(plan: Plan, feats: WindowDataset, holdout: WindowDataset | None = None) -> list[RunJob]:
    """One job per seed: fold ``r % k`` of the k-fold split shuffled by repeat ``r // k``."""
    from moola.data.splits import kfold_split

    jobs = []
    for r, seed in enumerate(plan.seeds):
        fold, repeat = r % plan.k, r // plan.k
        split_seed = plan.seeds[0] + repeat
        train_idx, val_idx = kfold_split(
            feats, plan.split, plan.k, fold, split_seed, plan.config.embargo_bars
        )
        # A time-ordered fold may hold out a class its training rows lack: it is scored (the model cannot
        # name that class, which is what such a split costs), but training needs two classes.
        if len(np.unique(feats.y[train_idx])) < 2:
            raise MoolaError(
                f"{plan.split} {plan.k}-fold split, fold {fold}: its {len(train_idx)} training windows hold "
                "one class; the quality estimate needs two (use more windows, or --split random)"
            )
        config = replace(plan.config, seed=int(seed), device="cpu", split=plan.split)
        jobs.append(RunJob(feats, config, train_idx, val_idx, fold, holdout))
    return jobs


def local_pool(workers: int) -> Executor:
    """The default executor: ``workers`` processes forked from a fork server that has already imported
    torch and the run code (where the platform has one; else spawned). Never forked from the caller: a fork
    of a process whose OpenMP pool is running can deadlock. The server imports torch once, so a worker
    starts in milliseconds instead of paying a second or two of imports each, at the busiest moment of a
    check-all. Scripts that use it need the ``if __name__ == "__main__":`` guard."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # torch._dynamo too: the first optimizer a process builds imports it (a second of CPU per worker).
        context.set_forkserver_preload(["torch", "torch._dynamo", "diagnostics.quality.runs"])
        # Start the server now, not at the first submit: its imports (seconds) overlap the caller's
        # work until then (check-all: importing torch, planning, fingerprinting the data).
        from multiprocessing import forkserver

        forkserver.ensure_running()
    else:  # Windows, and macOS builds without it
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_die_with_parent)


def _die_with_parent() -> None:
    """A worker exits when the process that asked for it dies, so a SIGKILLed check-all or gate worker (which
    cannot clean up) leaves no orphaned runs training on. ``parent_process().sentinel`` becomes ready when
    that process is gone, for forked-from-server and spawned workers alike; a daemon thread waits on it."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="moola-die-with-parent", daemon=True).start()


def terminate_pool(pool: Executor) -> None:
    """Stop a local pool now: cancel what has not started and kill the runs in flight."""
    import psutil

    processes = list(getattr(pool, "_processes", {}).values())  # ProcessPoolExecutor's own workers
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            psutil.Process(proc.pid).kill()


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def estimate(
    dataset: WindowDataset,
    plan: Plan,
    *,
    holdout: WindowDataset | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    cache: RunCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityEstimate:
    """Train and score every run of ``plan`` on ``dataset`` (raw OHLC or precomputed features).

    Cached runs are read, the rest go to ``executor`` (default: a local pool of ``workers`` processes,
    all cores; ``workers=1`` runs in this process). ``holdout`` (raw like ``dataset``) is scored too.
    ``progress(done, total)`` is called as runs finish.
    """
    t0 = time.perf_counter()
    cache = RunCache.default() if cache is None else cache
    feats = _features(dataset, plan.config)
    hold = None if holdout is None else _features(holdout, plan.config)
    jobs = jobs_for(plan, feats, hold)
    code, data = code_revision(), data_fingerprint(feats)
    hold_fp = None if hold is None else data_fingerprint(hold)
    keys = [run_key(code, data, hold_fp, j.config, plan.split, plan.k, j.fold) for j in jobs]
    found: dict[int, RunQuality] = {}
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            found[i] = hit
    todo = [i for i in range(len(jobs)) if i not in found]
    cached = len(found)
    n_workers = 1
    if todo:
        n_workers = min(workers or default_workers(), len(todo))
        if progress:
            progress(cached, len(jobs))
        if executor is None and n_workers <= 1:
            results: Iterable[RunQuality] = map(train_and_score, (jobs[i] for i in todo))
            own = None
        else:
            own = None if executor is not None else local_pool(n_workers)
            pool = executor or own
            assert pool is not None
            results = pool.map(train_and_score, [jobs[i] for i in todo])
        try:
            for i, run in zip(todo, results, strict=True):
                found[i] = run
                cache.put(keys[i], run)
                if progress:
                    progress(len(found), len(jobs))
        finally:
            if own is not None:
                own.shutdown(cancel_futures=True)
    runs = [found[i] for i in range(len(jobs))]
    plan_dict = {
        "config": plan.config.to_dict(),
        "split": plan.split,
        "k": plan.k,
        "seeds": list(plan.seeds),
        "holdout_windows": None if hold is None else len(hold),
    }
    return QualityEstimate(
        plan=plan_dict,
        description=plan.describe(),
        data_fingerprint=data,
        code_revision=code,
        n_windows=len(feats),
        runs=runs,
        cached_runs=cached,
        wall_s=time.perf_counter() - t0,
        workers=n_workers,
    )


def lookup(dataset: WindowDataset, plan: Plan, cache: RunCache | None = None) -> QualityEstimate | None:
    """The estimate for ``plan`` if every run of it is cached, else None (never trains)."""
    cache = RunCache.default() if cache is None else cache
    feats = _features(dataset, plan.config)
    jobs = jobs_for(plan, feats)
    code, data = code_revision(), data_fingerprint(feats)
    runs = []
    for j in jobs:
        hit = cache.get(run_key(code, data, None, j.config, plan.split, plan.k, j.fold))
        if hit is None:
            return None
        runs.append(hit)
    return QualityEstimate(
        plan={"config": plan.config.to_dict(), "split": plan.split, "k": plan.k, "seeds": list(plan.seeds)},
        description=plan.describe(),
        data_fingerprint=data,
        code_revision=code,
        n_windows=len(feats),
        runs=runs,
        cached_runs=len(runs),
    )
