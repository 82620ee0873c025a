"""data check: planted faults on raw arrays and features, with clean controls for false alarms."""

from __future__ import annotations

import numpy as np
import pytest

from diagnostics.checks.data import (
    check_data,
    class_balance,
    duplicate_groups,
    duplicates_within,
    inspect_arrays,
    inspect_layout,
    inspect_pointers,
)
from diagnostics.context import DiagContext
from diagnostics.loading import build_context
from diagnostics.result import Status
from moola.data.synthetic import generate


def by_name(results):
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def ds():
    return generate(40, seed=5)


def test_default_data_is_clean_for_every_model():
    for model in ("jade_compact", "enhanced_simple_lstm"):
        found = by_name(check_data(build_context(model=model)))
        bad = {n: (r.status, r.measured) for n, r in found.items() if r.status is not Status.PASS}
        assert not bad, bad
    assert found["features.layout"].measured == "float32 (174, 105, 4)"  # legacy model: ohlc4


def test_object_ragged_array_fails_without_crashing():
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros((105, 4)), np.zeros((98, 4)), np.zeros((105, 4))]
    found = by_name(inspect_arrays(ragged, label="raw", expected_F=4))
    assert found["raw.layout"].status is Status.FAIL
    assert "ragged" in found["raw.layout"].measured and "98" in found["raw.layout"].measured
    assert "raw.finite" not in found  # nothing numeric to scan


def test_float64_warns_and_integer_fails(ds):
    r64 = inspect_layout(ds.X.astype(np.float64), "raw", expected_F=4)
    assert r64.status is Status.WARN and "float64" in r64.measured and "astype(np.float32)" in r64.hint
    rint = inspect_layout(ds.X.astype(np.int64), "raw", expected_F=4)
    assert rint.status is Status.FAIL
    assert inspect_layout(ds.X, "raw", expected_F=4).status is Status.PASS


def test_nan_and_inf_are_counted_and_located(ds):
    X = ds.X.copy()
    X[3, 10, 2] = np.nan
    X[3, 11, 0] = np.nan
    X[7, 0, 1] = np.inf
    found = by_name(inspect_arrays(X, label="raw", window_id=ds.window_id))
    r = found["raw.finite"]
    assert r.status is Status.FAIL
    assert r.values == {"nan": 2, "inf": 1, "rows": [3, 7]}
    assert str(ds.window_id[3]) in r.evidence[0] and str(ds.window_id[7]) in r.evidence[0]


def test_wrong_window_length_and_raw_ohlc_fed_to_relative11_model(ds):
    short = inspect_layout(ds.X[:, :100], "raw", expected_F=4)
    assert short.status is Status.FAIL and "T = 100" in short.evidence[0]
    r = inspect_layout(ds.X, "features", expected_F=11, feature_set="relative11")
    assert r.status is Status.FAIL
    assert "F = 4" in r.evidence[0] and "relative11" in r.hint and "transform" in r.hint


def test_class_balance_warns_on_rare_or_missing_class():
    y = np.array([0] * 95 + [1] * 5)
    rare = class_balance(y, ("a", "b"), {"train": np.arange(100)})
    assert rare.status is Status.WARN and "5.0%" in rare.hint
    missing = class_balance(
        np.array([0, 1, 0, 1, 0, 0]), ("a", "b"), {"train": np.arange(4), "test": np.array([4, 5])}
    )
    assert missing.status is Status.WARN and "test has no 'b'" in missing.hint
    ok = class_balance(np.array([0, 1] * 20), ("a", "b"), {"train": np.arange(30), "test": np.arange(30, 40)})
    assert ok.status is Status.PASS
    assert ok.values["minority_share"] == {"train": pytest.approx(15 / 30), "test": pytest.approx(0.5)}


def test_invalid_pointers_fail_valid_pass(ds):
    assert inspect_pointers(ds.pointers, 105).status is Status.PASS
    bad = ds.pointers.copy()
    bad[2] = [50, 40]  # start after end
    bad[9] = [0, 105]  # past the last bar
    r = inspect_pointers(bad, 105, ds.window_id)
    assert r.status is Status.FAIL and r.values["invalid_rows"] == [2, 9]


def test_duplicate_groups_match_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5, 3)).astype(np.float32)
    X[7] = X[2]
    X[20] = X[2]
    X[11] = X[4]
    groups = sorted(sorted(g.tolist()) for g in duplicate_groups(X))
    brute = {}
    for i in range(len(X)):
        brute.setdefault(X[i].tobytes(), []).append(i)
    assert groups == sorted(v for v in brute.values() if len(v) > 1) == [[2, 7, 20], [4, 11]]


def test_duplicates_within_a_split_warn_conflicts_fail_cross_split_is_not_ours(ds):
    X, y = ds.X.copy(), ds.y.copy()
    train, test = np.arange(30), np.arange(30, 40)
    clean = duplicates_within(X, y, {"train": train, "test": test}, ds.window_id)
    assert clean.status is Status.PASS
    X[35] = X[3]  # across the split: the leakage check's job
    assert duplicates_within(X, y, {"train": train, "test": test}).status is Status.PASS
    X[12] = X[5]
    y[12] = y[5]
    dup = duplicates_within(X, y, {"train": train, "test": test}, ds.window_id, ds.classes)
    assert dup.status is Status.WARN and dup.values["duplicates"] == {"train": 1, "test": 0}
    assert str(ds.window_id[5]) in dup.evidence[0] and str(ds.window_id[12]) in dup.evidence[0]
    y[12] = 1 - y[5]
    conflict = duplicates_within(X, y, {"train": train, "test": test}, ds.window_id, ds.classes)
    assert conflict.status is Status.FAIL and "CONFLICT" in conflict.evidence[0]


def test_check_data_reports_uncomputable_features(ds):
    X = ds.X.copy()
    X[4, 20, 2] = -1.0  # a negative low: relative11's log ratios are undefined
    bad = ds.with_features(X)
    ctx = DiagContext(
        dataset=bad, train_idx=np.arange(30), test_idx=np.arange(30, 40), model_name="jade_compact"
    )
    found = by_name(check_data(ctx))
    assert found["features.layout"].status is Status.FAIL
    assert "window 4" in found["features.layout"].measured
    assert found["raw.layout"].status is Status.PASS
