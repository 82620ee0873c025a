"""gpu check and NVML probes, through a fake NVML module and a fake torch.cuda (this machine has no GPU)."""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diagnostics.checks.gpu import (
    BurstResult,
    NvmlMemory,
    burst_epochs,
    gpu_check,
    memory_verdict,
    placement_verdict,
    training_burst,
    utilization_verdict,
)
from diagnostics.context import DiagContext, Thresholds
from diagnostics.nvml import _REASONS, NvmlProbe, NvmlUnavailable, Sample, SamplerSummary, UtilizationSampler
from diagnostics.result import Status
from moola.config import TrainConfig
from moola.data.synthetic import generate
from moola.features import transform

MIB = 2**20


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The subset of pynvml the probe uses; errors and readings are configurable per test."""

    NVMLError = NVMLError

    def __init__(
        self,
        *,
        init_error=None,
        count=1,
        util=(75, 40),
        fail_util_after=None,
        name=b"NVIDIA H100 80GB HBM3",
        used=lambda: 1200 * MIB,
    ):
        self.used = used
        self.init_error = init_error
        self.count = count
        self.util = util
        self.fail_util_after = fail_util_after
        self.util_calls = 0
        self.name = name
        self.inits = self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error is not None:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        if i >= self.count:
            raise NVMLError(2)
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        return self.name

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used(), total=80 * 1024 * MIB, free=0)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [
            SimpleNamespace(pid=1, usedGpuMemory=5 * MIB),
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=530 * MIB),
        ]

    def nvmlDeviceGetUtilizationRates(self, h):
        self.util_calls += 1
        if self.fail_util_after is not None and self.util_calls > self.fail_util_after:
            raise NVMLError(15)  # GPU_IS_LOST
        return SimpleNamespace(gpu=self.util[0], memory=self.util[1])


class FakeCuda:
    """The subset of torch.cuda the check uses, with the allocator's counters settable."""

    def __init__(self, available=True, initialized=False, allocated=0, peak=0, reserved=0):
        self.available = available
        self.initialized = initialized
        self.allocated, self.peak, self.reserved = allocated, peak, reserved
        self.syncs = 0

    def is_available(self):
        return self.available

    def is_initialized(self):
        return self.initialized

    def current_device(self):
        return 0

    def get_device_name(self, i):
        return "NVIDIA H100 80GB HBM3"

    def reset_peak_memory_stats(self):
        pass

    def synchronize(self):
        self.syncs += 1
        self.initialized = True

    def memory_allocated(self):
        return self.allocated

    def max_memory_allocated(self):
        return self.peak

    def memory_reserved(self):
        return self.reserved


@pytest.fixture(scope="module")
def ctx():
    ds = generate(24, seed=3)
    return DiagContext(
        dataset=ds, train_idx=np.arange(18), test_idx=np.arange(18, 24), model_name="jade_compact"
    )


def burst(**overrides):
    base = dict(
        n_forward=200,
        seconds=2.0,
        input_devices=["cuda:0"],
        param_devices=["cuda:0"],
        peak_allocated=30 * MIB,
        expected_bytes=12 * MIB,
        expected_detail={"params": MIB},
        data_bytes=MIB,
        batch_size=16,
        epochs=23,
        reserved=40 * MIB,
        sampler=SamplerSummary([Sample(i * 0.05, 70.0, 1200 * MIB) for i in range(40)]),
    )
    base.update(overrides)
    return lambda *_: BurstResult(**base)


# --------------------------------------------------------------------------- NVML probe


@pytest.mark.parametrize(
    ("code", "words"), [(12, "not found"), (9, "driver not loaded"), (999, "NVML error: NVMLError")]
)
def test_probe_open_turns_nvml_errors_into_reasons(code, words):
    fake = FakeNvml(init_error=NVMLError(code))
    with pytest.raises(NvmlUnavailable, match=words):
        NvmlProbe(fake).open()


def test_missing_nvidia_ml_py_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py is not installed"):
        NvmlProbe().open()


