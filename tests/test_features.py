"""Feature transforms: every dimension against a hand computation, scale invariance, shapes, errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from moola.errors import MoolaError
from moola.features import FEATURE_DOCS, FEATURE_SETS, n_features, transform

# Three bars (open, high, low, close); the last is flat (high == low).
BARS = np.array(
    [
        [10.0, 11.0, 9.0, 10.5],
        [10.5, 12.0, 9.5, 11.0],
        [11.0, 11.0, 11.0, 11.0],
    ]
)
L = math.log

# Hand-computed, bar by bar. Bar 0 has no previous close and uses its own open (10) instead.
RELATIVE11_EXPECTED = {
    "log_open_prev_close": [L(10 / 10), L(10.5 / 10.5), L(11 / 11)],
    "log_high_prev_close": [L(11 / 10), L(12 / 10.5), L(11 / 11)],
    "log_low_prev_close": [L(9 / 10), L(9.5 / 10.5), L(11 / 11)],
    "log_return": [L(10.5 / 10), L(11 / 10.5), L(11 / 11)],
    "range": [2 / 10.5, 2.5 / 11, 0.0],
    "body": [0.5 / 10.5, 0.5 / 11, 0.0],
    "upper_wick": [0.5 / 10.5, 1 / 11, 0.0],
    "lower_wick": [1 / 10.5, 1 / 11, 0.0],
    "close_location": [1.5 / 2, 1.5 / 2.5, 0.5],
    "log_close_window": [0.0, L(11 / 10.5), L(11 / 10.5)],
    "log_drawdown": [L(10.5 / 11), L(11 / 12), L(11 / 12)],
}
OHLC4_EXPECTED = {
    "open_rel": [10 / 10.5 - 1, 10.5 / 10.5 - 1, 11 / 10.5 - 1],
    "high_rel": [11 / 10.5 - 1, 12 / 10.5 - 1, 11 / 10.5 - 1],
    "low_rel": [9 / 10.5 - 1, 9.5 / 10.5 - 1, 11 / 10.5 - 1],
    "close_rel": [0.0, 11 / 10.5 - 1, 11 / 10.5 - 1],
}
EXPECTED = {"relative11": RELATIVE11_EXPECTED, "ohlc4": OHLC4_EXPECTED}


def random_ohlc(n: int = 12, t: int = 105, seed: int = 0, flat_every: int = 7) -> np.ndarray:
    """Positive random-walk OHLC windows, with some flat bars to exercise the zero-range branch."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, t)), axis=1)) * rng.uniform(0.1, 10, (n, 1))
    open_ = np.concatenate([close[:, :1] * 0.999, close[:, :-1]], axis=1)
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, (n, t)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, (n, t)))
    X = np.stack([open_, high, low, close], axis=-1)
    X[:, ::flat_every, :] = close[:, ::flat_every, None]
    return X


def test_feature_sets_have_the_documented_widths_and_one_line_docs():
    assert len(FEATURE_SETS["ohlc4"]) == 4 == n_features("ohlc4")
    assert len(FEATURE_SETS["relative11"]) == 11 == n_features("relative11")
    for name, dims in FEATURE_SETS.items():
        assert tuple(FEATURE_DOCS[name]) == dims
        assert len(set(dims)) == len(dims)
        for doc in FEATURE_DOCS[name].values():
            assert doc.strip() and "\n" not in doc


@pytest.mark.parametrize(
    ("name", "dim"), [(name, dim) for name, dims in FEATURE_SETS.items() for dim in dims]
)
def test_each_dimension_matches_a_hand_computation(name: str, dim: str):
    assert set(EXPECTED[name]) == set(FEATURE_SETS[name])
    out = transform(BARS[None], name)
    column = FEATURE_SETS[name].index(dim)
    np.testing.assert_allclose(out[0, :, column], EXPECTED[name][dim], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
@pytest.mark.parametrize("factor", [1e-3, 0.37, 250.0])
def test_features_are_invariant_to_the_price_scale(name: str, factor: float):
    X = random_ohlc()
    np.testing.assert_allclose(transform(X * factor, name), transform(X, name), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_shape_dtype_contiguity_and_no_nan(name: str):
    X = random_ohlc(n=5, t=105).astype(np.float32)
    before = X.copy()
    out = transform(X, name)
    assert out.shape == (5, 105, len(FEATURE_SETS[name]))
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(X, before)  # input untouched


def test_relative11_is_bounded_where_its_definition_says_so():
    out = transform(random_ohlc(seed=3), "relative11")
    dims = FEATURE_SETS["relative11"]
    loc = out[..., dims.index("close_location")]
    assert loc.min() >= 0 and loc.max() <= 1
    assert (out[..., dims.index("log_drawdown")] <= 1e-7).all()
    for dim in ("range", "upper_wick", "lower_wick"):
        assert (out[..., dims.index(dim)] >= -1e-7).all(), dim
    # Flat bars put the close in the middle of a zero range.
    np.testing.assert_array_equal(loc[:, ::7], 0.5)


def test_transform_is_per_window():
    X = random_ohlc(n=6)
    np.testing.assert_array_equal(transform(X, "relative11")[2:3], transform(X[2:3], "relative11"))


def test_unknown_feature_set_lists_the_valid_names():
    with pytest.raises(MoolaError, match=r"unknown feature set 'rsi'.*ohlc4.*relative11"):
        transform(random_ohlc(n=1), "rsi")
    with pytest.raises(MoolaError, match="relative11"):
        n_features("rsi")


@pytest.mark.parametrize("shape", [(3, 105), (2, 105, 5), (105, 4)])
def test_wrong_shape_is_a_user_error(shape):
    with pytest.raises(MoolaError, match=r"\(N, T, 4\)"):
        transform(np.ones(shape), "ohlc4")


def test_non_positive_or_non_finite_prices_are_user_errors():
    X = random_ohlc(n=3)
    bad = X.copy()
    bad[1, 7, 2] = 0.0
    with pytest.raises(MoolaError, match=r"window 1, bar 7"):
        transform(bad, "relative11")
    bad = X.copy()
    bad[2, 4, 0] = np.nan
    with pytest.raises(MoolaError, match=r"window 2, bar 4"):
        transform(bad, "ohlc4")
    bad = X.copy()
    bad[0, 0, 3] = 0.0
    with pytest.raises(MoolaError, match="first close of 0"):
        transform(bad, "ohlc4")


def test_features_do_not_import_torch():
    code = "import sys, moola.features, moola.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
