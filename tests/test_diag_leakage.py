"""The leakage check: exact/near duplicates, overlapping sliding windows, temporal order, symptom findings."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from diagnostics.checks import leakage
from diagnostics.context import DiagContext, Thresholds
from diagnostics.result import Status
from moola.data.splits import make_split
from moola.data.synthetic import default_dataset, generate_bars
from moola.data.windowing import windows_dataset

FAST = Thresholds(sanity_epochs=1)


def _by_name(results):
    return {r.name: r for r in results}


def _fails(results):
    return sorted(r.name for r in results if r.status is Status.FAIL)


@pytest.fixture(scope="module")
def sliding():
    """Windows every 10 bars over one generated series: each window shares 95 bars with its neighbour."""
    bars = generate_bars(2600, seed=1)
    n = len(range(0, 2600 - 105 + 1, 10))
    return windows_dataset(bars, labels=np.arange(n) % 2, stride=10, source="S1")


def _walks(rng: np.random.Generator, n: int) -> np.ndarray:
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, 105)), axis=1))
    spread = np.abs(rng.standard_normal((n, 105, 2))) * 0.1
    return np.stack([close, close + spread[..., 0], close - spread[..., 1], close], axis=2).astype(np.float32)


# --------------------------------------------------------------------------- acceptance


def test_random_split_of_sliding_windows_fails(sliding):
    train, test = make_split(sliding, "random")
    ctx = DiagContext(sliding, train, test, split_kind="random", device="cpu", thresholds=FAST)
    results = leakage.check_leakage(ctx)
    found = _by_name(results)
    assert {"window_overlap", "shared_bars"} <= set(_fails(results))
    assert found["window_overlap"].values["overlapping"] == len(test)  # every test window has a neighbour
    assert found["window_overlap"].values["max_shared_bars"] == 95
    assert found["shared_bars"].values["max_shared_bars"] == 95
    # Shifted windows are not *near-duplicates* in value space: that finding must not fire.
    assert found["near_duplicates"].status is Status.PASS


def test_purged_split_of_the_same_windows_passes(sliding):
    train, test = make_split(sliding, "purged")
    ctx = DiagContext(sliding, train, test, split_kind="purged", device="cpu", thresholds=FAST)
    results = leakage.check_leakage(ctx)
    assert _fails(results) == []
    assert _by_name(results)["temporal_order"].status is Status.PASS


def test_default_dataset_random_split_has_no_fail():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    results = leakage.check_leakage(DiagContext(ds, train, test, device="cpu", thresholds=FAST))
    assert _fails(results) == []
    assert {r.name for r in results} >= {
        "identical_windows",
        "near_duplicates",
        "accuracy_gap",
        "majority_baseline",
    }


# --------------------------------------------------------------------------- each detector


def test_shared_bars_found_from_content_alone(sliding):
    # Without source/bar_start the overlap is still visible in the bars themselves.
    bare = replace(sliding, source=None, bar_start=None)
    train, test = make_split(bare, "random")
    found = _by_name(
        [
            leakage.window_overlap(DiagContext(bare, train, test)),
            leakage.shared_bar_windows(DiagContext(bare, train, test)),
        ]
    )
    assert found["window_overlap"].status is Status.SKIP
    assert found["shared_bars"].status is Status.FAIL


def test_epoch_ns_provenance_with_strided_windows():
    # Timestamps every 7 bars: the inferred bar length is 7 bars, so provenance alone cannot be exact;
    # the content confirms the overlap (98 shared bars), which makes it a FAIL.
    bars = generate_bars(3000, seed=2)
    n = len(range(0, 3000 - 105 + 1, 7))
    ds = windows_dataset(bars, labels=np.arange(n) % 2, stride=7, source="T", timestamps=True)
    train, test = make_split(ds, "random")
    ctx = DiagContext(ds, train, test)
    content = leakage.shared_bar_windows(ctx)
    assert content.status is Status.FAIL and content.values["max_shared_bars"] == 98
    assert leakage.window_overlap(ctx, content_confirms=True).status is Status.FAIL
    assert leakage.window_overlap(ctx, content_confirms=False).status is Status.WARN
    train, test = make_split(ds, "purged")
    purged = DiagContext(ds, train, test, split_kind="purged")
    assert leakage.shared_bar_windows(purged).status is Status.PASS
    assert leakage.temporal_order(purged).status is Status.PASS


def test_shared_bars_offsets_and_clean_data():
    rng = np.random.default_rng(0)
    ref = _walks(rng, 50)
    query = _walks(rng, 20)
    query[3, 30:] = ref[7, :75]  # query bars 30..104 == ref bars 0..74
    query[5, :20] = ref[9, 85:]  # only 20 shared bars, other end
    sb = leakage.shared_bars(ref, query)
    assert (sb.shared[3], sb.partner[3], sb.offset[3]) == (75, 7, 30)
    assert (sb.shared[5], sb.partner[5], sb.offset[5]) == (20, 9, -85)
    others = np.setdiff1d(np.arange(20), [3, 5])
    assert (sb.shared[others] == 0).all()


def test_identical_windows_fail_with_ids():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    X = ds.X.copy()
    X[test[0]] = X[train[4]]
    leaky = replace(ds, X=X)
    result = leakage.identical_windows(DiagContext(leaky, train, test))
    assert result.status is Status.FAIL and result.values["identical"] == 1
    assert any(
        str(ds.window_id[test[0]]) in line and str(ds.window_id[train[4]]) in line for line in result.evidence
    )
    clean = leakage.identical_windows(DiagContext(ds, train, test))
    assert clean.status is Status.PASS


def test_near_duplicates_detects_noisy_copies_quickly():
    rng = np.random.default_rng(1)
    ref, query = _walks(rng, 2000), _walks(rng, 2000)
    planted = np.arange(0, 2000, 97)[:20]
    sources = rng.choice(2000, size=len(planted), replace=False)
    noisy = ref[sources] * 1.5 + 0.001 * rng.standard_normal(ref[sources].shape).astype(
        np.float32
    )  # rescaled + noise
    dirty = query.copy()
    dirty[planted] = noisy
    nd = leakage.near_duplicates(ref, dirty, fraction=0.05)
    assert set(np.flatnonzero(nd.flagged)) == set(planted)
    assert (nd.partner[planted] == sources).all()
    clean = leakage.near_duplicates(ref, query, fraction=0.05)
    assert not clean.flagged.any()
    assert clean.distance.min() > 0.2 * clean.reference_nn  # clean data is nowhere near the threshold


def test_temporal_order_catches_a_mislabelled_purged_split(sliding):
    train, test = make_split(sliding, "random")
    ctx = DiagContext(sliding, train, test, split_kind="purged")
    result = leakage.temporal_order(ctx)
    assert result.status is Status.FAIL and result.values["test_before_train"] > 0
    # A temporal split without an embargo: ordered, but windows overlap at the boundary.
    train, test = make_split(sliding, "temporal")
    result = leakage.temporal_order(DiagContext(sliding, train, test, split_kind="temporal"))
    assert result.values["test_before_train"] == 0 and result.values["min_gap_bars"] < 0
    assert result.status is Status.FAIL


# --------------------------------------------------------------------------- symptoms


def test_wilson_interval_known_values():
    lo, hi = leakage.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = leakage.wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775


def _st(train_acc, test_acc, y_train, y_test, pred_test):
    return SimpleNamespace(
        train_acc=train_acc,
        test_acc=test_acc,
        n_train=len(y_train),
        n_test=len(y_test),
        y_train=np.asarray(y_train),
        y_test=np.asarray(y_test),
        pred_test=np.asarray(pred_test),
        n_classes=2,
        epochs=3,
        fit_name="test",
    )


def test_legacy_symptoms_test_far_above_train_and_majority_share():
    # The legacy report: train 0.475, test 0.771 on a 139/35 split where 77% of test is one class.
    ctx = DiagContext(default_dataset(), np.arange(139), np.arange(139, 174))
    y_train = np.r_[np.zeros(73), np.ones(66)].astype(int)
    y_test = np.r_[np.ones(27), np.zeros(8)].astype(int)
    st = _st(66 / 139, 27 / 35, y_train, y_test, np.ones(35, dtype=int))
    gap = leakage.accuracy_gap(ctx, st)
    assert gap.status is Status.FAIL and gap.values["gap"] == pytest.approx(0.296, abs=0.001)
    base = leakage.majority_baseline(ctx, st)
    # The model predicts one class everywhere: 0.771 is exactly the best constant guess on test.
    assert base.status is Status.WARN
    assert base.values["best_constant_test"] == pytest.approx(27 / 35)
    # A small gap is fine; a big but noisy one is only a warning.
    assert leakage.accuracy_gap(ctx, _st(0.70, 0.75, y_train, y_test, y_test)).status is Status.PASS
    assert leakage.accuracy_gap(ctx, _st(0.70, 0.83, y_train, y_test, y_test)).status is Status.WARN


def test_majority_baseline_passes_a_model_clearly_above_it():
    ctx = DiagContext(default_dataset(), np.arange(100), np.arange(100, 174))
    y_test = np.r_[np.zeros(40), np.ones(34)].astype(int)
    st = _st(0.99, 0.98, np.r_[np.zeros(55), np.ones(45)].astype(int), y_test, y_test)
    assert leakage.majority_baseline(ctx, st).status is Status.PASS