def test_real_nvml_on_this_machine_agrees_with_torch():
    """Whatever this machine has: NVML and torch must agree on whether there is a GPU, and a missing NVML
    must come with one of the explained reasons (not an empty or raw message)."""
    import torch

    try:
        with NvmlProbe() as probe:
            count = probe.device_count()
    except NvmlUnavailable as exc:
        reason = str(exc)
        assert reason in _REASONS.values() or reason.startswith(
            ("nvidia-ml-py is not installed", "NVML error: ")
        )
        assert not torch.cuda.is_available(), f"torch sees a GPU but NVML is unavailable: {reason}"
    else:
        # NVML enumerates every GPU; torch only the visible ones.
        assert count >= torch.cuda.device_count()
        assert (count > 0) or not torch.cuda.is_available()


def test_probe_queries_and_single_shutdown():
    fake = FakeNvml()
    with NvmlProbe(fake) as probe:
        assert probe.device_count() == 1
        assert probe.name(0) == "NVIDIA H100 80GB HBM3"  # bytes from old bindings decoded
        assert probe.memory(0).total == 80 * 1024 * MIB
        assert probe.process_memory(0) == 530 * MIB
        assert probe.process_memory(0, pid=-5) is None
        assert probe.utilization(0) == (75.0, 40.0)
    assert (fake.inits, fake.shutdowns) == (1, 1)
    probe.close()
    assert fake.shutdowns == 1


def test_probe_versions_and_what_an_old_binding_cannot_say():
    class Versioned(FakeNvml):
        def nvmlSystemGetDriverVersion(self):
            return b"580.159.04"  # old bindings return bytes

        def nvmlSystemGetNVMLVersion(self):
            return "13.580.159.04"

        def nvmlSystemGetCudaDriverVersion_v2(self):
            return 13000

    with NvmlProbe(Versioned()) as probe:
        assert probe.versions() == {"driver": "580.159.04", "nvml": "13.580.159.04", "cuda_driver": "13.0"}
    with NvmlProbe(FakeNvml()) as probe:  # none of the calls exists
        assert probe.versions() == {"driver": None, "nvml": None, "cuda_driver": None}


# --------------------------------------------------------------------------- sampler


def test_sampler_collects_and_stops():
    probe = NvmlProbe(FakeNvml()).open()
    with UtilizationSampler(probe, interval_s=0.01) as sampler:
        time.sleep(0.1)
    summary = sampler.summary
    assert not sampler.running and summary.stopped_cleanly
    assert summary.n >= 3 and summary.mean_util == 75.0 and summary.error is None


def test_sampler_records_errors_mid_sampling_and_stops():
    probe = NvmlProbe(FakeNvml(fail_util_after=3)).open()
    sampler = UtilizationSampler(probe, interval_s=0.005).start()
    deadline = time.time() + 2
    while sampler.running and time.time() < deadline:
        time.sleep(0.01)
    summary = sampler.stop()
    assert summary.n == 3
    assert "NVMLError" in summary.error
    assert not sampler.running


def test_sampler_stops_when_the_body_raises():
    probe = NvmlProbe(FakeNvml()).open()
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="boom"), UtilizationSampler(probe, interval_s=0.01) as sampler:
        raise RuntimeError("boom")
    assert not sampler.running
    assert threading.active_count() == before


# --------------------------------------------------------------------------- verdicts (pure)


