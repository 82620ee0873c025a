"""Deterministic synthetic OHLC windows with a planted, pointer-labelled pattern in each.

Every window is a geometric random walk (per-source drift and volatility) of 105 bars with one pattern
planted over bars [pointer_start, pointer_end] (20-60 bars):

* ``consolidation``: the price is range-bound -- volatility shrinks and the log price mean-reverts
  (AR(1)) around the level it had when the segment began.
* ``retracement``: a trend leg (50-70% of the segment, up or down) followed by a pullback of exactly
  38-62% of the leg's log move (a Brownian bridge, so the ratio holds on closes).

Outside the pattern the walk carries its own random drift, so neither class is separable by simple
summary statistics alone. Windows of one source sit at bar_start positions >= 105 bars apart, so the
default set has no overlapping windows and a random split of it cannot leak.

Everything is drawn from one ``Generator(PCG64(seed))`` with array operations: the same seed gives
byte-identical arrays.
"""

from __future__ import annotations

import functools
import zlib
from typing import TYPE_CHECKING

import numpy as np

from moola.data.dataset import DEFAULT_CLASSES, WINDOW_LENGTH, WindowDataset
from moola.errors import MoolaError

if TYPE_CHECKING:
    import pandas as pd

CONSOLIDATION, RETRACEMENT = 0, 1  # indices into DEFAULT_CLASSES
MIN_PATTERN, MAX_PATTERN = 20, 60
RETRACE_RANGE = (0.38, 0.62)
BAR_NS = 5 * 60 * 10**9  # generate_bars: 5-minute bars
BARS_EPOCH_NS = 1_577_836_800 * 10**9  # 2020-01-01T00:00:00Z


AR1_BLOCK = 2048  # windows per AR(1) matrix block: 2048 x 105 x 105 float64 = 180 MB


def _ar1_matrix(phi: np.ndarray, length: int) -> np.ndarray:
    """(N, T, T) lower-triangular phi**(t-k): d = M @ eps is the AR(1) d_t = phi*d_{t-1} + eps_t."""
    lag = np.arange(length)[:, None] - np.arange(length)[None, :]
    powers = phi[:, None, None] ** np.maximum(lag, 0)[None]
    return np.where(lag[None] >= 0, powers, 0.0)


