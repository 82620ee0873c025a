"""Per-window feature transforms of raw OHLC bars (numpy only, vectorized over windows and bars).

Every transform looks at one window at a time (no statistics across windows), so applying it to the
whole data set before splitting cannot leak information between train and validation rows.
"""

from __future__ import annotations

import numpy as np

from moola.errors import MoolaError

OHLC4_DOCS: dict[str, str] = {
    "open_rel": "open / close of the window's first bar - 1",
    "high_rel": "high / close of the window's first bar - 1",
    "low_rel": "low / close of the window's first bar - 1",
    "close_rel": "close / close of the window's first bar - 1",
}

# Every relative11 dimension is a ratio of prices, hence invariant to multiplying all prices by a
# constant. "prev_close" is the previous bar's close; the first bar has none and uses its own open
# (so its gap features are 0 and its log return is log(close/open)).
RELATIVE11_DOCS: dict[str, str] = {
    "log_open_prev_close": "log(open / prev_close): the opening gap",
    "log_high_prev_close": "log(high / prev_close): how far the bar reached up",
    "log_low_prev_close": "log(low / prev_close): how far the bar reached down",
    "log_return": "log(close / prev_close): the bar's close-to-close log return",
    "range": "(high - low) / close: the bar's range as a fraction of its close",
    "body": "(close - open) / close: signed candle body as a fraction of the close",
    "upper_wick": "(high - max(open, close)) / close: upper shadow as a fraction of the close",
    "lower_wick": "(min(open, close) - low) / close: lower shadow as a fraction of the close",
    "close_location": "(close - low) / (high - low) in [0, 1]; 0.5 when high == low",
    "log_close_window": "log(close / close of the window's first bar): cumulative return in the window",
    "log_drawdown": "log(close / running max of high since the window's first bar) <= 0",
}

FEATURE_DOCS: dict[str, dict[str, str]] = {"ohlc4": OHLC4_DOCS, "relative11": RELATIVE11_DOCS}
FEATURE_SETS: dict[str, tuple[str, ...]] = {name: tuple(docs) for name, docs in FEATURE_DOCS.items()}


def _check_ohlc(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 3 or X.shape[2] != 4:
        raise MoolaError(f"features {name!r}: expected raw OHLC windows of shape (N, T, 4), got {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise MoolaError(f"features {name!r}: OHLC values must be numeric, got dtype {X.dtype}")
    # float64 internally: log ratios of nearby prices lose digits in float32.
    X = X.astype(np.float64, copy=False)
    if X.size and not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise MoolaError(f"features {name!r}: non-finite price in window {bad[0]}, bar {bad[1]}")
    return X


def ohlc4(X: np.ndarray) -> np.ndarray:
    """OHLC relative to the first bar's close: x / close_0 - 1, shape (N, T, 4)."""
    X = _check_ohlc(X, "ohlc4")
    c0 = X[:, :1, 3:4]
    if X.size and (c0 == 0).any():
        raise MoolaError(
            f"features 'ohlc4': window {int(np.argmax(c0[:, 0, 0] == 0))} has a first close of 0"
        )
    return np.ascontiguousarray(X / c0 - 1.0, dtype=np.float32)


def relative11(X: np.ndarray) -> np.ndarray:
    """The 11 scale-free bar features of ``RELATIVE11_DOCS`` (in that order), shape (N, T, 11)."""
    X = _check_ohlc(X, "relative11")
    if X.size and (X <= 0).any():
        bad = np.argwhere(X <= 0)[0]
        raise MoolaError(
            f"features 'relative11': prices must be > 0 (log ratios), window {bad[0]}, bar {bad[1]} is not"
        )
    o, h, lo, c = X[..., 0], X[..., 1], X[..., 2], X[..., 3]
    prev_c = np.concatenate([o[:, :1], c[:, :-1]], axis=1)
    log_prev = np.log(prev_c)
    span = h - lo
    # Flat bar (high == low): the close sits "in the middle" of a zero range.
    safe_span = np.where(span > 0, span, 1.0)
    close_loc = np.where(span > 0, (c - lo) / safe_span, 0.5)
    out = np.stack(
        [
            np.log(o) - log_prev,
            np.log(h) - log_prev,
            np.log(lo) - log_prev,
            np.log(c) - log_prev,
            span / c,
            (c - o) / c,
            (h - np.maximum(o, c)) / c,
            (np.minimum(o, c) - lo) / c,
            close_loc,
            np.log(c) - np.log(c[:, :1]),
            np.log(c) - np.log(np.maximum.accumulate(h, axis=1)),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(out, dtype=np.float32)


_TRANSFORMS = {"ohlc4": ohlc4, "relative11": relative11}


def transform(X_ohlc: np.ndarray, name: str) -> np.ndarray:
    """Feature set ``name`` of raw OHLC windows (N, T, 4) -> float32 C-contiguous (N, T, F)."""
    fn = _TRANSFORMS.get(name)
    if fn is None:
        raise MoolaError(f"unknown feature set {name!r}; valid: {', '.join(sorted(_TRANSFORMS))}")
    return fn(X_ohlc)


def n_features(name: str) -> int:
    """Width of feature set ``name``."""
    if name not in FEATURE_SETS:
        raise MoolaError(f"unknown feature set {name!r}; valid: {', '.join(sorted(FEATURE_SETS))}")
    return len(FEATURE_SETS[name])
