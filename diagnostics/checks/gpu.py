"""Is the GPU actually used, and does it hold what this model should need?

A short training burst (the user's --fit or the built-in trainer) runs on CUDA while NVML is sampled. The
burst trains the same model the other checks train (``diagnostics.training.fresh_model``: the features in
effect, input standardization fitted, pointer head frozen) under the one ``Instrument``.
Findings: the device; parameters and batches on the GPU (the devices of the inputs reaching the model's
forward); the burst's own torch peak allocation vs the analytic footprint from diagnostics.physics (params +
grads + AdamW state + activations -- tens of MB for a 565K-param LSTM, not GBs), with what NVML shows on top
of it (the CUDA context, kernels, library handles, the allocator's cache) measured and explained, not judged;
utilization while training, in NVML's sense. Without a usable GPU everything SKIPs with the reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diagnostics.context import Thresholds
from diagnostics.nvml import NvmlProbe, NvmlUnavailable, SamplerSummary, UtilizationSampler
from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, plot_data, skip

if TYPE_CHECKING:
    from diagnostics.context import DiagContext

CHECK = "gpu"
MIB = 2**20
# What NVML's "GPU utilization" is, stated in every utilization finding so nobody reads it as SM occupancy.
UTILIZATION_MEANING = (
    "NVML utilization = share of each sample period during which at least one kernel ran on the GPU, "
    "not SM occupancy: one small kernel at a time reads 100%; it shows the GPU was not idle, not that it was "
    "used well"
)


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f} MiB"


@dataclass
class BurstResult:
    """What the training burst observed (numbers only, so the verdicts are pure functions)."""

    n_forward: int  # forward calls seen by the Instrument
    seconds: float
    input_devices: list[str]  # devices of the inputs that reached the model's forward
    param_devices: list[str]  # devices holding parameters after the fit
    peak_allocated: int  # torch.cuda.max_memory_allocated during the burst (absolute)
    expected_bytes: int  # physics.training_memory_bytes(...).total at the observed batch size
    expected_detail: dict[str, int]
    data_bytes: int  # the training tensors, if a fit moves them to the device at once
    batch_size: int
    epochs: int
    baseline_allocated: int = (
        0  # torch.cuda.memory_allocated when the burst started (earlier tensors, workspaces)
    )
    workspace_bytes: int = 0  # kept by torch's allocator after a first matmul: cuBLAS / cuBLASLt workspaces
    reserved: int | None = None  # torch.cuda.memory_reserved after the burst (allocated + cached blocks)
    sampler: SamplerSummary = field(default_factory=SamplerSummary)
    fit_error: str | None = (
        None  # the fit raised (e.g. "Input and parameter tensors are not at the same device")
    )

    @property
    def own_peak(self) -> int:
        """Peak bytes the burst itself added on top of what was allocated before it."""
        return max(0, self.peak_allocated - self.baseline_allocated)


@dataclass(frozen=True)
class NvmlMemory:
    """NVML's memory readings around the burst; every field is optional (supporting evidence only)."""

    process_bytes: int | None = (
        None  # used by this process (None: not listed, e.g. a container PID namespace)
    )
    device_before_cuda: int | None = None  # device-wide used before this process created its CUDA context
    device_with_context: int | None = None  # device-wide used right after creating it
    device_after_burst: int | None = None
    device_total: int | None = None

    @property
    def context_bytes(self) -> int | None:
        if self.device_before_cuda is None or self.device_with_context is None:
            return None
        return max(0, self.device_with_context - self.device_before_cuda)


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
    input_devices: Iterable[str],
    n_forward: int,
    fit_error: str | None = None,
) -> CheckResult:
    """FAIL if any parameter or any batch stayed off the GPU while CUDA was requested (or the fit died).

    The inputs' devices decide: a forward whose input is on cuda cannot run with parameters elsewhere (it
    raises), so parameters found off the GPU after such a fit were moved back after training (evidence only).
    """
    inputs = sorted(set(input_devices))
    expected = "parameters and every batch on cuda"
    values = {
        "param_devices": sorted(param_devices),
        "input_devices": inputs,
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
    off_params = [d for d in param_devices if not d.startswith("cuda")]
    off_inputs = [d for d in inputs if not d.startswith("cuda")]
    measured = (
        f"params on {', '.join(sorted(set(param_devices))) or '?'}; "
        f"inputs of {n_forward} forwards on {', '.join(inputs) or '?'}"
    )
    if off_inputs:
        hint = (
            "call model.to(device) before building the optimizer, and move each batch with xb.to(device)"
            if off_params
            else "move each batch with xb = xb.to(device, non_blocking=True) (or X.to(device) once: it fits)"
        )
        return fail(
            measured,
            hint,
            (f"input devices seen at the model's forward: {', '.join(inputs)}", *error_ev),
        )
    if fit_error:
        return fail(
            f"{measured}, then the fit raised",
            "fix the error in the fit function (rerun with --debug)",
            error_ev,
        )
    evidence = (
        ("every forward ran on cuda; the parameters were moved off it after training",) if off_params else ()
    )
    return CheckResult(CHECK, "placement", Status.PASS, measured, expected, evidence=evidence, values=values)


def memory_verdict(
    peak_allocated: int,
    expected_bytes: int,
    data_bytes: int,
    detail: dict[str, int] | None = None,
    *,
    baseline_bytes: int = 0,
    workspace_bytes: int = 0,
    reserved_bytes: int | None = None,
    nvml: NvmlMemory | None = None,
    thresholds: Thresholds | None = None,
) -> CheckResult:
    """The burst's own torch peak vs the analytic footprint (+ the training tensors): WARN above the factor.

    Only torch's allocator is judged. What NVML reports on top -- the CUDA context (hundreds of MB), loaded
    kernels and library handles, the allocator's cached blocks -- is measured and explained in the evidence.
    """
    factor = (thresholds or Thresholds()).gpu_memory_warn_factor
    own = max(0, peak_allocated - baseline_bytes)
    budget = expected_bytes + data_bytes
    ratio = own / budget if budget else math.inf
    evidence = (
        [f"analytic: {', '.join(f'{k} {mib(v)}' for k, v in (detail or {}).items())}"] if detail else []
    )
    evidence.append(f"training tensors X, y: {mib(data_bytes)}")
    torch_line = (
        f"torch allocator: burst peak {mib(own)} on top of {mib(baseline_bytes)} allocated before it "
        f"(earlier checks' tensors; cuBLAS workspace {mib(workspace_bytes)}, kept after the first matmul)"
    )
    if reserved_bytes is not None:
        torch_line += f"; reserved {mib(reserved_bytes)} (allocated + cached blocks)"
    evidence.append(torch_line)
    nv = nvml or NvmlMemory()
    if nv.context_bytes is not None:
        evidence.append(
            f"CUDA context: NVML device memory used {mib(nv.device_before_cuda)} before this process used CUDA, "
            f"{mib(nv.device_with_context)} after creating its context (+{mib(nv.context_bytes)}, "
            "invisible to torch's allocator)"
        )
    if nv.process_bytes is not None:
        line = f"NVML: this process holds {mib(nv.process_bytes)}"
        if reserved_bytes is not None:
            outside = nv.process_bytes - reserved_bytes
            line += (
                f" = torch reserved {mib(reserved_bytes)} + {mib(outside)} outside torch's allocator "
                "(CUDA context, loaded kernels, cuBLAS/cuDNN handles)"
            )
        else:
            line += " (includes the CUDA context and cached blocks, which torch's allocator does not count)"
        evidence.append(line)
    elif nv.device_after_burst is not None:
        line = (
            f"NVML: device memory used after the burst {mib(nv.device_after_burst)} of {mib(nv.device_total)}"
        )
        if reserved_bytes is not None:
            line += (
                f" = torch reserved {mib(reserved_bytes)} + {mib(nv.device_after_burst - reserved_bytes)} outside "
                "torch's allocator (CUDA context, kernels, library handles, and any other process on this GPU)"
            )
        evidence.append(line + " (NVML does not list this process here, e.g. a container's PID namespace)")
    values = {
        "peak_allocated": peak_allocated,
        "own_peak": own,
        "baseline_bytes": baseline_bytes,
        "workspace_bytes": workspace_bytes,
        "reserved_bytes": reserved_bytes,
        "expected_bytes": expected_bytes,
        "data_bytes": data_bytes,
        "ratio": ratio,
        "process_bytes": nv.process_bytes,
        "context_bytes": nv.context_bytes,
        "device_before_cuda": nv.device_before_cuda,
        "device_with_context": nv.device_with_context,
        "device_after_burst": nv.device_after_burst,
        "device_total": nv.device_total,
    }
    measured = f"burst torch peak {mib(own)} ({ratio:.1f}x expected)"
    expected = (
        f"~{mib(budget)} (model {mib(expected_bytes)} + data {mib(data_bytes)}); WARN above {factor:g}x; "
        "the CUDA context and allocator cache are explained, not judged"
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
    sampler: SamplerSummary, seconds: float, n_forward: int, thresholds: Thresholds | None = None
) -> CheckResult:
    """Mean/max NVML utilization over the burst; WARN when the GPU mostly idled while work was done."""
    th = thresholds or Thresholds()
    min_mean = th.gpu_min_mean_util
    expected = f"a kernel running >= {min_mean:g}% of the time while training (NVML utilization, mean)"
    if sampler.error and sampler.n < th.gpu_min_util_samples:
        return skip(CHECK, "utilization", f"NVML sampling failed: {sampler.error}")
    if sampler.n < th.gpu_min_util_samples:
        return skip(CHECK, "utilization", f"only {sampler.n} NVML sample(s) in {seconds:.2f} s")
    mean, peak = sampler.mean_util or 0.0, sampler.max_util or 0.0
    values = {
        "mean_util": mean,
        "max_util": peak,
        "samples": sampler.n,
        "seconds": seconds,
        "n_forward": n_forward,
        "meaning": "share of time any kernel ran (NVML), not SM occupancy",
        # the burst over time, for the report's plot (every sample up to 400, then evenly spaced)
        "series": {
            "t_s": plot_data([x.t for x in sampler.samples], ordered=True),
            "util": plot_data([x.gpu_util for x in sampler.samples], ordered=True),
            "mem_used_mib": plot_data([x.mem_used / 2**20 for x in sampler.samples], ordered=True),
        },
    }
    measured = (
        f"a kernel running {mean:.0f}% of the time (mean; max {peak:.0f}%) over {sampler.n} samples "
        f"in {seconds:.2f} s ({n_forward} forwards)"
    )
    evidence: tuple[str, ...] = (UTILIZATION_MEANING,)
    if sampler.error:
        evidence = (*evidence, f"sampler error after {sampler.n} samples: {sampler.error}")
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


def burst_epochs(n_train: int, batch_size: int, steps: int, max_epochs: int) -> int:
    """Epochs giving about ``steps`` optimizer steps, at least 1 and at most ``max_epochs``."""
    per_epoch = max(1, math.ceil(n_train / max(batch_size, 1)))
    return max(1, min(max_epochs, math.ceil(steps / per_epoch)))


def library_warmup(device: Any, cuda: Any) -> int:
    """Run a first matmul and linear on ``device``; return the bytes torch's allocator keeps afterwards.

    cuBLAS and cuBLASLt take their workspaces from torch's caching allocator on first use and keep them, so
    they show up in memory_allocated without being part of the model. Measured here, before the burst's
    baseline, so the burst is judged on what it allocates itself.
    """
    import torch

    before = int(cuda.memory_allocated())
    a = torch.ones(8, 8, device=device)
    torch.nn.functional.linear(a, a, a[0])  # the cuBLASLt path (bias epilogue)
    torch.mm(a, a)
    cuda.synchronize()
    del a
    return max(0, int(cuda.memory_allocated()) - before)


def training_burst(
    ctx: DiagContext, device: Any, cuda: Any, sampler: UtilizationSampler | None
) -> BurstResult:
    """Train the checks' model for ~gpu_burst_steps steps on ``device`` with the user's fit (or the built-in)."""

    from diagnostics.instrument import Instrument
    from diagnostics.physics import training_memory_bytes
    from diagnostics.sampling import training_sample
    from diagnostics.training import context_fit, fresh_model, model_features, rows_as_tensors

    _, feats = model_features(ctx)
    X, y = rows_as_tensors(ctx, feats, training_sample(ctx).train_rows)
    n_features = int(X.shape[2])
    model = fresh_model(ctx, n_features, X_train=X)
    cfg, th = ctx.config, ctx.thresholds
    epochs = burst_epochs(len(X), cfg.batch_size, th.gpu_burst_steps, th.gpu_burst_max_epochs)
    fit, _ = context_fit(ctx)

    workspace = library_warmup(device, cuda)
    baseline = int(cuda.memory_allocated())
    cuda.reset_peak_memory_stats()
    summary = SamplerSummary()
    fit_error = None
    instrument = Instrument(model)
    if sampler is not None:
        sampler.start()
    t0 = time.perf_counter()
    try:
        with instrument:
            fit(model, X, y, epochs, str(device))
            cuda.synchronize()
    except Exception as exc:  # a device mix-up raises inside the fit: that is the finding, not a crash
        fit_error = f"{type(exc).__name__}: {exc}"
    finally:
        seconds = time.perf_counter() - t0
        if sampler is not None:
            summary = sampler.stop()
    peak = int(cuda.max_memory_allocated())
    reserved = int(cuda.memory_reserved())
    rec = instrument.recording
    observed_batch = rec.typical_train_batch or cfg.batch_size
    # The footprint is a property of the model, not the device: estimate it on a CPU twin.
    twin = fresh_model(ctx, n_features)
    estimate = training_memory_bytes(twin, observed_batch, int(X.shape[1]), n_features)
    detail = {
        "params": estimate.params,
        "grads": estimate.grads,
        "adamw": estimate.optimizer_state,
        "activations": estimate.activations,
    }
    return BurstResult(
        n_forward=rec.forward_calls,
        seconds=seconds,
        input_devices=sorted(rec.input_devices),
        param_devices=sorted({str(p.device) for p in model.parameters()}),
        peak_allocated=peak,
        expected_bytes=int(estimate.total),
        expected_detail=detail,
        data_bytes=int(X.nbytes + y.nbytes),
        batch_size=observed_batch,
        epochs=epochs,
        baseline_allocated=baseline,
        workspace_bytes=workspace,
        reserved=reserved,
        sampler=summary,
        fit_error=fit_error,
    )


def _used(probe: NvmlProbe | None, index: int) -> int | None:
    if probe is None:
        return None
    with contextlib.suppress(Exception):  # NVML numbers are supporting evidence only
        return probe.memory(index).used
    return None


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

        # Device memory before this process creates its CUDA context (torch's device is 0 until set), then
        # with it: the context's cost, which torch's allocator never sees. Earlier checks may have created it.
        before = None if cuda.is_initialized() else _used(probe, nvml_index(0))
        index = cuda.current_device()
        if index != 0:
            before = None
        cuda.synchronize()  # creates the context now, so its cost is not mixed into the burst's
        nv_idx = nvml_index(index)
        with_context = _used(probe, nv_idx)
        device_name = cuda.get_device_name(index)
        total = None
        if probe is not None:
            with contextlib.suppress(Exception):
                total = probe.memory(nv_idx).total
        measured = device_name + (f": {mib(with_context)} / {mib(total)} used (NVML)" if total else "")
        results: list[CheckResult] = [
            CheckResult(
                CHECK,
                "device",
                Status.PASS,
                measured,
                f"a CUDA device ({ctx.device} requested)",
                evidence=(f"NVML: {nvml_reason}",) if nvml_reason else (),
                values={"name": device_name, "index": index, "mem_used": with_context, "mem_total": total},
            )
        ]

        import torch

        th = ctx.thresholds
        sampler = UtilizationSampler(probe, index=nv_idx) if probe is not None else None
        result = (burst or training_burst)(ctx, torch.device("cuda", index), cuda, sampler)
        process = None
        if probe is not None:
            with contextlib.suppress(Exception):  # NVML numbers are supporting evidence only
                process = probe.process_memory(nv_idx)
        nvml_memory = NvmlMemory(
            process_bytes=process,
            device_before_cuda=before,
            device_with_context=with_context if before is not None else None,
            device_after_burst=_used(probe, nv_idx),
            device_total=total,
        )
        results += burst_verdicts(result, nvml_memory, th, None if probe is not None else nvml_reason)
        return results
    finally:
        if probe is not None:
            probe.close()


def burst_verdicts(
    result: BurstResult, nvml: NvmlMemory, th: Thresholds, nvml_unavailable: str | None = None
) -> list[CheckResult]:
    """Placement, memory and utilization of one training burst (the check and the smoke run share them).

    ``nvml_unavailable``: why NVML could not be read, which makes utilization a SKIP.
    """
    return [
        placement_verdict(result.param_devices, result.input_devices, result.n_forward, result.fit_error),
        memory_verdict(
            result.peak_allocated,
            result.expected_bytes,
            result.data_bytes,
            result.expected_detail,
            baseline_bytes=result.baseline_allocated,
            workspace_bytes=result.workspace_bytes,
            reserved_bytes=result.reserved,
            nvml=nvml,
            thresholds=th,
        ),
        skip(CHECK, "utilization", f"NVML unavailable: {nvml_unavailable}")
        if nvml_unavailable is not None
        else utilization_verdict(result.sampler, result.seconds, result.n_forward, th),
    ]


@register("gpu")
def check_gpu(ctx: DiagContext) -> list[CheckResult]:
    return gpu_check(ctx)
