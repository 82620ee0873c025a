"""Splits: disjointness, stratification, determinism, and purge/embargo on windows with known overlaps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from moola.data.dataset import WindowDataset
from moola.data.splits import make_split, purged_split, random_split, temporal_split
from moola.data.synthetic import default_dataset, generate, generate_bars
from moola.data.windowing import windows_dataset
from moola.errors import MoolaError


def _disjoint_cover(ds: WindowDataset, train: np.ndarray, test: np.ndarray, *, full: bool = True) -> None:
    assert train.dtype == test.dtype == np.int64
    assert len(np.intersect1d(train, test)) == 0
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
    if full:
        np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(len(ds)))


def _overlapping(stride: int = 10, n_bars: int = 3000, b_offset: int = 700) -> WindowDataset:
    """Two sources of stride-10 windows (heavy overlap within a source); B's bar numbers start at b_offset."""
    a = windows_dataset(generate_bars(n_bars, seed=1, source="A"), stride=stride, source="A")
    b = windows_dataset(generate_bars(n_bars, seed=2, source="B"), stride=stride, source="B")
    return WindowDataset(
        X=np.concatenate([a.X, b.X]),
        y=np.zeros(len(a) + len(b), dtype=np.int64),
        classes=("unlabeled",),
        window_id=np.concatenate([a.window_id, b.window_id]),
        source=np.concatenate([a.source, b.source]),
        bar_start=np.concatenate([a.bar_start, b.bar_start + b_offset]),
    )


def _brute_force_keep(ds: WindowDataset, test: np.ndarray, embargo: int) -> np.ndarray:
    """Train windows whose gap (bars strictly between) to every same-source test window is >= embargo."""
    T = ds.X.shape[1]
    b, s = ds.bar_start, ds.source
    lo_i, lo_j = b[:, None], b[test][None, :]
    gap = np.maximum(lo_j - (lo_i + T), lo_i - (lo_j + T))  # (N, n_test); negative = overlap
    close = (gap < embargo) & (s[:, None] == s[test][None, :])
    keep = ~close.any(axis=1)
    keep[test] = False
    return np.flatnonzero(keep)


# ---------------------------------------------------------------------------- random


def test_random_split_stratified_disjoint_deterministic():
    ds = default_dataset()
    train, test = random_split(ds, 0.2, seed=0)
    _disjoint_cover(ds, train, test)
    counts = np.bincount(ds.y)
    np.testing.assert_array_equal(np.bincount(ds.y[test]), np.floor(0.2 * counts + 0.5))
    again = random_split(ds, 0.2, seed=0)
    np.testing.assert_array_equal(again[1], test)
    other = random_split(ds, 0.2, seed=1)
    assert not np.array_equal(other[1], test)
    np.testing.assert_array_equal(make_split(ds, "random", 0.2, seed=0)[1], test)


def test_random_split_small_classes():
    ds = generate(20, seed=0)
    y = np.zeros(20, dtype=np.int64)
    y[:2] = 1  # a two-member class still gets one test window ...
    y[2] = 2  # ... a singleton stays in train
    ds = replace(ds, y=y, classes=("a", "b", "c"))
    train, test = random_split(ds, 0.1, seed=3)
    _disjoint_cover(ds, train, test)
    assert np.bincount(ds.y[test], minlength=3).tolist() == [2, 1, 0]
    assert 2 in ds.y[train]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(MoolaError, match="test fraction"):
        random_split(default_dataset(), fraction)


# ---------------------------------------------------------------------------- temporal


def test_temporal_split_takes_the_latest():
    ds = default_dataset()
    train, test = temporal_split(ds, 0.25)
    _disjoint_cover(ds, train, test)
    assert len(test) == round(0.25 * len(ds))
    assert ds.bar_start[test].min() >= ds.bar_start[train].max()
    np.testing.assert_array_equal(make_split(ds, "temporal", 0.25)[1], test)


