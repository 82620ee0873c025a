"""An analytic + measured cost model of training: FLOPs, memory, and an honest lower bound on epoch time.

Used by the sanity check ("60 epochs in 3 seconds" — is that physically possible?), the gpu check and the
benchmarks. Everything is computed for the model at hand (a generic module walk, no per-model code) and
measured on the machine at hand; nothing is a folklore constant.

FLOP convention: one multiply-add = 2 FLOPs; an elementwise op (add, mul, sigmoid, tanh) = 1 FLOP.

LSTM (per time step, per direction, per sample; I = layer input size, H = hidden size):
    gate matmuls    W_ih x_t and W_hh h_{t-1} for the 4 gates:  2*4H*I + 2*4H*H = 8H(I + H)
    biases          b_ih + b_hh added to the 4H pre-activations:          2*4H  =  8H
    gate math       sigmoid(i, f, o) 3H, tanh(g) H, c = f*c + i*g 3H,
                    tanh(c) H, h = o*tanh(c) H:                                    9H
    total           8H(I + H) + 17H
    Layer 0 has I = input_size; deeper layers read both directions of the layer below: I = H * directions.
torch.utils.flop_counter (and fvcore) count 0 FLOPs for nn.LSTM (the fused aten op has no formula), so
``count_flops`` adds this analytic count for every nn.LSTM and lets FlopCounterMode count everything else.

Backward ≈ 2x forward: every matmul y = W x needs dL/dx = W^T dy and dL/dW = dy x^T, each as costly as
the forward product. (The first layer's dL/dx is not needed, a < 2% overcount for these models.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

BYTES_PER_FLOAT32 = 4


# --------------------------------------------------------------------------- FLOPs


def lstm_step_flops(input_size: int, hidden: int) -> int:
    """FLOPs of one LSTM cell step for one sample in one direction: 8H(I+H) + 17H (see module doc)."""
    H, I = int(hidden), int(input_size)  # noqa: E741 - I is the conventional name
    return 8 * H * (I + H) + 8 * H + 9 * H


def lstm_flops(input_size: int, hidden: int, num_layers: int, bidirectional: bool, T: int, batch: int) -> int:
    """Forward FLOPs of an nn.LSTM over ``batch`` sequences of length ``T`` (analytic, see module doc)."""
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(int(num_layers)):
        layer_in = input_size if layer == 0 else hidden * directions
        total += lstm_step_flops(layer_in, hidden) * directions
    return total * int(T) * int(batch)


@dataclass(frozen=True)
class FlopCount:
    forward: int  # FLOPs of one forward pass over the batch
    backward: int  # ≈ 2x forward
    per_sample: float  # (forward + backward) / batch: one training step's cost per window
    batch: int
    lstm_forward: int = 0  # the analytic LSTM part of ``forward``
    other_forward: int = 0  # what FlopCounterMode counted outside nn.LSTM modules

    @property
    def training_step(self) -> int:
        return self.forward + self.backward


def _lstm_modules(model: nn.Module) -> list[tuple[str, nn.LSTM]]:
    from torch import nn

    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.LSTM)]


def _model_device(model: nn.Module) -> torch.device:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _lstm_forward_flops(lstm: nn.LSTM, T: int, batch: int) -> int:
    if getattr(lstm, "proj_size", 0):
        # With projections the recurrent input is proj_size wide: W_hh is 4H x P, plus the H->P projection.
        H, P, d = lstm.hidden_size, lstm.proj_size, 2 if lstm.bidirectional else 1
        total = 0
        for layer in range(lstm.num_layers):
            layer_in = lstm.input_size if layer == 0 else P * d
            total += (8 * H * (layer_in + P) + 17 * H + 2 * H * P) * d
        return total * T * batch
    return lstm_flops(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional, T, batch)


def count_flops(model: nn.Module, batch: int, T: int, n_features: int | None = None) -> FlopCount:
    """Forward/backward FLOPs of one training step on a (batch, T, n_features) input.

    Generic: every nn.LSTM is counted analytically, every other op by torch's FlopCounterMode on a real
    forward pass of zeros (Linear, attention matmuls, ...). Anything FlopCounterMode attributes to an
    nn.LSTM module is dropped so a future torch that learns to count LSTMs is not counted twice.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if n_features is None:
        n_features = int(getattr(model, "hparams", {}).get("input_size", 0)) or None
    if n_features is None:
        raise ValueError("count_flops needs n_features for a model without hparams['input_size']")
    lstms = _lstm_modules(model)
    lstm_part = sum(_lstm_forward_flops(m, T, batch) for _, m in lstms)

    other = 0
    if not isinstance(model, torch.nn.LSTM):
        x = torch.zeros(batch, T, n_features, device=_model_device(model), dtype=_model_dtype(model))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
        finally:
            model.train(was_training)
        counts = counter.get_flop_counts()
        other = int(counter.get_total_flops())
        root = type(model).__name__
        for name, _ in lstms:
            key = f"{root}.{name}" if name else root
            other -= int(sum(counts.get(key, {}).values()))
    forward = lstm_part + max(other, 0)
    backward = 2 * forward
    return FlopCount(
        forward=forward,
        backward=backward,
        per_sample=(forward + backward) / batch,
        batch=batch,
        lstm_forward=lstm_part,
        other_forward=max(other, 0),
    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryEstimate:
    params: int  # bytes of parameters and buffers
    grads: int  # one gradient per trainable parameter
    optimizer_state: int  # AdamW: exp_avg + exp_avg_sq per trainable parameter
    activations: int  # tensors saved for backward over one batch
    total: int
    detail: dict[str, int] = field(default_factory=dict)


_OPTIMIZER_STATE_COPIES = {"adamw": 2, "adam": 2, "sgd": 0, "sgd_momentum": 1, "rmsprop": 1, "adagrad": 1}


def _lstm_activation_floats(lstm: nn.LSTM, T: int, batch: int, training: bool) -> int:
    """Floats an LSTM keeps for backward: per layer and direction, T*B*(4H gates + c + h); plus the
    layer-0 input (needed for dW_ih) and the inter-layer dropout masks when dropout is on."""
    d = 2 if lstm.bidirectional else 1
    H = lstm.hidden_size
    per_layer_dir = T * batch * (4 * H + H + H)
    total = per_layer_dir * d * lstm.num_layers + T * batch * lstm.input_size
    if training and lstm.dropout > 0 and lstm.num_layers > 1:
        total += (lstm.num_layers - 1) * T * batch * H * d
    return total


def _saved_bytes_outside_lstm(model: nn.Module, batch: int, T: int, n_features: int) -> int:
    """Bytes autograd saves for backward in one forward pass, outside nn.LSTM modules, measured with
    saved_tensors_hooks (parameters excluded, shared storages counted once)."""
    import torch

    lstms = [m for _, m in _lstm_modules(model)]
    inside = [0]
    handles = []
    for m in lstms:
        handles.append(m.register_forward_pre_hook(lambda *_: inside.__setitem__(0, inside[0] + 1)))
        handles.append(m.register_forward_hook(lambda *_: inside.__setitem__(0, inside[0] - 1)))
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if inside[0] == 0:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in param_ptrs:
                seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    x = torch.zeros(batch, T, n_features, device=_model_device(model), dtype=_model_dtype(model))
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        del out
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values())


