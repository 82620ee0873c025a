"""check-all at one large N (20,000 generated windows, ``MOOLA_BENCH_SCALE_WINDOWS``) and memory against
the data's own size.

setup_cache generates and saves the file once (moola.data.synthetic.generate, seed 0).

Gated: ``track_check_all_window_epochs_20k``, windows x epochs the shared training run of check-all trains
on this file (diagnostics.sampling): exact and free to compute. Training is ~90% of check-all's cost at this
size; a change that trains on every row again (15,994 windows x 60 epochs instead of 475 x 20) is a 100x
jump the gate cannot miss.

Recorded by asv and pytest-benchmark, not gated (``gate = False``), because each would cost the gate minutes:
with Holm's correction over ~30 timed benchmarks a timing needs >= 10 interleaved rounds on both revisions
to ever reach significance, and the gate's whole run is ~5 min.
- ``time_row_level_20k``: every row-level finding of check-all over every row (data checks, identical
  windows, shared ids, near-duplicates, overlap, shared bars, temporal order), single-threaded: ~5 s a
  round, ~100 s of gate time.
- ``time_check_all_20k``: the whole command, training included (~30-60 s a call).
- ``track_load_rss_over_data_20k``: the loader's peak RSS increase (VmHWM) over the bytes of the arrays it
  returns (1.0 would be no transient memory at all); a one-shot RSS reading depends on what the worker
  process freed before it, and the gated ``peakmem_load_windows_20k`` guards the same memory over rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import env_int, require
from benchmarks._memory import peak_rss_bytes

N_WINDOWS = 20_000


def _context(path: str) -> Any:
    build_context = require("diagnostics.loading:build_context")
    return build_context(data=path, device="cpu")


class CheckAllScale:
    timeout = 900
    number = 1
    repeat = (1, 3, 120.0)

    def setup_cache(self) -> str:
        generate = require("moola.data.synthetic:generate")
        save_windows = require("moola.data.loader:save_windows")
        n = env_int("MOOLA_BENCH_SCALE_WINDOWS", N_WINDOWS) or N_WINDOWS
        path = Path(f"scale-{n}.parquet").resolve()
        save_windows(generate(n_windows=n, seed=0), path)
        return str(path)

    def setup(self, path: str) -> None:
        require("diagnostics.sampling:training_sample")  # revisions without bounded work: skipped
        self.ctx = _context(path)  # built before timing: the load is LoadWindows' benchmark

    def time_row_level_20k(self, path: str) -> None:
        check_data = require("diagnostics.checks.data:check_data")
        row_level = require("diagnostics.checks.leakage:row_level")
        self.ctx.cache.clear()  # every call computes the features and findings afresh
        check_data(self.ctx)
        row_level(self.ctx)

    time_row_level_20k.gate = False  # type: ignore[attr-defined]  # ~100 s of gate time: module doc

    def track_check_all_window_epochs_20k(self, path: str) -> int:
        training_sample = require("diagnostics.sampling:training_sample")
        sample = training_sample(self.ctx)
        return int(len(sample.train_rows) * sample.epochs)

    track_check_all_window_epochs_20k.unit = "window-epochs"  # type: ignore[attr-defined]

    def track_load_rss_over_data_20k(self, path: str) -> float:
        load_windows = require("moola.data.loader:load_windows")
        out: dict[str, Any] = {}
        before = peak_rss_bytes(lambda: None)
        peak = peak_rss_bytes(lambda: out.setdefault("ds", load_windows(path)))
        if peak is None or before is None:
            raise NotImplementedError("peak RSS cannot be reset here (not Linux)")
        ds = out["ds"]
        data = sum(
            a.nbytes
            for a in (ds.X, ds.y, ds.window_id, ds.pointers, ds.source, ds.bar_start)
            if a is not None
        )
        return round((peak - before) / data, 2)

    track_load_rss_over_data_20k.unit = "ratio"  # type: ignore[attr-defined]
    track_load_rss_over_data_20k.gate = False  # type: ignore[attr-defined]

    def time_check_all_20k(self, path: str) -> None:
        run = require("diagnostics.commands:run")
        options = require("diagnostics.commands:Options")
        run(options(data=Path(path), device="cpu", report_dir=None))

    time_check_all_20k.gate = False  # type: ignore[attr-defined]  # ~1 min a call: module doc
