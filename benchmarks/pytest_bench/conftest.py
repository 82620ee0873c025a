"""pytest-benchmark driver for the asv suite (NOT part of the default test run: testpaths = ["tests"]).

test_bench_suite.py parametrizes over the benchmarks that ``diagnostics.gate.worker.discover`` finds in
benchmarks/*.py -- the same definitions asv and the gate run -- so nothing is defined twice here.

    pytest benchmarks --benchmark-only --benchmark-autosave                      # record a run
    pytest benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Results are stored under .benchmarks/ (git-ignored), each saved atomically (see ``save_atomically``) so an
interrupted run never leaves a truncated baseline for the next ``--benchmark-compare`` to choke on.
This directory has no __init__.py on purpose:
asv imports every package under benchmarks/, and pytest is not installed in asv's environments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `import benchmarks` (the asv package) from this checkout
    sys.path.insert(0, str(REPO))


def save_atomically(storage_class: type) -> bool:
    """Make pytest-benchmark's file storage write each result file atomically (it writes in place).

    Feature-detected rather than version-checked: if the class no longer has the ``get``/``_next_num``
    pair this relies on, it is left alone and False is returned.
    """
    if not (hasattr(storage_class, "get") and hasattr(storage_class, "_next_num")):
        return False

    def save(self: Any, output_json: dict[str, Any], save: str) -> None:
        from pytest_benchmark.utils import safe_dumps

        from moola.io import atomic_write_bytes

        output_file = self.get(f"{self._next_num}_{save}.json")
        if output_file.exists():
            raise FileExistsError(output_file)
        atomic_write_bytes(output_file, safe_dumps(output_json, ensure_ascii=True, indent=4).encode())
        self.logger.info(f"Saved benchmark data in: {output_file}")

    storage_class.save = save
    return True


def pytest_configure(config: pytest.Config) -> None:
    from pytest_benchmark.storage.file import FileStorage

    save_atomically(FileStorage)
