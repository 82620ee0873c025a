"""Windowing a raw bar series: shapes, bar_start, overlap at small strides, errors."""

from __future__ import annotations

import numpy as np
import pytest

from moola.data.synthetic import generate_bars
from moola.data.windowing import make_windows, windows_dataset
from moola.errors import MoolaError

OHLC = ["open", "high", "low", "close"]


def test_non_overlapping_windows():
    bars = generate_bars(1000, seed=1)
    X, src, bar_start = make_windows(bars, stride=105, source="S1")
    assert X.shape == (9, 105, 4) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_array_equal(bar_start, np.arange(9) * 105)
    assert bar_start.dtype == np.int64
    assert src.tolist() == ["S1"] * 9 and src.dtype.kind == "U"
    values = bars[OHLC].to_numpy(np.float32)
    for i in (0, 4, 8):
        np.testing.assert_array_equal(X[i], values[105 * i : 105 * i + 105])


def test_overlapping_windows_and_exact_fit():
    bars = generate_bars(305, seed=2)
    X, _, bar_start = make_windows(bars, stride=10)
    assert len(X) == 21  # starts 0, 10, ..., 200 (the last ends exactly at bar 304)
    np.testing.assert_array_equal(bar_start, np.arange(0, 201, 10))
    np.testing.assert_array_equal(X[1, :95], X[0, 10:])  # shared bars are the same values
    np.testing.assert_array_equal(X[-1, -1], bars[OHLC].to_numpy(np.float32)[-1])


def test_timestamps_option_gives_epoch_ns():
    bars = generate_bars(400, seed=3)
    _, _, bar_start = make_windows(bars, stride=50, timestamps=True)
    expected = bars["timestamp"].dt.as_unit("ns").array.asi8[::50][: len(bar_start)]
    np.testing.assert_array_equal(bar_start, expected)
    assert len(bar_start) == 6


def test_other_length():
    X, _, _ = make_windows(generate_bars(50, seed=0), stride=5, length=20)
    assert X.shape == (7, 20, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stride": 0}, "stride 0"),
        ({"length": 0}, "length 0"),
        ({"length": 500}, "300 bars, need at least 500"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(MoolaError, match=match):
        make_windows(generate_bars(300, seed=0), **kwargs)


def test_missing_columns_and_bad_values():
    bars = generate_bars(300, seed=0)
    with pytest.raises(MoolaError, match="missing column 'close'"):
        make_windows(bars.drop(columns=["close"]))
    with pytest.raises(MoolaError, match="missing column 'timestamp'"):
        make_windows(bars.drop(columns=["timestamp"]), timestamps=True)
    bars.loc[17, "low"] = np.nan
    with pytest.raises(MoolaError, match="column 'low', row 17"):
        make_windows(bars)


def test_windows_dataset_labels():
    bars = generate_bars(600, seed=4)
    unlabeled = windows_dataset(bars, stride=50, source="A")
    assert unlabeled.classes == ("unlabeled",) and (unlabeled.y == 0).all()
    assert unlabeled.window_id[:2].tolist() == ["A-0", "A-50"]
    assert unlabeled.has_provenance and unlabeled.pointers is None
    n = len(unlabeled)
    labeled = windows_dataset(bars, labels=np.arange(n) % 2 * 10, stride=50, source="A")
    assert labeled.classes == ("0", "10")
    np.testing.assert_array_equal(labeled.y, np.arange(n) % 2)
    with pytest.raises(MoolaError, match="labels"):
        windows_dataset(bars, labels=["a"] * (n + 1), stride=50)