def test_placement_verdicts():
    ok = placement_verdict(["cuda:0"], {"cuda:0"}, 9)
    assert ok.status is Status.PASS and "inputs of 9 forwards on cuda:0" in ok.measured
    cpu_batches = placement_verdict(["cuda:0"], {"cpu"}, 9, "RuntimeError: not at the same device")
    assert cpu_batches.status is Status.FAIL and "on cpu" in cpu_batches.measured
    assert "xb.to(device" in cpu_batches.hint and "model.to" not in cpu_batches.hint
    assert any("same device" in e for e in cpu_batches.evidence)
    mixed = placement_verdict(["cuda:0"], ["cuda:0", "cpu"], 9)  # e.g. a last evaluation pass on the CPU
    assert mixed.status is Status.FAIL and "cpu, cuda:0" in mixed.measured
    cpu_model = placement_verdict(["cpu"], {"cpu"}, 9)
    assert cpu_model.status is Status.FAIL and "model.to(device)" in cpu_model.hint
    # Every forward on cuda, parameters back on the CPU afterwards: trained on the GPU, then moved back.
    moved_back = placement_verdict(["cpu"], {"cuda:0"}, 9)
    assert moved_back.status is Status.PASS and "moved off it after training" in moved_back.evidence[0]
    assert placement_verdict([], set(), 0).status is Status.FAIL
    raised = placement_verdict(["cuda:0"], {"cuda:0"}, 9, "ValueError: bad")
    assert raised.status is Status.FAIL and "then the fit raised" in raised.measured


def test_memory_verdict_judges_the_burst_peak_and_explains_nvml():
    nv = NvmlMemory(
        process_bytes=530 * MIB,
        device_before_cuda=0,
        device_with_context=500 * MIB,
        device_total=80 * 1024 * MIB,
    )
    ok = memory_verdict(
        140 * MIB,
        12 * MIB,
        1 * MIB,
        {"params": MIB},
        baseline_bytes=100 * MIB,  # earlier checks' tensors: not the burst's
        workspace_bytes=32 * MIB,
        reserved_bytes=160 * MIB,
        nvml=nv,
    )
    assert ok.status is Status.PASS and "40.0 MiB" in ok.measured and "3.1x" in ok.measured
    assert ok.values["own_peak"] == 40 * MIB and ok.values["context_bytes"] == 500 * MIB
    ev = " | ".join(ok.evidence)
    assert "+500.0 MiB" in ev and "CUDA context" in ev  # the context, measured before/after creating it
    assert "torch reserved 160.0 MiB + 370.0 MiB outside torch's allocator" in ev
    assert "cuBLAS workspace 32.0 MiB" in ev
    bloated = memory_verdict(2048 * MIB, 12 * MIB, 1 * MIB)
    assert bloated.status is Status.WARN and bloated.values["ratio"] == pytest.approx(2048 / 13)
    # The factor comes from Thresholds (listed in the report's meta), not a module constant.
    strict = memory_verdict(40 * MIB, 12 * MIB, 1 * MIB, thresholds=Thresholds(gpu_memory_warn_factor=2.0))
    assert strict.status is Status.WARN and "WARN above 2x" in strict.expected
    # Without the process in NVML's list (a container's PID namespace): the device-wide reading instead.
    hidden = memory_verdict(
        40 * MIB,
        12 * MIB,
        1 * MIB,
        reserved_bytes=60 * MIB,
        nvml=NvmlMemory(device_after_burst=900 * MIB, device_total=MIB * 1024),
    )
    line = next(e for e in hidden.evidence if "does not list this process" in e)
    assert "900.0 MiB of 1,024.0 MiB = torch reserved 60.0 MiB + 840.0 MiB outside torch's allocator" in line


def test_utilization_verdict():
    busy = SamplerSummary([Sample(i, 60.0, 0) for i in range(10)])
    idle = SamplerSummary([Sample(i, 2.0, 0) for i in range(10)])
    ok = utilization_verdict(busy, 2.0, 200)
    assert ok.status is Status.PASS and "not SM occupancy" in ok.evidence[0]
    low = utilization_verdict(idle, 2.0, 200)
    assert low.status is Status.WARN and "a kernel running 2% of the time" in low.measured
    assert utilization_verdict(idle, 2.0, 200, Thresholds(gpu_min_mean_util=1.0)).status is Status.PASS
    assert utilization_verdict(SamplerSummary([Sample(0, 1.0, 0)]), 0.01, 5).status is Status.SKIP
    broken = utilization_verdict(SamplerSummary([], error="NVMLError: lost"), 2.0, 200)
    assert broken.status is Status.SKIP and "lost" in broken.measured


