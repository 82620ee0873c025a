"""The reference the sanity outcome and dynamics findings judge a ``--fit`` against: what THIS model reaches on
the SAME training rows under the built-in recipe (``moola.train.trainer.fit_tensors`` with the context's batch
size, lr and seed, for the same epochs), from the same initial weights (``fresh_model`` is seeded).

One run, observed through the trainer's own callbacks (lighter than the fit's Instrument, measuring the same
quantities the same way: the lr, the net weight change between step ends, each batch's loss). It costs a
second training run, so it stops once its comparison with the fit is decided
(``decide`` reads the reference's eval-mode loss and accuracy after an epoch and names a reason, or returns
""), but never before ``reference_min_epoch_fraction`` of the epochs, which the dynamics findings read, and
never after ``reference_max_epoch_fraction`` of them (its cost stays bounded; the finding says where it was
judged). The fit is always called with the same epochs, seed and rows as the fit.
With no ``--fit`` the fit IS the built-in recipe: its own run is the reference, and nothing extra runs.

A distribution over seeds (diagnostics.quality) plugs in at ``diagnostics.checks.sanity_outcome.reference_band``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diagnostics.instrument import Recording, net_change, update_ratios

if TYPE_CHECKING:
    from diagnostics.context import DiagContext
    from diagnostics.training import ShortTrainingResult


@dataclass(frozen=True)
class ReferencePoint:
    """The reference model after ``epoch`` epochs, evaluated like the fit (eval mode, all training rows)."""

    epoch: int
    loss: float
    acc: float
    n_pred_classes: int


@dataclass
class ReferenceDynamics:
    """What the dynamics findings read of the reference, per optimizer step (named as in ``Recording``)."""

    lrs: list[float] = field(default_factory=list)
    update_ratios: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


@dataclass
class ReferenceRun:
    recipe: str  # "fit_tensors (AdamW lr 0.0001, batch 16, seed 1337)"
    epochs_requested: int
    epochs_run: int
    decided: str  # why it stopped before the last epoch ("" = it ran them all)
    points: list[ReferencePoint]  # after each epoch it was evaluated
    epoch_losses: list[float]  # the trainer's mean train-mode loss per epoch
    recording: Recording | ReferenceDynamics
    init_loss: float
    wall_s: float  # what the reference run cost (0 when the fit is the built-in recipe itself)
    same_as_fit: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> ReferencePoint:
        return self.points[-1]

    def describe(self) -> str:
        f = self.final
        how = (
            "the fit itself (no --fit: the built-in recipe)"
            if self.same_as_fit
            else f"built-in recipe {self.recipe} on the same rows from the same initial weights"
        )
        stop = f"; stopped early: {self.decided}" if self.decided else ""
        return (
            f"reference = {how}: train loss {self.init_loss:.4f} -> {f.loss:.4f}, accuracy {f.acc:.3f} "
            f"(eval mode) after {f.epoch} of {self.epochs_requested} epoch(s){stop}"
        )


def _n_classes(pred: np.ndarray) -> int:
    return len(np.unique(pred))


class _Judge:
    """Trainer callback: after each epoch from ``first`` on, evaluate and ask ``decide`` whether to stop."""

    def __init__(self, X: Any, y: Any, first: int, cap: int, decide: Callable[[ReferencePoint], str]):
        self.X, self.y, self.first, self.cap, self.decide = X, y, first, cap, decide
        self.points: list[ReferencePoint] = []
        self.epoch_losses: list[float] = []
        self.reason = ""
        self.dynamics = ReferenceDynamics()
        self._params: list[Any] = []
        self._prev: list[Any] = []
        self._updates: list[Any] = []

    def on_train_start(self, state: Any) -> None:
        self._params = [p for p in state.model.parameters() if p.requires_grad]
        self._prev = [p.detach().clone() for p in self._params]

    def on_step_end(self, state: Any) -> None:
        import torch

        now = [p.detach() for p in self._params]
        self._updates.append(net_change(now, self._prev))  # stays on the device until the end
        torch._foreach_copy_(self._prev, now)
        self.dynamics.lrs.append(max(float(g["lr"]) for g in state.optimizer.param_groups))
        self.dynamics.losses.append(float(state.loss))

    def on_train_end(self, state: Any) -> None:
        import torch

        if self._updates:
            u = torch.stack([v.cpu() for v in self._updates]).numpy()
            self.dynamics.update_ratios = update_ratios(u)
        self._prev, self._updates = [], []

    def on_epoch_end(self, state: Any) -> None:
        from moola.train.trainer import evaluate

        self.epoch_losses.append(float(state.loss))
        last = state.config is not None and state.epoch >= min(state.config.n_epochs, self.cap)
        if state.epoch < self.first and not last:
            return
        loss, acc, pred = evaluate(state.model, self.X, self.y)
        point = ReferencePoint(int(state.epoch), loss, acc, _n_classes(pred))
        self.points.append(point)
        if last:
            state.stop_training = True
            if state.epoch < state.config.n_epochs:
                self.reason = f"its budget ({self.cap} epochs) is spent, undecided: judged against it there"
        else:
            self.reason = self.decide(point)
            state.stop_training = bool(self.reason)


def _from_fit(st: ShortTrainingResult) -> ReferenceRun:
    """No --fit: the shared run of the built-in recipe is its own reference."""
    rec = st.recording
    chunks = np.array_split(np.asarray(rec.losses, dtype=np.float64), max(st.epochs, 1))
    return ReferenceRun(
        recipe=st.fit_name,
        epochs_requested=st.epochs,
        epochs_run=st.epochs,
        decided="",
        points=[ReferencePoint(st.epochs, st.train_loss, st.train_acc, _n_classes(st.pred_train))],
        epoch_losses=[float(c.mean()) for c in chunks if len(c)],
        recording=rec,
        init_loss=st.init_loss,
        wall_s=0.0,
        same_as_fit=True,
    )


def reference_run(
    ctx: DiagContext, st: ShortTrainingResult, decide: Callable[[ReferencePoint], str] | None = None
) -> ReferenceRun:
    """The reference for ``ctx`` (memoized: computed once per context; a full run cached by a caller serves
    every fit). ``decide``: see the module doc; None runs every epoch."""
    if st.builtin:
        return _from_fit(st)
    return ctx.memo("reference_run", lambda: _run(ctx, st, decide))


def _run(
    ctx: DiagContext, st: ShortTrainingResult, decide: Callable[[ReferencePoint], str] | None
) -> ReferenceRun:
    import torch

    from diagnostics.training import fresh_model, model_features, rows_as_tensors
    from moola.train.device import resolve_device
    from moola.train.trainer import fit_tensors

    cfg = ctx.config
    epochs = int(st.epochs)
    _, feats = model_features(ctx)
    X, y = rows_as_tensors(ctx, feats, st.sample.train_rows)  # the rows the fit trained on
    device = resolve_device(ctx.device)
    model = fresh_model(ctx, int(X.shape[2]), X_train=X)
    th = ctx.thresholds
    first = min(epochs, max(1, math.ceil(th.reference_min_epoch_fraction * epochs)))
    # Undecided after its budget, the reference is judged where it got to: a reference trained less can
    # only make the fit look better, never fail it wrongly. None (a caller wanting it whole): no budget.
    cap = epochs if decide is None else max(first, math.ceil(th.reference_max_epoch_fraction * epochs))
    judge = _Judge(X.to(device), y.to(device), first, cap, decide or (lambda p: ""))
    rng = torch.get_rng_state()  # the trainer reseeds torch's global RNG: leave it as the checks found it
    t0 = time.perf_counter()
    try:
        fit_tensors(
            model,
            X,
            y,
            epochs,
            str(device),
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            callbacks=(judge,),
        )
    finally:
        torch.set_rng_state(rng)
    wall = time.perf_counter() - t0
    if not judge.points:  # zero epochs requested
        judge.points.append(ReferencePoint(0, st.init_loss, st.init_train_acc, 1))
    return ReferenceRun(
        recipe=f"fit_tensors (AdamW lr {cfg.lr:g}, batch {cfg.batch_size}, seed {cfg.seed})",
        epochs_requested=epochs,
        epochs_run=len(judge.epoch_losses),
        decided=judge.reason,
        points=judge.points,
        epoch_losses=judge.epoch_losses,
        recording=judge.dynamics,
        init_loss=st.init_loss,
        wall_s=wall,
    )
