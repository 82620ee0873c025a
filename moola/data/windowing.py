"""Cut a raw OHLC bar series into fixed-length windows (vectorized, via sliding_window_view).

``bar_start`` is the positional bar index of each window's first bar (0 = the frame's first row) by
default: the purged split measures its embargo in bars, and an index is exact whatever gaps the
timestamps have. Pass ``timestamps=True`` to get the ``timestamp`` column's epoch-ns instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from moola.data.dataset import OHLC_COLUMNS, WINDOW_LENGTH, WindowDataset
from moola.errors import MoolaError

if TYPE_CHECKING:
    import pandas as pd


def _epoch_ns(stamps: pd.Series) -> np.ndarray:
    import pandas as pd

    values = pd.to_datetime(stamps)
    return np.asarray(values.dt.as_unit("ns").array.asi8, dtype=np.int64)


def make_windows(
    bars: pd.DataFrame,
    stride: int = WINDOW_LENGTH,
    length: int = WINDOW_LENGTH,
    source: str = "series",
    *,
    timestamps: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``length`` bars every ``stride`` bars.

    Returns X float32 (N, length, 4) C-contiguous (open, high, low, close), source unicode (N,) and
    bar_start int64 (N,): the first bar's row index, or its epoch-ns when ``timestamps=True``.
    A trailing stretch shorter than ``length`` is dropped.
    """
    if stride < 1:
        raise MoolaError(f"stride {stride}: must be >= 1")
    if length < 1:
        raise MoolaError(f"length {length}: must be >= 1")
    missing = [c for c in OHLC_COLUMNS if c not in bars.columns]
    if missing:
        raise MoolaError(
            f"bars: missing column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(map(str, bars.columns)) or 'none'})"
        )
    if timestamps and "timestamp" not in bars.columns:
        raise MoolaError("bars: missing column 'timestamp' (needed for timestamps=True)")
    n_bars = len(bars)
    if n_bars < length:
        raise MoolaError(f"bars: {n_bars} bars, need at least {length} for one window")
    try:
        values = bars.loc[:, list(OHLC_COLUMNS)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MoolaError(f"bars: OHLC columns must be numeric ({exc})") from exc
    finite = np.isfinite(values)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise MoolaError(
            f"bars: column {OHLC_COLUMNS[c]!r}, row {r}: non-finite value {float(values[r, c])!r}"
        )

    starts = np.arange(0, n_bars - length + 1, stride, dtype=np.int64)
    view = sliding_window_view(values, length, axis=0)[::stride]  # (N, 4, length), no copy
    X = np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)
    src = np.full(len(starts), source)
    bar_start = _epoch_ns(bars["timestamp"])[starts] if timestamps else starts
    return X, src, np.ascontiguousarray(bar_start, dtype=np.int64)


def windows_dataset(
    bars: pd.DataFrame,
    labels: np.ndarray | list[str] | list[int] | None = None,
    stride: int = WINDOW_LENGTH,
    length: int = WINDOW_LENGTH,
    source: str = "series",
    *,
    pointers: np.ndarray | None = None,
    timestamps: bool = False,
) -> WindowDataset:
    """``make_windows`` as a WindowDataset (window_id ``"{source}-{bar_start}"``).

    ``labels``: one per window (str or int; classes sorted, numerically for ints), or None to put every
    window in the single class ``"unlabeled"``.
    """
    X, src, bar_start = make_windows(bars, stride, length, source, timestamps=timestamps)
    n = len(X)
    if labels is None:
        classes: tuple[str, ...] = ("unlabeled",)
        y = np.zeros(n, dtype=np.int64)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise MoolaError(f"labels: {labels.shape[0] if labels.ndim else 0} given for {n} windows")
        if np.issubdtype(labels.dtype, np.integer):
            uniq, y = np.unique(labels.astype(np.int64), return_inverse=True)
            classes = tuple(str(v) for v in uniq.tolist())
        else:
            uniq, y = np.unique(labels.astype(str), return_inverse=True)
            classes = tuple(uniq.tolist())
    if pointers is not None:
        pointers = np.ascontiguousarray(pointers, dtype=np.int64)
        if pointers.shape != (n, 2):
            raise MoolaError(f"pointers: shape {pointers.shape}, expected ({n}, 2)")
    return WindowDataset(
        X=X,
        y=np.ascontiguousarray(y.reshape(-1), dtype=np.int64),
        classes=classes,
        window_id=np.char.add(f"{source}-", bar_start.astype(str)),
        pointers=pointers,
        source=src,
        bar_start=bar_start,
    )
