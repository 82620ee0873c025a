"""Thin NVML probes (via nvidia-ml-py, import name ``pynvml``) and a background utilization sampler.

The NVML module is injectable so every path -- no library, no driver, no device, errors mid-sampling --
is testable on a machine without a GPU. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# NVML return codes (nvml.h) we explain in words; others are reported with NVML's own message.
_REASONS = {
    12: "NVML library (libnvidia-ml.so) not found: no NVIDIA driver installed",  # LIBRARY_NOT_FOUND
    9: "NVIDIA driver not loaded",  # DRIVER_NOT_LOADED
    4: "no permission to query NVML",  # NO_PERMISSION
    3: "NVML query not supported on this device",  # NOT_SUPPORTED
    2: "NVML called with an invalid argument",  # INVALID_ARGUMENT
}


class NvmlUnavailable(Exception):
    """NVML cannot be used here; ``str(err)`` is the reason, fit for a SKIP line."""


def load_nvml() -> Any:
    """The ``pynvml`` module shipped by nvidia-ml-py, or NvmlUnavailable with the install hint."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    return pynvml


def describe_error(err: BaseException) -> str:
    code = getattr(err, "value", None)
    if code in _REASONS:
        return _REASONS[code]
    return f"NVML error: {type(err).__name__}: {err}"


@dataclass(frozen=True)
class MemoryInfo:
    used: int
    total: int


class NvmlProbe:
    """NVML session: ``with NvmlProbe() as nv: nv.device_count(), nv.name(0), nv.memory(0), ...``.

    ``open`` raises NvmlUnavailable (library missing, driver not loaded, ...); queries after that
    raise the module's NVMLError, which callers record rather than crash on.
    """

    def __init__(self, module: Any | None = None) -> None:
        self._module = module
        self.nvml: Any = None
        self._initialized = False

    def open(self) -> NvmlProbe:
        nvml = self._module if self._module is not None else load_nvml()
        try:
            nvml.nvmlInit()
        except Exception as err:  # NVMLError subclasses, or OSError from a broken library
            raise NvmlUnavailable(describe_error(err)) from err
        self.nvml = nvml
        self._initialized = True
        return self

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            with contextlib.suppress(Exception):  # shutting down must never mask the real error
                self.nvml.nvmlShutdown()

    def __enter__(self) -> NvmlProbe:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, index: int) -> Any:
        if not self._initialized:
            raise RuntimeError("NvmlProbe used before open()")
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def device_count(self) -> int:
        if not self._initialized:
            raise RuntimeError("NvmlProbe used before open()")
        return int(self.nvml.nvmlDeviceGetCount())

    def name(self, index: int = 0) -> str:
        name = self.nvml.nvmlDeviceGetName(self._handle(index))
        return name.decode() if isinstance(name, bytes) else str(name)  # old bindings return bytes

    def memory(self, index: int = 0) -> MemoryInfo:
        info = self.nvml.nvmlDeviceGetMemoryInfo(self._handle(index))
        return MemoryInfo(used=int(info.used), total=int(info.total))

    def process_memory(self, index: int = 0, pid: int | None = None) -> int | None:
        """GPU memory NVML attributes to ``pid`` (this process by default); None when not listed
        (e.g. a container's PID namespace hides it, or the driver reports it unavailable)."""
        pid = os.getpid() if pid is None else pid
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self._handle(index)):
            if int(proc.pid) == pid:
                used = getattr(proc, "usedGpuMemory", None)
                return None if used is None else int(used)
        return None

    def versions(self) -> dict[str, str | None]:
        """Driver, NVML library, and the newest CUDA the driver supports; None where NVML cannot say."""
        out: dict[str, str | None] = {}
        for key, fn in (("driver", "nvmlSystemGetDriverVersion"), ("nvml", "nvmlSystemGetNVMLVersion")):
            try:
                value = getattr(self.nvml, fn)()
                out[key] = value.decode() if isinstance(value, bytes) else str(value)
            except Exception:  # an old binding or driver lacks the call: report it as unknown
                out[key] = None
        out["cuda_driver"] = None
        for fn in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
            try:
                code = int(getattr(self.nvml, fn)())  # e.g. 13000 for CUDA 13.0
            except Exception:
                continue
            out["cuda_driver"] = f"{code // 1000}.{(code % 1000) // 10}"
            break
        return out

    def utilization(self, index: int = 0) -> tuple[float, float]:
        """(GPU busy %, memory-controller busy %) over NVML's last sample period."""
        rates = self.nvml.nvmlDeviceGetUtilizationRates(self._handle(index))
        return float(rates.gpu), float(rates.memory)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the sampler started
    gpu_util: float  # %
    mem_used: int  # bytes (device-wide)


@dataclass
class SamplerSummary:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None  # the exception that ended sampling early, if any
    stopped_cleanly: bool = True

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def mean_util(self) -> float | None:
        return sum(s.gpu_util for s in self.samples) / self.n if self.samples else None

    @property
    def max_util(self) -> float | None:
        return max(s.gpu_util for s in self.samples) if self.samples else None

    @property
    def max_mem_used(self) -> int | None:
        return max(s.mem_used for s in self.samples) if self.samples else None


class UtilizationSampler:
    """Sample GPU utilization and memory every ``interval_s`` on a daemon thread.

    Always stops: ``stop()`` sets an event and joins with a timeout, the thread is a daemon, and an
    exception inside a sample ends sampling and is recorded in the summary instead of raised.
    """

    def __init__(
        self, probe: NvmlProbe, index: int = 0, interval_s: float = 0.05, join_timeout_s: float = 2.0
    ):
        self.probe = probe
        self.index = index
        self.interval_s = interval_s
        self.join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[Sample] = []
        self._error: str | None = None
        self._t0 = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                util, _ = self.probe.utilization(self.index)
                used = self.probe.memory(self.index).used
            except Exception as exc:  # recorded, never raised on the sampling thread
                self._error = f"{type(exc).__name__}: {exc}"
                return
            self._samples.append(Sample(time.perf_counter() - self._t0, util, used))
            self._stop.wait(self.interval_s)

    def start(self) -> UtilizationSampler:
        if self._thread is not None:
            raise RuntimeError("UtilizationSampler already started")
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="moola-diag-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SamplerSummary:
        self._stop.set()
        clean = True
        if self._thread is not None:
            self._thread.join(self.join_timeout_s)
            clean = not self._thread.is_alive()
        return SamplerSummary(samples=list(self._samples), error=self._error, stopped_cleanly=clean)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> UtilizationSampler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.summary = self.stop()
