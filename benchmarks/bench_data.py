"""Data-loading benchmark: ``moola.data.loader.load_windows`` on a 20,000-window parquet file.

setup_cache generates the file once per benchmark run (moola.data.synthetic.generate, seed 0) and
saves it with ``save_windows``; the timed call is only the load. The naive per-row baseline
(``load_windows_naive``) is timed on the same file, so the vectorized loader's speed-up is on record.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import require

N_WINDOWS = 20_000


class LoadWindows:
    timeout = 600
    repeat = (3, 10, 30.0)
    number = 1

    def setup_cache(self) -> str:
        generate = require("moola.data.synthetic:generate")
        save_windows = require("moola.data.loader:save_windows")
        path = Path("windows-20000.parquet").resolve()  # asv runs setup_cache in a private temp dir
        save_windows(generate(n_windows=N_WINDOWS, seed=0), path)
        return str(path)

    def setup(self, path: str) -> None:
        self.load_windows = require("moola.data.loader:load_windows")
        self.load_windows_naive = require("moola.data.loader:load_windows_naive")

    def time_load_windows_20k(self, path: str) -> None:
        self.load_windows(path)

    def time_load_windows_naive_20k(self, path: str) -> None:
        self.load_windows_naive(path)

    time_load_windows_naive_20k.repeat = (2, 5, 20.0)  # type: ignore[attr-defined]

    def peakmem_load_windows_20k(self, path: str) -> None:
        self.load_windows(path)

    def track_file_bytes(self, path: str) -> int:
        return Path(path).stat().st_size

    track_file_bytes.unit = "bytes"  # type: ignore[attr-defined]
