"""Every asv benchmark in benchmarks/*.py as a pytest-benchmark test (one definition, three drivers).

    pytest benchmarks --benchmark-only --benchmark-autosave
    pytest benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%
    pytest benchmarks --benchmark-only -k "TrainEpoch and jade_compact"

``time_*`` are timed (asv's ``number`` calls per round, else calibrated to >= 50 ms); ``track_*`` and
``peakmem_*`` values go into ``extra_info`` of the saved JSON (pytest-benchmark has no counters). A
benchmark whose setup raises NotImplementedError (asv's "skipped": no CUDA, an API this revision lacks)
is skipped with that reason.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO

from diagnostics.gate.worker import PeakRss, Runner, discover, time_call

BENCHMARKS = discover(REPO)
RUNNER = Runner(BENCHMARKS)
# peakmem_ samples as asv and the gate take them: each in a process forked from a template forked here,
# before any benchmark is set up in this one (so none carries another's memory).
PEAK = PeakRss(BENCHMARKS) if PeakRss.supported() else None
ROUNDS = 5


def _prepared(name: str) -> Any:
    try:
        return RUNNER.call(RUNNER.by_name[name])
    except NotImplementedError as exc:
        pytest.skip(str(exc) or "NotImplementedError")


@pytest.mark.parametrize("name", [b.name for b in BENCHMARKS if b.kind == "time"])
def test_time(benchmark: Any, name: str) -> None:
    fn = _prepared(name)
    b = RUNNER.by_name[name]
    number = b.number or max(1, min(1000, int(0.05 / max(time_call(fn, 1), 1e-6)) + 1))
    benchmark.group = name.split("(")[0]
    benchmark.extra_info["definition"] = b.definition
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=number, warmup_rounds=1)


@pytest.mark.parametrize("name", [b.name for b in BENCHMARKS if b.kind in ("track", "peakmem")])
def test_value(benchmark: Any, name: str) -> None:
    b = RUNNER.by_name[name]
    benchmark.group = "counters"
    if b.kind == "track":
        value = benchmark.pedantic(_prepared(name), rounds=1, iterations=1)
    else:
        if PEAK is None:
            pytest.skip("peak RSS cannot be measured on this platform (no fork or VmHWM)")
        try:
            value = PEAK.sample(name)
        except NotImplementedError as exc:
            pytest.skip(str(exc) or "NotImplementedError")
    benchmark.extra_info.update({"value": value, "unit": b.unit, "definition": b.definition})
