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
import functools
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moola.config import TrainConfig
from moola.errors import MoolaError

if TYPE_CHECKING:
    from moola.data.dataset import WindowDataset

CACHE_VERSION = 1  # bump when a run's scoring changes: old cache entries then miss
CACHE_ENV = "MOOLA_QUALITY_CACHE"  # directory of the run cache; "off" disables it
# Metrics whose larger values are better; the rest (losses, errors) are better when smaller.
HIGHER_IS_BETTER = {"acc", "macro_f1"}
METRIC_DOCS = {
    "acc": "accuracy",
    "macro_f1": "macro-F1",
    "log_loss": "log-loss (nats)",
    "brier": "Brier score",
    "majority_acc": "majority-class accuracy",
    "prior_log_loss": "class-prior log-loss",
    "pointer_mae_bars": "pointer MAE (bars)",
    "pointer_baseline_mae_bars": "constant-pointer MAE (bars)",
}


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
# One run


@dataclass(frozen=True)
class RunJob:
    """One picklable unit of work: train the recipe once and score it (what an executor receives)."""

    dataset: WindowDataset  # features already in the model's feature set
    config: TrainConfig  # seed set to this run's seed
    train_idx: np.ndarray
    val_idx: np.ndarray
    fold: int
    holdout: WindowDataset | None = None


@dataclass(frozen=True)
class RunQuality:
    """The scores of one trained model: ``scores[part][metric]`` for part "val" (and "holdout")."""

    seed: int
    fold: int
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int  # 1-based, as in metrics.jsonl
    train_time_s: float
    scores: dict[str, dict[str, float | None]]
    val_rows: tuple[int, ...]  # dataset rows scored in "val"
    val_correct: tuple[bool, ...]  # per val row: predicted its label

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_rows"], d["val_correct"] = list(self.val_rows), [bool(c) for c in self.val_correct]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunQuality:
        return cls(**{**d, "val_rows": tuple(d["val_rows"]), "val_correct": tuple(d["val_correct"])})


def _scores(
    model: Any, ds: WindowDataset, y_train: np.ndarray, pointers_train: np.ndarray | None, with_pointers: bool
) -> tuple[dict[str, float | None], np.ndarray]:
    """Scores of ``model`` on every row of ``ds``, and the per-row correctness."""
    import torch

    from moola.train import metrics

    model.eval()
    X = torch.as_tensor(np.ascontiguousarray(ds.X, dtype=np.float32))
    logits, ptrs = [], []
    with torch.no_grad():
        for start in range(0, len(X), 512):
            out = (
                model(X[start : start + 512], with_pointers=True)
                if with_pointers
                else model(X[start : start + 512])
            )
            if with_pointers:
                out, p = out
                ptrs.append(p)
            logits.append(out)
    log_p = torch.log_softmax(torch.cat(logits), dim=1).double().numpy()
    y = np.asarray(ds.y, dtype=np.int64)
    n_classes = log_p.shape[1]
    pred = log_p.argmax(axis=1)
    prob = np.exp(log_p)
    onehot = np.eye(n_classes)[y]
    prior = np.bincount(y_train, minlength=n_classes) / max(len(y_train), 1)
    scores: dict[str, float | None] = {
        "acc": metrics.accuracy(y, pred),
        "macro_f1": metrics.macro_f1(y, pred, n_classes),
        "log_loss": float(-log_p[np.arange(len(y)), y].mean()),
        "brier": float(((prob - onehot) ** 2).sum(axis=1).mean()),
        "majority_acc": metrics.majority_accuracy(y, y_train),
        "prior_log_loss": float(-np.log(np.clip(prior[y], 1e-12, None)).mean()),
        "pointer_mae_bars": None,
        "pointer_baseline_mae_bars": None,
    }
    if with_pointers and ds.pointers is not None and pointers_train is not None:
        length = ds.X.shape[1]
        scores["pointer_mae_bars"] = metrics.pointer_mae_bars(torch.cat(ptrs).numpy(), ds.pointers, length)
        constant = np.median(pointers_train.astype(np.float64), axis=0)  # the MAE-optimal constant
        scores["pointer_baseline_mae_bars"] = float(np.abs(ds.pointers - constant[None, :]).mean())
    return scores, pred == y


# The trainer seeds torch's global RNG (dropout draws from it): two runs at once in one process would
# interleave their draws. Runs in one process take turns, so a thread pool is correct too (just serial).
_RUN_LOCK = threading.Lock()


