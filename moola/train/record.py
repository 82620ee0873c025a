"""What a run directory records so that the run can be audited later, on any machine.

- ``data_fingerprint``: sha256 of the windows and labels (and of the file's bytes), so a later audit can
  tell whether the data changed since the run;
- ``measure_machine``: the two measured speeds the epoch lower bound is made of (peak float32 matmul
  FLOP/s, and the per-time-step latency of each of the model's LSTMs at the training batch), so an
  audit elsewhere judges the epoch times against the machine that trained, never its own;
- ``epoch_floor_s``: a cheap floor on one epoch from those speeds, for the live rules;
- ``GpuEpochStats``: per-epoch torch peak memory and NVML utilization on a GPU (injectable, tested with
  fakes on CPU); it reads once per epoch, never per step.

Nothing here imports diagnostics/ (moola is the bottom layer): the audit computes the full analytic bound
(``diagnostics.physics``) from the raw facts recorded here.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_CHUNK = 1 << 20


def array_sha256(*arrays: np.ndarray, extra: str = "") -> str:
    """sha256 over the C-contiguous bytes of the arrays (dtype and shape included), one pass, no copies
    beyond what contiguity needs."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    h.update(extra.encode())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def data_fingerprint(ds: Any) -> dict[str, Any]:
    """``arrays``: X (float32), y (int64) and the class names -- what the model saw; ``file``: the file's
    bytes (None for the embedded set); ``pointers``: the pointer targets, when the data has them."""
    X = np.asarray(ds.X, dtype=np.float32)
    y = np.asarray(ds.y, dtype=np.int64)
    return {
        "arrays_sha256": array_sha256(X, y, extra="|".join(ds.classes)),
        "pointers_sha256": None if ds.pointers is None else array_sha256(np.asarray(ds.pointers)),
        "file_sha256": None if not ds.path else file_sha256(ds.path),
        "shape": list(X.shape),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # the CPU's model name, as the kernel reports it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rng_isolated(device: torch.device | None = None) -> Any:
    """Measurements draw random tensors and init modules: the caller's RNG streams stay untouched (the
    CPU's, and ``device``'s when it is a GPU)."""
    return torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else [])


