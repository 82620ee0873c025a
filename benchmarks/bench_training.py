"""Training-side benchmarks, one set per registered model (asv ``params``), on ``MOOLA_BENCH_DEVICE``.

time_    one training epoch on the embedded default set (174 windows, the trainer's batch size, 1
         thread) and one eval-mode forward pass of one batch
peakmem_ one training epoch (asv: peak RSS of the benchmark process; not gated, see below)
track_   parameters; analytic training FLOPs per epoch; tensor bytes allocated per epoch and peak live
         tensor bytes during an epoch (benchmarks/_memory.py: exact on CPU); GPU peak allocated bytes
         per epoch (skipped without CUDA). Trained-model quality is benchmarks/bench_quality.py: a
         distribution over fresh seeds, not one 8-epoch seed compared exactly.
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks._common import (
    Prepared,
    batch_size,
    registered_models,
    require_device,
    sync,
)
from benchmarks._memory import tensor_memory

MODELS = registered_models()


class TrainEpoch:
    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]
    timeout = 300
    # An epoch of the legacy model takes ~0.7 s: a few repeats are plenty on a quiet machine.
    repeat = (3, 10, 30.0)
    number = 1
    warmup_time = 0.5

    def setup(self, model: str) -> None:
        self.p = Prepared(model)
        self.model = self.p.model()
        self.p.epoch(self.model)  # first epoch pays one-off allocation / kernel selection costs

    def time_epoch(self, model: str) -> None:
        self.p.epoch(self.model)

    # The two big models' 1.4-s epochs vary ~5% pair to pair: 10 pairs resolve a 20% slowdown, and the
    # 10 saved pairs keep the whole default gate under 5 min on 2 cores.
    time_epoch.gate_rounds = {"enhanced_simple_lstm": 10, "jade": 10}  # type: ignore[attr-defined]  # noqa: RUF012

    def peakmem_epoch(self, model: str) -> None:
        self.p.epoch(self.model)

    # asv keeps its history. The gate does not judge it: the process baseline (torch and the model's
    # setup: 370-450 MB, docs/benchmarks.md) dwarfs an epoch's 18-60 MB of live tensors, so few memory
    # changes of an epoch could move peak RSS past a 10% factor. The gate judges an epoch's memory by the
    # exact track_peak_live_bytes_epoch counter instead (and saves ~90 s of 1.4-s epochs per run).
    peakmem_epoch.gate = False  # type: ignore[attr-defined]


class Forward:
    """Inference: one eval-mode forward pass of one training batch under no_grad."""

    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]

    def setup(self, model: str) -> None:
        import torch

        self.p = Prepared(model)
        self.model = self.p.model().eval()
        self.batch = self.p.X[: batch_size()].contiguous()
        self.no_grad = torch.no_grad
        with self.no_grad():
            self.model(self.batch)

    def time_forward_batch(self, model: str) -> None:
        with self.no_grad():
            self.model(self.batch)
        sync(self.p.device)


class Counters:
    """Deterministic counters: any change is a real change of the model or the training loop."""

    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]
    timeout = 300

    def setup(self, model: str) -> None:
        self.p = Prepared(model)
        self._epoch_memory = None

    def _memory(self) -> object:
        # One measured epoch feeds both byte counters (a fresh seeded model, so it is the same epoch).
        if self._epoch_memory is None:
            m = self.p.model()
            self._epoch_memory = tensor_memory(lambda: self.p.epoch(m))
        return self._epoch_memory

    def track_parameters(self, model: str) -> int:
        return int(sum(t.numel() for t in self.p.model().parameters()))

    track_parameters.unit = "parameters"  # type: ignore[attr-defined]

    def track_flops_per_epoch(self, model: str) -> int:
        return self.p.flops_per_epoch(self.p.model())

    track_flops_per_epoch.unit = "FLOP"  # type: ignore[attr-defined]

    def track_alloc_bytes_per_epoch(self, model: str) -> int:
        """Bytes of tensor storage the epoch's aten ops created (forward, backward, optimizer)."""
        return int(self._memory().allocated)  # type: ignore[attr-defined]

    track_alloc_bytes_per_epoch.unit = "bytes"  # type: ignore[attr-defined]

    def track_peak_live_bytes_epoch(self, model: str) -> int:
        """Most bytes of the epoch's tensor storages alive at once (graphs kept alive show here)."""
        return int(self._memory().peak_live)  # type: ignore[attr-defined]

    track_peak_live_bytes_epoch.unit = "bytes"  # type: ignore[attr-defined]


class Gpu:
    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]

    def setup(self, model: str) -> None:
        self.p = Prepared(model, device=require_device("cuda"))

    def track_gpu_peak_alloc_bytes_epoch(self, model: str) -> int:
        import torch

        m = self.p.model()
        self.p.epoch(m)  # warm-up: cuDNN plans and the caching allocator's pools
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.p.epoch(m)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())

    track_gpu_peak_alloc_bytes_epoch.unit = "bytes"  # type: ignore[attr-defined]
