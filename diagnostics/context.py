"""What every check looks at: the data, the split, the model choice, the machine and the thresholds.

Built once per CLI invocation by ``build_context`` and passed to each check; expensive shared work
(feature transforms, a short training run) is memoized in ``cache`` so check-all does it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moola.config import TrainConfig
from moola.data.dataset import WindowDataset

# The --fit plug-in protocol: FUNC(model, X, y, epochs, device) trains ``model`` in place;
# X is a float32 tensor (N, T, F), y a long tensor (N,).
FitFn = Callable[[Any, Any, Any, int, Any], None]


@dataclass(frozen=True)
class Thresholds:
    params_warn_ratio: float = 1000.0  # trainable params per training sample
    params_fail_ratio: float = 3000.0
    # config: fewer optimizer steps per epoch than this gives little gradient noise and few updates
    min_steps_per_epoch: int = 5
    # AdamW on small LSTMs: below the range weights barely move in a few hundred steps, above it diverges
    lr_min: float = 1e-5
    lr_max: float = 1e-2
    min_total_steps: int = 200  # fewer updates cannot move a randomly initialised LSTM at lr 1e-4
    max_total_steps: int = 200_000  # more, without early stopping, only overfits a few hundred windows
    accuracy_gap: float = 0.10  # test accuracy above train accuracy by more than this is suspicious
    near_duplicate_fraction: float = 0.05  # NN distance below this fraction of the typical NN distance
    epoch_slow_factor: float = 20.0  # WARN when an epoch is this many times slower than its lower bound
    # Epochs of the one instrumented training run: the CLI default, so the symptom checks (accuracy gap,
    # majority baseline) judge a model trained as users train it, not a 3-epoch stub that predicts one class.
    sanity_epochs: int = 60
    # gpu: optimizer steps in the training burst, so that ~50 ms NVML utilization samples mean something;
    # capped in epochs so a tiny training set does not loop for ages.
    gpu_burst_steps: int = 200
    gpu_burst_max_epochs: int = 50
    # gpu: WARN when the burst's own torch peak exceeds this multiple of the analytic footprint + data
    gpu_memory_warn_factor: float = 10.0
    # gpu: WARN when NVML says a kernel ran in less than this % of the time while training on the GPU
    gpu_min_mean_util: float = 10.0
    gpu_min_util_samples: int = 3  # fewer NVML samples than this cannot judge utilization (SKIP)


@dataclass
class DiagContext:
    dataset: WindowDataset  # raw OHLC windows: train, test (and val) rows together
    train_idx: np.ndarray  # int64 rows of ``dataset``
    test_idx: np.ndarray
    val_idx: np.ndarray | None = None
    split_kind: str = "random"  # "random" | "temporal" | "purged" | "given" (separate files)
    model_name: str = "jade_compact"
    device: str = "auto"
    fit: FitFn | None = None  # user's --fit function; None = moola.train.trainer.fit_tensors
    fit_spec: str | None = None  # "MODULE:FUNC" as given, for reports
    config: TrainConfig = field(default_factory=TrainConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    cli_default_model: str = "jade_compact"  # what `moola train` trains without --model
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> WindowDataset:
        return self.dataset.subset(self.train_idx)

    @property
    def test(self) -> WindowDataset:
        return self.dataset.subset(self.test_idx)

    @property
    def val(self) -> WindowDataset | None:
        return None if self.val_idx is None else self.dataset.subset(self.val_idx)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute once per context (e.g. the model's features, a short training run)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]
