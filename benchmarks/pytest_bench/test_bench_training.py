"""One training epoch per model on the embedded default set (174 windows, batch 16, 1 thread)."""

from __future__ import annotations

from typing import Any


def test_train_epoch(benchmark: Any, prepared: Any) -> None:
    benchmark.group = "train-epoch"
    benchmark.extra_info["windows"] = int(prepared.X.shape[0])
    benchmark.extra_info["parameters"] = int(sum(p.numel() for p in prepared.model.parameters()))
    benchmark.pedantic(prepared.epoch, rounds=8, iterations=1, warmup_rounds=1)