def train_and_score(job: RunJob) -> RunQuality:
    """Train ``job.config`` once, exactly as ``moola train`` does, and score it. Runs single-threaded so
    a seed gives the same numbers in any process; restores the caller's thread count."""
    with _RUN_LOCK:
        return _train_and_score(job)


def _train_and_score(job: RunJob) -> RunQuality:
    import torch

    from moola.models import get_model
    from moola.train.trainer import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds, config = job.dataset, job.config
        train_ds, val_ds = ds.subset(job.train_idx), ds.subset(job.val_idx)
        torch.manual_seed(config.seed)
        model = get_model(config.model, n_features=ds.n_features, n_classes=ds.n_classes)
        t0 = time.perf_counter()
        result = fit(model, train_ds, val_ds, config)
        train_time = time.perf_counter() - t0
        model = result.model.cpu()
        with_pointers = bool(config.predict_pointers)
        ptr_train = train_ds.pointers
        scores, correct = {}, None
        scores["val"], correct = _scores(model, val_ds, train_ds.y, ptr_train, with_pointers)
        if job.holdout is not None:
            scores["holdout"], _ = _scores(model, job.holdout, train_ds.y, ptr_train, with_pointers)
    finally:
        torch.set_num_threads(threads)
    return RunQuality(
        seed=int(config.seed),
        fold=int(job.fold),
        n_train=len(job.train_idx),
        n_val=len(job.val_idx),
        epochs_run=int(result.n_epochs_run),
        best_epoch=int(result.best_epoch) + 1,
        train_time_s=train_time,
        scores=scores,
        val_rows=tuple(int(r) for r in job.val_idx),
        val_correct=tuple(bool(c) for c in correct),
    )


# ----------------------------------------------------------------------------------------------
# Summaries


