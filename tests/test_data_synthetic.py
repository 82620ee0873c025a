"""The synthetic default set: determinism, OHLC consistency, pointers, provenance, learnability."""

from __future__ import annotations

import numpy as np
import pytest

from moola.data.dataset import DEFAULT_CLASSES, WINDOW_LENGTH
from moola.data.synthetic import CONSOLIDATION, RETRACEMENT, default_dataset, generate, generate_bars
from moola.errors import MoolaError


def _check_ohlc(X: np.ndarray) -> None:
    o, h, lo, c = (X[..., i] for i in range(4))
    assert np.isfinite(X).all()
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()


def test_default_shape_dtype_and_balance():
    ds = default_dataset()
    assert ds.X.shape == (174, WINDOW_LENGTH, 4)
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
    assert ds.y.dtype == np.int64 and ds.classes == DEFAULT_CLASSES
    counts = np.bincount(ds.y, minlength=2)
    assert counts.tolist() == [99, 75]  # round(0.57 * 174) consolidation: slightly imbalanced
    assert len(np.unique(ds.window_id)) == 174 and ds.window_id.dtype.kind == "U"
    for a in (ds.source, ds.window_id):
        assert a.dtype != object


def test_default_is_cached_and_equals_seed_zero():
    assert default_dataset() is default_dataset()
    fresh = generate(174, seed=0)
    assert fresh.X.tobytes() == default_dataset().X.tobytes()


def test_deterministic_per_seed():
    a, b, c = generate(174, seed=0), generate(174, seed=0), generate(174, seed=1)
    assert a.X.tobytes() == b.X.tobytes()
    for name in ("y", "pointers", "bar_start", "source", "window_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.X.tobytes() != c.X.tobytes()
    assert not np.array_equal(a.pointers, c.pointers)


@pytest.mark.parametrize("seed", [0, 7])
def test_ohlc_consistent(seed):
    _check_ohlc(generate(400, seed=seed).X.astype(np.float64))


def test_pointers_valid():
    ds = generate(500, seed=2)
    start, end = ds.pointers[:, 0], ds.pointers[:, 1]
    assert ds.pointers.dtype == np.int64
    assert (start >= 0).all() and (end <= WINDOW_LENGTH - 1).all() and (start <= end).all()
    length = end - start + 1
    assert length.min() >= 20 and length.max() <= 60
    # Patterns are spread over the window, not always at one place.
    assert start.min() < 10 and end.max() > 95


def test_windows_of_a_source_never_overlap():
    ds = default_dataset()
    assert len(np.unique(ds.source)) == 6
    for src in np.unique(ds.source):
        starts = np.sort(ds.bar_start[ds.source == src])
        assert starts[0] == 0
        assert (np.diff(starts) >= WINDOW_LENGTH).all(), src


def test_retracement_gives_back_38_to_62_percent():
    ds = generate(600, seed=3)
    logc = np.log(ds.X[..., 3].astype(np.float64))
    sel = np.flatnonzero((ds.y == RETRACEMENT) & (ds.pointers[:, 0] >= 1))
    assert len(sel) > 100
    for i in sel:
        s, e = ds.pointers[i]
        path = logc[i, s - 1 : e + 1] - logc[i, s - 1]  # from the close before the pattern
        net = path[-1]
        extreme = path[np.argmax(np.abs(path))]
        # The leg's move A is reached at the leg's end, the pullback gives back f*A: net = (1-f)*A.
        assert np.sign(net) == np.sign(extreme)
        assert abs(net) <= (1 - 0.38) * abs(extreme) + 1e-3


def test_consolidation_shrinks_volatility():
    ds = generate(600, seed=4)
    r = np.diff(np.log(ds.X[..., 3].astype(np.float64)), axis=1)
    t = np.arange(1, WINDOW_LENGTH)
    inside = (t >= ds.pointers[:, :1] + 1) & (t <= ds.pointers[:, 1:])
    vol_in = np.sqrt((r**2 * inside).sum(1) / inside.sum(1))
    vol_out = np.sqrt((r**2 * ~inside).sum(1) / np.maximum((~inside).sum(1), 1))
    ratio = vol_in / vol_out
    cons = ds.y == CONSOLIDATION
    assert np.median(ratio[cons]) < 0.75
    assert np.mean(ratio[cons] < 1.0) > 0.9


def _summary_features(X: np.ndarray) -> np.ndarray:
    c = np.log(X[..., 3].astype(np.float64))
    r = np.diff(c, axis=1)
    vol = r.std(1)
    rolling = np.lib.stride_tricks.sliding_window_view(r, 20, axis=1).std(-1)
    feats = [
        vol,
        c[:, -1] - c[:, 0],
        np.abs(c[:, -1] - c[:, 0]) / vol,
        (np.log(X[..., 1]).max(1) - np.log(X[..., 2]).min(1)) / vol,
        rolling.min(1) / vol,
        rolling.max(1) / vol,
        (np.maximum.accumulate(c, 1) - c).max(1) / vol,
        (c - np.minimum.accumulate(c, 1)).max(1) / vol,
    ]
    F = np.stack(feats, 1)
    return np.c_[(F - F.mean(0)) / F.std(0), np.ones(len(F))]


def test_learnable_but_not_trivially_by_a_linear_model():
    ds = generate(1500, seed=11)
    F, target = _summary_features(ds.X), 2.0 * ds.y - 1.0
    fold = np.arange(len(ds)) % 5
    correct = 0
    for k in range(5):
        tr, te = fold != k, fold == k
        w = np.linalg.solve(F[tr].T @ F[tr] + 1e-2 * np.eye(F.shape[1]), F[tr].T @ target[tr])
        correct += int(((F[te] @ w > 0) == (ds.y[te] == 1)).sum())
    acc = correct / len(ds)
    majority = np.bincount(ds.y).max() / len(ds)
    assert acc > majority + 0.1  # the planted patterns carry signal ...
    assert acc < 0.98  # ... but summary statistics do not separate the classes


def test_generate_rejects_bad_sizes():
    with pytest.raises(MoolaError, match="n_windows"):
        generate(1)
    with pytest.raises(MoolaError, match="n_bars"):
        generate_bars(0)


def test_generate_bars():
    bars = generate_bars(2000, seed=3, source="EURUSD")
    assert list(bars.columns) == ["open", "high", "low", "close", "timestamp"]
    assert len(bars) == 2000
    _check_ohlc(bars[["open", "high", "low", "close"]].to_numpy()[None])
    assert bars["timestamp"].is_monotonic_increasing and bars["timestamp"].is_unique
    again = generate_bars(2000, seed=3, source="EURUSD")
    assert bars.equals(again)
    other = generate_bars(2000, seed=3, source="GBPUSD")
    assert not np.array_equal(bars["close"].to_numpy(), other["close"].to_numpy())
