"""The vectorized parquet loader and the naive per-row baseline, side by side on one 20,000-window file.

Both land in one group ("load-20k-windows") of one run, so the saved JSON records the speed-up (the
table's ratio column; the naive test also stores median and min speed-ups in extra_info). The >= 5x
target is asserted by the loader's own tests, not here: a benchmark run on a busy machine should record,
not flake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_medians: dict[str, float] = {}
_mins: dict[str, float] = {}
_loaded: dict[str, Any] = {}


def test_load_vectorized(benchmark: Any, windows_parquet: Path) -> None:
    from moola.data.loader import load_windows

    benchmark.group = "load-20k-windows"
    _loaded["vectorized"] = benchmark.pedantic(
        load_windows, args=(windows_parquet,), rounds=7, warmup_rounds=1
    )
    if benchmark.stats is not None:  # None under --benchmark-disable
        _medians["vectorized"] = benchmark.stats.stats.median
        _mins["vectorized"] = benchmark.stats.stats.min


def test_load_naive(benchmark: Any, windows_parquet: Path) -> None:
    from moola.data.loader import load_windows_naive

    benchmark.group = "load-20k-windows"
    naive = benchmark.pedantic(load_windows_naive, args=(windows_parquet,), rounds=5, warmup_rounds=1)
    if "vectorized" in _medians and benchmark.stats is not None:  # run together: record the speed-up
        stats = benchmark.stats.stats
        benchmark.extra_info["speedup_median"] = round(stats.median / _medians["vectorized"], 2)
        benchmark.extra_info["speedup_min"] = round(stats.min / _mins["vectorized"], 2)
        np.testing.assert_array_equal(naive.X, _loaded["vectorized"].X)  # same work, same result