@dataclass(frozen=True)
class MetricSummary:
    """Mean, its 95% Student-t interval, spread and range of one metric over the runs."""

    metric: str
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    median: float
    min: float
    max: float
    values: tuple[float, ...]

    def describe(self, digits: int = 3) -> str:
        f = f"{{:.{digits}f}}"
        if self.n < 2:
            return f"{f.format(self.mean)} (1 run: no interval)"
        return (
            f"{f.format(self.mean)} ± {f.format(self.sd)} (95% CI {f.format(self.ci_low)}–"
            f"{f.format(self.ci_high)}, {self.n} runs, range {f.format(self.min)}–{f.format(self.max)})"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = list(self.values)
        return d


def t_quantile(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def summarize(metric: str, values: Iterable[float], confidence: float = 0.95) -> MetricSummary:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        nan = float("nan")
        return MetricSummary(metric, 0, nan, nan, nan, nan, nan, nan, nan, ())
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = t_quantile(0.5 + confidence / 2, v.size - 1) * sd / math.sqrt(v.size) if v.size > 1 else math.nan
    return MetricSummary(
        metric=metric,
        n=int(v.size),
        mean=mean,
        sd=sd,
        ci_low=mean - half,
        ci_high=mean + half,
        median=float(np.median(v)),
        min=float(v.min()),
        max=float(v.max()),
        values=tuple(float(x) for x in v),
    )


@dataclass
class QualityEstimate:
    """Every run's scores, with where they came from; ``summary`` and ``window_errors`` read them."""

    plan: dict[str, Any]  # recipe, split, k, seeds
    description: str
    data_fingerprint: str
    code_revision: str
    n_windows: int
    runs: list[RunQuality]
    cached_runs: int = 0  # runs read from the cache instead of trained
    wall_s: float = 0.0
    workers: int = 1

    def values(self, metric: str, part: str = "val") -> list[float]:
        out = []
        for run in self.runs:
            v = run.scores.get(part, {}).get(metric)
            if v is not None and math.isfinite(v):
                out.append(float(v))
        return out

    def summary(self, metric: str, part: str = "val") -> MetricSummary:
        return summarize(metric, self.values(metric, part))

    def gaps(self, metric: str, baseline: str, part: str = "val") -> MetricSummary:
        """Per run, how much better the model is than its baseline (positive: better)."""
        sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        diffs = []
        for run in self.runs:
            s = run.scores.get(part, {})
            if s.get(metric) is not None and s.get(baseline) is not None:
                diffs.append(sign * (float(s[metric]) - float(s[baseline])))
        return summarize(f"{metric} - {baseline}", diffs)

    def window_errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dataset rows, times scored, times wrong), pooled over the runs."""
        rows = np.concatenate(
            [np.asarray(r.val_rows, dtype=np.int64) for r in self.runs] or [np.zeros(0, int)]
        )
        wrong = np.concatenate(
            [~np.asarray(r.val_correct, dtype=bool) for r in self.runs] or [np.zeros(0, bool)]
        )
        scored = np.bincount(rows, minlength=self.n_windows)
        missed = np.bincount(rows, weights=wrong, minlength=self.n_windows).astype(np.int64)
        seen = np.flatnonzero(scored)
        return seen, scored[seen], missed[seen]

    @property
    def train_s(self) -> float:
        return float(sum(r.train_time_s for r in self.runs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "description": self.description,
            "data_fingerprint": self.data_fingerprint,
            "code_revision": self.code_revision,
            "n_windows": self.n_windows,
            "cached_runs": self.cached_runs,
            "wall_s": self.wall_s,
            "workers": self.workers,
            "runs": [r.to_dict() for r in self.runs],
        }


# ----------------------------------------------------------------------------------------------
# Fingerprints and the cache


def data_fingerprint(ds: WindowDataset) -> str:
    """sha256 of everything training and scoring read: values, labels, classes, pointers, provenance."""
    h = hashlib.sha256()
    for part in (ds.X, ds.y, ds.pointers, ds.bar_start):
        if part is None:
            h.update(b"-")
        else:
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    h.update(json.dumps([list(ds.classes), ds.feature_type]).encode())
    if ds.source is not None:
        h.update("\x00".join(map(str, ds.source)).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """sha256 of the code a run executes (moola's sources and this module; a dirty tree counts too) and
    of the environment that computes it (torch, numpy, Python, CPU architecture)."""
    import platform

    import torch

    root = Path(__file__).resolve().parents[1]
    env = f"{CACHE_VERSION} torch {torch.__version__} numpy {np.__version__} {platform.python_version()}"
    h = hashlib.sha256(f"{env} {platform.machine()}".encode())
    for path in sorted([*(root / "moola").rglob("*.py"), Path(__file__).resolve()]):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class RunCache:
    """One JSON file per run, named by the hash of everything that determines its numbers."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @classmethod
    def default(cls) -> RunCache:
        where = os.environ.get(CACHE_ENV, "")
        if where.lower() == "off":
            return cls(None)
        base = Path(where) if where else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cls(base if where else base / "moola" / "quality")

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> RunQuality | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return RunQuality.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None  # a damaged entry is a miss, never an error

    def put(self, key: str, run: RunQuality) -> None:
        path = self._path(key)
        if path is None:
            return
        from moola.io import atomic_write_json

        with contextlib.suppress(OSError):  # a read-only cache only costs time
            atomic_write_json(path, run.to_dict())


def run_key(
    code: str, data: str, holdout: str | None, config: TrainConfig, split: str, k: int, fold: int
) -> str:
    recipe = {k_: v for k_, v in config.to_dict().items() if k_ not in ("out_dir", "split_file", "device")}
    payload = {
        "code": code,
        "data": data,
        "holdout": holdout,
        "recipe": recipe,
        "split": split,
        "k": k,
        "fold": fold,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
    """The default executor: ``workers`` spawned processes (not forked: a fork of a process whose OpenMP
    pool is running can deadlock). Scripts that use it need the ``if __name__ == "__main__":`` guard."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


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


@dataclass(frozen=True)
class Placement:
    """Where one reported value sits among the runs."""

    value: float
    percentile: float  # share of runs at or below the value, in percent
    below: int
    equal: int
    above: int
    summary: MetricSummary = field(repr=False)

    def describe(self) -> str:
        return (
            f"{self.value:.3f} is at the {self.percentile:.0f}th percentile of {self.summary.n} runs "
            f"({self.below} below, {self.equal} equal, {self.above} above; mean {self.summary.mean:.3f})"
        )


def place(value: float, summary: MetricSummary) -> Placement:
    v = np.asarray(summary.values)
    below, equal = int((v < value).sum()), int((v == value).sum())
    pct = 100.0 * (below + 0.5 * equal) / max(len(v), 1)
    return Placement(value, pct, below, equal, int(len(v) - below - equal), summary)