def test_temporal_needs_bar_start():
    ds = replace(default_dataset(), bar_start=None)
    for kind in ("temporal", "purged"):
        with pytest.raises(MoolaError, match="'bar_start' is missing"):
            make_split(ds, kind)


def test_unknown_kind():
    with pytest.raises(MoolaError, match="--split bogus: unknown split; valid: random, temporal, purged"):
        make_split(default_dataset(), "bogus")


# ---------------------------------------------------------------------------- purged


@pytest.mark.parametrize("embargo", [0, 105, 300])
def test_purge_matches_brute_force_on_overlapping_windows(embargo):
    ds = _overlapping()
    train, test = purged_split(ds, 0.2, embargo_bars=embargo)
    _disjoint_cover(ds, train, test, full=False)
    np.testing.assert_array_equal(test, temporal_split(ds, 0.2)[1])
    # Exactly the windows far enough from every same-source test window are kept: no leak, no over-purge.
    np.testing.assert_array_equal(train, _brute_force_keep(ds, test, embargo))
    T = ds.X.shape[1]
    for i in train[:: max(len(train) // 50, 1)]:
        same = test[ds.source[test] == ds.source[i]]
        if len(same):
            assert np.abs(ds.bar_start[same] - ds.bar_start[i]).min() - T >= embargo
    dropped = len(ds) - len(train) - len(test)
    assert dropped > 0  # stride-10 windows next to the test block do overlap it
    assert len(train) > len(ds) // 2  # windows far away are kept


def test_purge_drops_known_neighbours_only():
    # B sits 1200 bars later: the latest 20% are all B, and A's last windows end within the embargo
    # of B's first test window by bar number -- but they are another series, so they must stay.
    ds = _overlapping(b_offset=1200)
    train, test = purged_split(ds, 0.2, embargo_bars=105)
    assert set(ds.source[test].tolist()) == {"B"}
    t0 = ds.bar_start[test].min()
    b_rows = np.flatnonzero(ds.source == "B")
    starts = ds.bar_start[b_rows]
    kept = np.isin(b_rows, train)
    # A B window starting at t0 - 210 or earlier ends >= 105 bars before t0: kept; later ones: purged.
    assert kept[starts <= t0 - 210].all() and (starts <= t0 - 210).sum() > 100
    assert not kept[(starts > t0 - 210) & (starts < t0)].any()
    assert ((starts > t0 - 210) & (starts < t0)).sum() == 20  # stride 10: 20 windows in the purge zone
    a_rows = np.flatnonzero(ds.source == "A")
    near = a_rows[ds.bar_start[a_rows] > t0 - 210]
    assert len(near) > 0
    assert np.isin(a_rows, train).all()


def test_purge_no_effect_on_default_set_random_gaps():
    ds = default_dataset()
    train, test = purged_split(ds, 0.2, embargo_bars=0)  # windows never overlap: nothing to purge
    _disjoint_cover(ds, train, test)


def test_purge_with_timestamps():
    ds = _overlapping(stride=10, n_bars=1500)
    bar_ns = 5 * 60 * 10**9
    stamped = replace(ds, bar_start=1_600_000_000 * 10**9 + ds.bar_start * bar_ns)
    expected = purged_split(ds, 0.2, embargo_bars=105)
    got = purged_split(stamped, 0.2, embargo_bars=105, bar_ns=bar_ns)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)
    # Inferred: the gcd of the start gaps (here 10 bars) -> never purges less than the exact split.
    inferred_train, _ = purged_split(stamped, 0.2, embargo_bars=105)
    assert set(inferred_train.tolist()) <= set(expected[0].tolist())


def test_purge_everything_is_an_error():
    ds = _overlapping(stride=10, n_bars=400)
    with pytest.raises(MoolaError, match="train set empty"):
        purged_split(replace(ds, source=np.full(len(ds), "A")), 0.5, embargo_bars=10_000)
