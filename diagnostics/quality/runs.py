"""One run of the quality estimator: train the recipe once, exactly as ``moola train`` does, and score it."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from moola.config import TrainConfig

if TYPE_CHECKING:
    from moola.data.dataset import WindowDataset


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
    # per epoch, as moola's trainer logged them (train/val loss and accuracy): the report's training curves
    curves: dict[str, list[float]] = field(default_factory=dict)

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
    from moola.train.trainer import predict

    X = torch.as_tensor(np.ascontiguousarray(ds.X, dtype=np.float32))
    logits, ptrs = predict(model, X, with_pointers)
    log_p = torch.log_softmax(logits, dim=1).double().numpy()
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
        scores["pointer_mae_bars"] = metrics.pointer_mae_bars(ptrs.numpy(), ds.pointers, length)
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
        curves=_curves(result.history),
    )


def _curves(history: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The per-epoch train/val loss and accuracy of one run (small, JSON-safe; missing values dropped)."""
    from diagnostics.result import plot_data

    # The trainer's running figures (augmented batches, dropout on) under the curve names the report draws.
    keys = {
        "train_loss": "train_loss_running",
        "val_loss": "val_loss",
        "train_acc": "train_acc_running",
        "val_acc": "val_acc",
    }
    return {
        name: plot_data([row[k] for row in history if row.get(k) is not None], ordered=True)
        for name, k in keys.items()
    }
