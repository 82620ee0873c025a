"""check-all on large data: bounded training work with stated confidence, row-level findings on every row,
limits that fit what they judge."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from diagnostics.checks import leakage
from diagnostics.context import DiagContext, Thresholds
from diagnostics.result import Status
from diagnostics.rowhash import digests, identical_groups, identical_rows
from diagnostics.sampling import halfwidth_at, stratified_subsample, training_sample, worst_case_n
from diagnostics.training import fit_time_limit, fresh_model, short_training, transform_chunked
from moola.data.dataset import WindowDataset
from moola.data.splits import make_split
from moola.data.synthetic import default_dataset, generate
from moola.errors import MoolaError
from moola.features import transform
from tests import fit_plugins


def _walks(rng: np.random.Generator, n: int) -> np.ndarray:
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, 105)), axis=1))
    spread = np.abs(rng.standard_normal((n, 105, 2))) * 0.1
    return np.stack([close, close + spread[..., 0], close - spread[..., 1], close], axis=2).astype(np.float32)


# --------------------------------------------------------------------------- the training sample


def test_sample_sizes_follow_from_the_stated_confidence():
    th = Thresholds()
    assert worst_case_n(th.train_ci_halfwidth) == 475
    assert worst_case_n(th.test_ci_halfwidth) == 2401
    assert halfwidth_at(2401) <= 0.02 < halfwidth_at(2400 // 2)


def test_stratified_subsample_keeps_class_shares_order_and_seed():
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.3).astype(np.int64)  # 30% class 1
    rows = np.arange(10_000, dtype=np.int64)[::2]
    a = stratified_subsample(rows, y, 500, seed=3)
    assert len(a) == 500 and np.all(np.diff(a) > 0) and np.isin(a, rows).all()
    share = y[rows].mean()
    assert abs(y[a].mean() - share) <= 1 / 500 + 1e-12  # largest remainder: off by at most one window
    assert np.array_equal(a, stratified_subsample(rows, y, 500, seed=3))
    assert not np.array_equal(a, stratified_subsample(rows, y, 500, seed=4))
    assert np.array_equal(stratified_subsample(rows, y, 0, seed=3), rows)  # 0 = every row
    rare = np.zeros(1000, dtype=np.int64)
    rare[7] = 1
    assert 7 in stratified_subsample(np.arange(1000), rare, 10, seed=0)  # every class keeps a row


def test_embedded_default_trains_on_every_row_for_the_cli_epochs():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    sample = training_sample(DiagContext(ds, train, test))
    assert not sample.sampled and sample.epochs == 60
    assert np.array_equal(sample.train_rows, train) and np.array_equal(sample.test_rows, test)


@pytest.fixture(scope="module")
def large():
    ds = generate(1500, seed=2)
    train, test = make_split(ds, "random")
    return ds, train, test


def test_a_large_split_is_sampled_and_the_report_says_how(large):
    ds, train, test = large
    th = Thresholds(sanity_epochs=60)
    ctx = DiagContext(
        ds, train, test, thresholds=th, max_train_windows=160, max_test_windows=100, device="cpu"
    )
    sample = training_sample(ctx)
    assert sample.sampled and len(sample.train_rows) == 160 and len(sample.test_rows) == 100
    # 600 optimizer steps at batch 16 on 160 windows (10 steps per epoch): 60 epochs, capped at the CLI's
    assert sample.epochs == 60
    ctx2 = DiagContext(ds, train, test, thresholds=th, max_train_windows=400, device="cpu")
    assert training_sample(ctx2).epochs == 24  # ceil(600 / 25 steps)
    line = sample.describe()
    assert "160 of 1,200 train" in line and "100 of 300 test" in line and f"seed {ctx.config.seed}" in line
    assert "+-0.077 (train)" in line  # 1.96 * 0.5 / sqrt(160)


def test_sampled_training_run_uses_the_sample_and_states_it(large):
    ds, train, test = large
    th = Thresholds(sanity_epochs=1, sampled_steps=1)
    ctx = DiagContext(ds, train, test, thresholds=th, max_train_windows=48, max_test_windows=64, device="cpu")
    st = short_training(ctx)
    assert (st.n_train, st.n_test, st.epochs) == (48, 64, 2)  # at least 2 epochs on a sample
    gap = leakage.accuracy_gap(ctx, st)
    assert any("48 of 1,200 train" in line for line in gap.evidence)


# --------------------------------------------------------------------------- limits that fit


def test_the_builtin_trainer_is_not_judged_by_the_fit_limit():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    th = Thresholds(sanity_epochs=1, fit_time_limit_s=1e-4, fit_time_factor=0.0)
    st = short_training(DiagContext(ds, train, test, thresholds=th, device="cpu"))
    assert st.builtin and st.epochs == 1  # a user's fit would have been stopped after 0.1 ms


def test_a_user_fit_limit_scales_with_the_data_and_names_what_was_expected():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    th = Thresholds(fit_time_limit_s=0.0, fit_time_factor=50.0)
    ctx = DiagContext(ds, train, test, thresholds=th, device="cpu")
    X = np.ascontiguousarray(transform(ds.X[train], "relative11"))
    import torch

    Xt, yt = torch.from_numpy(X), torch.from_numpy(ds.y[train])
    model = fresh_model(ctx, Xt.shape[2], X_train=Xt)
    small, what = fit_time_limit(ctx, model, Xt[:32], yt[:32], 10, "cpu")
    big, _ = fit_time_limit(ctx, model, Xt, yt, 10, "cpu")
    assert 0 < small < big  # 2 vs 9 batches per epoch
    assert "expected ~" in what and "50x that" in what and "plain AdamW steps" in what
    th_floor = dataclasses.replace(th, fit_time_limit_s=1e6)
    assert fit_time_limit(dataclasses.replace(ctx, thresholds=th_floor), model, Xt, yt, 10, "cpu")[0] == 1e6


def test_a_hanging_user_fit_says_what_was_expected():
    ds = default_dataset()
    train, test = make_split(ds, "random")
    th = Thresholds(sanity_epochs=2, fit_time_limit_s=0.3, fit_time_factor=0.0)
    ctx = DiagContext(ds, train, test, fit=fit_plugins.fit_hangs, fit_spec="p:fit_hangs", thresholds=th)
    with pytest.raises(MoolaError, match=r"did not return within 0.3 s .* \(expected ~.* per epoch = "):
        short_training(ctx)


# --------------------------------------------------------------------------- every row


def test_planted_exact_copies_among_20000_windows_are_all_found_and_named():
    rng = np.random.default_rng(5)
    n = 20_000
    X = _walks(rng, n)
    ids = np.char.add("w", np.arange(n).astype(str))
    ds = WindowDataset(X=X, y=np.arange(n) % 2, classes=("a", "b"), window_id=ids)
    train, test = make_split(ds, "random", seed=0)
    planted = rng.choice(len(test), size=37, replace=False)
    sources = rng.choice(train, size=37, replace=False)
    X[test[planted]] = X[sources]
    result = leakage.identical_windows(DiagContext(ds, train, test))
    assert result.status is Status.FAIL and result.values["identical"] == 37
    named = {tuple(p) for p in result.values["test_train_pairs"]}
    assert named == {(ids[t], ids[s]) for t, s in zip(test[planted], sources, strict=True)}
    groups = identical_groups(X, train)  # no copies within train
    assert groups == []


def test_digests_confirm_bytes_so_a_collision_is_never_a_copy():
    rng = np.random.default_rng(0)
    X = _walks(rng, 50)
    X[10] = X[3]
    X[20] = X[3]
    d = digests(X)
    assert d[10] == d[3] == d[20] and len(np.unique(d)) == 48
    mask, partner = identical_rows(X, np.arange(0, 10), np.arange(10, 50))
    assert np.flatnonzero(mask).tolist() == [0, 10] and partner.tolist() == [3, 3]
    assert [g.tolist() for g in identical_groups(X, np.arange(50))] == [[3, 10, 20]]
    Y = X.copy()
    Y[12, 0, 0] = np.nextafter(Y[3, 0, 0], np.float32(np.inf))  # one ulp apart: not a copy
    assert not identical_rows(Y, np.array([3]), np.array([12]))[0].any()


def test_near_duplicates_through_the_index_find_the_planted_copies():
    rng = np.random.default_rng(1)
    ref, query = _walks(rng, 3000), _walks(rng, 1000)
    planted = np.arange(0, 1000, 53)
    sources = rng.choice(3000, size=len(planted), replace=False)
    dirty = query.copy()
    dirty[planted] = ref[sources] * 1.5 + 0.001 * rng.standard_normal(ref[sources].shape).astype(np.float32)
    nd = leakage.near_duplicates(ref, dirty, fraction=0.05, exact_pairs=1)  # force the index
    assert nd.method.startswith("searched with a FAISS IVF index")
    assert set(np.flatnonzero(nd.flagged)) == set(planted)
    assert (nd.partner[planted] == sources).all()
    exact = leakage.near_duplicates(ref, dirty, fraction=0.05)
    assert exact.method == "exact"
    # The index's distances are exact distances to a real window: never below the true nearest one.
    assert (nd.distance >= exact.distance - 1e-3 * exact.reference_nn).all()  # float32 matmul rounding
    assert abs(nd.reference_nn - exact.reference_nn) <= 0.05 * exact.reference_nn
    clean = leakage.near_duplicates(ref, query, fraction=0.05, exact_pairs=1)
    assert not clean.flagged.any()


def test_chunked_features_equal_the_transform_and_keep_its_errors():
    ds = default_dataset()
    assert np.array_equal(transform_chunked(ds.X, "relative11", chunk=7), transform(ds.X, "relative11"))
    X = ds.X.copy()
    X[100, 3, 1] = -1.0
    with pytest.raises(MoolaError, match=r"window 100, bar 3"):
        transform_chunked(X, "relative11", chunk=16)


# --------------------------------------------------------------------------- corpora inside a large file


@pytest.fixture(scope="module")
def sliding_in_large():
    """The leakage corpus's sliding windows (every 10 bars, 95 shared with the next) inside clean,
    non-overlapping generated windows of other sources: 4,000 here (CI's budget), any number with
    MOOLA_TEST_LARGE_N (run with 20,000 for the README)."""
    from moola.data.synthetic import generate_bars
    from moola.data.windowing import windows_dataset

    bars = generate_bars(2600, seed=1)
    n = len(range(0, 2600 - 105 + 1, 10))
    sliding = windows_dataset(bars, labels=np.arange(n) % 2, stride=10, source="S1")
    clean = generate(int(os.environ.get("MOOLA_TEST_LARGE_N", "4000")), seed=4)
    ds = WindowDataset(
        X=np.ascontiguousarray(np.concatenate([clean.X, sliding.X]), dtype=np.float32),
        y=np.concatenate([clean.y, sliding.y]).astype(np.int64),
        classes=("0", "1"),
        window_id=np.concatenate([clean.window_id.astype(str), sliding.window_id.astype(str)]),
        source=np.concatenate([clean.source.astype(str), sliding.source.astype(str)]),
        bar_start=np.concatenate([clean.bar_start, sliding.bar_start]).astype(np.int64),
    )
    return ds, np.arange(len(clean), len(ds))


def test_leakage_corpus_verdicts_hold_inside_a_large_file(sliding_in_large):
    ds, s1 = sliding_in_large
    train, test = make_split(ds, "random")
    found = {r.name: r for r in leakage.row_level(DiagContext(ds, train, test, split_kind="random"))}
    s1_test = np.intersect1d(test, s1)
    assert found["window_overlap"].status is Status.FAIL
    assert found["window_overlap"].values["overlapping"] == len(s1_test)  # only the sliding ones
    assert found["shared_bars"].status is Status.FAIL
    assert found["shared_bars"].values["max_shared_bars"] == 95
    assert found["near_duplicates"].status is Status.PASS  # shifted windows are not near-copies
    assert found["identical_windows"].status is Status.PASS
    train, test = make_split(ds, "purged")
    purged = leakage.row_level(DiagContext(ds, train, test, split_kind="purged"))
    assert [r.name for r in purged if r.status is Status.FAIL] == []


def test_noisy_copies_and_a_mislabelled_split_are_caught_inside_a_large_file(sliding_in_large):
    """The rest of the leakage corpus inside the large file: rescaled, noisy copies of training windows
    planted among the held-out ones (near_duplicates names each), and a random split that claims to be
    purged (temporal_order). The clean windows around them stay clean."""
    ds, s1 = sliding_in_large
    clean_rows = np.setdiff1d(np.arange(len(ds)), s1)
    train, test = make_split(ds, "purged")
    rng = np.random.default_rng(7)
    held_out_clean = np.intersect1d(test, clean_rows)
    planted = rng.choice(held_out_clean, size=12, replace=False)
    sources = rng.choice(np.intersect1d(train, clean_rows), size=12, replace=False)
    X = ds.X.copy()
    # rescaled + noise, as the corpus's own case (test_diag_leakage.test_near_duplicates_detects_noisy_copies)
    X[planted] = X[sources] * 1.5 + 0.001 * rng.standard_normal(X[sources].shape).astype(np.float32)
    dirty = dataclasses.replace(ds, X=X)
    found = {r.name: r for r in leakage.row_level(DiagContext(dirty, train, test, split_kind="purged"))}
    near = found["near_duplicates"]
    assert near.status is Status.FAIL and near.values["near_duplicates"] == len(planted)
    pairs = {f"{ds.window_id[p]} ~ train {ds.window_id[q]}" for p, q in zip(planted, sources, strict=True)}
    named = [line for line in near.evidence if " ~ " in line]
    assert len(named) == leakage.MAX_EXAMPLES  # the closest ones, each a planted copy and its source
    assert all(any(pair in line for pair in pairs) for line in named), named
    assert found["identical_windows"].status is Status.PASS and found["temporal_order"].status is Status.PASS

    train, test = make_split(ds, "random")
    claimed = leakage.temporal_order(DiagContext(ds, train, test, split_kind="purged"))
    assert claimed.status is Status.FAIL and claimed.values["test_before_train"] > 0
