"""One short, instrumented training run shared by the leakage symptom checks and the sanity check.

``short_training(ctx)`` builds a fresh seeded model, trains it with the user's ``--fit`` function (or the
built-in ``fit_tensors``) for ``ctx.thresholds.sanity_epochs`` epochs on the training rows under
``Instrument``, and evaluates it on train and test. Memoized in ``ctx`` so check-all trains once.
The pointer head is frozen: the --fit plug-in protocol is classification only. The model reaches the fit
with its input standardization already fitted to the training rows (``set_input_stats``), exactly as
moola's own trainer prepares it, so a user's fit is judged on the same model.

It trains on ``diagnostics.sampling.training_sample`` (every row of a small split; a stratified, seeded
sample sized for the findings' confidence of a large one). A user's fit that raises, runs past
``fit_time_limit`` (scaled to the data and this machine; SIGALRM on the main thread), or returns
a model other than the one it was given is a ``MoolaError`` (one line, exit 2): nothing measured would be true.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diagnostics.instrument import Instrument, Recording
from moola.errors import MoolaError, where_raised

if TYPE_CHECKING:
    import torch

    from diagnostics.context import DiagContext, FitFn


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
    frozen: list[str] = field(default_factory=list)  # parameters the fit declares untrained (moola_frozen)
    model: Any = field(default=None, repr=False)  # the trained model (on ``device``)
    sample: Any = None  # the diagnostics.sampling.TrainingSample trained and evaluated on

    @property
    def epoch_s(self) -> float:
        return self.wall_s / self.epochs if self.epochs else float("nan")


FEATURE_CHUNK = 4096  # windows transformed at a time: the float64 intermediates stay ~40 MB


def transform_chunked(X: np.ndarray, name: str, chunk: int = FEATURE_CHUNK) -> np.ndarray:
    """``moola.features.transform(X, name)`` (each window is transformed on its own), computed ``chunk``
    windows at a time into one float32 array, so its float64 intermediates never exist for every row."""
    from moola.errors import MoolaError
    from moola.features import transform

    if len(X) <= chunk:
        return transform(X, name)
    first = transform(X[:chunk], name)
    out = np.empty((len(X), *first.shape[1:]), dtype=np.float32)
    out[:chunk] = first
    for s in range(chunk, len(X), chunk):
        try:
            out[s : s + chunk] = transform(X[s : s + chunk], name)
        except MoolaError:
            return transform(X, name)  # the error again, naming the window by its index in X
    return out


def model_features(ctx: DiagContext) -> tuple[str, np.ndarray]:
    """(feature set name, features of every row of ctx.dataset), memoized under the key the gpu check uses."""
    from moola.models import get_spec

    name = ctx.config.features or get_spec(ctx.model_name).feature_set
    feats = ctx.memo(f"features:{name}", lambda: transform_chunked(ctx.dataset.X, name))
    return name, feats


def fresh_model(ctx: DiagContext, n_features: int, X_train: torch.Tensor | None = None) -> torch.nn.Module:
    """The one model recipe of the diagnostics: the context's model, initialized from ``ctx.config.seed``,
    with the pointer head frozen and, given the training features, its input standardization fitted to them
    (as moola's trainer does before training)."""
    import torch

    from moola.models import get_model

    torch.manual_seed(ctx.config.seed)
    model = get_model(ctx.model_name, n_features=n_features, n_classes=ctx.dataset.n_classes)
    if hasattr(model, "set_pointer_head"):
        model.set_pointer_head(False)
    if X_train is not None and hasattr(model, "set_input_stats"):
        model.set_input_stats(X_train)
    return model


class _FitTimeout(BaseException):
    """Raised inside a --fit that ran past its limit (a BaseException: a user's ``except Exception`` in the
    loop must not swallow it)."""


def _in_library_internals(frame: Any) -> bool:
    """Whether the innermost Python frame is torch's or contextlib's own code. An exception raised there can
    stop half-way through a context manager's ``__enter__`` (torch's function-mode dispatch pops the mode and
    re-pushes it only when a suspended generator is finalized, later; ``no_grad`` can leave grad mode off), so
    the time limit waits for the fit's own code instead."""
    import contextlib

    import torch

    filename = frame.f_code.co_filename if frame is not None else ""
    return filename.startswith(os.path.dirname(torch.__file__) + os.sep) or filename == contextlib.__file__


def call_with_limit(
    fn: Callable[[], Any], limit_s: float, defer_s: float = 0.002, max_defer_s: float = 1.0
) -> Any:
    """``fn()``, interrupted with ``_FitTimeout`` after ``limit_s`` seconds (SIGALRM; only where it exists and
    on the main thread, else unlimited). Unwinding inside the fit leaves no thread spinning behind. When the
    alarm lands inside torch's or contextlib's internals it is re-armed every ``defer_s`` for up to
    ``max_defer_s``, then raised regardless (a loop that never leaves torch's code is still stopped)."""
    import signal
    import threading

    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or limit_s <= 0:
        return fn()
    deadline = time.perf_counter() + limit_s + max_defer_s

    def on_alarm(signum: int, frame: Any) -> None:
        if _in_library_internals(frame) and time.perf_counter() < deadline:
            signal.setitimer(signal.ITIMER_REAL, defer_s)
            return
        raise _FitTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def declared_frozen(fit: Any, names: list[str], fit_name: str) -> list[str]:
    """Parameter names a --fit declares it leaves untrained on purpose (a frozen-encoder fine-tune):
    ``FUNC.moola_frozen = ("encoder",)``, prefixes of ``model.named_parameters()`` names."""
    declared = getattr(fit, "moola_frozen", None)
    if declared is None:
        return []
    prefixes = (declared,) if isinstance(declared, str) else declared
    if not isinstance(prefixes, (tuple, list, set, frozenset)) or not all(
        isinstance(p, str) for p in prefixes
    ):
        raise MoolaError(
            f"--fit {fit_name}: moola_frozen must be a string or a tuple of parameter-name prefixes, "
            f"got {declared!r}"
        )
    frozen = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            raise MoolaError(
                f"--fit {fit_name}: moola_frozen names {prefix!r}, which matches no trainable parameter "
                f"(these start with: {', '.join(sorted({n.split('.')[0] for n in names}))})"
            )
        frozen += [n for n in hits if n not in frozen]
    return frozen


def rows_as_tensors(
    ctx: DiagContext, feats: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X float32 (n, T, F), y int64 (n,)) CPU tensors of ``rows`` of the features and labels."""
    import torch

    X = torch.from_numpy(np.ascontiguousarray(feats[rows], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(ctx.dataset.y[rows], dtype=np.int64))
    return X, y


def context_fit(ctx: DiagContext) -> tuple[FitFn, str]:
    """(fit, its name) the checks train with: the user's --fit, or the built-in trainer under the
    context's batch size, lr and seed."""
    if ctx.fit is not None:
        return ctx.fit, ctx.fit_spec or repr(ctx.fit)
    from moola.train.trainer import fit_tensors

    cfg = ctx.config
    builtin = functools.partial(fit_tensors, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    return builtin, "moola.train.trainer:fit_tensors (built-in)"


def fit_time_limit(
    ctx: DiagContext, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, device: Any
) -> tuple[float, str]:
    """(seconds, what they are): how long a user's --fit may take for ``epochs`` epochs on (X, y) here.

    ``fit_time_factor`` x the time those epochs should take on this machine -- per epoch, the larger of the
    physics lower bound and ceil(N / batch) plain AdamW steps of this model measured on ``device`` -- and
    at least ``fit_time_limit_s``. It scales with the data and the machine, so a large file is not mistaken
    for a fit that loops forever, and a hang is still stopped in minutes rather than hours.
    """
    from diagnostics.physics import epoch_time_lower_bound, format_seconds, measure_training_step

    th = ctx.thresholds
    n, batch = int(X.shape[0]), max(1, int(ctx.config.batch_size))
    b = min(batch, n)
    dev = torch_device(device)
    step_s = measure_training_step(model, X[:b].to(dev), y[:b].to(dev))
    steps_epoch = -(-n // batch) * step_s
    bound = epoch_time_lower_bound(model, n, batch, int(X.shape[1]), int(X.shape[2]), dev).seconds
    per_epoch = max(steps_epoch, bound)
    expected = per_epoch * epochs
    limit = max(float(th.fit_time_limit_s), float(th.fit_time_factor) * expected)
    what = (
        f"expected ~{format_seconds(expected)} here: {format_seconds(per_epoch)} per epoch = "
        f"{-(-n // batch)} plain AdamW steps of {format_seconds(step_s)} at batch {b}, lower bound "
        f"{format_seconds(bound)}; the limit is {th.fit_time_factor:g}x that, at least "
        f"{th.fit_time_limit_s:g} s: Thresholds.fit_time_factor, fit_time_limit_s"
    )
    return limit, what


def torch_device(device: Any) -> torch.device:
    import torch

    return device if isinstance(device, torch.device) else torch.device(str(device))


def _run(ctx: DiagContext) -> ShortTrainingResult:
    import torch

    from diagnostics.sampling import training_sample
    from moola.train.device import resolve_device
    from moola.train.trainer import evaluate

    feature_set, feats = model_features(ctx)
    device = resolve_device(ctx.device)
    sample = training_sample(ctx)
    X_train, y_train = rows_as_tensors(ctx, feats, sample.train_rows)
    X_test, y_test = rows_as_tensors(ctx, feats, sample.test_rows)
    n_features = int(X_train.shape[2])

    model = fresh_model(ctx, n_features, X_train=X_train)
    init_loss, init_acc, _ = evaluate(model, X_train, y_train)

    builtin = ctx.fit is None
    fit, fit_name = context_fit(ctx)
    frozen = declared_frozen(fit, [n for n, p in model.named_parameters() if p.requires_grad], fit_name)
    epochs = sample.epochs
    # moola's own trainer is not judged by a user's limit: it is known to terminate (epochs x batches).
    limit, expected = (0.0, "") if builtin else fit_time_limit(ctx, model, X_train, y_train, epochs, device)
    # A user's fit may draw from any of these RNGs: seed them all so a diagnostics run is repeatable.
    random.seed(ctx.config.seed)
    np.random.seed(ctx.config.seed % 2**32)
    torch.manual_seed(ctx.config.seed)
    t0 = time.perf_counter()
    instrument = Instrument(model, X_ref=X_train, y_ref=y_train)
    try:
        with instrument:
            # Copies: a fit that normalizes X in place must not change what it is evaluated on.
            returned = call_with_limit(
                lambda: fit(model, X_train.clone(), y_train.clone(), epochs, str(device)), limit
            )
    except _FitTimeout:
        raise MoolaError(
            f"--fit {fit_name}: did not return within {limit:.3g} s for {epochs} epoch(s) on "
            f"{int(X_train.shape[0])} windows ({expected}); does it loop forever?"
        ) from None
    except Exception as exc:
        if builtin:  # moola's own trainer failing is a bug: the check crashes (a FAIL naming it)
            raise
        # The user's code failed: nothing below would be measured, so it is an input error (exit 2).
        raise MoolaError(
            f"--fit {fit_name}: raised {type(exc).__name__}: {exc} (at {where_raised(exc)}); "
            "rerun with --debug for the traceback"
        ) from exc
    if isinstance(returned, torch.nn.Module) and returned is not model:
        # Training a copy and returning it leaves the given model untrained: nothing measured would be true.
        raise MoolaError(
            f"--fit {fit_name}: returned a different {type(returned).__name__} than the model it was given; "
            "FUNC(model, X, y, epochs, device) must train the given model in place (return None or it)"
        )
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
        frozen=frozen,
        model=model,
        sample=sample,
    )


def short_training(ctx: DiagContext) -> ShortTrainingResult:
    """The shared short training run for ``ctx`` (computed once per context)."""
    return ctx.memo("short_training", lambda: _run(ctx))
