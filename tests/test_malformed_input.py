"""Property-based hardening: whatever table a user hands us, only MoolaError escapes.

Hypothesis builds tables that are wrong in many ways at once (missing or extra columns, wrong types,
ragged or empty windows, NaN/inf, nulls, odd pointers, duplicate ids, single classes) and feeds them to the
loader and then to the data check; schema-valid but numerically hostile tables go through every check. A valid table must load into clean float32 arrays; anything else must be
a one-line MoolaError -- never a pyarrow, numpy or Python exception, never a modified file.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moola.data.loader import load_windows
from moola.errors import MoolaError

T = 105

finite = st.floats(min_value=0.5, max_value=2.0, allow_nan=False, allow_infinity=False)
weird_number = st.one_of(finite, st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.none())


@st.composite
def bars(draw, width: int) -> list:
    """One bar: usually `width` numbers, sometimes the wrong width, a NaN, a null or a string."""
    kind = draw(st.sampled_from(["ok", "ok", "ok", "ok", "ok", "ok", "narrow", "weird", "text"]))
    if kind == "narrow":
        return [draw(finite) for _ in range(max(width - 1, 0))]
    if kind == "weird":
        return [draw(weird_number) for _ in range(width)]
    if kind == "text":
        return ["x"] * width
    return [draw(finite) for _ in range(width)]


@st.composite
def windows(draw, width: int) -> list:
    length = draw(st.sampled_from([T, T, T, T, 0, 1, T - 1, T + 1]))
    if length == T and draw(st.booleans()):
        # Mostly-clean long windows are built quickly; a few bars get the adversarial treatment.
        window = [[1.0] * width for _ in range(T)]
        for position in draw(st.lists(st.integers(0, T - 1), max_size=2)):
            window[position] = draw(bars(width))
        return window
    return [draw(bars(width)) for _ in range(length)]


@st.composite
def tables(draw) -> pa.Table:
    n_rows = draw(st.integers(0, 4))
    width = draw(st.sampled_from([4, 4, 4, 11, 1]))
    columns: dict[str, list] = {}
    if draw(st.integers(0, 9)):
        ids = draw(st.lists(st.integers(0, 3), min_size=n_rows, max_size=n_rows))
        columns["window_id"] = ids if draw(st.booleans()) else [str(i) for i in ids]
    if draw(st.integers(0, 9)):
        columns["label"] = draw(
            st.lists(
                st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 2), st.none()),
                min_size=n_rows,
                max_size=n_rows,
            )
        )
    if draw(st.integers(0, 9)):
        columns["features"] = [draw(windows(width)) for _ in range(n_rows)]
    if draw(st.booleans()):
        columns["pointer_start"] = draw(st.lists(st.integers(-3, T + 3), min_size=n_rows, max_size=n_rows))
        if draw(st.integers(0, 4)):
            columns["pointer_end"] = draw(st.lists(st.integers(-3, T + 3), min_size=n_rows, max_size=n_rows))
    if draw(st.booleans()):
        columns["source"] = ["s"] * n_rows
        columns["bar_start"] = draw(st.lists(st.integers(0, 10_000), min_size=n_rows, max_size=n_rows))
    if draw(st.integers(0, 3)) == 0:  # the earlier pipeline's absolute pointers, maybe competing
        columns["expansion_start"] = draw(st.lists(st.integers(-3, T + 3), min_size=n_rows, max_size=n_rows))
        if draw(st.integers(0, 4)):
            columns["expansion_end"] = draw(
                st.lists(st.integers(-3, T + 3), min_size=n_rows, max_size=n_rows)
            )
    if draw(st.integers(0, 4)) == 0:
        columns["feature_type"] = draw(
            st.lists(st.sampled_from(["relative_11d", "ohlc", None]), min_size=n_rows, max_size=n_rows)
        )
    if draw(st.integers(0, 5)) == 0:
        columns["features"] = ["not a window"] * n_rows  # wrong type altogether
    elif draw(st.integers(0, 9)) == 0:
        columns["features"] = [b"\x80\x04pickled"] * n_rows  # pickled arrays: refused, never unpickled
    # pyarrow infers types; mixed int/str labels or mixed lists may not even form a table: that's fine,
    # such files can't be written, so there is nothing to load.
    try:
        return pa.table(columns) if columns else pa.table({"unrelated": pa.array([], pa.int64())})
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.table({"window_id": ["only"]})


def assert_clean(ds) -> None:
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
    assert ds.X.ndim == 3 and ds.X.shape[1] == T
    assert np.isfinite(ds.X).all()
    assert ds.y.dtype == np.int64
    assert ds.window_id.dtype.kind == "U"
    assert len(ds.window_id) == len(ds)  # repeated ids load (the earlier pipeline's second expansions)
    if ds.pointers is not None:
        assert ((ds.pointers >= 0) & (ds.pointers <= T - 1)).all()
        assert (ds.pointers[:, 0] <= ds.pointers[:, 1]).all()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(table=tables())
def test_loader_and_data_check_raise_only_moola_error(table: pa.Table):
    from diagnostics.checks.data import inspect_arrays

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.parquet"
        pq.write_table(table, path)
        before = path.read_bytes()
        try:
            ds = load_windows(path)
        except MoolaError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message
        else:
            assert_clean(ds)
            results = inspect_arrays(ds.X, ds.y)
            assert results, "the data check must report on every loadable table"
        assert path.read_bytes() == before, "the loader must never modify its input"


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=2048), cut=st.integers(0, 4000))
def test_garbage_and_truncated_files_are_user_errors(blob: bytes, cut: int, tmp_path_factory):
    from moola.data.loader import save_windows
    from moola.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("garbage")
    good = save_windows(generate(n_windows=4, seed=1), tmp / "good.parquet")
    data = good.read_bytes()
    for name, payload in (("garbage.parquet", blob), ("truncated.parquet", data[: min(cut, len(data) - 1)])):
        path = tmp / name
        path.write_bytes(payload)
        try:
            load_windows(path)
        except MoolaError as err:
            assert name in str(err) and "\n" not in str(err)
        else:
            raise AssertionError(f"{name} ({len(payload)} bytes) loaded without error")


@st.composite
def loadable_tables(draw) -> pa.Table:
    """Schema-valid tables that are numerically hostile: constant or zero prices (division by the first
    close), huge or tiny magnitudes, identical windows, one or three classes, tiny and imbalanced sets."""
    n_rows = draw(st.integers(4, 16))
    labels = draw(st.lists(st.sampled_from(["a", "a", "b", "c"]), min_size=n_rows, max_size=n_rows))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30, 0.0, -1.0]))
    shape = draw(st.sampled_from(["walk", "constant", "copies"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if shape == "walk":
        X = (
            1.0
            + np.cumsum(rng.normal(0, 0.01, (n_rows, T, 1)), axis=1)
            + rng.normal(0, 0.001, (n_rows, T, 4))
        )
    elif shape == "constant":
        X = np.ones((n_rows, T, 4))
    else:
        X = np.repeat(1.0 + rng.normal(0, 0.01, (1, T, 4)), n_rows, axis=0)
    X = (X * scale).astype(np.float32)
    columns = {
        "window_id": [str(i) for i in range(n_rows)],
        "label": labels,
        "features": [window.tolist() for window in X],
    }
    if draw(st.booleans()):
        columns["source"] = ["s"] * n_rows
        columns["bar_start"] = sorted(draw(st.lists(st.integers(0, 400), min_size=n_rows, max_size=n_rows)))
    return pa.table(columns)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=loadable_tables(), split=st.sampled_from(["random", "temporal", "purged"]))
def test_every_check_survives_numerically_hostile_data(table: pa.Table, split: str):
    from diagnostics.commands import run_checks
    from diagnostics.context import Thresholds
    from diagnostics.loading import build_context
    from moola.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.parquet"
        pq.write_table(table, path)
        try:
            load_windows(path)
            # One epoch everywhere, stability's runs included (two of them, in this process).
            thresholds = Thresholds(sanity_epochs=1, stability_runs=2)
            config = TrainConfig(n_epochs=1)
            ctx = build_context(data=path, split=split, device="cpu", thresholds=thresholds, config=config)
            ctx.workers = 1
            results = run_checks(ctx)  # a check that raises shows up as a "crashed" FAIL result
        except MoolaError as err:  # e.g. zero prices, a single class, a split too small
            assert "\n" not in str(err)
            return
        crashed = [r.measured for r in results if r.name == "crashed"]
        assert not crashed, crashed