def training_memory_bytes(
    model: nn.Module, batch: int, T: int, n_features: int | None = None, optimizer: str = "adamw"
) -> MemoryEstimate:
    """Memory of one training step: params + grads + optimizer state + activations saved for backward.

    Activations: the analytic LSTM count (``_lstm_activation_floats``) plus what autograd saves outside
    the LSTMs, measured on a forward pass of at most 8 windows and scaled linearly to ``batch``.
    Allocator slack, the CUDA context and cuDNN workspaces are not included.
    """
    if n_features is None:
        n_features = int(getattr(model, "hparams", {}).get("input_size", 0))
    key = optimizer.lower()
    if key not in _OPTIMIZER_STATE_COPIES:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(_OPTIMIZER_STATE_COPIES)}")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    params += sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    grads = trainable
    opt_state = trainable * _OPTIMIZER_STATE_COPIES[key]

    import torch

    from moola.train.record import rng_isolated

    elem = torch.empty((), dtype=_model_dtype(model)).element_size()
    lstm_bytes = sum(_lstm_activation_floats(m, T, batch, True) for _, m in _lstm_modules(model)) * elem
    probe = max(1, min(batch, 8))
    was_training = model.training
    # The probe forward runs in train mode: keep dropout's RNG draws and BatchNorm statistics out of the model.
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.train()
    try:
        with rng_isolated(_model_device(model)):
            other = _saved_bytes_outside_lstm(model, probe, T, n_features) * batch / probe
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    activations = int(lstm_bytes + other)
    return MemoryEstimate(
        params=params,
        grads=grads,
        optimizer_state=opt_state,
        activations=activations,
        total=params + grads + opt_state + activations,
        detail={"lstm_activations": int(lstm_bytes), "other_activations": int(other)},
    )


