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
    # sanity: a user's --fit is stopped (exit 2) after max(fit_time_limit_s, fit_time_factor x the time its
    # epochs should take: the measured plain AdamW steps per epoch or the physics lower bound, whichever is
    # more, on this machine and the rows it trains on). The built-in trainer has no limit.
    fit_time_limit_s: float = 120.0
    fit_time_factor: float = 50.0
    # training-based findings train/evaluate on a stratified sample sized for these worst-case 95%
    # Wilson half-widths of the train/test accuracy (diagnostics.sampling): 475 and 2,401 windows
    train_ci_halfwidth: float = 0.045
    test_ci_halfwidth: float = 0.02
    sampled_steps: int = 600  # optimizer steps of the shared run on a sample (its epochs follow from them)
    # sanity: |init loss - ln C| / ln C beyond this means the untrained predictions are not near-uniform
    init_loss_tolerance: float = 0.5
    # sanity: fewer than this fraction of N windows per epoch is a missing loop; more than excess, repeats
    samples_fail_fraction: float = 0.5
    samples_excess_fraction: float = 1.05
    # sanity overfit_batch: a healthy model memorises this many windows to this loss within these steps
    overfit_samples: int = 8
    overfit_steps: int = 60
    overfit_lr: float = 1e-2
    overfit_target_loss: float = 0.1
    # sanity grad_clearing: steps starting from an earlier step's un-cleared gradient (1 in 10 is no accident)
    stale_grad_fraction: float = 0.1
    # sanity loss_inputs: share of loss calls fed probabilities where logits/log-probabilities belong
    loss_input_fraction: float = 0.5
    # sanity label_alignment: the loss's target (sign of dL/dlogits) must equal the true label this often;
    # permuted labels agree only sum(share_c^2) ~ 0.5, constant labels the majority share
    label_agreement_min: float = 0.9
    label_min_rows: int = 16  # fewer identified windows than this: not judged
    # sanity divergence: median user loss over the last tenth of steps this many times the first tenth's
    divergence_loss_rise: float = 2.0
    # sanity weight_norm: trainable-parameter L2 norm falling below this fraction of its initial value
    weight_collapse_ratio: float = 0.2
    # sanity coverage: windows never trained on over the run, beyond this fraction of N and twice what sampling
    # with replacement leaves; a fit's own hold-out (windows only evaluated) counts up to holdout_max_fraction
    coverage_never_fraction: float = 0.2
    holdout_max_fraction: float = 0.5
    # sanity outcome: a --fit FAILs when it gains (loss drop from init; accuracy above the majority share)
    # less than this fraction of what the built-in recipe gains on the same rows in the same epochs
    outcome_gain_fraction: float = 0.25
    outcome_min_ref_gain: float = 0.05  # the reference must gain this share of ln(C) for a comparison
    # sanity update_size: the median per-step ||dw||/||w|| outside these multiples of the reference's
    update_ratio_floor: float = 0.01
    update_ratio_ceiling: float = 10.0
    # sanity lr_schedule: lr below this fraction of its peak on more than lr_low_share of the steps
    lr_collapse_fraction: float = 0.01
    lr_low_share: float = 0.5
    # sanity reference run: at least this share of the epochs (for the dynamics), more until the outcome
    # comparison is decided, at most the max share (its cost: at most ~half the fit's)
    reference_min_epoch_fraction: float = 0.1
    reference_max_epoch_fraction: float = 0.5
    # gpu: optimizer steps in the training burst, so that ~50 ms NVML utilization samples mean something;
    # capped in epochs so a tiny training set does not loop for ages.
    gpu_burst_steps: int = 200
    gpu_burst_max_epochs: int = 50
    # gpu: WARN when the burst's own torch peak exceeds this multiple of the analytic footprint + data
    gpu_memory_warn_factor: float = 10.0
    # gpu: WARN when NVML says a kernel ran in less than this % of the time while training on the GPU
    gpu_min_mean_util: float = 10.0
    gpu_min_util_samples: int = 3  # fewer NVML samples than this cannot judge utilization (SKIP)
    # data: WARN when a class is under this share of a split (a classifier can ignore it and look good)
    min_class_share: float = 0.10
    # leakage: equal OHLC bars at one consistent offset; chance equality of 8 float price bars is ~impossible
    min_shared_bars: int = 8
    # stability: runs of the quality estimator in check-all (4: two rounds of the 2-core pool, so check-all
    # stays near 30 s cold; --runs raises it). The per-run gain over the constant the pointer head must
    # clear, and the share of windows every run gets wrong above which the labels deserve a look.
    stability_runs: int = 4
    # stability trains on at most this many windows (a stratified, seeded sample beyond it): 60 epochs of
    # the recipe on 400 windows cost ~2x the default set's runs; the interval is over seeds, not rows
    stability_max_windows: int = 400
    pointer_min_gain: float = 0.10
    label_noise_share: float = 0.05


@dataclass
class DiagContext:
    dataset: WindowDataset  # raw OHLC windows: train, test (and val) rows together
    train_idx: np.ndarray  # int64 rows of ``dataset``
    test_idx: np.ndarray
    val_idx: np.ndarray | None = None
    split_kind: str = "random"  # "random" | "temporal" | "purged" | "given" (separate files) | "file"
    model_name: str = "jade_compact"
    device: str = "auto"
    fit: FitFn | None = None  # user's --fit function; None = moola.train.trainer.fit_tensors
    fit_spec: str | None = None  # "MODULE:FUNC" as given, for reports
    config: TrainConfig = field(default_factory=TrainConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    cli_default_model: str = "jade_compact"  # what `moola train` trains without --model
    cache: dict[str, Any] = field(default_factory=dict)
    split_reason: str = ""  # why this split was chosen (report header; see loading.choose_split)
    time_order: str = "bar_start"  # what orders windows in time: "bar_start" or "row" (--time-order)
    # rows the training-based findings may use (diagnostics.sampling); None = sized by the thresholds, 0 = all
    max_train_windows: int | None = None
    max_test_windows: int | None = None
    # Where the quality estimator's runs go: a concurrent.futures.Executor (e.g. a distributed engine's
    # pool), or None for a local process pool of ``workers`` processes (None: every core).
    executor: Any = None
    workers: int | None = None

    def parts(self) -> dict[str, np.ndarray]:
        """The split's parts in order train, val (when there is one), test: int64 rows of ``dataset``."""
        out = {"train": np.asarray(self.train_idx, dtype=np.int64)}
        if self.val_idx is not None and len(self.val_idx):
            out["val"] = np.asarray(self.val_idx, dtype=np.int64)
        out["test"] = np.asarray(self.test_idx, dtype=np.int64)
        return out

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute once per context (e.g. the model's features, a short training run)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]
