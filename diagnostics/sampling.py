"""Bounded work for the training-based findings: a stratified, seeded subsample of stated size.

The findings that train (the shared instrumented run, the overfit probe, the accuracy and majority-baseline
findings, the GPU burst) cost time in proportion to the rows they train on, and they judge proportions:
an accuracy, a share of windows trained toward their label, a share seen per epoch. A proportion's power
depends on how many windows it is measured on, not on how many the file holds, so each is measured on a
sample sized for the confidence it needs:

- train rows: enough that the train accuracy's 95% Wilson interval is at most ``train_ci_halfwidth`` wide
  on either side at the worst case p = 0.5 (0.045 -> 475 windows);
- test rows: the same for the test accuracy at ``test_ci_halfwidth`` (0.02 -> 2,401 windows), so the
  accuracy gap (limit 0.10) and the majority baseline are judged with intervals well inside their margins.

Epochs: the CLI default (``sanity_epochs``, 60) on a split used whole; on a sample, as many as give
``sampled_steps`` optimizer steps (600: 3x the 200 that ``config`` asks of any run, more than the 540 the
default set's 60 epochs take), at least 2 so the per-epoch findings compare epochs.

Smaller splits are used whole (the embedded 174-window set trains on all 139 rows, as always). The sample
is stratified by class (each class keeps its share, at least one row) and seeded with ``--seed``; rows stay
in file order, so a fit that relies on time-ordered batches still gets them. ``--max-train-windows`` /
``--max-test-windows`` ask for more (0 = every row). Row-level findings (data, identical windows, ids,
overlap, near-duplicates, temporal order) never use this sample: they look at every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diagnostics.context import DiagContext

Z95 = 1.959963984540054


def worst_case_n(halfwidth: float, z: float = Z95) -> int:
    """Windows for a binomial 95% interval of at most ``halfwidth`` on either side at p = 0.5."""
    return math.ceil(z * z / (4.0 * halfwidth * halfwidth))


def halfwidth_at(n: int, z: float = Z95) -> float:
    """The worst-case (p = 0.5) 95% interval half-width on ``n`` windows (normal approximation)."""
    return z * 0.5 / math.sqrt(n) if n > 0 else float("inf")


def stratified_subsample(rows: np.ndarray, y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of ``rows`` (all of them when size <= 0 or >= len), each class keeping its share (largest
    remainder, at least one row per class present), drawn with ``seed``; returned in their original order."""
    rows = np.asarray(rows, dtype=np.int64)
    if size <= 0 or size >= len(rows):
        return rows
    labels = np.asarray(y)[rows]
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (size / len(rows))
    take = np.maximum(np.floor(exact).astype(np.int64), 1)
    short = size - int(take.sum())
    if short > 0:  # largest remainders first
        for i in np.argsort(-(exact - np.floor(exact)), kind="stable")[:short]:
            take[i] += 1
    take = np.minimum(take, counts)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return rows[np.sort(np.concatenate(picked))]


@dataclass(frozen=True)
class TrainingSample:
    """The rows the training-based findings train and evaluate on, and what that buys."""

    train_rows: np.ndarray  # int64 rows of ctx.dataset
    test_rows: np.ndarray
    n_train_total: int
    n_test_total: int
    seed: int
    epochs: int  # of the shared training run: the CLI default, or on a sample enough for its step budget

    @property
    def sampled(self) -> bool:
        return len(self.train_rows) < self.n_train_total or len(self.test_rows) < self.n_test_total

    def describe(self) -> str:
        """One line for reports: what was sampled, how, and the confidence it buys."""
        n_tr, n_te = len(self.train_rows), len(self.test_rows)
        how = f"stratified by class, seed {self.seed}" if self.sampled else "every row"
        return (
            f"training findings on {n_tr:,} of {self.n_train_total:,} train and {n_te:,} of "
            f"{self.n_test_total:,} test windows ({how}): accuracies within "
            f"+-{halfwidth_at(n_tr):.3f} (train) / +-{halfwidth_at(n_te):.3f} (test) at 95%, "
            f"{self.epochs} epochs; "
            "row-level findings on every row; --max-train-windows/--max-test-windows N (0 = all) for more"
        )


def _cap(option: int | None, halfwidth: float) -> int:
    return worst_case_n(halfwidth) if option is None else int(option)


def training_sample(ctx: DiagContext) -> TrainingSample:
    """The context's training sample (computed once per context)."""

    def compute() -> TrainingSample:
        th = ctx.thresholds
        y, seed = ctx.dataset.y, int(ctx.config.seed)
        train = stratified_subsample(
            ctx.train_idx, y, _cap(ctx.max_train_windows, th.train_ci_halfwidth), seed
        )
        test = stratified_subsample(ctx.test_idx, y, _cap(ctx.max_test_windows, th.test_ci_halfwidth), seed)
        epochs = int(th.sanity_epochs)
        if len(train) < len(ctx.train_idx):
            steps_per_epoch = -(-len(train) // max(1, int(ctx.config.batch_size)))
            epochs = max(2, min(epochs, -(-int(th.sampled_steps) // steps_per_epoch)))
        return TrainingSample(train, test, len(ctx.train_idx), len(ctx.test_idx), seed, epochs)

    return ctx.memo("training_sample", compute)
