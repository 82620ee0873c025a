"""Is the GPU actually used, and does it hold what this model should need?

A short training burst (the user's --fit or the built-in trainer) runs on CUDA while NVML is sampled.
Findings: the device; parameters and batches on the GPU (a forward pre-hook records each batch's device);
torch's peak allocation vs the analytic footprint from diagnostics.physics (params + grads + AdamW state
+ activations -- tens of MB for a 565K-param LSTM, not GBs); utilization while training.
Without a usable GPU everything SKIPs with the reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diagnostics.nvml import NvmlProbe, NvmlUnavailable, SamplerSummary, UtilizationSampler
from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, skip

if TYPE_CHECKING:
    from diagnostics.context import DiagContext

CHECK = "gpu"
BURST_STEPS = (
    200  # optimizer steps in the burst: long enough for ~50 ms utilization samples to mean something
)
MAX_BURST_EPOCHS = 50
MEMORY_WARN_FACTOR = 10.0  # torch peak allocated above this multiple of the analytic footprint
MIN_MEAN_UTIL = 10.0  # % busy while training entirely on the GPU
MIN_UTIL_SAMPLES = 3
MIB = 2**20


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f} MiB"


@dataclass
class BurstResult:
    """What the training burst observed (numbers only, so the verdicts are pure functions)."""

    n_forward: int  # forward calls seen by the pre-hook
    seconds: float
    input_devices: dict[str, int]  # device of each forward's input -> count
    param_devices: list[str]  # devices holding parameters after the fit
    forward_param_devices: dict[str, int]  # device of the first parameter at each forward
    peak_allocated: int  # torch.cuda.max_memory_allocated during the burst
    expected_bytes: int  # physics.training_memory_bytes(...).total at the observed batch size
    expected_detail: dict[str, int]
    data_bytes: int  # the training tensors, if a fit moves them to the device at once
    batch_size: int
    epochs: int
    sampler: SamplerSummary = field(default_factory=SamplerSummary)
    fit_error: str | None = (
        None  # the fit raised (e.g. "Input and parameter tensors are not at the same device")
    )


def nvml_index(torch_index: int) -> int:
    """NVML enumerates all GPUs; torch only CUDA_VISIBLE_DEVICES. Map when that is a list of indices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    try:
        return int(visible[torch_index])
    except (ValueError, IndexError):
        return torch_index


# --------------------------------------------------------------------------- pure verdicts


def placement_verdict(
    param_devices: list[str],
    input_devices: dict[str, int],
    forward_param_devices: dict[str, int],
    n_forward: int,
    fit_error: str | None = None,
) -> CheckResult:
    """FAIL if any parameter or any batch stayed off the GPU while CUDA was requested (or the fit died)."""
    expected = "parameters and every batch on cuda"
    values = {
        "param_devices": sorted(param_devices),
        "input_devices": dict(input_devices),
        "forward_param_devices": dict(forward_param_devices),
        "n_forward": n_forward,
        "fit_error": fit_error,
    }
    error_ev = (f"the fit raised {fit_error}",) if fit_error else ()

    def fail(what: str, hint: str, evidence: tuple[str, ...]) -> CheckResult:
        return CheckResult(
            CHECK, "placement", Status.FAIL, what, expected, hint=hint, evidence=evidence, values=values
        )

    if n_forward == 0:
        return fail(
            f"the fit raised before any forward: {fit_error}"
            if fit_error
            else "the fit never called the model's forward",
            "the --fit function must train the model it is given (model(x) on each batch)",
            error_ev,
        )
    cpu_params = [d for d in param_devices if not d.startswith("cuda")]
    cpu_inputs = sum(n for d, n in input_devices.items() if not d.startswith("cuda"))
    cpu_fwd = sum(n for d, n in forward_param_devices.items() if not d.startswith("cuda"))
    measured = (
        f"params on {', '.join(sorted(param_devices)) or '?'}; "
        f"{n_forward - cpu_inputs}/{n_forward} batches on cuda"
    )

    if cpu_params or cpu_fwd:
        return fail(
            measured,
            "call model.to(device) before building the optimizer in your fit function",
            (f"forward calls with parameters on: {dict(forward_param_devices)}", *error_ev),
        )
    if cpu_inputs:
        return fail(
            measured,
            "move each batch with xb = xb.to(device, non_blocking=True) (or X.to(device) once: it fits)",
            (f"batch devices seen by the forward pre-hook: {dict(input_devices)}", *error_ev),
        )
    if fit_error:
        return fail(
            f"{measured}, then the fit raised",
            "fix the error in the fit function (rerun with --debug)",
            error_ev,
        )
    return CheckResult(CHECK, "placement", Status.PASS, measured, expected, values=values)


