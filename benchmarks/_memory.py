"""Deterministic memory rulers for the benchmarks (no torch import at module level).

``TensorMemory``  under a TorchDispatchMode, every aten op's fresh output storages (forward, backward,
                  optimizer): ``allocated`` sums their bytes; ``peak_live`` is the largest sum of bytes of
                  those storages alive AT ONCE, tracked over their lifetimes with weakref finalizers on the
                  untyped storages (torch keeps one Python storage object per live StorageImpl, so the
                  finalizer runs when the memory is released, not when a wrapper dies). It measures what is
                  alive, not the allocator's cache, and depends only on the op sequence and shapes: exact
                  run to run on CPU. Storages made before the mode (parameters, the data) are not counted.
``traced_peak``   the peak of Python + numpy allocations (tracemalloc; numpy reports its buffers to it)
                  during a call: the loaders' memory, which is numpy/Python, not torch.
``peak_rss_bytes``  the process's peak RSS during a call (Linux: VmHWM after resetting it through
                  /proc/self/clear_refs): a statistical measure, for the gate's timed rounds.
"""

from __future__ import annotations

import contextlib
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TensorMemory:
    """Context manager: ``allocated`` and ``peak_live`` bytes of tensor storage created inside it."""

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        self.allocated = 0
        self.live = 0
        self.peak_live = 0
        self.ops = 0
        tracked: dict[int, int] = {}  # id(storage object) -> bytes, while alive
        ruler = self

        def release(key: int) -> None:
            ruler.live -= tracked.pop(key, 0)

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                out = func(*args, **(kwargs or {}))
                ruler.ops += 1
                inputs = {
                    id(t.untyped_storage())
                    for t in tree_flatten((args, kwargs))[0]
                    if isinstance(t, torch.Tensor) and not t.is_meta
                }
                for t in tree_flatten(out)[0]:
                    if not isinstance(t, torch.Tensor) or t.is_meta:
                        continue
                    storage = t.untyped_storage()
                    key = id(storage)
                    if key in tracked or key in inputs:  # a view or an in-place result: no new memory
                        continue
                    nbytes = int(storage.nbytes())
                    if nbytes == 0:
                        continue
                    try:
                        weakref.finalize(storage, release, key)
                    except TypeError:  # storage without weakref support: count the bytes, not the life
                        ruler.allocated += nbytes
                        continue
                    tracked[key] = nbytes
                    ruler.allocated += nbytes
                    ruler.live += nbytes
                    ruler.peak_live = max(ruler.peak_live, ruler.live)
                return out

        self._mode = Mode()
        self._tracked = tracked

    def __enter__(self) -> TensorMemory:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


def tensor_memory(fn: Callable[[], Any]) -> TensorMemory:
    """Run ``fn`` under a fresh ``TensorMemory`` and return the ruler (after the call's garbage is gone)."""
    import gc

    ruler = TensorMemory()
    with ruler:
        fn()
    gc.collect()
    return ruler


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of Python + numpy allocations made during ``fn()`` (tracemalloc), the result included."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return int(peak - before)


def _status_kb(field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def peak_rss_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident set size (bytes) of this process while ``fn()`` runs; None where the peak cannot be
    reset (not Linux), since a lifetime maximum would say nothing about this call."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    fn()
    kb = _status_kb("VmHWM")
    return None if kb is None else kb * 1024
