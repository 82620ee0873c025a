"""Fixtures for the pytest-benchmark suite (NOT part of the default test run: testpaths = ["tests"]).

    pytest benchmarks --benchmark-only --benchmark-autosave                      # record a run
    pytest benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Results are stored under .benchmarks/ (git-ignored), each saved atomically (see ``save_atomically``) so an
interrupted run never leaves a truncated baseline for the next ``--benchmark-compare`` to choke on.
This directory has no __init__.py on purpose:
asv imports every package under benchmarks/, and pytest is not installed in asv's environments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

N_LOAD_WINDOWS = 20_000


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


MODELS = ("jade_compact", "enhanced_simple_lstm")


@pytest.fixture(scope="session")
def windows_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 synthetic windows (seed 0) saved once per session in the documented schema."""
    from moola.data.loader import save_windows
    from moola.data.synthetic import generate

    path = tmp_path_factory.mktemp("bench") / "windows-20000.parquet"
    return save_windows(generate(n_windows=N_LOAD_WINDOWS, seed=0), path)


class Prepared:
    """The embedded default set (174 windows) in a model's feature set, single-threaded, seeded."""

    def __init__(self, name: str):
        import torch

        from moola.data.synthetic import default_dataset
        from moola.features import transform
        from moola.models import get_model, get_spec
        from moola.train.trainer import fit_tensors

        torch.set_num_threads(1)
        ds = default_dataset()
        X = transform(ds.X, get_spec(name).feature_set)
        self.X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(ds.y, dtype=np.int64))
        torch.manual_seed(0)
        self.model = get_model(name, n_features=int(self.X.shape[2]), n_classes=ds.n_classes)
        self._fit = fit_tensors

    def epoch(self) -> Any:
        return self._fit(self.model, self.X, self.y, 1, "cpu", seed=0)


@pytest.fixture(scope="session", params=MODELS)
def prepared(request: pytest.FixtureRequest) -> Prepared:
    p = Prepared(request.param)
    p.epoch()  # warm-up epoch: one-off allocations and kernel selection
    return p
