"""The GPU verification run's own steps, each run in its subprocess by ``diagnostics.smoke`` (``--inner
NAME``): versions, the epoch's lower bound, the NVML-sampled burst, the asv GPU benchmarks, the audit of the
reference run. Each returns a JSON-able dict; ``run_inner`` writes it where the orchestrator reads it.
Torch is imported inside each step, never at import."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BURST_STEPS = 1000  # optimizer steps of the NVML-sampled burst: seconds of kernels, many 20 ms samples


def inner_versions(device: str = "cuda") -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    from diagnostics.nvml import NvmlProbe

    try:
        with NvmlProbe() as probe:
            info.update(probe.versions())
    except Exception as exc:
        info["nvml_error"] = f"{type(exc).__name__}: {exc}"
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["devices"] = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        info["devices"].append(
            {
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "total_memory": int(props.total_memory),
                "multiprocessors": int(props.multi_processor_count),
            }
        )
    # moola's dependencies as this interpreter has them: a too-old one (say typer) explains a failed step.
    from importlib import metadata

    packages = (
        "numpy",
        "pandas",
        "pyarrow",
        "psutil",
        "nvidia-ml-py",
        "rich",
        "typer",
        "pytest",
        "pytest-benchmark",
    )
    info["packages"] = {}
    for name in packages:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,clocks.sm,clocks.max.sm"
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [smi, f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True, timeout=20
            )
            info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    return info


def inner_bound(device: str = "cuda", model_name: str = "jade_compact") -> dict[str, Any]:
    """The lower bound the sanity check computes, for the reference command's model, split and batch."""
    import torch

    from diagnostics.physics import epoch_time_lower_bound
    from moola.config import TrainConfig
    from moola.data.splits import make_split
    from moola.data.synthetic import default_dataset
    from moola.features import FEATURE_SETS
    from moola.models import get_model, get_spec

    cfg = TrainConfig(model=model_name, device=device, predict_pointers=True)
    ds = default_dataset()
    train_idx, _ = make_split(ds, cfg.split, cfg.val_fraction, cfg.seed, cfg.embargo_bars)
    n_features = len(FEATURE_SETS[cfg.features or get_spec(model_name).feature_set])
    torch.manual_seed(cfg.seed)
    model = get_model(model_name, n_features=n_features, n_classes=ds.n_classes).to(device)
    T = int(ds.X.shape[1])
    bound = epoch_time_lower_bound(model, len(train_idx), cfg.batch_size, T, n_features, device=device)
    return {
        "model": model_name,
        "device": device,
        "n_train": len(train_idx),
        "batch": cfg.batch_size,
        "bound_s": bound.seconds,
        "flops_part_s": bound.flops_part,
        "latency_part_s": bound.latency_part,
        "evidence": bound.evidence,
    }


class NoCuda:
    """torch.cuda's counters for the CPU rehearsal: nothing is allocated on a GPU."""

    def synchronize(self) -> None:
        pass

    def reset_peak_memory_stats(self) -> None:
        pass

    def memory_allocated(self) -> int:
        return 0

    def max_memory_allocated(self) -> int:
        return 0

    def memory_reserved(self) -> int:
        return 0


