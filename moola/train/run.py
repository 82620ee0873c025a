"""One training run end to end: data -> features -> split -> model -> fit -> run directory.

Run directory ``<out_dir>/<model>-<YYYYmmdd-HHMMSS>/``:
  config.json    {"config": full TrainConfig, "environment": torch/python/device/git sha, "architecture", "data"}
  metrics.jsonl  one JSON object per epoch, rewritten atomically after every epoch
  model.pt       ``torch.save(model.state_dict())`` (CPU tensors; ``torch.load(..., weights_only=True)``)
  summary.json   best epoch (1-based, as in metrics.jsonl), validation metrics of the kept weights,
                 parameter counts, timings; the kept weights' training-split metrics twice, labelled:
                 ``train_*_running`` (the epoch's running mean over augmented batches, dropout on) and
                 ``train_*_eval`` (measured afterwards in eval mode, comparable with ``val_*``)
  split.json     the row indices of every split ({"train": [...], "val": [...]}, a valid --split-file)
  findings.jsonl the live rules' findings, as they happened (see moola.train.live); absent when none fired

For an audit (``moola-diag audit``) config.json also holds the data's fingerprint and, under "machine",
the device's name and the measured speeds the epoch lower bound is made of; every metrics.jsonl row
holds the epoch's wall time, samples/s and, on a GPU, torch peak memory and NVML utilization.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moola.config import TrainConfig
from moola.data.dataset import WindowDataset
from moola.errors import MoolaError
from moola.features import FEATURE_SETS, transform
from moola.io import atomic_open, atomic_write_json, atomic_write_text
from moola.models import count_parameters, get_model, get_spec
from moola.train import record
from moola.train.device import resolve_device
from moola.train.live import LiveRules
from moola.train.trainer import FitResult, TrainState, evaluate_dataset, fit

REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS_SCHEMA = 2  # 1: train_loss/train_acc (running figures, unlabelled); 2: *_running and *_eval
_TRAIN_KEYS = ("train_loss_running", "train_acc_running")


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, Any]]
    model: nn.Module
    n_params: int  # trainable parameters
    device: str
    metrics: dict[str, Any]  # train/validation metrics of the kept (best) epoch
    best_epoch: int  # 0-based index into ``history`` of the kept epoch
    fit: FitResult
    feature_set: str
    train_idx: np.ndarray
    val_idx: np.ndarray


class _MetricsWriter:
    """Rewrites metrics.jsonl atomically after each epoch: a crash leaves every finished epoch on disk."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.lines.append(json.dumps(state.history[-1], sort_keys=True))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["device_name"] = record.device_name(device)
    return env