def test_burst_epochs_targets_a_few_hundred_steps():
    assert burst_epochs(139, 16, 200, 50) == 23  # 9 steps/epoch
    assert burst_epochs(10_000, 16, 200, 50) == 1
    assert burst_epochs(16, 16, 200, 50) == 50  # capped


# --------------------------------------------------------------------------- the check


def test_skip_on_this_machine_names_both_reasons(ctx):
    (r,) = gpu_check(ctx, nvml_module=FakeNvml(init_error=NVMLError(12)))
    assert r.status is Status.SKIP
    assert "CUDA" in r.measured and "not found" in r.measured


def test_skip_without_devices_and_with_cpu_requested(ctx):
    (r,) = gpu_check(ctx, nvml_module=FakeNvml(count=0), cuda=FakeCuda(available=False))
    assert r.status is Status.SKIP and "0 GPUs" in r.measured
    ctx_cpu = DiagContext(dataset=ctx.dataset, train_idx=ctx.train_idx, test_idx=ctx.test_idx, device="cpu")
    (r,) = gpu_check(ctx_cpu, nvml_module=FakeNvml())
    assert r.status is Status.SKIP and "--device cpu" in r.measured


def test_full_path_with_fakes_passes_and_closes_nvml(ctx):
    cuda = FakeCuda()
    # Device memory grows by the CUDA context once this process creates it (cuda.synchronize here).
    fake = FakeNvml(used=lambda: (1200 if cuda.initialized else 700) * MIB)
    found = {r.name: r for r in gpu_check(ctx, nvml_module=fake, cuda=cuda, burst=burst())}
    assert {r.status for r in found.values()} == {Status.PASS}
    assert "NVIDIA H100" in found["device"].measured and "1,200.0 MiB" in found["device"].measured
    memory = found["memory"]
    assert memory.values["process_bytes"] == 530 * MIB and memory.values["reserved_bytes"] == 40 * MIB
    assert memory.values["context_bytes"] == 500 * MIB  # 700 MiB before CUDA, 1,200 MiB with the context
    assert "not SM occupancy" in " ".join(found["utilization"].evidence)
    assert fake.inits == fake.shutdowns == 1


def test_context_already_created_is_not_measured_again(ctx):
    """In check-all the sanity check creates the CUDA context first: no before/after reading to compare."""
    cuda = FakeCuda(initialized=True)
    found = {r.name: r for r in gpu_check(ctx, nvml_module=FakeNvml(), cuda=cuda, burst=burst())}
    assert found["memory"].values["context_bytes"] is None
    assert found["memory"].values["device_before_cuda"] is None


def test_planted_faults_with_fakes(ctx):
    found = {
        r.name: r
        for r in gpu_check(
            ctx,
            nvml_module=FakeNvml(),
            cuda=FakeCuda(),
            burst=burst(
                input_devices=["cpu"],
                peak_allocated=4096 * MIB,
                sampler=SamplerSummary([Sample(i, 1.0, 0) for i in range(40)]),
            ),
        )
    }
    assert found["placement"].status is Status.FAIL
    assert found["memory"].status is Status.WARN
    assert found["utilization"].status is Status.WARN


def test_check_uses_the_contexts_thresholds(ctx):
    strict = DiagContext(
        dataset=ctx.dataset,
        train_idx=ctx.train_idx,
        test_idx=ctx.test_idx,
        thresholds=Thresholds(gpu_memory_warn_factor=1.5, gpu_min_mean_util=80.0),
    )
    found = {r.name: r for r in gpu_check(strict, nvml_module=FakeNvml(), cuda=FakeCuda(), burst=burst())}
    assert found["memory"].status is Status.WARN  # 30 MiB vs 13 MiB expected: 2.3x > 1.5x
    assert found["utilization"].status is Status.WARN  # 70% < 80%


