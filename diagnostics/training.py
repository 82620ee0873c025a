"""One short, instrumented training run shared by the leakage symptom checks and the sanity check.

``short_training(ctx)`` builds a fresh seeded model, trains it with the user's ``--fit`` function (or the
built-in ``fit_tensors``) for ``ctx.thresholds.sanity_epochs`` epochs on the training rows under
``Instrument``, and evaluates it on train and test. Memoized in ``ctx`` so check-all trains once.
The pointer head is frozen: the --fit plug-in protocol is classification only. The model reaches the fit
with its input standardization already fitted to the training rows (``set_input_stats``), exactly as
moola's own trainer prepares it, so a user's fit is judged on the same model.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diagnostics.instrument import Instrument, Recording
from moola.errors import MoolaError, where_raised

if TYPE_CHECKING:
    import torch

    from diagnostics.context import DiagContext

EVAL_BATCH = 512


@dataclass
class ShortTrainingResult:
    model_name: str
    feature_set: str
    fit_name: str  # "moola.train.trainer:fit_tensors (built-in)" or the --fit spec
    builtin: bool  # the built-in trainer (its batch size and step count are known)
    device: str
    epochs: int
    n_train: int
    n_test: int
    n_classes: int
    window_length: int
    n_features: int
    batch_size: int  # the built-in trainer's batch size (ctx.config.batch_size)
    recording: Recording
    wall_s: float  # wall time of the fit call
    init_loss: float  # mean cross-entropy of the untrained model on the training rows
    init_train_acc: float
    train_loss: float  # of the trained model, eval mode
    train_acc: float
    test_loss: float
    test_acc: float
    y_train: np.ndarray
    y_test: np.ndarray
    pred_train: np.ndarray
    pred_test: np.ndarray
    model: Any = field(default=None, repr=False)  # the trained model (on ``device``)

    @property
    def epoch_s(self) -> float:
        return self.wall_s / self.epochs if self.epochs else float("nan")


def model_features(ctx: DiagContext) -> tuple[str, np.ndarray]:
    """(feature set name, features of every row of ctx.dataset), memoized under the key the gpu check uses."""
    from moola.features import transform
    from moola.models import get_spec

    name = ctx.config.features or get_spec(ctx.model_name).feature_set
    feats = ctx.memo(f"features:{name}", lambda: transform(ctx.dataset.X, name))
    return name, feats


def evaluate(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predictions) in eval mode without gradients; restores the mode."""
    import torch
    import torch.nn.functional as F

    if X.shape[0] == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    preds = []
    try:
        with torch.no_grad():
            for start in range(0, X.shape[0], EVAL_BATCH):
                xb, yb = X[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
                logits = model(xb)
                loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
                preds.append(logits.argmax(dim=1).cpu())
    finally:
        model.train(was_training)
    pred = torch.cat(preds).numpy().astype(np.int64)
    return loss_sum / X.shape[0], float(np.mean(pred == y.cpu().numpy())), pred


def fresh_model(
    ctx: DiagContext, n_features: int, seed: int | None = None, X_train: torch.Tensor | None = None
) -> torch.nn.Module:
    """The context's model, freshly initialized from a seed, with the pointer head frozen and, given the
    training features, its input standardization fitted to them (as moola's trainer does before training)."""
    import torch

    from moola.models import get_model

    torch.manual_seed(ctx.config.seed if seed is None else seed)
    model = get_model(ctx.model_name, n_features=n_features, n_classes=ctx.dataset.n_classes)
    if hasattr(model, "set_pointer_head"):
        model.set_pointer_head(False)
    if X_train is not None and hasattr(model, "set_input_stats"):
        model.set_input_stats(X_train)
    return model


def _run(ctx: DiagContext) -> ShortTrainingResult:
    import torch

    from moola.train.device import resolve_device
    from moola.train.trainer import fit_tensors

    feature_set, feats = model_features(ctx)
    device = resolve_device(ctx.device)
    X_train = torch.from_numpy(np.ascontiguousarray(feats[ctx.train_idx], dtype=np.float32))
    y_train = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[ctx.train_idx], dtype=np.int64))
    X_test = torch.from_numpy(np.ascontiguousarray(feats[ctx.test_idx], dtype=np.float32))
    y_test = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[ctx.test_idx], dtype=np.int64))
    n_features = int(X_train.shape[2])

    model = fresh_model(ctx, n_features, X_train=X_train)
    init_loss, init_acc, _ = evaluate(model, X_train, y_train)

    builtin = ctx.fit is None
    fit = (
        functools.partial(
            fit_tensors, batch_size=ctx.config.batch_size, lr=ctx.config.lr, seed=ctx.config.seed
        )
        if builtin
        else ctx.fit
    )
    fit_name = "moola.train.trainer:fit_tensors (built-in)" if builtin else (ctx.fit_spec or repr(ctx.fit))
    epochs = int(ctx.thresholds.sanity_epochs)
    # A user's fit may draw from any of these RNGs: seed them all so a diagnostics run is repeatable.
    random.seed(ctx.config.seed)
    np.random.seed(ctx.config.seed % 2**32)
    torch.manual_seed(ctx.config.seed)
    t0 = time.perf_counter()
    instrument = Instrument(model)
    try:
        with instrument:
            # Copies: a fit that normalizes X in place must not change what it is evaluated on.
            fit(model, X_train.clone(), y_train.clone(), epochs, str(device))
    except Exception as exc:
        if builtin:  # moola's own trainer failing is a bug: the check crashes (a FAIL naming it)
            raise
        # The user's code failed: nothing below would be measured, so it is an input error (exit 2).
        raise MoolaError(
            f"--fit {fit_name}: raised {type(exc).__name__}: {exc} (at {where_raised(exc)}); "
            "rerun with --debug for the traceback"
        ) from exc
    wall = time.perf_counter() - t0
    recording = instrument.recording

    # The fit may have moved the model; evaluate wherever its parameters now live.
    p = next(model.parameters(), None)
    eval_dev = p.device if p is not None else device
    Xtr, ytr, Xte, yte = (t.to(eval_dev) for t in (X_train, y_train, X_test, y_test))
    train_loss, train_acc, pred_train = evaluate(model, Xtr, ytr)
    test_loss, test_acc, pred_test = evaluate(model, Xte, yte)
    return ShortTrainingResult(
        model_name=ctx.model_name,
        feature_set=feature_set,
        fit_name=fit_name,
        builtin=builtin,
        device=str(device),
        epochs=epochs,
        n_train=int(X_train.shape[0]),
        n_test=int(X_test.shape[0]),
        n_classes=ctx.dataset.n_classes,
        window_length=int(X_train.shape[1]),
        n_features=n_features,
        batch_size=int(ctx.config.batch_size),
        recording=recording,
        wall_s=wall,
        init_loss=init_loss,
        init_train_acc=init_acc,
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        y_train=y_train.numpy(),
        y_test=y_test.numpy(),
        pred_train=pred_train,
        pred_test=pred_test,
        model=model,
    )


def short_training(ctx: DiagContext) -> ShortTrainingResult:
    """The shared short training run for ``ctx`` (computed once per context)."""
    return ctx.memo("short_training", lambda: _run(ctx))