def memory_verdict(
    peak_allocated: int,
    expected_bytes: int,
    data_bytes: int,
    detail: dict[str, int] | None = None,
    factor: float = MEMORY_WARN_FACTOR,
    process_bytes: int | None = None,
) -> CheckResult:
    """torch's peak vs the analytic footprint (+ the training tensors): WARN above ``factor``x."""
    budget = expected_bytes + data_bytes
    ratio = peak_allocated / budget if budget else math.inf
    evidence = (
        [f"analytic: {', '.join(f'{k} {mib(v)}' for k, v in (detail or {}).items())}"] if detail else []
    )
    evidence.append(f"training tensors X, y: {mib(data_bytes)}")
    if process_bytes is not None:
        evidence.append(
            f"NVML: this process holds {mib(process_bytes)} (includes the CUDA context and cached blocks, "
            "which torch's allocator does not count)"
        )
    values = {
        "peak_allocated": peak_allocated,
        "expected_bytes": expected_bytes,
        "data_bytes": data_bytes,
        "ratio": ratio,
        "process_bytes": process_bytes,
    }
    measured = f"torch peak {mib(peak_allocated)} ({ratio:.1f}x expected)"
    expected = (
        f"~{mib(budget)} (model {mib(expected_bytes)} + data {mib(data_bytes)}); WARN above {factor:g}x"
    )
    if ratio > factor:
        return CheckResult(
            CHECK,
            "memory",
            Status.WARN,
            measured,
            expected,
            hint="something else lives on the GPU: tensors kept across steps (losses without .item(), "
            "histories with graphs), a larger batch than configured, or a copy of the data per epoch",
            evidence=tuple(evidence),
            values=values,
        )
    return CheckResult(
        CHECK, "memory", Status.PASS, measured, expected, evidence=tuple(evidence), values=values
    )


def utilization_verdict(
    sampler: SamplerSummary, seconds: float, n_forward: int, min_mean: float = MIN_MEAN_UTIL
) -> CheckResult:
    """Mean/max GPU busy % over the burst; WARN when the GPU mostly idled while work was done."""
    expected = f"mean >= {min_mean:g}% busy while training"
    if sampler.error and sampler.n < MIN_UTIL_SAMPLES:
        return skip(CHECK, "utilization", f"NVML sampling failed: {sampler.error}")
    if sampler.n < MIN_UTIL_SAMPLES:
        return skip(CHECK, "utilization", f"only {sampler.n} NVML sample(s) in {seconds:.2f} s")
    mean, peak = sampler.mean_util or 0.0, sampler.max_util or 0.0
    values = {
        "mean_util": mean,
        "max_util": peak,
        "samples": sampler.n,
        "seconds": seconds,
        "n_forward": n_forward,
    }
    measured = f"mean {mean:.0f}%, max {peak:.0f}% over {sampler.n} samples in {seconds:.2f} s ({n_forward} forwards)"
    evidence = (f"sampler error after {sampler.n} samples: {sampler.error}",) if sampler.error else ()
    if n_forward > 0 and mean < min_mean:
        return CheckResult(
            CHECK,
            "utilization",
            Status.WARN,
            measured,
            expected,
            hint="the GPU waits on the host: keep the data on the GPU, avoid per-step .item()/.cpu() syncs "
            "and per-sample Python loops, raise the batch size",
            evidence=evidence,
            values=values,
        )
    return CheckResult(
        CHECK, "utilization", Status.PASS, measured, expected, evidence=evidence, values=values
    )


# --------------------------------------------------------------------------- the burst


def burst_epochs(n_train: int, batch_size: int, steps: int = BURST_STEPS) -> int:
    per_epoch = max(1, math.ceil(n_train / max(batch_size, 1)))
    return max(1, min(MAX_BURST_EPOCHS, math.ceil(steps / per_epoch)))