def test_cuda_without_nvml_still_checks_placement_and_memory(ctx):
    found = {
        r.name: r
        for r in gpu_check(ctx, nvml_module=FakeNvml(init_error=NVMLError(9)), cuda=FakeCuda(), burst=burst())
    }
    assert found["placement"].status is Status.PASS
    assert found["memory"].status is Status.PASS and found["memory"].values["process_bytes"] is None
    assert found["utilization"].status is Status.SKIP and "driver not loaded" in found["utilization"].measured


def burst_ctx(ctx, fit=None, **config):
    return DiagContext(
        dataset=ctx.dataset,
        train_idx=ctx.train_idx,
        test_idx=ctx.test_idx,
        model_name="jade_compact",
        config=TrainConfig(**config),
        fit=fit,
        thresholds=Thresholds(gpu_burst_steps=4),
    )


def test_training_burst_trains_the_model_the_other_checks_train(ctx):
    """One model recipe: the features in effect (an override too), the input standardization fitted to the
    training rows, the pointer head frozen -- as diagnostics.training.fresh_model builds it for sanity."""
    seen = {}

    def user_fit(model, X, y, epochs, device):
        seen.update(shape=tuple(X.shape), mean=model.input_mean.clone(), pointer=model.pointer_head_enabled)
        model(X[:4])

    training_burst(burst_ctx(ctx, user_fit, features="ohlc4"), "cpu", FakeCuda(), None)
    assert seen["shape"] == (18, 105, 4)
    want = torch.from_numpy(transform(ctx.dataset.X[ctx.train_idx], "ohlc4")).reshape(-1, 4).mean(0)
    assert torch.allclose(seen["mean"], want, atol=1e-5)
    assert seen["pointer"] is False


def test_training_burst_sees_where_batches_live(ctx):
    """The real burst with a user fit that forgets the device: the Instrument records the input's device."""
    calls = []

    def user_fit(model, X, y, epochs, device):
        calls.append((tuple(X.shape), epochs, str(device)))
        model(X[:4])  # "forgets" to move anything to the device

    cuda = FakeCuda(allocated=3 * MIB, peak=9 * MIB, reserved=20 * MIB)
    result = training_burst(burst_ctx(ctx, user_fit), "cpu", cuda, None)
    assert calls == [((18, 105, 11), 2, "cpu")]  # 4 steps at 2 steps per epoch
    assert result.input_devices == ["cpu"] and result.param_devices == ["cpu"] and result.n_forward == 1
    assert result.expected_bytes > 0 and result.fit_error is None
    assert (result.baseline_allocated, result.own_peak, result.reserved) == (3 * MIB, 6 * MIB, 20 * MIB)
    verdict = placement_verdict(result.param_devices, result.input_devices, result.n_forward)
    assert verdict.status is Status.FAIL


def test_training_burst_with_the_builtin_trainer(ctx):
    """No --fit: moola's fit_tensors with the context's batch size; the Instrument counts its forwards."""
    result = training_burst(burst_ctx(ctx, batch_size=6), "cpu", FakeCuda(), None)
    assert result.fit_error is None and result.epochs == 2  # 18 rows / 6 = 3 steps per epoch, 4 steps asked
    assert result.batch_size == 6 and result.n_forward >= 6 and result.input_devices == ["cpu"]


def test_training_burst_records_a_fit_that_raises(ctx):
    def user_fit(model, X, y, epochs, device):
        raise RuntimeError("Input and parameter tensors are not at the same device")

    sampler = NvmlSamplerStub()
    result = training_burst(burst_ctx(ctx, user_fit), "cpu", FakeCuda(), sampler)
    assert "same device" in result.fit_error and result.n_forward == 0
    assert not sampler.running  # the sampler is stopped even though the fit raised
    assert placement_verdict([], [], 0, result.fit_error).status is Status.FAIL


class NvmlSamplerStub(UtilizationSampler):
    def __init__(self):
        super().__init__(NvmlProbe(FakeNvml()).open(), interval_s=0.01)
