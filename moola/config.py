"""One typed config for a training run, written in full into every run directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
SplitKind = Literal["random", "temporal", "purged"]


@dataclass
class TrainConfig:
    model: str = "jade_compact"
    features: str | None = None  # None: the model's registered feature set ("ohlc4" or "relative11")
    n_epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-2
    device: Device = "auto"
    predict_pointers: bool = False
    pointer_loss_weight: float = 1.0
    early_stopping_patience: int = 10  # epochs without val-loss improvement; 0 disables
    augment: bool = True
    jitter_sigma: float = 0.01  # additive noise, in units of the per-feature std
    scale_sigma: float = 0.05  # multiplicative per-window scale noise
    seed: int = 1337
    split: SplitKind = "random"
    val_fraction: float = 0.2
    embargo_bars: int = 105  # purged split: minimum bar gap between train and validation windows
    split_file: str | None = None  # JSON of file row indices (train + val/test); replaces ``split``
    out_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})
