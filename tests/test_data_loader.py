"""The vectorized loader: equivalence with the naive loop, round trips, and one MoolaError per bad input."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moola.data.dataset import WindowDataset
from moola.data.loader import compare_loaders, load_windows, load_windows_naive, save_windows
from moola.data.synthetic import generate
from moola.errors import MoolaError

T = 105


def _frame(
    n: int = 12,
    *,
    f: int = 4,
    int_labels: bool = False,
    int_ids: bool = False,
    pointers: bool = True,
    provenance: str | None = "int",
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """A user-style frame (features as nested Python lists) and the float array it holds."""
    rng = np.random.default_rng(seed)
    X = rng.normal(100.0, 5.0, (n, T, f))
    data: dict[str, object] = {
        "window_id": np.arange(100, 100 + n) if int_ids else [f"w{i:03d}" for i in range(n)],
        "label": rng.integers(0, 3, n) * 5 if int_labels else rng.choice(["retracement", "consolidation"], n),
        "features": [x.tolist() for x in X],
    }
    if pointers:
        start = rng.integers(0, 60, n)
        data["pointer_start"] = start
        data["pointer_end"] = start + rng.integers(0, 45, n)
    if provenance == "int":
        data["source"] = rng.choice(["A", "B"], n)
        data["bar_start"] = rng.permutation(n) * T
    elif provenance == "timestamp":
        data["source"] = rng.choice(["A", "B"], n)
        data["bar_start"] = pd.date_range("2021-03-01", periods=n, freq="7h", tz="UTC")
    return pd.DataFrame(data), X


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "w.parquet") -> Path:
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


def _write_table(tmp_path: Path, table: pa.Table, name: str = "w.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _assert_same(a: WindowDataset, b: WindowDataset) -> None:
    assert a.X.dtype == b.X.dtype == np.float32
    assert a.X.flags.c_contiguous and b.X.flags.c_contiguous
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.y.dtype == b.y.dtype == np.int64
    assert a.classes == b.classes
    np.testing.assert_array_equal(a.window_id, b.window_id)
    assert a.window_id.dtype.kind == b.window_id.dtype.kind == "U"
    for name in ("pointers", "source", "bar_start"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            np.testing.assert_array_equal(va, vb)
            assert va.dtype.kind == vb.dtype.kind and va.dtype != object


# ---------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("int_labels", [False, True])
@pytest.mark.parametrize("pointers", [False, True])
@pytest.mark.parametrize("provenance", [None, "int", "timestamp"])
def test_matches_naive_loop(tmp_path, int_labels, pointers, provenance):
    df, X = _frame(int_labels=int_labels, pointers=pointers, provenance=provenance, seed=int_labels)
    path = _write(tmp_path, df)
    fast, naive = load_windows(path), load_windows_naive(path)
    _assert_same(fast, naive)
    np.testing.assert_array_equal(fast.X, X.astype(np.float32))
    # Labels map back to the file's values; classes sorted (numerically for int labels).
    assert [fast.classes[i] for i in fast.y] == [str(v) for v in df["label"]]
    if int_labels:
        assert list(fast.classes) == [str(v) for v in sorted(set(df["label"]))]
    else:
        assert list(fast.classes) == sorted(set(df["label"]))
    if provenance == "timestamp":
        expected = df["bar_start"].dt.as_unit("ns").array.asi8
        np.testing.assert_array_equal(fast.bar_start, expected)
        assert fast.bar_start.dtype == np.int64
    assert fast.path == str(path)


def test_int_ids_other_width_and_int_values(tmp_path):
    df, X = _frame(f=2, int_ids=True, provenance=None, pointers=False)
    df["features"] = [np.rint(x).astype(int).tolist() for x in X]  # integer prices are numbers too
    path = _write(tmp_path, df)
    ds = load_windows(path)
    _assert_same(ds, load_windows_naive(path))
    assert ds.X.shape == (12, T, 2)
    assert ds.window_id[0] == "100" and ds.window_id.dtype.kind == "U"


def test_fixed_size_list_and_chunked_columns(tmp_path):
    ds = generate(10, seed=3)
    flat = pa.array(ds.X.reshape(-1))
    feats = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, 4), T)
    table = pa.table({"window_id": ds.window_id, "label": np.asarray(ds.classes)[ds.y], "features": feats})
    path = tmp_path / "fixed.parquet"
    pq.write_table(table, path, row_group_size=3)  # several row groups -> chunked columns
    got = load_windows(path)
    np.testing.assert_array_equal(got.X, ds.X)
    np.testing.assert_array_equal(got.y, ds.y)


def test_save_load_round_trip(tmp_path):
    ds = generate(30, seed=5)
    path = save_windows(ds, tmp_path / "sub" / "syn.parquet")
    assert path.exists() and not list(path.parent.glob("*.partial"))
    got = load_windows(path)
    _assert_same(got, ds)
    _assert_same(got, load_windows_naive(path))


def test_save_keeps_integer_classes_numeric(tmp_path):
    df, _ = _frame(int_labels=True)
    path = _write(tmp_path, df)
    ds = load_windows(path)
    again = load_windows(save_windows(ds, tmp_path / "again.parquet"))
    assert again.classes == ds.classes == ("0", "5", "10")
    np.testing.assert_array_equal(again.y, ds.y)


def test_compare_loaders_runs_and_agrees():
    result = compare_loaders(n_windows=300, repeats=1)
    assert result["equal"] is True
    assert result["vectorized_s"] > 0 and result["naive_s"] > 0
    assert result["speedup"] == pytest.approx(result["naive_s"] / result["vectorized_s"])


# ---------------------------------------------------------------------------- bad inputs


def _snapshot(path: Path) -> tuple[bytes, int] | None:
    return (path.read_bytes(), os.stat(path).st_mtime_ns) if path.is_file() else None


def _expect_error(path: Path, *fragments: str) -> str:
    """load_windows raises MoolaError, one line naming the file and every fragment; file untouched."""
    before = _snapshot(path)
    with pytest.raises(MoolaError) as info:
        load_windows(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _snapshot(path) == before
    return message


def _features_table(cells: list, **extra: list) -> pa.Table:
    n = len(cells)
    return pa.table(
        {"window_id": [f"w{i}" for i in range(n)], "label": ["a", "b"] * (n // 2), "features": cells, **extra}
    )


def _good_cells(n: int = 6, f: int = 4) -> list:
    return [np.full((T, f), 1.0 + i).tolist() for i in range(n)]


@pytest.mark.parametrize("column", ["window_id", "label", "features"])
def test_missing_column(tmp_path, column):
    df, _ = _frame()
    path = _write(tmp_path, df.drop(columns=[column]))
    _expect_error(path, f"'{column}'", "missing")


def test_file_not_found(tmp_path):
    path = tmp_path / "nope.parquet"
    _expect_error(path, "not found")
    assert not path.exists()


def test_directory(tmp_path):
    _expect_error(tmp_path, "directory")


def test_not_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_text("window_id,label\nw0,a\n")
    _expect_error(path, "not a readable parquet file")


@pytest.mark.parametrize("keep", [0.5, 0.98, 0.0])
def test_truncated(tmp_path, keep):
    df, _ = _frame()
    good = _write(tmp_path, df, "good.parquet")
    data = good.read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: int(len(data) * keep)])
    _expect_error(path, "not a readable parquet file")


def test_corrupted_bytes_only_raise_moola_error(tmp_path):
    df, _ = _frame(n=6)
    data = bytearray(_write(tmp_path, df, "good.parquet").read_bytes())
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.parquet"
    for _ in range(40):
        corrupt = bytearray(data)
        pos = rng.integers(0, len(data), 8)
        corrupt_vals = rng.integers(0, 256, 8)
        for p, v in zip(pos, corrupt_vals, strict=True):
            corrupt[p] = v
        path.write_bytes(bytes(corrupt))
        try:
            load_windows(path)
        except MoolaError as exc:
            assert str(path) in str(exc)


def test_empty_file(tmp_path):
    df, _ = _frame()
    path = _write(tmp_path, df.iloc[:0])
    _expect_error(path, "empty", "0 rows")


def test_ragged_window_too_few_bars(tmp_path):
    cells = _good_cells()
    cells[3] = cells[3][:-1]
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 3 (window_id 'w3')", "104 bars", "expected 105")


def test_ragged_reports_first_offending_row(tmp_path):
    cells = _good_cells()
    cells[4] = cells[4] + [cells[4][0]]  # 106 bars in row 4
    cells[2][17] = [1.0, 2.0, 3.0]  # a 3-value bar in an earlier row
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 2 (window_id 'w2')", "bar 17", "3 values", "expected 4")


def test_wrong_bar_width_single_row(tmp_path):
    cells = _good_cells()
    cells[5] = np.ones((T, 5)).tolist()
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 5 (window_id 'w5')", "bar 0", "5 values", "expected 4")


def test_wrong_bar_width_for_required_width(tmp_path):
    path = _write_table(tmp_path, _features_table(_good_cells(f=3)))
    assert load_windows(path).n_features == 3  # any consistent width is accepted ...
    with pytest.raises(MoolaError, match=r"column 'features', row 0 .*3 values, expected 4"):
        load_windows(path, n_features=4)  # ... unless a width is required


@pytest.mark.parametrize(
    "bad, word", [(float("nan"), "NaN"), (float("inf"), "infinite"), (-float("inf"), "infinite")]
)
def test_non_finite(tmp_path, bad, word):
    cells = _good_cells()
    cells[4][33][2] = bad
    cells[5][0][0] = bad  # a later one is not reported
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 4 (window_id 'w4')", "bar 33", word)


def test_float32_overflow(tmp_path):
    cells = _good_cells()
    cells[1][2][0] = 1e300
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 1", "bar 2", "float32")


def test_strings_in_features(tmp_path):
    cells = [[[str(v) for v in bar] for bar in window] for window in _good_cells()]
    cells[0][0][0] = "abc"
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "row 0 (window_id 'w0')", "non-numeric")


def test_features_not_nested(tmp_path):
    cells = [np.ones(T).tolist() for _ in range(4)]
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", "list of bars")


@pytest.mark.parametrize(
    "where, fragments",
    [
        ("window", ("1 row(s) with null features", "row 2 (window_id 'w2')", "--drop-null-rows")),
        ("bar", ("1 row(s) with null features", "row 3 (window_id 'w3')", "--drop-null-rows")),
        ("value", ("1 row(s) with null features", "row 1 (window_id 'w1')", "--drop-null-rows")),
    ],
)
def test_null_features(tmp_path, where, fragments):
    cells: list = _good_cells()
    if where == "window":
        cells[2] = None
    elif where == "bar":
        cells[3][7] = None
    else:
        cells[1][9][1] = None
    path = _write_table(tmp_path, _features_table(cells))
    _expect_error(path, "'features'", *fragments)


@pytest.mark.parametrize(
    "column", ["window_id", "label", "pointer_start", "pointer_end", "source", "bar_start"]
)
def test_null_in_column(tmp_path, column):
    df, _ = _frame()
    df[column] = df[column].astype(object)
    df.loc[4, column] = None
    path = _write(tmp_path, df)
    fragments = [f"'{column}'", "row 4", "null"]
    if column != "window_id":
        fragments.append("(window_id 'w004')")
    _expect_error(path, *fragments)


def test_label_column_all_null(tmp_path):
    cells = _good_cells(4)
    table = pa.table(
        {"window_id": ["a", "b", "c", "d"], "label": pa.nulls(4, pa.string()), "features": cells}
    )
    _expect_error(_write_table(tmp_path, table), "'label'", "row 0 (window_id 'a')", "null")


def test_label_of_unsupported_type(tmp_path):
    df, _ = _frame()
    df["label"] = np.linspace(0.0, 1.0, len(df))
    _expect_error(_write(tmp_path, df), "'label'", "strings or integers")


@pytest.mark.parametrize(
    "column, value, fragment",
    [("pointer_start", -1, "-1 outside [0, 104]"), ("pointer_end", 105, "105 outside [0, 104]")],
)
def test_pointer_out_of_range(tmp_path, column, value, fragment):
    df, _ = _frame()
    df.loc[6, column] = value
    _expect_error(_write(tmp_path, df), f"'{column}'", "row 6 (window_id 'w006')", fragment)


def test_pointer_start_after_end(tmp_path):
    df, _ = _frame()
    df.loc[2, ["pointer_start", "pointer_end"]] = [50, 40]
    _expect_error(_write(tmp_path, df), "'pointer_start'", "row 2 (window_id 'w002')", "50 > pointer_end 40")


@pytest.mark.parametrize("drop", ["pointer_start", "pointer_end"])
def test_pointer_without_the_other(tmp_path, drop):
    df, _ = _frame()
    kept = "pointer_end" if drop == "pointer_start" else "pointer_start"
    _expect_error(_write(tmp_path, df.drop(columns=[drop])), f"'{kept}'", f"without '{drop}'")


def test_pointer_not_integer(tmp_path):
    df, _ = _frame()
    df["pointer_start"] = df["pointer_start"].astype(float)
    df.loc[8, "pointer_start"] = 3.5
    _expect_error(_write(tmp_path, df), "'pointer_start'", "row 8 (window_id 'w008')", "not an integer")


def test_duplicate_window_ids_load_and_are_counted(tmp_path):
    # The earlier pipeline writes one row per expansion: a repeated id is data, not a broken file.
    df, X = _frame()
    df.loc[9, "window_id"] = "w003"
    df.loc[11, "window_id"] = "w003"
    ds = load_windows(_write(tmp_path, df))
    assert len(ds) == len(df)
    assert list(ds.window_id).count("w003") == 3
    np.testing.assert_allclose(ds.X, X.astype(np.float32))
    assert ("window_id", "window_id (2 repeated)") in ds.columns


def test_null_feature_rows_named_all_or_dropped(tmp_path):
    cells: list = _good_cells(8)
    cells[2] = None
    cells[5][4] = None
    cells[6][1][2] = None
    path = _write_table(tmp_path, _features_table(cells))
    message = _expect_error(
        path, "3 row(s) with null features", "row 2", "row 5", "row 6", "--drop-null-rows"
    )
    assert "row 0" not in message
    ds = load_windows(path, drop_null_rows=True)
    assert len(ds) == 5
    np.testing.assert_array_equal(ds.file_rows, [0, 1, 3, 4, 7])
    np.testing.assert_array_equal(ds.window_id, ["w0", "w1", "w3", "w4", "w7"])
    np.testing.assert_array_equal(ds.X, np.asarray([cells[r] for r in (0, 1, 3, 4, 7)], dtype=np.float32))
    assert dict(ds.columns)["dropped"].startswith("3 row(s)")


def test_only_moola_error_escapes_for_wrong_types(tmp_path):
    df, _ = _frame()
    df["bar_start"] = [f"day{i}" for i in range(len(df))]
    _expect_error(_write(tmp_path, df), "'bar_start'", "integers")


def test_categorical_columns(tmp_path):
    df, _ = _frame()
    df["label"] = df["label"].astype("category")  # written as dictionary-encoded columns
    df["source"] = df["source"].astype("category")
    path = _write(tmp_path, df)
    fast = load_windows(path)
    _assert_same(fast, load_windows_naive(path))
    assert fast.classes == ("consolidation", "retracement")


def test_save_windows_states_the_pointer_convention_and_keeps_feature_type(tmp_path):
    # Pointers all <= 44 would be ambiguous without the file's own statement (metadata) of the convention.
    ds = generate(12, seed=2)
    small = np.stack([np.arange(12) % 30, np.arange(12) % 30 + 5], axis=1).astype(np.int64)
    ds = replace(ds, pointers=small, X=ds.X[:, :, :4], feature_type="relative_11d")
    path = save_windows(ds, tmp_path / "own.parquet")
    assert pq.read_schema(path).metadata[b"moola.pointer_convention"] == b"absolute"
    back = load_windows(path)
    np.testing.assert_array_equal(back.pointers, small)
    assert back.feature_type == "relative_11d"
    assert "stated by file metadata" in dict(back.columns)["pointers"]
