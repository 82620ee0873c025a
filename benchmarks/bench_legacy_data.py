"""Loading the earlier pipeline's files: 20,000 windows written the way HeinekenBottle/moola writes them.

The layout (pandas ``to_parquet``): ``window_id`` strings like "102_exp_1", ``label`` strings, ``features``
an object column holding per window a numpy array of 105 float64 (4,) bar arrays (parquet
list<list<double>>), ``expansion_start``/``expansion_end`` absolute bars in the inner window 30..74, and
the extra ``source``/``quality`` columns. setup_cache builds the file once (synthetic windows, seed 0; the
size comes from ``MOOLA_BENCH_LOAD_WINDOWS``, 20,000 by default); the timed calls are only the loads,
side by side so the speed-up is on record (target: >= 5x over the per-row baseline):

  time_load_legacy_20k                 ``load_windows`` (vectorized: pyarrow buffers, no per-row Python)
  time_load_legacy_per_row_20k         ``load_windows_naive``: pandas, then one np.array per row
  time_load_legacy_earlier_loop_20k    the earlier pipeline's own loop (scripts/data/make_relative_parquet.py):
                                       pandas, then np.array per bar and np.stack per row

Most of the vectorized load is parquet decoding (snappy pages of float64 prices): the speed-up is bounded
by how much of the baseline is that same decoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._common import env_int, require

N_WINDOWS = 20_000
INNER_FIRST, INNER_LAST = 30, 74  # the earlier pipeline's inner window (expansion pointers live there)


def write_legacy_file(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` windows in the earlier layout, built with pandas as that pipeline builds them."""
    import pandas as pd

    generate = require("moola.data.synthetic:generate")
    ds = generate(n_windows=n, seed=seed)
    X = ds.X.astype(np.float64)
    cells = []
    for window in X:  # per row on purpose: this is how the earlier pipeline filled the object column
        cell = np.empty(len(window), dtype=object)
        cell[:] = list(window)
        cells.append(cell)
    start = np.clip(ds.pointers[:, 0], INNER_FIRST, INNER_LAST - 10)
    end = np.clip(np.maximum(ds.pointers[:, 1], start), start, INNER_LAST)
    frame = pd.DataFrame(
        {
            "window_id": [f"{i}_exp_1" for i in range(n)],
            "label": np.asarray(ds.classes, dtype=object)[ds.y],
            "features": cells,
            "expansion_start": start,
            "expansion_end": end,
            "source": ds.source.astype(object),
            "quality": np.full(n, "A", dtype=object),
        }
    )
    frame.to_parquet(path, index=False)
    return path


def earlier_pipeline_load(path: str | Path) -> np.ndarray:
    """The earlier pipeline's loading loop, as it wrote it: one np.array per bar, one np.stack per row."""
    import pandas as pd

    df = pd.read_parquet(path)
    return np.stack([np.stack([np.array(bar, dtype=np.float32) for bar in feat]) for feat in df["features"]])


class LoadLegacyWindows:
    timeout = 900
    repeat = (3, 10, 30.0)
    number = 1
    gate_rounds = 45  # a short load, as LoadWindows (bench_data.py) says why

    def setup_cache(self) -> str:
        n = env_int("MOOLA_BENCH_LOAD_WINDOWS", N_WINDOWS) or N_WINDOWS
        path = Path(f"legacy-windows-{n}.parquet").resolve()  # asv runs setup_cache in a private temp dir
        return str(write_legacy_file(path, n))

    def setup(self, path: str) -> None:
        self.load_windows = require("moola.data.loader:load_windows")
        self.load_windows_naive = require("moola.data.loader:load_windows_naive")

    def time_load_legacy_20k(self, path: str) -> None:
        self.load_windows(path)

    def time_load_legacy_per_row_20k(self, path: str) -> None:
        self.load_windows_naive(path)

    time_load_legacy_per_row_20k.repeat = (2, 5, 20.0)  # type: ignore[attr-defined]
    # References, not the product's loader: asv and pytest-benchmark record them for the side-by-side
    # speed-up; the gate skips them (seconds per sample, and a regression there is no one's regression).
    time_load_legacy_per_row_20k.gate = False  # type: ignore[attr-defined]

    def time_load_legacy_earlier_loop_20k(self, path: str) -> None:
        earlier_pipeline_load(path)

    time_load_legacy_earlier_loop_20k.repeat = (2, 3, 30.0)  # type: ignore[attr-defined]
    time_load_legacy_earlier_loop_20k.gate = False  # type: ignore[attr-defined]

    def track_legacy_file_bytes(self, path: str) -> int:
        return Path(path).stat().st_size

    track_legacy_file_bytes.unit = "bytes"  # type: ignore[attr-defined]
