"""The training loop: whole arrays on the device once, shuffled by index per epoch, hooks for diagnostics.

Why not a DataLoader: the data is a few hundred (105 x F) windows, so per-item collation would cost more
than the model. Instead the train/val arrays are moved to the device once and every batch is an index
slice of a device tensor, with a seeded ``torch.Generator`` for the shuffle and the augmentation noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moola.config import TrainConfig
from moola.data.dataset import WindowDataset
from moola.errors import MoolaError
from moola.train import metrics
from moola.train.device import resolve_device

EVAL_BATCH = 512  # bounds activation memory at evaluation; no gradients are kept
GRAD_CLIP_NORM = 1.0  # LSTMs occasionally produce exploding gradients on a bad batch
# SmoothL1 on pointers in unit space (bar / (T-1)): quadratic within ~5 bars of the target, L1 beyond.
POINTER_BETA = 0.05
CALLBACK_HOOKS = ("on_train_start", "on_step_end", "on_epoch_end", "on_train_end")


@dataclass
class TrainState:
    """What callbacks see. Epochs and steps count from 1 (``epoch`` is 0 in on_train_start).

    ``batch_size`` is the size of the batch just trained (the last batch of an epoch may be smaller);
    ``loss`` is that batch's loss in on_step_end and the epoch's mean training loss in on_epoch_end.
    A callback may set ``stop_training = True`` to end training after the current step/epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    batch_size: int = 0
    loss: float = float("nan")
    n_samples_seen_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    device: torch.device | None = None
    n_train: int = 0
    steps_per_epoch: int = 0
    config: TrainConfig | None = None
    stop_training: bool = False


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int  # 0-based index into ``history`` of the epoch whose weights the model holds
    best_val_loss: float | None
    stopped_early: bool
    device: str
    n_epochs_run: int
    train_time_s: float


class _Callbacks:
    def __init__(self, callbacks: Sequence[Any]):
        self._hooks = {
            hook: [getattr(cb, hook) for cb in callbacks if callable(getattr(cb, hook, None))]
            for hook in CALLBACK_HOOKS
        }

    def wants(self, hook: str) -> bool:
        return bool(self._hooks[hook])

    def fire(self, hook: str, state: TrainState) -> None:
        for fn in self._hooks[hook]:
            fn(state)


@dataclass
class _Tensors:
    X: torch.Tensor
    y: torch.Tensor
    pointers: torch.Tensor | None  # float, in unit space bar / (T-1)
    pointer_bars: np.ndarray | None


def _to_device(ds: WindowDataset, device: torch.device, with_pointers: bool, role: str) -> _Tensors:
    pointers = None
    if with_pointers:
        if ds.pointers is None:
            where = f" ({ds.path})" if ds.path else ""
            raise MoolaError(f"predict_pointers is on but the {role} windows{where} have no pointer columns")
        unit = np.clip(ds.pointers.astype(np.float32) / (ds.X.shape[1] - 1), 0.0, 1.0)
        pointers = torch.as_tensor(unit, device=device)
    return _Tensors(
        X=torch.as_tensor(np.ascontiguousarray(ds.X, dtype=np.float32), device=device),
        y=torch.as_tensor(np.asarray(ds.y, dtype=np.int64), device=device),
        pointers=pointers,
        pointer_bars=None if ds.pointers is None else np.asarray(ds.pointers),
    )


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor | None, w: float):
    """Mean loss over the batch, the logits, and the pointer predictions (or None)."""
    if p is None:
        logits = model(x)
        return F.cross_entropy(logits, y), logits, None
    logits, pointers = model(x, with_pointers=True)
    loss = F.cross_entropy(logits, y) + w * F.smooth_l1_loss(pointers, p, beta=POINTER_BETA)
    return loss, logits, pointers