def _ohlc_from_closes(
    rng: np.random.Generator, log_open0: np.ndarray, log_close: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """Consistent (N, T, 4) OHLC prices from log closes: open = previous close (+ a small gap), wicks > 0.

    ``sigma`` is the per-bar volatility, shaped (N, 1) or (N, T).
    """
    n, t = log_close.shape
    prev = np.concatenate([log_open0[:, None], log_close[:, :-1]], axis=1)
    log_open = prev + 0.1 * sigma * rng.standard_normal((n, t))
    wick = 0.5 * sigma[..., None] * np.abs(rng.standard_normal((n, t, 2)))
    log_high = np.maximum(log_open, log_close) + wick[..., 0]
    log_low = np.minimum(log_open, log_close) - wick[..., 1]
    return np.exp(np.stack([log_open, log_high, log_low, log_close], axis=-1))


def generate(
    n_windows: int = 174,
    seed: int = 0,
    *,
    n_sources: int = 6,
    consolidation_share: float = 0.57,
    length: int = WINDOW_LENGTH,
) -> WindowDataset:
    """``n_windows`` labelled OHLC windows (float32 (N, length, 4)) with pointers and provenance."""
    if n_windows < 2:
        raise MoolaError(f"n_windows {n_windows}: need at least 2 windows")
    if length < MAX_PATTERN + 1:
        raise MoolaError(f"length {length}: windows must be longer than {MAX_PATTERN} bars")
    if n_sources < 1:
        raise MoolaError(f"n_sources {n_sources}: need at least 1 source")
    rng = np.random.Generator(np.random.PCG64(seed))
    n, t = n_windows, length
    bar = np.arange(t)

    # Labels: a fixed count per class (slight imbalance), in random order.
    n_cons = min(max(round(consolidation_share * n), 1), n - 1)
    y = rng.permutation(np.r_[np.full(n_cons, CONSOLIDATION), np.full(n - n_cons, RETRACEMENT)])
    is_cons = y == CONSOLIDATION

    # Sources: drift and volatility per source, jittered per window.
    src_drift = rng.normal(0.0, 4e-4, n_sources)
    src_vol = rng.uniform(0.006, 0.015, n_sources)
    src = rng.integers(0, n_sources, n)
    sigma = src_vol[src] * rng.uniform(0.7, 1.3, n)
    drift = src_drift[src] + rng.normal(0.0, 0.15, n) * sigma  # background trend, either class

    # Pattern segment [s, e].
    seg_len = rng.integers(MIN_PATTERN, MAX_PATTERN + 1, n)
    s = (rng.random(n) * (t - seg_len + 1)).astype(np.int64)
    e = s + seg_len - 1
    in_seg = (bar >= s[:, None]) & (bar <= e[:, None])

    z = rng.standard_normal((n, t))
    inc = drift[:, None] + sigma[:, None] * z  # background log returns

    # Consolidation: inside the segment the deviation from the entry level is AR(1) with shrunken noise,
    # so the increments there are the differences of that bounded process.
    phi = rng.uniform(0.5, 0.8, n)
    shrink = rng.uniform(0.25, 0.55, n)
    eps = np.where(in_seg, shrink[:, None] * sigma[:, None] * rng.standard_normal((n, t)), 0.0)
    # In blocks of windows: the (N, T, T) matrix of all of them is 18 GB at N = 200,000.
    dev = np.empty((n, t))
    for b in range(0, n, AR1_BLOCK):
        dev[b : b + AR1_BLOCK] = np.einsum(
            "ntk,nk->nt", _ar1_matrix(phi[b : b + AR1_BLOCK], t), eps[b : b + AR1_BLOCK]
        )
    dev_prev = np.concatenate([np.zeros((n, 1)), dev[:, :-1]], axis=1)
    cons_inc = np.where(in_seg, dev - dev_prev, 0.0)

    # Retracement: leg [s, m) moves by A (bridge noise sums to 0), pullback [m, e] gives back f*A exactly.
    leg_len = np.clip(np.round(seg_len * rng.uniform(0.5, 0.7, n)).astype(np.int64), 1, seg_len - 1)
    m = s + leg_len
    in_leg = in_seg & (bar < m[:, None])
    in_pull = in_seg & (bar >= m[:, None])
    direction = rng.choice(np.array([-1.0, 1.0]), n)
    move = direction * sigma * np.sqrt(leg_len) * rng.uniform(2.5, 4.0, n)
    frac = rng.uniform(*RETRACE_RANGE, n)
    noise = 0.5 * sigma[:, None] * rng.standard_normal((n, t))

    def bridge(mask: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Increments over ``mask`` summing exactly to ``total``: drift + zero-mean noise."""
        count = mask.sum(axis=1)
        mean_noise = (noise * mask).sum(axis=1) / count
        return np.where(mask, (total / count)[:, None] + noise - mean_noise[:, None], 0.0)

    ret_inc = bridge(in_leg, move) + bridge(in_pull, -frac * move)

    pattern_inc = np.where(is_cons[:, None], cons_inc, ret_inc)
    inc = np.where(in_seg, pattern_inc, inc)
    log_open0 = np.log(rng.uniform(20.0, 400.0, n_sources))[src] + rng.normal(0.0, 0.2, n)
    log_close = log_open0[:, None] + np.cumsum(inc, axis=1)
    X = _ohlc_from_closes(rng, log_open0, log_close, sigma[:, None]).astype(np.float32)

    # Provenance: per source, windows laid end to end with random gaps (never overlapping).
    gap = rng.integers(0, 60, n)
    order = np.argsort(src, kind="stable")
    step = (t + gap)[order]
    ends = np.cumsum(step)
    group_first = np.r_[0, np.flatnonzero(np.diff(src[order])) + 1]
    first_of = np.repeat(group_first, np.diff(np.r_[group_first, n]))
    bar_start = np.empty(n, dtype=np.int64)
    bar_start[order] = ends - step - (ends[first_of] - step[first_of])  # 0 for each source's first window

    return WindowDataset(
        X=np.ascontiguousarray(X),
        y=y.astype(np.int64),
        classes=DEFAULT_CLASSES,
        window_id=np.char.add("syn-", np.char.zfill(np.arange(n).astype(str), 5)),
        pointers=np.ascontiguousarray(np.stack([s, e], axis=1), dtype=np.int64),
        source=np.char.add("SYN", src.astype(str)),
        bar_start=bar_start,
    )


@functools.lru_cache(maxsize=1)
def default_dataset() -> WindowDataset:
    """The embedded default: 174 windows, seed 0 (cached: do not modify its arrays in place)."""
    return generate(174, seed=0)


def generate_bars(n_bars: int, seed: int = 0, source: str = "SYN0") -> pd.DataFrame:
    """A raw OHLC series: columns open, high, low, close (float64) and timestamp (5-minute bars, UTC).

    The source name picks the series' drift and volatility, so different sources differ for one seed.
    """
    import pandas as pd

    if n_bars < 1:
        raise MoolaError(f"n_bars {n_bars}: need at least 1 bar")
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(source.encode("utf-8"))]))
    drift = rng.normal(0.0, 2e-4)
    sigma = rng.uniform(0.004, 0.012)
    # Volatility regimes: a slowly varying multiplier, so the series has calm and busy stretches.
    regime = np.exp(np.cumsum(rng.normal(0.0, 0.05, n_bars)).clip(-1.0, 1.0))
    vol = sigma * regime
    log_open0 = np.log(rng.uniform(20.0, 400.0))
    log_close = log_open0 + np.cumsum(drift + vol * rng.standard_normal(n_bars))
    ohlc = _ohlc_from_closes(rng, np.array([log_open0]), log_close[None], vol[None])[0]
    stamps = (BARS_EPOCH_NS + np.arange(n_bars, dtype=np.int64) * BAR_NS).astype("datetime64[ns]")
    return pd.DataFrame(
        {
            "open": ohlc[:, 0],
            "high": ohlc[:, 1],
            "low": ohlc[:, 2],
            "close": ohlc[:, 3],
            "timestamp": pd.DatetimeIndex(stamps, tz="UTC"),
        }
    )
