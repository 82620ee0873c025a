"""Shared set-up for the asv benchmarks.

The benchmarks measure the *installed* moola (the commit asv built, or the current environment with
``--python=same``), but the rulers -- the analytic FLOP model (diagnostics/physics.py) and the allocation
counter (diagnostics/gate/worker.py) -- are loaded by file from THIS checkout, so every commit in a range
is measured with the same ruler. A commit that predates a needed moola API raises NotImplementedError,
which asv records as "skipped" rather than failed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["jade_compact", "enhanced_simple_lstm", "jade"]
BATCH = 16  # TrainConfig's default batch size (what fit_tensors uses)
THREADS = 1  # single-threaded: the numbers track the code, not the scheduler on a shared 2-core box
SHORT_TRAINING_EPOCHS = 8
SEED = 0


def registered_models() -> list[str]:
    """Every registered model, or the known names when this moola cannot list them."""
    try:
        from moola.models import list_models

        return [spec.name for spec in list_models()]
    except Exception:
        return list(DEFAULT_MODELS)


def _load_file(name: str, relpath: str) -> ModuleType:
    path = REPO / relpath
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise NotImplementedError(f"{relpath} is not in this checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def gate_worker() -> ModuleType:
    """diagnostics/gate/worker.py: ``AllocCounter``, ``flops_per_epoch`` (the gate's rulers)."""
    return _load_file("moola_bench_gate_worker", "diagnostics/gate/worker.py")


def physics() -> ModuleType:
    return _load_file("moola_gate_physics", "diagnostics/physics.py")


def require(what: str) -> Any:
    """Import ``module:attr`` from the measured moola, or skip (NotImplementedError) if it lacks it."""
    module_name, _, attr = what.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"{what} is not available in this revision: {exc}") from exc


class Prepared:
    """The embedded default dataset in ``model``'s feature set, as tensors, plus a seeded fresh model."""

    def __init__(self, model: str, device: str = "cpu"):
        import numpy as np
        import torch

        torch.set_num_threads(THREADS)
        default_dataset = require("moola.data.synthetic:default_dataset")
        transform = require("moola.features:transform")
        get_spec = require("moola.models:get_spec")
        self.get_model = require("moola.models:get_model")
        self.fit_tensors = require("moola.train.trainer:fit_tensors")
        if model not in registered_models():
            raise NotImplementedError(f"model {model!r} is not registered in this revision")
        self.name = model
        self.device = device
        self.ds = default_dataset()
        X = transform(self.ds.X, get_spec(model).feature_set)
        self.X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)
        self.y = torch.as_tensor(np.asarray(self.ds.y, dtype=np.int64), device=device)
        self.n, self.T, self.F = (int(s) for s in self.X.shape)

    def model(self) -> Any:
        import torch

        torch.manual_seed(SEED)
        return self.get_model(self.name, n_features=self.F, n_classes=self.ds.n_classes).to(self.device)

    def epoch(self, model: Any) -> None:
        self.fit_tensors(model, self.X, self.y, 1, self.device, seed=SEED)
