"""Labeled window files: a vectorized pyarrow loader, the naive per-row baseline, and the writer.

Parquet schema (one row per window) -- moola's own files and the earlier pipeline's (pandas ``to_parquet``):

    window_id      str or int; repeats load (one annotation with two expansions) and are a data finding
    label          str or int (int labels become their decimal string; classes are sorted --
                   numerically for int labels, so labels 0..K-1 keep y == label); any number >= 2 of classes
    features       list of 105 bars, each a list of F numbers (F=4 for OHLC; any F >= 1, the same for
                   every bar); list, large_list or fixed_size_list at either level. A null window (or bar
                   or value) is an error naming the rows, or dropped with ``drop_null_rows``. Bytes
                   (pickled arrays) are refused: unpickling a data file runs arbitrary code.
    feature_type   optional str, one value for the file: the bars already hold that feature set (the
                   earlier pipeline's ``relative_11d``); X is then used as is, never re-transformed
    pointers       optional, one pair of columns, bars inclusive, start <= end:
                   expansion_start/expansion_end   absolute bars 0..104 (the earlier pipeline; by name)
                   pointer_start/pointer_end       convention stated by ``pointer_convention`` or by the
                                                   file's metadata ``moola.pointer_convention``:
                                                   "absolute" (0..104) or "inner" (counted from bar 30,
                                                   0..44); unstated, values above 44 can only be absolute,
                                                   and all-small values are refused as ambiguous
    source         optional str: which series the window was cut from
    bar_start      optional int, or a timestamp (converted to int64 epoch-ns): the window's first bar

Every malformed input raises :class:`MoolaError` with one line naming the file, the column and the
first offending row (row number and window_id). The source file is only ever read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moola.data.dataset import WINDOW_LENGTH, WindowDataset
from moola.errors import MoolaError
from moola.io import atomic_open

REQUIRED_COLUMNS = ("window_id", "label", "features")
POINTER_COLUMNS = ("pointer_start", "pointer_end")
EXPANSION_COLUMNS = ("expansion_start", "expansion_end")  # the earlier pipeline's absolute pointers
OPTIONAL_COLUMNS = (*POINTER_COLUMNS, *EXPANSION_COLUMNS, "source", "bar_start", "feature_type")
# Pointer conventions: name -> the bar that pointer value 0 means. "inner": the earlier pipeline's
# canonical files count from bar 30, the first bar of the annotated inner window (bars 30-74).
POINTER_CONVENTIONS = {"absolute": 0, "inner": 30}
POINTER_METADATA_KEY = b"moola.pointer_convention"
# feature_type values that still mean raw prices (anything else is a precomputed feature set).
RAW_FEATURE_TYPES = ("ohlc", "ohlc4", "raw", "raw_ohlc")
MAX_ROWS_NAMED = 5

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------------
# Vectorized loader


class _Where:
    """Formats 'FILE: column 'c', row r (window_id 'w')' prefixes for one file."""

    def __init__(self, path: Path):
        self.path = path
        self.ids: np.ndarray | None = None  # set once window_id has been validated

    def row(self, r: int) -> str:
        if self.ids is not None:
            return f"row {r} (window_id {str(self.ids[r])!r})"
        return f"row {r}"

    def error(self, column: str | None, message: str, row: int | None = None) -> MoolaError:
        parts = [str(self.path)]
        if column is not None:
            parts.append(f"column {column!r}")
        if row is not None:
            parts.append(self.row(int(row)))
        return MoolaError(f"{', '.join(parts)}: {message}")


def _first(mask: np.ndarray) -> int:
    """Index of the first True in ``mask`` (caller checked there is one)."""
    return int(np.argmax(mask))


def _read_table(path: Path) -> tuple[pa.Table, list[str], dict[bytes, bytes]]:
    """(the needed columns, every column name, the schema metadata); any I/O or format failure becomes a
    one-line MoolaError."""
    if not path.exists():
        raise MoolaError(f"{path}: file not found")
    if path.is_dir():
        raise MoolaError(f"{path}: is a directory, expected a parquet file")
    try:
        with pq.ParquetFile(path) as pf:
            names = pf.schema_arrow.names
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                have = ", ".join(names) or "none"
                raise MoolaError(
                    f"{path}: missing required column {', '.join(repr(c) for c in missing)} (columns: {have})"
                )
            wanted = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in names]
            metadata = dict(pf.schema_arrow.metadata or {})
            return pf.read(columns=wanted, use_threads=False), list(names), metadata
    except MoolaError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        # ArrowInvalid (not parquet, truncated footer), OSError (corrupt pages, permissions), ...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise MoolaError(f"{path}: not a readable parquet file ({type(exc).__name__}: {detail})") from exc


def _column(table: pa.Table, name: str) -> pa.Array:
    """One contiguous array for a column; dictionary-encoded columns (pandas categoricals) decoded."""
    col = table.column(name)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _check_no_nulls(arr: pa.Array, where: _Where, column: str) -> None:
    if arr.null_count:
        row = _first(np.asarray(arr.is_null(), dtype=bool))
        raise where.error(column, "null value", row)


def _window_ids(arr: pa.Array, where: _Where) -> np.ndarray:
    _check_no_nulls(arr, where, "window_id")
    if pa.types.is_integer(arr.type):
        ids = arr.to_numpy(zero_copy_only=False).astype(str)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        ids = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)
    else:
        raise where.error("window_id", f"must hold strings or integers, got {arr.type}")
    # Repeated ids load: the earlier pipeline writes one row per expansion, so an annotation with two
    # expansions repeats its id. The data check reports them; leakage FAILs when copies straddle a split.
    return np.ascontiguousarray(ids)


def _labels(arr: pa.Array, where: _Where) -> tuple[np.ndarray, tuple[str, ...]]:
    _check_no_nulls(arr, where, "label")
    if pa.types.is_integer(arr.type):
        values = arr.to_numpy(zero_copy_only=False).astype(np.int64)
        uniq, y = np.unique(values, return_inverse=True)  # numeric order: 0..K-1 keeps y == label
        classes = tuple(str(v) for v in uniq.tolist())
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)
        uniq, y = np.unique(values, return_inverse=True)
        classes = tuple(uniq.tolist())
    else:
        raise where.error("label", f"must hold strings or integers, got {arr.type}")
    return np.ascontiguousarray(y.reshape(-1), dtype=np.int64), classes


def _list_layout(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets int64 of length len+1 into ``arr.values``, values) for any list flavour.

    ``.values`` is the whole child array (ignoring slicing), so offsets are absolute positions in it
    -- that keeps null and sliced lists consistent, unlike ``.flatten()`` which drops null entries.
    """
    if pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        offsets = (arr.offset + np.arange(len(arr) + 1, dtype=np.int64)) * size
    else:
        offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    return offsets, arr.values


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


