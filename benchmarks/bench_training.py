"""Training-side benchmarks, one set per registered model (asv ``params``).

time_    one training epoch on the embedded default set (174 windows, batch 16, 1 thread) and one
         forward pass of a batch of 16 in eval mode
peakmem_ one training epoch (asv: peak RSS of the benchmark process, torch import included)
track_   parameters; analytic training FLOPs per epoch; bytes of tensor storage allocated per epoch
         (every aten op's fresh outputs, counted under a TorchDispatchMode: deterministic on CPU);
         validation accuracy after a fixed seeded 8-epoch training; GPU peak allocated bytes per epoch
         (skipped, via NotImplementedError, without CUDA)
"""

from __future__ import annotations

from typing import ClassVar

from benchmarks._common import (
    BATCH,
    SEED,
    SHORT_TRAINING_EPOCHS,
    Prepared,
    gate_worker,
    physics,
    registered_models,
    require,
)

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

    def peakmem_epoch(self, model: str) -> None:
        self.p.epoch(self.model)


class Forward:
    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]

    def setup(self, model: str) -> None:
        import torch

        self.p = Prepared(model)
        self.model = self.p.model().eval()
        self.batch = self.p.X[:BATCH].contiguous()
        self.no_grad = torch.no_grad
        with self.no_grad():
            self.model(self.batch)

    def time_forward_batch(self, model: str) -> None:
        with self.no_grad():
            self.model(self.batch)


class Counters:
    """Deterministic counters: any change is a real change of the model or the training loop."""

    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]
    timeout = 300

    def setup(self, model: str) -> None:
        self.p = Prepared(model)

    def track_parameters(self, model: str) -> int:
        return int(sum(t.numel() for t in self.p.model().parameters()))

    track_parameters.unit = "parameters"  # type: ignore[attr-defined]

    def track_flops_per_epoch(self, model: str) -> int:
        flops = gate_worker().flops_per_epoch(physics(), self.p.model(), self.p.n, BATCH, self.p.T, self.p.F)
        if flops is None:
            raise NotImplementedError("diagnostics/physics.py has no count_flops")
        return int(flops)

    track_flops_per_epoch.unit = "FLOP"  # type: ignore[attr-defined]

    def track_alloc_bytes_per_epoch(self, model: str) -> int:
        m = self.p.model()
        counter = gate_worker().AllocCounter()
        with counter:
            self.p.epoch(m)
        return int(counter.bytes)

    track_alloc_bytes_per_epoch.unit = "bytes"  # type: ignore[attr-defined]

    def track_val_accuracy(self, model: str) -> float:
        """Validation accuracy after SHORT_TRAINING_EPOCHS seeded epochs on an 80/20 random split."""
        TrainConfig = require("moola.config:TrainConfig")
        fit = require("moola.train.trainer:fit")
        make_split = require("moola.data.splits:make_split")
        transform = require("moola.features:transform")
        get_spec = require("moola.models:get_spec")
        ds = self.p.ds
        train_idx, val_idx = make_split(ds, "random", test_fraction=0.2, seed=SEED)
        feats = ds.with_features(transform(ds.X, get_spec(model).feature_set))
        config = TrainConfig(
            model=model,
            n_epochs=SHORT_TRAINING_EPOCHS,
            device="cpu",
            seed=SEED,
            early_stopping_patience=0,
        )
        result = fit(self.p.model(), feats.subset(train_idx), feats.subset(val_idx), config)
        return float(result.history[-1]["val_acc"])

    track_val_accuracy.unit = "accuracy"  # type: ignore[attr-defined]


class Gpu:
    params: ClassVar[list[list[str]]] = [MODELS]
    param_names: ClassVar[list[str]] = ["model"]

    def setup(self, model: str) -> None:
        import torch

        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")  # asv: skipped
        self.p = Prepared(model, device="cuda")

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
