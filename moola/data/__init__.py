"""Data: the window container, the parquet loader/writer, the synthetic default set, windowing, splits.

Re-exports are resolved lazily (PEP 562) so ``import moola.data`` stays cheap: pyarrow and pandas load
only when a loader or windowing function is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from moola.data.dataset import DEFAULT_CLASSES, OHLC_COLUMNS, WINDOW_LENGTH, WindowDataset

_LAZY = {
    "load_windows": "moola.data.loader",
    "load_windows_naive": "moola.data.loader",
    "save_windows": "moola.data.loader",
    "compare_loaders": "moola.data.loader",
    "generate": "moola.data.synthetic",
    "default_dataset": "moola.data.synthetic",
    "generate_bars": "moola.data.synthetic",
    "make_windows": "moola.data.windowing",
    "windows_dataset": "moola.data.windowing",
    "make_split": "moola.data.splits",
    "random_split": "moola.data.splits",
    "temporal_split": "moola.data.splits",
    "purged_split": "moola.data.splits",
    "SPLIT_KINDS": "moola.data.splits",
}

__all__ = ["DEFAULT_CLASSES", "OHLC_COLUMNS", "WINDOW_LENGTH", "WindowDataset", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'moola.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