def training_burst(
    ctx: DiagContext, device: Any, cuda: Any, sampler: UtilizationSampler | None
) -> BurstResult:
    """Train a fresh model for ~BURST_STEPS steps on ``device`` with the user's fit (or the built-in one)."""
    import numpy as np
    import torch

    from diagnostics.physics import training_memory_bytes
    from moola.features import transform
    from moola.models import get_model, get_spec

    spec = get_spec(ctx.model_name)
    feats = ctx.memo(f"features:{spec.feature_set}", lambda: transform(ctx.dataset.X, spec.feature_set))
    X = torch.from_numpy(np.ascontiguousarray(feats[ctx.train_idx]))
    y = torch.from_numpy(ctx.dataset.y[ctx.train_idx]).long()
    torch.manual_seed(ctx.config.seed)
    model = get_model(ctx.model_name, n_classes=ctx.dataset.n_classes)
    batch = ctx.config.batch_size
    epochs = burst_epochs(len(X), batch)

    inputs: Counter[str] = Counter()
    fwd_params: Counter[str] = Counter()
    batch_sizes: list[int] = []

    def pre_hook(module: Any, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            inputs[str(x.device)] += 1
            batch_sizes.append(int(x.shape[0]))
        p = next(module.parameters(), None)
        if p is not None:
            fwd_params[str(p.device)] += 1

    handle = model.register_forward_pre_hook(pre_hook)
    fit = ctx.fit
    if fit is None:
        from moola.train.trainer import fit_tensors as fit
    cuda.reset_peak_memory_stats()
    summary = SamplerSummary()
    fit_error = None
    try:
        if sampler is not None:
            sampler.start()
        t0 = time.perf_counter()
        try:
            fit(model, X, y, epochs, device)
            cuda.synchronize()
        except Exception as exc:  # a device mix-up raises inside the fit: that is the finding, not a crash
            fit_error = f"{type(exc).__name__}: {exc}"
        finally:
            seconds = time.perf_counter() - t0
            if sampler is not None:
                summary = sampler.stop()
    finally:
        handle.remove()
    peak = int(cuda.max_memory_allocated())
    observed_batch = max(batch_sizes) if batch_sizes else batch
    # The estimate runs a small forward on a CPU twin: the footprint is a property of the model, not the device.
    twin = get_model(ctx.model_name, n_classes=ctx.dataset.n_classes)
    estimate = training_memory_bytes(twin, observed_batch, X.shape[1], X.shape[2])
    detail = {
        "params": estimate.params,
        "grads": estimate.grads,
        "adamw": estimate.optimizer_state,
        "activations": estimate.activations,
    }
    return BurstResult(
        n_forward=sum(inputs.values()) if inputs else len(batch_sizes),
        seconds=seconds,
        input_devices=dict(inputs),
        param_devices=sorted({str(p.device) for p in model.parameters()}),
        forward_param_devices=dict(fwd_params),
        peak_allocated=peak,
        expected_bytes=int(estimate.total),
        expected_detail=detail,
        data_bytes=int(X.nbytes + y.nbytes),
        batch_size=observed_batch,
        epochs=epochs,
        sampler=summary,
        fit_error=fit_error,
    )


def gpu_check(
    ctx: DiagContext,
    *,
    nvml_module: Any | None = None,
    cuda: Any | None = None,
    burst: Any | None = None,
) -> list[CheckResult]:
    """The check with its dependencies injectable (tests pass a fake NVML, fake torch.cuda, fake burst)."""
    if ctx.device == "cpu":
        return [skip(CHECK, "device", "--device cpu: the GPU is not exercised (use --device auto or cuda)")]

    probe: NvmlProbe | None = NvmlProbe(nvml_module)
    nvml_reason = ""
    try:
        probe.open()
        if probe.device_count() == 0:
            nvml_reason = "NVML sees 0 GPUs"
    except NvmlUnavailable as exc:
        nvml_reason = str(exc)
        probe = None
    except Exception as exc:  # a query failing after init: no NVML numbers, but torch may still work
        nvml_reason = f"NVML query failed: {type(exc).__name__}: {exc}"
    if nvml_reason and probe is not None:
        probe.close()
        probe = None

    try:
        if cuda is None:
            import torch

            cuda = torch.cuda
        if not cuda.is_available():
            from moola.train.device import cuda_unavailable_reason

            reason = cuda_unavailable_reason()
            if nvml_reason:
                reason += f"; {nvml_reason}"
            return [skip(CHECK, "device", f"no usable GPU: {reason}", nvml=nvml_reason or None)]

        index = cuda.current_device()
        device_name = cuda.get_device_name(index)
        results: list[CheckResult] = []
        nv_idx = nvml_index(index)
        total = used = None
        if probe is not None:
            with contextlib.suppress(Exception):  # NVML numbers are supporting evidence only
                mem = probe.memory(nv_idx)
                used, total = mem.used, mem.total
        measured = device_name + (f": {mib(used)} / {mib(total)} used (NVML)" if total else "")
        results.append(
            CheckResult(
                CHECK,
                "device",
                Status.PASS,
                measured,
                f"a CUDA device ({ctx.device} requested)",
                evidence=(f"NVML: {nvml_reason}",) if nvml_reason else (),
                values={"name": device_name, "index": index, "mem_used": used, "mem_total": total},
            )
        )

        import torch

        sampler = UtilizationSampler(probe, index=nv_idx) if probe is not None else None
        result = (burst or training_burst)(ctx, torch.device("cuda", index), cuda, sampler)
        process = None
        if probe is not None:
            with contextlib.suppress(Exception):  # NVML numbers are supporting evidence only
                process = probe.process_memory(nv_idx)
        results.append(
            placement_verdict(
                result.param_devices,
                result.input_devices,
                result.forward_param_devices,
                result.n_forward,
                result.fit_error,
            )
        )
        results.append(
            memory_verdict(
                result.peak_allocated,
                result.expected_bytes,
                result.data_bytes,
                result.expected_detail,
                process_bytes=process,
            )
        )
        if probe is None:
            results.append(skip(CHECK, "utilization", f"NVML unavailable: {nvml_reason}"))
        else:
            results.append(utilization_verdict(result.sampler, result.seconds, result.n_forward))
        return results
    finally:
        if probe is not None:
            probe.close()


@register("gpu")
def check_gpu(ctx: DiagContext) -> list[CheckResult]:
    return gpu_check(ctx)