@torch.no_grad()
def _evaluate(model: nn.Module, data: _Tensors, w: float) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(mean loss, predicted classes, predicted unit pointers or None) in eval mode."""
    model.eval()
    n = data.X.shape[0]
    loss_sum = torch.zeros((), device=data.X.device)
    preds, ptrs = [], []
    for start in range(0, n, EVAL_BATCH):
        sl = slice(start, start + EVAL_BATCH)
        p = None if data.pointers is None else data.pointers[sl]
        loss, logits, pointers = _loss(model, data.X[sl], data.y[sl], p, w)
        loss_sum += loss * logits.shape[0]
        preds.append(logits.argmax(dim=1))
        if pointers is not None:
            ptrs.append(pointers)
    # One device->host transfer per evaluation.
    pred = torch.cat(preds).cpu().numpy()
    ptr = torch.cat(ptrs).cpu().numpy() if ptrs else None
    return float(loss_sum.item()) / n, pred, ptr


@torch.no_grad()
def predict(
    model: nn.Module, X: torch.Tensor, with_pointers: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eval-mode logits over every row of ``X`` (and the unit pointers with ``with_pointers``), batched;
    the model is left in eval mode."""
    model.eval()
    logits, ptrs = [], []
    for start in range(0, X.shape[0], EVAL_BATCH):
        out = (
            model(X[start : start + EVAL_BATCH], with_pointers=True)
            if with_pointers
            else model(X[start : start + EVAL_BATCH])
        )
        if with_pointers:
            out, p = out
            ptrs.append(p)
        logits.append(out)
    return torch.cat(logits), (torch.cat(ptrs) if with_pointers else None)


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, int64 predictions) in eval mode without gradients; restores the mode.

    The one batched evaluation: the trainer's validation and the diagnostics' before/after measurements.
    """
    if X.shape[0] == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    was_training = model.training
    try:
        loss, pred, _ = _evaluate(model, _Tensors(X, y, None, None), 0.0)
    finally:
        model.train(was_training)
    pred = pred.astype(np.int64)
    return loss, float(np.mean(pred == y.cpu().numpy())), pred


def evaluate_dataset(
    model: nn.Module, ds: WindowDataset, config: TrainConfig, device: str | torch.device | None = None
) -> dict[str, float | None]:
    """Eval-mode loss (the training objective, pointer term included when the config trains pointers),
    accuracy and macro-F1 of ``model`` on ``ds`` (features already transformed); restores the mode."""
    dev = resolve_device(device if device is not None else config.device)
    with_ptr = bool(config.predict_pointers and ds.pointers is not None)
    data = _to_device(ds, dev, with_ptr, "evaluation")
    if len(ds) == 0:
        return {"loss": None, "acc": None, "macro_f1": None}
    was_training = model.training
    try:
        loss, pred, _ = _evaluate(model.to(dev), data, config.pointer_loss_weight)
    finally:
        model.train(was_training)
    n_classes = getattr(model, "hparams", {}).get("n_classes")
    y = np.asarray(ds.y)
    return {
        "loss": loss,
        "acc": metrics.accuracy(y, pred),
        "macro_f1": metrics.macro_f1(y, pred, n_classes),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(
    model: nn.Module,
    train: _Tensors,
    val: _Tensors | None,
    config: TrainConfig,
    device: torch.device,
    callbacks: Sequence[Any],
) -> FitResult:
    """The one training loop behind ``fit`` and ``fit_tensors``; every knob comes from ``config``."""
    n = int(train.X.shape[0])
    if n == 0:
        raise MoolaError("no training windows: the training split is empty")
    batch_size, n_epochs, seed = config.batch_size, config.n_epochs, config.seed
    if batch_size < 1 or n_epochs < 0:
        raise MoolaError(f"batch_size must be >= 1 and n_epochs >= 0, got {batch_size} and {n_epochs}")
    expected_f = getattr(model, "hparams", {}).get("input_size")
    if expected_f is not None and expected_f != train.X.shape[2]:
        raise MoolaError(
            f"model expects {expected_f} features per bar but the data has {train.X.shape[2]}"
            " (wrong --features for this model?)"
        )

    torch.manual_seed(seed)  # dropout draws from the global RNG
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    model.to(device)
    if hasattr(model, "set_input_stats"):
        model.set_input_stats(train.X)
    predict_pointers = config.predict_pointers
    if hasattr(model, "set_pointer_head"):
        model.set_pointer_head(predict_pointers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    w = config.pointer_loss_weight
    patience = config.early_stopping_patience if val is not None else 0  # nothing to watch without val
    train_targets = train.pointers if predict_pointers else None
    val_eval = (
        None if val is None else _Tensors(val.X, val.y, val.pointers if predict_pointers else None, None)
    )
    # Jitter is scaled by each feature's spread so it means the same on every feature.
    feat_std = train.X.std(dim=(0, 1)) if n * train.X.shape[1] > 1 else torch.ones(train.X.shape[2])
    jitter_scale = (config.jitter_sigma * feat_std).to(device)
    y_train_np = train.y.cpu().numpy()
    y_val_np = None if val_eval is None else val_eval.y.cpu().numpy()
    n_classes = getattr(model, "hparams", {}).get("n_classes")
    window_length = int(train.X.shape[1])

    steps_per_epoch = math.ceil(n / batch_size)
    cbs = _Callbacks(callbacks)
    step_hook = cbs.wants("on_step_end")
    history: list[dict[str, Any]] = []
    state = TrainState(
        model=model,
        optimizer=optimizer,
        history=history,
        device=device,
        n_train=n,
        steps_per_epoch=steps_per_epoch,
        config=config,
    )
    cbs.fire("on_train_start", state)

    best_loss, best_epoch, best_state = math.inf, 0, None
    stopped_early = False
    t_run = time.perf_counter()
    for epoch in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        state.epoch, state.step_in_epoch, state.n_samples_seen_epoch = epoch, 0, 0
        perm = torch.randperm(n, generator=gen, device=device)
        # Accumulated on the device: no host sync per step unless a step callback wants the loss.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, start in enumerate(range(0, n, batch_size), 1):
            idx = perm[start : start + batch_size]
            xb, yb = train.X[idx], train.y[idx]
            pb = None if train_targets is None else train_targets[idx]
            b = int(idx.shape[0])
            if config.augment:
                scale = 1.0 + config.scale_sigma * torch.randn((b, 1, 1), generator=gen, device=device)
                noise = torch.randn(xb.shape, generator=gen, device=device) * jitter_scale
                xb = xb * scale + noise
            loss, logits, _ = _loss(model, xb, yb, pb, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP_NORM)
            optimizer.step()
            loss_sum += loss.detach() * b
            correct += (logits.detach().argmax(dim=1) == yb).sum()

            state.step_in_epoch, state.batch_size = step, b
            state.global_step += 1
            state.n_samples_seen_epoch += b
            if step_hook:
                state.loss = float(loss.item())
                cbs.fire("on_step_end", state)
            if state.stop_training:
                break
        _sync(device)
        train_time = time.perf_counter() - t0
        seen = state.n_samples_seen_epoch
        row: dict[str, Any] = {
            "epoch": epoch,
            # Running means over the epoch's augmented batches with dropout on, as the weights changed:
            # not comparable with the eval-mode val_* figures (see evaluate_dataset).
            "train_loss_running": float(loss_sum.item()) / seen,
            "train_acc_running": int(correct.item()) / seen,
            "val_loss": None,
            "val_acc": None,
            "val_macro_f1": None,
            "majority_acc": None,
            "pointer_mae_bars": None,
        }
        if val_eval is not None and val_eval.X.shape[0] > 0:
            val_loss, pred, ptr = _evaluate(model, val_eval, w)
            row.update(
                val_loss=val_loss,
                val_acc=metrics.accuracy(y_val_np, pred),
                val_macro_f1=metrics.macro_f1(y_val_np, pred, n_classes),
                majority_acc=metrics.majority_accuracy(y_val_np, y_train_np),
            )
            if ptr is not None and val.pointer_bars is not None:
                row["pointer_mae_bars"] = metrics.pointer_mae_bars(ptr, val.pointer_bars, window_length)
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                if patience > 0:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            row["majority_acc"] = metrics.majority_accuracy(y_train_np)
        _sync(device)
        row["train_time_s"] = train_time
        row["samples_per_s"] = seen / train_time if train_time > 0 else None
        row["epoch_time_s"] = time.perf_counter() - t0
        history.append(row)
        state.loss = row["train_loss_running"]
        cbs.fire("on_epoch_end", state)
        if state.stop_training:
            break
        if best_state is not None and epoch - best_epoch >= patience:
            stopped_early = epoch < n_epochs
            break

    if best_state is not None and best_epoch != len(history):
        model.load_state_dict(best_state)  # early stopping: keep the best validation epoch
    elif best_state is None:
        best_epoch = len(history)  # no early stopping: the model holds the last epoch
    kept = max(best_epoch - 1, 0)
    model.eval()  # returned ready for inference
    result = FitResult(
        model=model,
        history=history,
        best_epoch=kept,
        best_val_loss=history[kept]["val_loss"] if history else None,
        stopped_early=stopped_early,
        device=str(device),
        n_epochs_run=len(history),
        train_time_s=time.perf_counter() - t_run,
    )
    cbs.fire("on_train_end", state)
    return result


def fit(
    model: nn.Module,
    train_ds: WindowDataset,
    val_ds: WindowDataset | None,
    config: TrainConfig,
    callbacks: Sequence[Any] = (),
) -> FitResult:
    """Train ``model`` in place on ``train_ds`` (features already transformed) and return its history.

    Early stopping watches the validation loss (``config.early_stopping_patience`` epochs; 0 disables it)
    and restores the best epoch's weights. Deterministic on CPU for a given ``config.seed`` (it reseeds
    torch's global RNG, which dropout draws from; shuffling and augmentation use their own generator).
    """
    device = resolve_device(config.device)
    train = _to_device(train_ds, device, config.predict_pointers, "training")
    val = None
    if val_ds is not None and len(val_ds) > 0:
        val = _to_device(val_ds, device, config.predict_pointers, "validation")
    return _train(model, train, val, config, device, callbacks)


def fit_tensors(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    device: str | torch.device,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    lr: float | None = None,
    callbacks: Sequence[Any] = (),
) -> None:
    """The ``--fit MODULE:FUNC`` plug-in protocol, implemented by the built-in loop.

    Trains ``model`` in place for ``epochs`` epochs on X (N, T, F) float32 / y (N,) long: classification
    only, no validation, no early stopping, no augmentation; TrainConfig defaults for batch size and lr.
    ``callbacks`` as for ``fit`` (the diagnostics' reference run stops once its comparison is decided).
    """
    dev = resolve_device(device)
    defaults = TrainConfig()
    config = replace(
        defaults,
        n_epochs=int(epochs),
        batch_size=defaults.batch_size if batch_size is None else batch_size,
        lr=defaults.lr if lr is None else lr,
        device=dev.type,
        predict_pointers=False,
        early_stopping_patience=0,
        augment=False,
        seed=seed,
    )
    X = torch.as_tensor(X, dtype=torch.float32).to(dev)
    y = torch.as_tensor(y, dtype=torch.long).to(dev)
    _train(model, _Tensors(X, y, None, None), None, config, dev, callbacks=callbacks)