# --------------------------------------------------------------------------- measurements

_THROUGHPUT_CACHE: dict[tuple[str, int], float] = {}
_LATENCY_CACHE: dict[tuple[Any, ...], float] = {}


def _as_device(device: Any) -> torch.device:
    # Self-contained (no moola import): the benchmark gate loads this file on its own.
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_throughput(
    device: Any = "cpu", size: int | None = None, repeats: int = 8, fresh: bool = False
) -> float:
    """Peak float32 matmul FLOP/s on ``device`` (``moola.train.record.measure_matmul_flops``: burn-in, then
    the best of ``repeats`` timed batches).

    The best (not the mean) because the bound built on it must never be too high: a model cannot run its
    matmuls faster than a large square matmul does, and on a shared machine a neighbour's burst only ever
    makes a timing slower. The process keeps the best value it ever measured (``fresh`` measures again and
    still keeps the max). ~10-40 ms on a 2-core CPU (size 512).
    """
    from moola.train.record import measure_matmul_flops

    dev = _as_device(device)
    n = int(size or (4096 if dev.type == "cuda" else 512))
    key = (str(dev), n)
    if key in _THROUGHPUT_CACHE and not fresh:
        return _THROUGHPUT_CACHE[key]
    # Enough products per timing that timer resolution and launch latency do not matter.
    budget = 5e8 if dev.type == "cpu" else 2e12
    best = measure_matmul_flops(dev, n, repeats, flops_per_timing=budget, min_products=2, burn_in=3)
    best = max(best, _THROUGHPUT_CACHE.get(key, 0.0))
    _THROUGHPUT_CACHE[key] = best
    return best


def measure_step_latency(
    device: Any,
    batch: int,
    hidden: int,
    input_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    repeats: int = 9,
    fresh: bool = False,
) -> float:
    """Seconds per time step of an nn.LSTM forward (inference mode) of this shape: the sequential floor
    (``moola.train.record.measure_lstm_step_s``, the marginal cost of extra steps).

    Training runs this much per step forward and at least as much again per step backward, so
    ``2 * T * latency`` per batch is a lower bound. The process keeps the smallest value it measured.
    """
    from moola.train.record import measure_lstm_step_s

    dev = _as_device(device)
    key = (str(dev), batch, hidden, input_size, num_layers, bidirectional)
    if key in _LATENCY_CACHE and not fresh:
        return _LATENCY_CACHE[key]
    per_step = measure_lstm_step_s(dev, input_size, hidden, batch, num_layers, bidirectional, repeats)
    per_step = min(per_step, _LATENCY_CACHE.get(key, math.inf))
    _LATENCY_CACHE[key] = per_step
    return per_step


def measure_training_step(model: nn.Module, X: torch.Tensor, y: torch.Tensor, repeats: int = 3) -> float:
    """Best wall time of one plain optimizer step (AdamW: zero_grad, forward, cross-entropy, backward, step) of a
    copy of ``model`` on the resident batch (X, y), on their device, synchronized; the first step warms up.

    Not a bound: the per-step cost of dispatching and launching every op, which the FLOP and sequential-step
    floors leave out. On a GPU it dominates a small model's epoch (H200, jade_compact, batch 16: 34x the bound).
    """
    import copy

    import torch
    import torch.nn.functional as F

    from moola.train.record import rng_isolated

    dev = X.device
    with rng_isolated(dev):
        m = copy.deepcopy(model).to(dev).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        best = math.inf
        for i in range(repeats + 1):
            _sync(dev)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(X), y).backward()
            opt.step()
            _sync(dev)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