def measure_matmul_flops(
    device: torch.device,
    size: int | None = None,
    repeats: int = 12,
    flops_per_timing: float | None = None,
    min_products: int = 1,
    burn_in: int = 2,
) -> float:
    """Peak float32 matmul FLOP/s: burn-in, then the best of ``repeats`` timings of ``k`` products each (a
    floor must never be too high, and a neighbour only ever makes a timing slower: many timings shorter
    than a scheduler slice give the best one a chance to run undisturbed). ``k`` is what
    ``flops_per_timing`` buys (default 2e8 on a CPU, 2e12 on a GPU), at least ``min_products``. ~50 ms on a
    2-core CPU. The one implementation: the diagnostics' epoch bound calls it too."""
    n = int(size or (4096 if device.type == "cuda" else 512))
    flops = 2.0 * n**3
    budget = flops_per_timing or (2e8 if device.type == "cpu" else 2e12)
    with torch.no_grad(), rng_isolated(device):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)
        for _ in range(burn_in):  # thread pool, cuBLAS handle, clocks
            torch.mm(a, b, out=out)
        _sync(device)
        k = max(min_products, int(budget // flops))
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(k):
                torch.mm(a, b, out=out)
            _sync(device)
            best = max(best, flops * k / (time.perf_counter() - t0))
    return best


def measure_lstm_step_s(
    device: torch.device,
    input_size: int,
    hidden_size: int,
    batch: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    repeats: int = 9,
) -> float:
    """Seconds per time step of an nn.LSTM forward of this shape at this batch (inference mode): the marginal
    cost of extra steps, (t(36) - t(4)) / 32, each the minimum over interleaved repeats, so per-call
    overhead is left out (timing one LSTMCell call would pay dispatcher overhead the fused sequence kernel
    does not). The one implementation: the diagnostics' epoch bound calls it too."""
    short, long_ = 4, 36
    with rng_isolated(device):
        probe = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
        ).to(device)
        xs = {t: torch.randn(batch, t, input_size, device=device) for t in (short, long_)}
    probe.eval()
    best = dict.fromkeys(xs, math.inf)
    with torch.inference_mode():
        for x in xs.values():
            probe(x)  # burn-in: primitive creation, allocator
        _sync(device)
        for _ in range(repeats):
            for t, x in xs.items():
                t0 = time.perf_counter()
                probe(x)
                _sync(device)
                best[t] = min(best[t], time.perf_counter() - t0)
    return max(0.0, (best[long_] - best[short]) / (long_ - short))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _lstms(model: nn.Module) -> list[tuple[str, nn.LSTM]]:
    return [(name or "lstm", m) for name, m in model.named_modules() if isinstance(m, nn.LSTM)]


def measure_machine(model: nn.Module, device: torch.device, batch: int) -> dict[str, Any]:
    """The measured speeds the epoch lower bound uses, for this model's LSTM shapes at ``batch``."""
    t0 = time.perf_counter()
    lstm = {
        name: measure_lstm_step_s(device, m.input_size, m.hidden_size, batch, m.num_layers, m.bidirectional)
        for name, m in _lstms(model)
    }
    return {
        "device": str(device),
        "device_name": device_name(device),
        "matmul_flops_per_s": measure_matmul_flops(device),
        "matmul_size": 4096 if device.type == "cuda" else 512,
        "lstm_step_s": lstm,
        "lstm_step_batch": int(batch),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1m": _load(),
        "measure_s": time.perf_counter() - t0,
    }


def fastest(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The more favourable of two measurements of the same machine: a neighbour's burst only ever makes a
    timing slower, so a floor built on the fastest figures is never too high."""
    steps = {
        k: min(v, (b.get("lstm_step_s") or {}).get(k, v)) for k, v in (a.get("lstm_step_s") or {}).items()
    }
    return {
        **a,
        "matmul_flops_per_s": max(a["matmul_flops_per_s"], b["matmul_flops_per_s"]),
        "lstm_step_s": steps,
    }


def _lstm_forward_flops(lstm: nn.LSTM, T: int) -> int:
    """Analytic forward FLOPs of an nn.LSTM per sample: 8H(I+H) + 17H per step, layer and direction."""
    d, H = (2 if lstm.bidirectional else 1), lstm.hidden_size
    total = 0
    for layer in range(lstm.num_layers):
        I = lstm.input_size if layer == 0 else H * d  # noqa: E741
        total += (8 * H * (I + H) + 17 * H) * d
    return total * T


def epoch_floor_s(model: nn.Module, n: int, batch: int, T: int, machine: dict[str, Any]) -> float:
    """A floor on one training epoch from the recorded speeds: max(LSTM FLOPs fwd+bwd / peak matmul,
    full batches x 2T dependent steps x step latency). Cheaper and lower than diagnostics.physics'
    bound (it leaves out the non-LSTM layers), so an epoch below it is certainly impossible."""
    lstms = _lstms(model)
    peak = float(machine.get("matmul_flops_per_s") or 0.0)
    flops = 3 * n * sum(_lstm_forward_flops(m, T) for _, m in lstms)
    steps = machine.get("lstm_step_s") or {}
    latency = (n // max(batch, 1)) * 2 * T * sum(float(steps.get(name, 0.0)) for name, _ in lstms)
    return max(flops / peak if peak > 0 else 0.0, latency)


class GpuEpochStats:
    """Callback adding ``gpu_peak_mem_bytes`` (torch's allocator, since the previous epoch ended) and
    ``gpu_util_pct`` (NVML: share of the last sample period a kernel ran) to each epoch's row.

    ``cuda`` is ``torch.cuda`` or a fake with the same three functions; read once per epoch, after the
    trainer's own end-of-epoch synchronize, so it adds no host sync inside the step loop. Install it
    before the metrics writer so the row is complete when written.
    """

    def __init__(self, device: torch.device, cuda: Any = None):
        self.device = device
        self.cuda = cuda if cuda is not None else (torch.cuda if device.type == "cuda" else None)
        self.util_error: str | None = None

    def on_train_start(self, state: Any) -> None:
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats(self.device)

    def on_epoch_end(self, state: Any) -> None:
        if self.cuda is None:
            return
        row = state.history[-1]
        row["gpu_peak_mem_bytes"] = int(self.cuda.max_memory_allocated(self.device))
        self.cuda.reset_peak_memory_stats(self.device)
        row["gpu_util_pct"] = None
        if self.util_error is None:
            try:
                row["gpu_util_pct"] = float(self.cuda.utilization(self.device))
            except Exception as exc:  # pynvml missing, NVML unsupported: record why, once
                self.util_error = f"{type(exc).__name__}: {exc}"