def _make_run_dir(out_dir: Path, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        candidate = out_dir / (f"{model}-{stamp}" if i == 0 else f"{model}-{stamp}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise MoolaError(f"--out-dir {out_dir}: could not create a fresh run directory")


def _split(ds: WindowDataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    from moola.data.splits import check_split_classes, make_split, read_split_file

    if config.split_file is not None:  # the user's own split (the earlier pipeline's JSON of row indices)
        parts = read_split_file(config.split_file, ds)
        train_idx, val_idx = parts.parts["train"], parts.held_out
    else:
        train_idx, val_idx = make_split(
            ds, config.split, config.val_fraction, config.seed, config.embargo_bars
        )
    check_split_classes(ds, train_idx, {"validation": val_idx}, config.split)
    return train_idx, val_idx


def _split_record(ds: WindowDataset, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    """Dataset positions of each part; the file's rows too when they differ (``--drop-null-rows``)."""
    out: dict[str, Any] = {"train": np.asarray(train_idx).tolist(), "val": np.asarray(val_idx).tolist()}
    if ds.row is not None:
        out["file_rows"] = {
            "train": ds.file_rows[train_idx].tolist(),
            "val": ds.file_rows[val_idx].tolist(),
        }
    return out


def train_run(
    config: TrainConfig,
    dataset: WindowDataset | None = None,
    callbacks: Sequence[Any] = (),
    live: LiveRules | None = None,
) -> RunResult:
    """Train ``config.model`` on ``dataset`` (raw OHLC windows; default: the embedded synthetic set).

    ``live``: the live rules (a silent ``LiveRules()`` by default); their findings go to findings.jsonl.
    """
    device = resolve_device(config.device)  # fail on a missing GPU before any work
    spec = get_spec(config.model)
    feature_set = config.features or spec.feature_set
    if feature_set not in FEATURE_SETS:
        raise MoolaError(f"--features {feature_set}: unknown feature set; valid: {', '.join(FEATURE_SETS)}")
    if dataset is None:
        from moola.data.synthetic import default_dataset

        dataset = default_dataset()
    where = f"{dataset.path}: " if dataset.path else ""
    if dataset.feature_type is not None:  # precomputed features (feature_type column): used as is
        if dataset.n_features != len(FEATURE_SETS[feature_set]):
            raise MoolaError(
                f"{where}precomputed {dataset.feature_type!r} bars have {dataset.n_features} values, but "
                f"{config.model} reads {feature_set} ({len(FEATURE_SETS[feature_set])} values per bar)"
            )
    elif dataset.n_features != 4:
        raise MoolaError(f"{where}expected raw OHLC windows (4 values per bar), got {dataset.n_features}")

    train_idx, val_idx = _split(dataset, config)
    # Per-window transform: computing it before the split cannot leak across windows.
    feats = (
        dataset
        if dataset.feature_type is not None
        else dataset.with_features(transform(dataset.X, feature_set))
    )
    train_ds, val_ds = feats.subset(train_idx), feats.subset(val_idx)

    torch.manual_seed(config.seed)
    model = get_model(config.model, n_features=feats.n_features, n_classes=dataset.n_classes)
    # The speeds the epoch bound is made of, measured here, before training (~0.1 s on a 2-core CPU).
    probe_batch = min(config.batch_size, len(train_idx))
    machine = record.measure_machine(model, device, probe_batch)
    window_length = int(dataset.X.shape[1])
    machine["epoch_floor_s"] = record.epoch_floor_s(
        model, len(train_idx), config.batch_size, window_length, machine
    )
    run_dir = _make_run_dir(Path(config.out_dir), config.model)
    atomic_write_json(run_dir / "split.json", _split_record(dataset, train_idx, val_idx))
    n_params_total = count_parameters(model, trainable_only=False)
    run_record = {
        "config": config.to_dict(),
        "environment": environment(device),
        "architecture": {
            "name": config.model,
            "hparams": model.hparams,
            "n_params_total": n_params_total,
        },
        "data": {
            "path": dataset.path,
            "n_windows": len(dataset),
            "window_length": int(dataset.X.shape[1]),
            "classes": list(dataset.classes),
            "feature_set": feature_set,
            "features": list(FEATURE_SETS[feature_set]),
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "fingerprint": record.data_fingerprint(dataset),
            "split_file": "split.json",
        },
        "machine": machine,
        "metrics_schema": METRICS_SCHEMA,
    }
    atomic_write_json(run_dir / "config.json", run_record)

    def remeasure() -> float:
        """Before calling an epoch impossible, measure the machine again and keep the faster figures
        (a neighbour's burst during the first measurement can only have made the floor too high)."""
        machine.update(record.fastest(machine, record.measure_machine(model, device, probe_batch)))
        machine["epoch_floor_s"] = record.epoch_floor_s(
            model, len(train_idx), config.batch_size, window_length, machine
        )
        machine["remeasured"] = True
        atomic_write_json(run_dir / "config.json", run_record)
        return float(machine["epoch_floor_s"])

    writer = _MetricsWriter(run_dir / "metrics.jsonl")
    live = live if live is not None else LiveRules()
    live.configure(
        run_dir, device.type, machine["epoch_floor_s"], config.early_stopping_patience, remeasure=remeasure
    )
    stats = record.GpuEpochStats(device)  # before the writer: the row is complete when written
    result = fit(model, train_ds, val_ds, config, callbacks=(stats, writer, live, *callbacks))
    n_params = count_parameters(model)  # after fit: a frozen pointer head is not trainable

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_open(run_dir / "model.pt", "wb") as fh:
        torch.save(state, fh)

    kept = result.history[result.best_epoch] if result.history else {}
    val_metrics = {
        k: kept.get(k)
        for k in (*_TRAIN_KEYS, "val_loss", "val_acc", "val_macro_f1", "majority_acc", "pointer_mae_bars")
    }
    # The kept weights on the training rows as validation is measured: eval mode, no augmentation.
    train_eval = evaluate_dataset(model, train_ds, config, device)
    val_metrics.update({f"train_{k}_eval": v for k, v in train_eval.items()})
    epoch_times = [row["epoch_time_s"] for row in result.history]
    atomic_write_json(
        run_dir / "summary.json",
        {
            "model": config.model,
            "feature_set": feature_set,
            "device": result.device,
            "n_params_trainable": n_params,
            "n_params_total": n_params_total,
            "params_per_train_sample": n_params / max(len(train_idx), 1),
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "epochs_run": result.n_epochs_run,
            "best_epoch": kept.get("epoch"),  # 1-based, as the "epoch" field of metrics.jsonl
            "stopped_early": result.stopped_early,
            # How the reported epoch was chosen: on the same validation rows its metrics come from.
            "selected_by": "min val_loss on the validation rows (early stopping)"
            if config.early_stopping_patience > 0 and len(val_idx)
            else "last epoch",
            "metrics_schema": METRICS_SCHEMA,
            "metrics": val_metrics,
            "train_time_s": result.train_time_s,
            "gpu_util_error": stats.util_error,  # why NVML utilization is missing from metrics.jsonl
            "mean_epoch_time_s": float(np.mean(epoch_times)) if epoch_times else None,
        },
    )
    return RunResult(
        run_dir=run_dir,
        history=result.history,
        model=model,
        n_params=n_params,
        device=result.device,
        metrics=val_metrics,
        best_epoch=result.best_epoch,
        fit=result,
        feature_set=feature_set,
        train_idx=np.asarray(train_idx),
        val_idx=np.asarray(val_idx),
    )
