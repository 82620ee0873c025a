"""Shared set-up for the asv benchmarks.

The benchmarks measure the *installed* moola (the commit asv built, or the current environment with
``--python=same``), but the rulers -- the analytic FLOP model (diagnostics/physics.py) and the allocation
counter (diagnostics/gate/worker.py) -- are loaded by file from THIS checkout, so every commit in a range
is measured with the same ruler. A commit that predates a needed moola API raises NotImplementedError,
which asv records as "skipped" rather than failed.

These modules are the ONE definition of every benchmark: asv runs them, the pytest-benchmark collector
(benchmarks/pytest_bench/) parametrizes over them, and the gate's worker discovers them in each revision.
Environment knobs (read when a benchmark is set up):

``MOOLA_BENCH_DEVICE``   cpu (default) or cuda; GPU-only benchmarks skip (NotImplementedError) on cpu
``MOOLA_BENCH_WINDOWS``  first N windows of the embedded set for the training/forward benchmarks (0: all 174)
``MOOLA_BENCH_LOAD_WINDOWS``  windows in the loading benchmark's file (default 20,000)
``MOOLA_BENCH_QUALITY_RUNS``  runs per quality benchmark (0: each benchmark's own ``gate_runs``)
``MOOLA_BENCH_QUALITY_SEED``  first seed of the quality runs (default 0; the sensitivity tool moves it
                         per trial, so every trial draws fresh seeds)
``MOOLA_BENCH_QUALITY_RECIPE``  JSON of TrainConfig fields overriding the quality recipe (tests: fewer
                         epochs at a higher learning rate)
``MOOLA_BENCH_QUALITY_WORKERS``  processes a quality benchmark trains in (0: every core)

Gate attributes (on a benchmark method or its class; asv ignores them): ``gate_factor`` (timing ratio
that counts as a regression, default 1.10), ``gate_rounds`` (interleaved samples per revision, default
15: more for a short benchmark that a shared machine's bursts disturb; a number, or a dict from the
parameter value to one), ``gate_tolerance`` (a counter's relative tolerance; default
0.01 for unit "bytes", else 0: exact), ``gate_higher_is_better`` (a counter whose drop regresses),
``gate = False`` on a method (a reference baseline, not product code: listed, not gated),
``gate_default = False`` (gated only when ``--bench`` selects it: too costly for every run),
``gate_threshold`` (a quality benchmark's practical threshold: a drop must exceed it to regress).

A ``track_`` benchmark may return a ``Distribution``: a float (its mean, what asv and pytest-benchmark
record) that carries every run's value, which the gate compares as a distribution, not a counter.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["jade_compact", "enhanced_simple_lstm", "jade"]
THREADS = 1  # single-threaded: the numbers track the code, not the scheduler on a shared 2-core box
SEED = 0


def bench_device() -> str:
    """The device every benchmark runs on: ``MOOLA_BENCH_DEVICE`` (cpu by default)."""
    name = os.environ.get("MOOLA_BENCH_DEVICE", "cpu").strip() or "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"MOOLA_BENCH_DEVICE must be cpu or cuda, got {name!r}")
    return name


def require_device(name: str) -> str:
    """``name`` if usable here, else NotImplementedError (asv: skipped)."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
    return name


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def batch_size() -> int:
    """The trainer's batch size, from the measured revision's own TrainConfig (what fit_tensors uses)."""
    return int(require("moola.config:TrainConfig")().batch_size)


def sync(dev: str) -> None:
    """Wait for queued GPU work so a timing covers it (no-op on CPU)."""
    if dev == "cuda":
        import torch

        torch.cuda.synchronize()


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


class Distribution(float):
    """A benchmark result that is a sample, not one number: asv sees the mean, the gate every value."""

    samples: tuple[float, ...]

    def __new__(cls, values: list[float] | tuple[float, ...]) -> Distribution:
        samples = tuple(float(v) for v in values)
        if not samples:
            raise ValueError("a Distribution needs at least one value")
        obj = super().__new__(cls, sum(samples) / len(samples))
        obj.samples = samples
        return obj


class Prepared:
    """The embedded default dataset in ``model``'s feature set, as tensors, plus a seeded fresh model."""

    def __init__(self, model: str, device: str | None = None):
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
        self.device = device = require_device(device or bench_device())
        self.ds = default_dataset()
        n_windows = env_int("MOOLA_BENCH_WINDOWS", 0)
        if n_windows:
            self.ds = self.ds.subset(np.arange(min(n_windows, len(self.ds))))
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

    def flops_per_epoch(self, model: Any) -> int:
        """Analytic training FLOPs of one epoch: full batches plus the ragged last one."""
        count_flops = getattr(physics(), "count_flops", None)
        if count_flops is None:
            raise NotImplementedError("diagnostics/physics.py has no count_flops")
        batch = batch_size()

        def step(b: int) -> int:
            c = count_flops(model, b, self.T, n_features=self.F)
            return int(getattr(c, "training_step", c))

        full, rest = divmod(self.n, batch)
        return full * step(batch) + (step(rest) if rest else 0)
