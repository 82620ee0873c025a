"""Data-loading benchmark: ``moola.data.loader.load_windows`` on a 20,000-window parquet file.

setup_cache generates the file once per benchmark run (moola.data.synthetic.generate, seed 0; the size
comes from ``MOOLA_BENCH_LOAD_WINDOWS``, 20,000 by default) and saves it with ``save_windows``; the
timed call is only the load. The naive per-row baseline (``load_windows_naive``) is timed on the same
file, so the vectorized loader's speed-up is on record. ``track_load_peak_traced_bytes`` is the peak of
Python + numpy memory during one load (tracemalloc): deterministic, so a loader that suddenly holds
per-row Python objects shows it exactly.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import env_int, require
from benchmarks._memory import traced_peak

N_WINDOWS = 20_000


class LoadWindows:
    timeout = 600
    repeat = (3, 10, 30.0)
    number = 1
    # A ~130 ms load on a shared 2-core VM meets bursts that slow everything 2-3x for a second or so
    # (seen in the gate's samples): 45 cheap pairs keep a 20% slowdown detectable where 15 did not
    # (docs/benchmarks.md, Sensitivity). Averaging calls per sample does not help against bursts.
    gate_rounds = 45

    def setup_cache(self) -> str:
        generate = require("moola.data.synthetic:generate")
        save_windows = require("moola.data.loader:save_windows")
        n = env_int("MOOLA_BENCH_LOAD_WINDOWS", N_WINDOWS) or N_WINDOWS
        path = Path(f"windows-{n}.parquet").resolve()  # asv runs setup_cache in a private temp dir
        save_windows(generate(n_windows=n, seed=0), path)
        return str(path)

    def setup(self, path: str) -> None:
        self.load_windows = require("moola.data.loader:load_windows")
        self.load_windows_naive = require("moola.data.loader:load_windows_naive")

    def time_load_windows_20k(self, path: str) -> None:
        self.load_windows(path)

    def time_load_windows_naive_20k(self, path: str) -> None:
        self.load_windows_naive(path)

    time_load_windows_naive_20k.repeat = (2, 5, 20.0)  # type: ignore[attr-defined]
    # A reference implementation, not the product's loader: asv and pytest-benchmark record it, the gate
    # lists it without spending ~40 s per run on it (a per-row load_windows shows in the line above).
    time_load_windows_naive_20k.gate = False  # type: ignore[attr-defined]

    def peakmem_load_windows_20k(self, path: str) -> None:
        self.load_windows(path)

    peakmem_load_windows_20k.gate_rounds = 15  # type: ignore[attr-defined]  # bursts do not move peak RSS

    def track_load_peak_traced_bytes(self, path: str) -> int:
        return traced_peak(lambda: self.load_windows(path))

    track_load_peak_traced_bytes.unit = "bytes"  # type: ignore[attr-defined]

    def track_file_bytes(self, path: str) -> int:
        return Path(path).stat().st_size

    track_file_bytes.unit = "bytes"  # type: ignore[attr-defined]
