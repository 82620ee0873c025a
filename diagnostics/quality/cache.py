"""The run cache: one JSON file per run, named by the hash of everything that determines its numbers."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diagnostics.quality.runs import RunQuality
from moola.config import TrainConfig

if TYPE_CHECKING:
    from moola.data.dataset import WindowDataset

CACHE_VERSION = 1  # bump when a run's scoring changes: old cache entries then miss
CACHE_ENV = "MOOLA_QUALITY_CACHE"  # directory of the run cache; "off" disables it


def data_fingerprint(ds: WindowDataset) -> str:
    """sha256 of everything training and scoring read: values, labels, classes, pointers, provenance."""
    h = hashlib.sha256()
    for part in (ds.X, ds.y, ds.pointers, ds.bar_start):
        if part is None:
            h.update(b"-")
        else:
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    h.update(json.dumps([list(ds.classes), ds.feature_type]).encode())
    if ds.source is not None:
        h.update("\x00".join(map(str, ds.source)).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """sha256 of the code a run executes (moola's sources and this package; a dirty tree counts too) and
    of the environment that computes it (torch, numpy, Python, CPU architecture)."""
    import platform

    import torch

    here = Path(__file__).resolve().parent
    root = here.parents[1]
    env = f"{CACHE_VERSION} torch {torch.__version__} numpy {np.__version__} {platform.python_version()}"
    h = hashlib.sha256(f"{env} {platform.machine()}".encode())
    for path in sorted([*(root / "moola").rglob("*.py"), *here.glob("*.py")]):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class RunCache:
    """One JSON file per run, named by the hash of everything that determines its numbers."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @classmethod
    def default(cls) -> RunCache:
        where = os.environ.get(CACHE_ENV, "")
        if where.lower() == "off":
            return cls(None)
        base = Path(where) if where else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cls(base if where else base / "moola" / "quality")

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> RunQuality | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return RunQuality.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None  # a damaged entry is a miss, never an error

    def put(self, key: str, run: RunQuality) -> None:
        path = self._path(key)
        if path is None:
            return
        from moola.io import atomic_write_json

        with contextlib.suppress(OSError):  # a read-only cache only costs time
            atomic_write_json(path, run.to_dict())


def run_key(
    code: str, data: str, holdout: str | None, config: TrainConfig, split: str, k: int, fold: int
) -> str:
    recipe = {k_: v for k_, v in config.to_dict().items() if k_ not in ("out_dir", "split_file", "device")}
    payload = {
        "code": code,
        "data": data,
        "holdout": holdout,
        "recipe": recipe,
        "split": split,
        "k": k,
        "fold": fold,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
