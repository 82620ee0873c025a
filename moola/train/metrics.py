"""Vectorized evaluation metrics on label / prediction arrays (numpy; CPU tensors convert implicitly)."""

from __future__ import annotations

import numpy as np


def _labels(a: object) -> np.ndarray:
    return np.asarray(a).astype(np.int64, copy=False).ravel()


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred`` (as scikit-learn)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def majority_class(y: np.ndarray) -> int:
    y = _labels(y)
    return int(np.argmax(np.bincount(y))) if y.size else 0


def majority_accuracy(y_eval: np.ndarray, y_reference: np.ndarray | None = None) -> float:
    """Accuracy of always predicting the majority class of ``y_reference`` (default: of ``y_eval``)."""
    y_eval = _labels(y_eval)
    ref = y_eval if y_reference is None else y_reference
    if y_eval.size == 0:
        return float("nan")
    return float(np.mean(y_eval == majority_class(ref)))


def pointer_mae_bars(pred_unit: np.ndarray, true_bars: np.ndarray, window_length: int) -> float:
    """Mean absolute pointer error in bars; ``pred_unit`` is in [0, 1] = bar / (T - 1)."""
    pred = np.asarray(pred_unit, dtype=np.float64) * (window_length - 1)
    true = np.asarray(true_bars, dtype=np.float64)
    if true.size == 0:
        return float("nan")
    return float(np.mean(np.abs(pred - true)))