def inner_burst(device: str = "cuda", steps: int = BURST_STEPS, interval_s: float = 0.02) -> dict[str, Any]:
    """The gpu check's burst (its model, trainer, Instrument and verdicts), longer and sampled faster, with
    the CUDA context measured as NVML device memory before vs after this process creates it."""
    import torch

    from diagnostics.checks.gpu import NvmlMemory, burst_verdicts, nvml_index, training_burst
    from diagnostics.context import DiagContext, Thresholds
    from diagnostics.nvml import NvmlProbe, UtilizationSampler
    from moola.data.splits import make_split
    from moola.data.synthetic import default_dataset

    data: dict[str, Any] = {}
    idx = nvml_index(0)
    probe: NvmlProbe | None = NvmlProbe()
    try:
        probe.open()
    except Exception as exc:
        data["nvml_error"] = f"{type(exc).__name__}: {exc}"
        probe = None

    def used() -> int | None:
        with contextlib.suppress(Exception):
            return probe.memory(idx).used if probe is not None else None
        return None

    data["nvml_before_cuda"] = used()
    cuda: Any = torch.cuda if device == "cuda" else NoCuda()
    if device == "cuda":
        torch.cuda.init()
    cuda.synchronize()  # creates this process's context
    data["nvml_with_context"] = used()
    if data["nvml_before_cuda"] is not None and data["nvml_with_context"] is not None:
        data["context_bytes"] = data["nvml_with_context"] - data["nvml_before_cuda"]
    ds = default_dataset()
    train_idx, test_idx = make_split(ds, "random", 0.2, 0)
    th = Thresholds(gpu_burst_steps=steps, gpu_burst_max_epochs=10_000)
    ctx = DiagContext(dataset=ds, train_idx=train_idx, test_idx=test_idx, device=device, thresholds=th)
    sampler = UtilizationSampler(probe, index=idx, interval_s=interval_s) if probe is not None else None
    dev = torch.device("cuda", 0) if device == "cuda" else torch.device(device)
    result = training_burst(ctx, dev, cuda, sampler)
    process = None
    if probe is not None:
        with contextlib.suppress(Exception):
            process = probe.process_memory(idx)
    nv = NvmlMemory(
        process_bytes=process,
        device_before_cuda=data["nvml_before_cuda"],
        device_with_context=data["nvml_with_context"],
        device_after_burst=used(),
    )
    verdicts = burst_verdicts(result, nv, th)
    samples = result.sampler.samples
    every = max(1, len(samples) // 20)
    data.update(
        n_forward=result.n_forward,
        epochs=result.epochs,
        seconds=result.seconds,
        batch_size=result.batch_size,
        input_devices=result.input_devices,
        param_devices=result.param_devices,
        own_peak=result.own_peak,
        peak_allocated=result.peak_allocated,
        baseline_allocated=result.baseline_allocated,
        workspace_bytes=result.workspace_bytes,
        reserved=result.reserved,
        expected_bytes=result.expected_bytes,
        expected_detail=result.expected_detail,
        data_bytes=result.data_bytes,
        budget_bytes=result.expected_bytes + result.data_bytes,
        process_bytes=process,
        nvml_after=nv.device_after_burst,
        fit_error=result.fit_error,
        n_samples=result.sampler.n,
        mean_util=result.sampler.mean_util,
        max_util=result.sampler.max_util,
        sampler_error=result.sampler.error,
        timeline=[(s.t, s.gpu_util, s.mem_used) for s in samples[::every]],
        verdicts=[v.to_dict() for v in verdicts],
    )
    if probe is not None:
        probe.close()
    return data


def inner_asv_gpu(device: str = "cuda", repo: Path = REPO) -> dict[str, Any]:
    """Each benchmark of the asv suite's ``Gpu`` class called once, through the benchmark gate's own
    discovery and runner (as asv sets them up), so asv itself need not be installed (no network there)."""
    os.environ.setdefault("MOOLA_BENCH_DEVICE", device)
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from diagnostics.gate.worker import Runner, discover

    benches = discover(repo, r"\.Gpu\.")
    bench_runner = Runner(benches)
    rows: list[dict[str, Any]] = []
    for b in benches:
        t0 = time.perf_counter()
        try:
            value: Any = bench_runner.call(b)()
            status = "ok"
        except NotImplementedError as exc:  # asv's "skipped" (e.g. no CUDA device)
            value, status = str(exc), "skipped"
        except Exception as exc:
            value, status = f"{type(exc).__name__}: {exc}", "error"
        seconds = time.perf_counter() - t0
        if status == "ok" and b.kind == "time":
            value = seconds
        rows.append(
            {
                "benchmark": b.name,
                "param": ", ".join(str(p) for p in b.params),
                "status": status,
                "value": value,
                "unit": b.unit,
                "seconds": seconds,
            }
        )
    return {"rows": rows}


def inner_audit(runs: Path, report_dir: Path) -> dict[str, Any]:
    """``moola-diag audit`` of the newest run under ``runs`` (the reference training's), reports beside."""
    from diagnostics.audit.run import run_audit

    summaries = sorted(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        raise ValueError(f"no run directory with summary.json under {runs}")
    outcome = run_audit(summaries[-1].parent, report_dir=report_dir)
    keep_values = ("epoch_time", "memory", "reproduce")
    return {
        "run_dir": str(summaries[-1].parent),
        "verdict": max((r.status for r in outcome.results), key=lambda x: x.severity).value,
        "results": [
            {
                "check": r.check,
                "name": r.name,
                "status": r.status.value,
                "measured": r.measured,
                **({"values": r.to_dict()["values"]} if r.name in keep_values else {}),
            }
            for r in outcome.results
        ],
    }


INNER: dict[str, Callable[..., dict[str, Any]]] = {
    "versions": inner_versions,
    "bound": inner_bound,
    "audit": inner_audit,
    "burst": inner_burst,
    "asv_gpu": inner_asv_gpu,
}


def run_inner(name: str, out: Path, device: str, steps: int) -> int:
    from moola.io import atomic_write_json

    if name == "audit":  # the reference run lies beside this step's output (see ``plan``)
        data = inner_audit(out.parent / "runs", out.parent / "audit")
    else:
        data = inner_burst(device, steps) if name == "burst" else INNER[name](device)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, data)
    print(
        json.dumps({k: v for k, v in data.items() if k not in ("timeline", "verdicts", "rows")}, default=str)[
            :4000
        ]
    )
    return 0