@dataclass(frozen=True)
class Bound:
    """A lower bound on the wall time of one training epoch: max(compute floor, sequential floor)."""

    seconds: float
    flops_part: float  # training FLOPs of the epoch / measured peak matmul FLOP/s
    latency_part: float  # sequential LSTM steps of the epoch * measured per-step time
    evidence: dict[str, Any] = field(default_factory=dict)


def epoch_time_lower_bound(
    model: nn.Module,
    n_samples: int,
    batch: int,
    T: int,
    n_features: int | None = None,
    device: Any = "cpu",
    fresh: bool = False,
    peak_flops_per_s: float | None = None,
    step_latency_s: dict[str, float] | None = None,
) -> Bound:
    """Seconds one training epoch (forward + backward over ``n_samples`` windows in batches of ``batch``)
    cannot beat on ``device``.

    flops_part:   epoch FLOPs (count_flops per sample x n) / peak matmul FLOP/s measured here. Real layers
                  run below peak (small matmuls, elementwise ops), so this is a floor.
    latency_part: an LSTM's time steps depend on each other: per full batch it runs T steps forward and T
                  backward, each no faster than the measured per-step time of the same LSTM shape at the
                  same batch (see ``measure_step_latency``); the partial last batch is not counted.
    The bound is the max of the two (both are floors); realistic CPU epochs land ~1-20x above it, a
    small model's GPU epochs far higher (kernel launches: see ``measure_training_step``).
    ``fresh`` re-measures the machine (keeping the most favourable value seen), e.g. to confirm a FAIL.
    ``peak_flops_per_s`` / ``step_latency_s`` (per LSTM module name, ``"lstm"`` for an unnamed root) replace
    the measurements: an audit judges a run by the speeds recorded on the machine that trained it.
    """
    dev = _as_device(device)
    flops = count_flops(model, min(batch, max(n_samples, 1)), T, n_features)
    epoch_flops = flops.per_sample * n_samples
    peak = peak_flops_per_s if peak_flops_per_s is not None else measure_matmul_throughput(dev, fresh=fresh)
    flops_part = epoch_flops / peak if peak > 0 else 0.0

    full_batches = n_samples // batch if batch > 0 else 0
    per_step_total = 0.0
    lstm_evidence = []
    for name, m in _lstm_modules(model):
        if step_latency_s is not None:
            per_step = float(step_latency_s.get(name or "lstm", 0.0))
        else:
            per_step = measure_step_latency(
                dev, batch, m.hidden_size, m.input_size, m.num_layers, m.bidirectional, fresh=fresh
            )
        per_step_total += per_step
        lstm_evidence.append(
            f"{name or 'lstm'}: {m.num_layers} layer(s) x {'2 directions' if m.bidirectional else '1 direction'}"
            f", h{m.hidden_size}: {per_step * 1e6:.1f} us per time step at batch {batch}"
        )
    sequential_steps = full_batches * 2 * T  # forward + backward chain per batch
    latency_part = sequential_steps * per_step_total
    evidence = {
        "flops_per_sample_fwd_bwd": flops.per_sample,
        "flops_per_epoch": epoch_flops,
        "peak_flops_per_s": peak,
        "step_seconds": per_step_total,
        "sequential_steps": sequential_steps,
        "full_batches": full_batches,
        "device": str(dev),
        "lstm": lstm_evidence,
    }
    return Bound(
        seconds=max(flops_part, latency_part),
        flops_part=flops_part,
        latency_part=latency_part,
        evidence=evidence,
    )


def format_flops(value: float) -> str:
    """Human-readable FLOP count: 1.23 GFLOP."""
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} FLOP"


def format_seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.1f} us"
