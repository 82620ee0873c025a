"""gpu check and NVML probes, through a fake NVML module and a fake torch.cuda (this machine has no GPU)."""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from diagnostics.checks.gpu import (
    BurstResult,
    burst_epochs,
    gpu_check,
    memory_verdict,
    placement_verdict,
    training_burst,
    utilization_verdict,
)
from diagnostics.context import DiagContext
from diagnostics.nvml import NvmlProbe, NvmlUnavailable, Sample, SamplerSummary, UtilizationSampler
from diagnostics.result import Status
from moola.data.synthetic import generate

MIB = 2**20


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The subset of pynvml the probe uses; errors and readings are configurable per test."""

    NVMLError = NVMLError

    def __init__(
        self, *, init_error=None, count=1, util=(75, 40), fail_util_after=None, name=b"NVIDIA H100 80GB HBM3"
    ):
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
        return SimpleNamespace(used=1200 * MIB, total=80 * 1024 * MIB, free=0)

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
    def __init__(self, available=True):
        self.available = available

    def is_available(self):
        return self.available

    def current_device(self):
        return 0

    def get_device_name(self, i):
        return "NVIDIA H100 80GB HBM3"

    def reset_peak_memory_stats(self):
        pass

    def synchronize(self):
        pass

    def max_memory_allocated(self):
        return 0


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
        input_devices={"cuda:0": 200},
        param_devices=["cuda:0"],
        forward_param_devices={"cuda:0": 200},
        peak_allocated=30 * MIB,
        expected_bytes=12 * MIB,
        expected_detail={"params": MIB},
        data_bytes=MIB,
        batch_size=16,
        epochs=23,
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


def test_real_nvml_on_this_machine_is_unavailable_or_works():
    try:
        with NvmlProbe() as probe:
            assert probe.device_count() >= 0
    except NvmlUnavailable as exc:
        assert str(exc)  # a reason, e.g. the driver library is missing


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
    ok = placement_verdict(["cuda:0"], {"cuda:0": 9}, {"cuda:0": 9}, 9)
    assert ok.status is Status.PASS
    cpu_batches = placement_verdict(
        ["cuda:0"], {"cpu": 9}, {"cuda:0": 9}, 9, "RuntimeError: not at the same device"
    )
    assert cpu_batches.status is Status.FAIL and "0/9 batches on cuda" in cpu_batches.measured
    assert ".to(device" in cpu_batches.hint and any("same device" in e for e in cpu_batches.evidence)
    cpu_model = placement_verdict(["cpu"], {"cpu": 9}, {"cpu": 9}, 9)
    assert cpu_model.status is Status.FAIL and "model.to(device)" in cpu_model.hint
    assert placement_verdict([], {}, {}, 0).status is Status.FAIL


def test_memory_verdict_compares_with_the_analytic_footprint():
    ok = memory_verdict(40 * MIB, 12 * MIB, 1 * MIB, {"params": MIB}, process_bytes=530 * MIB)
    assert ok.status is Status.PASS and "3.1x" in ok.measured
    assert any("CUDA context" in e for e in ok.evidence)
    bloated = memory_verdict(2048 * MIB, 12 * MIB, 1 * MIB)
    assert bloated.status is Status.WARN and bloated.values["ratio"] == pytest.approx(2048 / 13)


def test_utilization_verdict():
    busy = SamplerSummary([Sample(i, 60.0, 0) for i in range(10)])
    idle = SamplerSummary([Sample(i, 2.0, 0) for i in range(10)])
    assert utilization_verdict(busy, 2.0, 200).status is Status.PASS
    low = utilization_verdict(idle, 2.0, 200)
    assert low.status is Status.WARN and "mean 2%" in low.measured
    assert utilization_verdict(SamplerSummary([Sample(0, 1.0, 0)]), 0.01, 5).status is Status.SKIP
    broken = utilization_verdict(SamplerSummary([], error="NVMLError: lost"), 2.0, 200)
    assert broken.status is Status.SKIP and "lost" in broken.measured


def test_burst_epochs_targets_a_few_hundred_steps():
    assert burst_epochs(139, 16) == 23  # 9 steps/epoch
    assert burst_epochs(10_000, 16) == 1
    assert burst_epochs(16, 16) == 50  # capped


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
    fake = FakeNvml()
    found = {r.name: r for r in gpu_check(ctx, nvml_module=fake, cuda=FakeCuda(), burst=burst())}
    assert {r.status for r in found.values()} == {Status.PASS}
    assert "NVIDIA H100" in found["device"].measured and "1,200.0 MiB" in found["device"].measured
    assert found["memory"].values["process_bytes"] == 530 * MIB
    assert fake.inits == fake.shutdowns == 1


def test_planted_faults_with_fakes(ctx):
    found = {
        r.name: r
        for r in gpu_check(
            ctx,
            nvml_module=FakeNvml(),
            cuda=FakeCuda(),
            burst=burst(
                input_devices={"cpu": 200},
                peak_allocated=4096 * MIB,
                sampler=SamplerSummary([Sample(i, 1.0, 0) for i in range(40)]),
            ),
        )
    }
    assert found["placement"].status is Status.FAIL
    assert found["memory"].status is Status.WARN
    assert found["utilization"].status is Status.WARN


def test_cuda_without_nvml_still_checks_placement_and_memory(ctx):
    found = {
        r.name: r
        for r in gpu_check(ctx, nvml_module=FakeNvml(init_error=NVMLError(9)), cuda=FakeCuda(), burst=burst())
    }
    assert found["placement"].status is Status.PASS
    assert found["utilization"].status is Status.SKIP and "driver not loaded" in found["utilization"].measured


def test_training_burst_hook_sees_where_batches_live(ctx):
    """The real burst on CPU with a user fit: the pre-hook records the input device and batch size."""
    calls = []

    def user_fit(model, X, y, epochs, device):
        calls.append((tuple(X.shape), epochs, str(device)))
        model(X[:4])  # "forgets" to move anything to the device

    ctx.fit = user_fit
    try:
        result = training_burst(ctx, "cuda", FakeCuda(), None)
    finally:
        ctx.fit = None
    assert calls == [((18, 105, 11), 50, "cuda")]
    assert result.input_devices == {"cpu": 1} and result.param_devices == ["cpu"]
    assert result.batch_size == 4 and result.expected_bytes > 0 and result.fit_error is None
    verdict = placement_verdict(
        result.param_devices, result.input_devices, result.forward_param_devices, result.n_forward
    )
    assert verdict.status is Status.FAIL


def test_training_burst_records_a_fit_that_raises(ctx):
    def user_fit(model, X, y, epochs, device):
        raise RuntimeError("Input and parameter tensors are not at the same device")

    ctx.fit = user_fit
    try:
        result = training_burst(ctx, "cuda", FakeCuda(), NvmlSamplerStub())
    finally:
        ctx.fit = None
    assert "same device" in result.fit_error and result.n_forward == 0
    assert placement_verdict([], {}, {}, 0, result.fit_error).status is Status.FAIL


class NvmlSamplerStub(UtilizationSampler):
    def __init__(self):
        super().__init__(NvmlProbe(FakeNvml()).open(), interval_s=0.01)