PICKLE_HINT = (
    "unpickling a data file runs arbitrary code, so moola does not; convert it once, in a session you "
    "trust: df['features'] = [[list(map(float, bar)) for bar in pickle.loads(b)] for b in df['features']]; "
    "df.to_parquet(NEW_PATH)"
)


def _refuse_pickled(arr: pa.Array, where: _Where) -> None:
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        raise where.error("features", f"holds bytes (pickled arrays?): {PICKLE_HINT}")


def _features(arr: pa.Array, where: _Where, length: int) -> np.ndarray:
    col = "features"
    _refuse_pickled(arr, where)
    if not _is_list(arr.type) or not _is_list(arr.type.value_type):
        raise where.error(col, f"must be a list of bars, each a list of numbers; got {arr.type}")
    n = len(arr)
    _check_no_nulls(arr, where, col)  # a whole window missing

    outer, bars = _list_layout(arr)
    counts = np.diff(outer)
    bar_lo, bar_hi = int(outer[0]), int(outer[-1])

    def row_of_bar(b: int) -> tuple[int, int]:
        """(row, bar-within-row) of absolute bar position ``b``."""
        r = int(np.searchsorted(outer, b, side="right") - 1)
        return r, b - int(outer[r])

    bars = bars.slice(bar_lo, bar_hi - bar_lo)  # the bars of these rows, in row order
    if bars.null_count:
        b = _first(np.asarray(bars.is_null(), dtype=bool))
        r, k = row_of_bar(bar_lo + b)
        raise where.error(col, f"bar {k} is null", r)

    inner, leaves = _list_layout(bars)
    widths = np.diff(inner)
    width = int(widths[0]) if len(widths) else 0
    bad_width = widths != width
    if bad_width.any():  # inconsistent: the file's width is the most common one
        values, freq = np.unique(widths, return_counts=True)
        width = int(values[freq.argmax()])
        bad_width = widths != width

    # Report the first offending row, whether it has the wrong number of bars or a bar of the wrong width.
    bad_rows = counts != length
    row_count = _first(bad_rows) if bad_rows.any() else n
    row_width, bar_k = n, 0
    if bad_width.any():
        row_width, bar_k = row_of_bar(bar_lo + _first(bad_width))
    if row_count < n and row_count <= row_width:
        raise where.error(col, f"ragged window: {counts[row_count]} bars, expected {length}", row_count)
    if row_width < n:
        b = int(outer[row_width]) - bar_lo + bar_k
        raise where.error(
            col, f"ragged window: bar {bar_k} has {widths[b]} values, expected {width}", row_width
        )
    if width < 1:
        raise where.error(col, "bars are empty lists (expected >= 1 value per bar)", 0)

    leaf_lo = int(inner[0])
    leaves = leaves.slice(leaf_lo, n * length * width)
    value_type = leaves.type

    def row_of_leaf(i: int) -> tuple[int, int]:
        return row_of_bar(bar_lo + i // width)

    if pa.types.is_null(value_type) or leaves.null_count:
        i = 0 if pa.types.is_null(value_type) else _first(np.asarray(leaves.is_null(), dtype=bool))
        r, k = row_of_leaf(i)
        raise where.error(col, f"null value in bar {k}", r)
    if pa.types.is_decimal(value_type):
        leaves, value_type = leaves.cast(pa.float64()), pa.float64()
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        r, k = row_of_leaf(0)
        sample = leaves[0].as_py()
        raise where.error(
            col, f"non-numeric values ({value_type}), e.g. {sample!r} in bar {k}; expected numbers", r
        )
    if pa.types.is_floating(value_type) and value_type != pa.float32():
        flat64 = leaves.to_numpy(zero_copy_only=False)
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            flat = flat64.astype(np.float32)
    else:
        flat64 = None
        flat = leaves.cast(pa.float32()).to_numpy(zero_copy_only=False)
    finite = np.isfinite(flat)
    if not finite.all():
        i = _first(~finite)
        r, k = row_of_leaf(i)
        orig = flat64[i] if flat64 is not None else flat[i]
        what = (
            "NaN"
            if np.isnan(orig)
            else ("infinite value" if np.isinf(orig) else "value beyond float32 range")
        )
        raise where.error(col, f"{what} ({float(orig)!r}) in bar {k}", r)
    return np.ascontiguousarray(flat.reshape(n, length, width))


def _int_column(arr: pa.Array, where: _Where, column: str) -> np.ndarray:
    """Integer column (integral floats accepted: pandas writes int columns with gaps as float)."""
    _check_no_nulls(arr, where, column)
    if pa.types.is_integer(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            r = _first(bad)
            raise where.error(column, f"not an integer: {values[r].item()!r}", r)
        return values.astype(np.int64)
    raise where.error(column, f"must hold integers, got {arr.type}")


def _pointer_range(convention: str, length: int) -> tuple[int, int]:
    """(offset, largest value) of a convention: inner pointers span the inner window, bars 30..74."""
    offset = POINTER_CONVENTIONS[convention]
    return offset, length - 1 - 2 * offset


def _stated_convention(
    option: str | None, metadata: dict[bytes, bytes], where: _Where, column: str
) -> tuple[str | None, str]:
    """(the convention the user or the file states, who stated it); option and metadata must agree."""
    meta = metadata.get(POINTER_METADATA_KEY)
    meta_value = meta.decode("utf-8", "replace") if meta is not None else None
    for value, who in ((option, "--pointer-convention"), (meta_value, "file metadata")):
        if value is not None and value not in POINTER_CONVENTIONS:
            raise where.error(
                column,
                f"{who} {value!r}: unknown pointer convention; valid: {', '.join(POINTER_CONVENTIONS)}",
            )
    if option is not None and meta_value is not None and option != meta_value:
        raise where.error(
            column,
            f"--pointer-convention {option} contradicts the file's metadata "
            f"({POINTER_METADATA_KEY.decode()}={meta_value}); drop the option or fix the file",
        )
    if option is not None:
        return option, "--pointer-convention"
    if meta_value is not None:
        return meta_value, f"file metadata {POINTER_METADATA_KEY.decode()}"
    return None, ""


def _pointers(
    table: pa.Table,
    where: _Where,
    length: int,
    convention: str | None,
    metadata: dict[bytes, bytes],
) -> tuple[np.ndarray | None, str | None]:
    """(absolute int64 (N, 2) [start, end] or None, how the columns were read)."""
    names = table.column_names
    complete = []
    for pair in (EXPANSION_COLUMNS, POINTER_COLUMNS):
        present = [c for c in pair if c in names]
        if len(present) == 1:
            other = next(c for c in pair if c not in present)
            raise where.error(present[0], f"given without {other!r} (pointers need both columns)")
        if present:
            complete.append(pair)
    if not complete:
        return None, None
    if len(complete) == 2:
        raise where.error(
            None,
            "two competing pointer column pairs, expansion_start/expansion_end (absolute) and "
            "pointer_start/pointer_end: keep one (e.g. df.drop(columns=['pointer_start', 'pointer_end']))",
        )
    start_col, end_col = complete[0]
    start = _int_column(_column(table, start_col), where, start_col)
    end = _int_column(_column(table, end_col), where, end_col)
    stated, who = _stated_convention(convention, metadata, where, start_col)
    if complete[0] == EXPANSION_COLUMNS:
        if stated is not None and stated != "absolute":
            raise where.error(
                start_col,
                f"{who} says {stated}, but expansion_start/expansion_end are absolute bars by definition "
                "(the inner convention is pointer_start/pointer_end)",
            )
        convention, why = "absolute", "absolute bars (expansion_* columns are absolute by definition)"
    elif stated is not None:
        convention, why = stated, f"{stated} (stated by {who})"
    else:
        top = int(max(start.max(), end.max()))
        _, inner_max = _pointer_range("inner", length)
        if top <= inner_max:
            raise where.error(
                start_col,
                f"pointer convention unknown and ambiguous (every value <= {inner_max}): pass "
                f"--pointer-convention absolute (bars 0..{length - 1}) or inner (counted from bar "
                f"{POINTER_CONVENTIONS['inner']}, 0..{inner_max})",
            )
        convention = "absolute"
        why = f"absolute (not stated; values up to {top} exceed the inner range 0..{inner_max})"
    offset, top_allowed = _pointer_range(convention, length)
    for name, values in ((start_col, start), (end_col, end)):
        bad = (values < 0) | (values > top_allowed)
        if bad.any():
            r = _first(bad)
            raise where.error(name, f"{values[r]} outside [0, {top_allowed}] ({convention} convention)", r)
    bad = start > end
    if bad.any():
        r = _first(bad)
        raise where.error(start_col, f"start {start[r]} > {end_col} {end[r]}", r)
    pointers = np.ascontiguousarray(np.stack([start, end], axis=1) + offset)
    return pointers, f"{start_col}/{end_col}: {why}; stored as absolute bars 0..{length - 1}"


def _feature_type(arr: pa.Array, where: _Where) -> str | None:
    """The precomputed feature set the file declares, or None for raw OHLC prices."""
    _check_no_nulls(arr, where, "feature_type")
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise where.error("feature_type", f"must hold strings, got {arr.type}")
    values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)
    differs = values != values[0]
    if differs.any():
        r = _first(differs)
        raise where.error(
            "feature_type", f"{values[r]!r} differs from row 0's {values[0]!r}: one feature set per file", r
        )
    value = str(values[0])
    return None if value.lower() in RAW_FEATURE_TYPES else value


def null_feature_rows(arr: pa.Array) -> np.ndarray:
    """bool (N,): rows whose window, one of its bars, or one of its values is null (vectorized)."""
    mask = np.zeros(len(arr), dtype=bool)
    if arr.null_count:
        mask |= np.asarray(arr.is_null(), dtype=bool)
    if not (_is_list(arr.type) and _is_list(arr.type.value_type)):
        return mask
    outer, bars = _list_layout(arr)
    lo, hi = int(outer[0]), int(outer[-1])
    bars = bars.slice(lo, hi - lo)

    def rows_of(bar_positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(outer, lo + bar_positions, side="right") - 1

    if bars.null_count:
        mask[rows_of(np.flatnonzero(np.asarray(bars.is_null(), dtype=bool)))] = True
    inner, leaves = _list_layout(bars)
    leaves = leaves.slice(int(inner[0]), int(inner[-1]) - int(inner[0]))
    if leaves.null_count and not pa.types.is_null(leaves.type):
        leaf_pos = np.flatnonzero(np.asarray(leaves.is_null(), dtype=bool)) + int(inner[0])
        mask[rows_of(np.searchsorted(inner, leaf_pos, side="right") - 1)] = True
    return mask


def _source(arr: pa.Array, where: _Where) -> np.ndarray:
    _check_no_nulls(arr, where, "source")
    if not (
        pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_integer(arr.type)
    ):
        raise where.error("source", f"must hold strings, got {arr.type}")
    return np.ascontiguousarray(np.asarray(arr.to_numpy(zero_copy_only=False)).astype(str))


def _bar_start(arr: pa.Array, where: _Where) -> np.ndarray:
    if pa.types.is_timestamp(arr.type):
        _check_no_nulls(arr, where, "bar_start")
        # Cast to ns then view as int64: epoch-ns (UTC for tz-aware stamps).
        try:
            ns = arr.cast(pa.timestamp("ns", tz=arr.type.tz))
        except pa.ArrowInvalid as exc:
            raise where.error("bar_start", f"timestamp out of the epoch-ns range ({exc})") from exc
        return np.ascontiguousarray(ns.cast(pa.int64()).to_numpy(zero_copy_only=False))
    return np.ascontiguousarray(_int_column(arr, where, "bar_start"))


def _rows_named(rows: np.ndarray, ids: np.ndarray) -> str:
    shown = ", ".join(f"row {int(r)} (window_id {str(ids[r])!r})" for r in rows[:MAX_ROWS_NAMED])
    return shown + (f" and {len(rows) - MAX_ROWS_NAMED} more" if len(rows) > MAX_ROWS_NAMED else "")


@contextlib.contextmanager
def _system_pool() -> Iterator[None]:
    """Arrow allocations inside go to the C allocator, not mimalloc: mimalloc keeps the pages of the
    decoded parquet columns after they are freed, which doubled the loader's transient memory (20,000
    windows: 277 MB of peak RSS for 34 MB of arrays, 142 MB with the system pool). Buffers remember their
    pool, so arrays made here are freed correctly after the default is restored."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def load_windows(
    path: PathLike,
    *,
    length: int = WINDOW_LENGTH,
    n_features: int | None = None,
    pointer_convention: str | None = None,
    drop_null_rows: bool = False,
) -> WindowDataset:
    """Load and validate a labeled window file (schema in the module docstring), vectorized.

    ``n_features``: the required bar width (e.g. 4 for raw OHLC), or None to accept any consistent width.
    ``pointer_convention``: "absolute" or "inner" for pointer_start/pointer_end (see the module docstring).
    ``drop_null_rows``: drop windows with null features instead of refusing the file; the kept windows
    remember their file rows (``WindowDataset.row``), which split files index.
    """
    with _system_pool():
        return _load_windows(path, length, n_features, pointer_convention, drop_null_rows)


def _load_windows(
    path: PathLike, length: int, n_features: int | None, pointer_convention: str | None, drop_null_rows: bool
) -> WindowDataset:
    path = Path(path)
    where = _Where(path)
    table, all_names, metadata = _read_table(path)
    if table.num_rows == 0:
        raise MoolaError(f"{path}: empty file (0 rows)")
    window_id = _window_ids(_column(table, "window_id"), where)
    where.ids = window_id
    row = None
    features = _column(table, "features")
    _refuse_pickled(features, where)  # before the null scan: a null bytes cell is still a pickled file
    null_rows = np.flatnonzero(null_feature_rows(features))
    all_ids = window_id
    if len(null_rows):
        if not drop_null_rows:
            raise where.error(
                "features",
                f"{len(null_rows)} row(s) with null features: {_rows_named(null_rows, window_id)}; "
                "repair them or pass --drop-null-rows",
            )
        if len(null_rows) == table.num_rows:
            raise where.error("features", f"all {table.num_rows} rows have null features")
        keep = np.ones(table.num_rows, dtype=bool)
        keep[null_rows] = False
        table = table.filter(pa.array(keep))
        row = np.flatnonzero(keep).astype(np.int64)
        window_id = np.ascontiguousarray(window_id[keep])
        where = _Where(path)
        where.ids = window_id
        features = _column(table, "features")
    y, classes = _labels(_column(table, "label"), where)
    X = _features(features, where, length)
    if n_features is not None and X.shape[2] != n_features:
        raise where.error("features", f"bars have {X.shape[2]} values, expected {n_features}", 0)
    pointers, pointer_note = _pointers(table, where, length, pointer_convention, metadata)
    names = table.column_names
    source = _source(_column(table, "source"), where) if "source" in names else None
    bar_start = _bar_start(_column(table, "bar_start"), where) if "bar_start" in names else None
    feature_type = _feature_type(_column(table, "feature_type"), where) if "feature_type" in names else None

    n_repeated = len(window_id) - len(np.unique(window_id))
    what = f"precomputed {feature_type!r} (feature_type column), used as is" if feature_type else "raw OHLC"
    columns = [
        ("window_id", f"window_id ({n_repeated} repeated)" if n_repeated else "window_id (unique)"),
        ("label", f"label ({len(classes)} classes)"),
        ("features", f"features: {X.shape[2]} values per bar, {what}"),
        ("pointers", pointer_note or "none (no expansion_*/pointer_* columns)"),
        (
            "time",
            "bar_start" + (" + source" if source is not None else "")
            if bar_start is not None
            else "none (no bar_start column)",
        ),
    ]
    if row is not None:
        dropped = _rows_named(null_rows, all_ids)
        columns.append(
            ("dropped", f"{len(null_rows)} row(s) with null features (--drop-null-rows): {dropped}")
        )
    ignored = [c for c in all_names if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    if ignored:
        columns.append(("ignored", ", ".join(ignored)))
    return WindowDataset(
        X=X,
        y=y,
        classes=classes,
        window_id=window_id,
        pointers=pointers,
        source=source,
        bar_start=bar_start,
        path=str(path),
        feature_type=feature_type,
        row=row,
        columns=tuple(columns),
    )


# ----------------------------------------------------------------------------------------------
# Naive baseline


def load_windows_naive(path: PathLike) -> WindowDataset:
    """The loader as users first wrote it: pandas, then one ``np.array`` per row. No validation.

    Kept as the reference for the equivalence test and the speed comparison.
    """
    import pandas as pd

    df = pd.read_parquet(path)
    X = np.stack([np.array([bar for bar in cell]) for cell in df["features"]]).astype(np.float32)

    labels = df["label"].to_numpy()
    if pd.api.types.is_integer_dtype(df["label"].dtype):
        uniq, y = np.unique(labels.astype(np.int64), return_inverse=True)
        classes = tuple(str(v) for v in uniq.tolist())
    else:
        uniq, y = np.unique(labels.astype(str), return_inverse=True)
        classes = tuple(uniq.tolist())

    pointers = None
    for pair in (list(POINTER_COLUMNS), list(EXPANSION_COLUMNS)):  # absolute bars in both (no conventions)
        if pair[0] in df.columns:
            pointers = df[pair].to_numpy().astype(np.int64)
    feature_type = str(df["feature_type"].iloc[0]) if "feature_type" in df.columns else None
    source = df["source"].to_numpy().astype(str) if "source" in df.columns else None
    bar_start = None
    if "bar_start" in df.columns:
        col = df["bar_start"]
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            bar_start = np.asarray(col.dt.as_unit("ns").array.asi8, dtype=np.int64)
        else:
            bar_start = col.to_numpy().astype(np.int64)
    return WindowDataset(
        X=np.ascontiguousarray(X),
        y=np.ascontiguousarray(y.reshape(-1), dtype=np.int64),
        classes=classes,
        window_id=np.ascontiguousarray(df["window_id"].to_numpy().astype(str)),
        pointers=pointers,
        source=source,
        bar_start=bar_start,
        path=str(path),
        feature_type=None
        if feature_type is None or feature_type.lower() in RAW_FEATURE_TYPES
        else feature_type,
    )


# ----------------------------------------------------------------------------------------------
# Writer


def _labels_for_file(ds: WindowDataset) -> pa.Array:
    names = np.asarray(ds.classes, dtype=str)[ds.y]
    # Classes that are all canonical integers go back as ints, so a reload sorts them numerically.
    if all(c.lstrip("-").isdigit() and str(int(c)) == c for c in ds.classes):
        return pa.array(names.astype(np.int64))
    return pa.array(names, type=pa.string())


def save_windows(ds: WindowDataset, path: PathLike) -> Path:
    """Write ``ds`` in the schema above, atomically; the nested features column is built from flat buffers.

    A reload gives the same arrays, with classes in sorted order (and only the classes present).
    """
    X = np.ascontiguousarray(ds.X, dtype=np.float32)
    n, t, f = X.shape
    leaf_type = pa.large_list if n * t * f >= 2**31 - 1 else pa.list_
    offset_type = np.int64 if leaf_type is pa.large_list else np.int32
    leaves = pa.array(X.reshape(-1), type=pa.float32())
    inner_offsets = pa.array(np.arange(n * t + 1, dtype=offset_type) * f)
    outer_offsets = pa.array(np.arange(n + 1, dtype=offset_type) * t)
    list_cls = pa.LargeListArray if leaf_type is pa.large_list else pa.ListArray
    bars = list_cls.from_arrays(inner_offsets, leaves)
    features = list_cls.from_arrays(outer_offsets, bars)

    columns: dict[str, pa.Array] = {
        "window_id": pa.array(np.asarray(ds.window_id, dtype=str), type=pa.string()),
        "label": _labels_for_file(ds),
        "features": features,
    }
    if ds.pointers is not None:
        columns["pointer_start"] = pa.array(np.asarray(ds.pointers[:, 0], dtype=np.int64))
        columns["pointer_end"] = pa.array(np.asarray(ds.pointers[:, 1], dtype=np.int64))
    if ds.source is not None:
        columns["source"] = pa.array(np.asarray(ds.source, dtype=str), type=pa.string())
    if ds.bar_start is not None:
        columns["bar_start"] = pa.array(np.asarray(ds.bar_start, dtype=np.int64))
    if ds.feature_type is not None:
        columns["feature_type"] = pa.array([ds.feature_type] * n, type=pa.string())
    # The pointers are absolute bars: say so in the file, so a reload never has to guess the convention.
    metadata = {POINTER_METADATA_KEY: b"absolute"} if ds.pointers is not None else None
    table = pa.table(columns, metadata=metadata)
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Speed comparison


def _random_dataset(n_windows: int, seed: int = 0, length: int = WINDOW_LENGTH) -> WindowDataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_windows, length, 4), dtype=np.float32)
    y = rng.integers(0, 2, n_windows)
    start = rng.integers(0, length // 2, n_windows)
    end = start + rng.integers(0, length // 2, n_windows)
    return WindowDataset(
        X=X,
        y=y.astype(np.int64),
        classes=("consolidation", "retracement"),
        window_id=np.char.add("w", np.arange(n_windows).astype(str)),
        pointers=np.stack([start, end], axis=1).astype(np.int64),
        source=np.char.add("S", (np.arange(n_windows) % 4).astype(str)),
        bar_start=np.arange(n_windows, dtype=np.int64) * length,
    )


def compare_loaders(n_windows: int = 20000, repeats: int = 3) -> dict[str, Any]:
    """Time ``load_windows`` against ``load_windows_naive`` on one temporary file (best of ``repeats``).

    Returns ``{"n_windows", "repeats", "vectorized_s", "naive_s", "speedup", "equal"}``.
    """
    ds = _random_dataset(n_windows)
    with tempfile.TemporaryDirectory(prefix="moola-loader-") as tmp:
        path = save_windows(ds, Path(tmp) / "windows.parquet")
        best: dict[str, float] = {}
        results: dict[str, WindowDataset] = {}
        for _ in range(repeats):
            # Alternate the two so page-cache and allocator state favour neither.
            for name, fn in (("naive", load_windows_naive), ("vectorized", load_windows)):
                t0 = time.perf_counter()
                results[name] = fn(path)
                elapsed = time.perf_counter() - t0
                best[name] = min(best.get(name, float("inf")), elapsed)
    a, b = results["vectorized"], results["naive"]
    equal = bool(np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y) and a.classes == b.classes)
    return {
        "n_windows": n_windows,
        "repeats": repeats,
        "vectorized_s": best["vectorized"],
        "naive_s": best["naive"],
        "speedup": best["naive"] / best["vectorized"],
        "equal": equal,
    }
