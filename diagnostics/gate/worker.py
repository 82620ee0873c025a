"""Measurement worker for the benchmark gate: ONE revision's benchmarks, driven over stdin/stdout.

The gate copies this file (from ITS OWN revision: the measured revisions may not have it, or have
another version of it) into a temp dir and starts it as a script with PYTHONPATH = the revision's
tree, so ``import moola`` and ``import benchmarks`` are that revision's code: each revision's own
benchmark definitions measure it. It depends on nothing but the standard library (torch and numpy are
whatever the benchmarks import). ``discover`` is also what the pytest-benchmark collector uses, so asv,
pytest-benchmark and the gate all run the same asv-style definitions in ``benchmarks/*.py``:
functions or methods named ``time_*`` (seconds per call), ``peakmem_*`` (peak RSS of a process of
its own, as asv takes it: ``PeakRss``; a statistical measure here) and ``track_*`` (a returned,
deterministic counter), with asv's ``params``, ``setup``, ``setup_cache`` and ``number``;
NotImplementedError from a setup means "skipped".
With ``--cache-dir`` every ``setup_cache`` runs there and its result is pickled there, so the next
worker of the same revision (the gate starts several per revision, one after another) reuses it.

Protocol (one JSON object per line; the worker's own stdout is redirected to stderr so a stray print
in the measured code cannot corrupt it):

    worker -> gate  {"type": "list", "benchmarks": [spec, ...], "meta": {...}}        at start
    gate -> worker  {"cmd": "prepare", "names": [...], "burn_in": 1, "min_sample_s": 0.05}
    worker -> gate  {"type": "ready", "counters": {...}, "distributions": {...}, "skipped": {...},
                     "numbers": {...}}
    gate -> worker  {"cmd": "pin", "cpu": 1}  -> {"type": "pinned"}
    gate -> worker  {"cmd": "sample", "name": N, "number": 8} -> {"type": "sample", "value": 0.37}
    gate -> worker  {"cmd": "quit"}     (or EOF) the worker exits 0
    on any failure  {"type": "error", "benchmark": N or null, "message": "..."} and exit code 1
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib
import inspect
import itertools
import json
import math
import os
import pickle
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("time", "peakmem", "track")
DEFAULT_FACTOR = 1.10
DEFAULT_ROUNDS = 15  # interleaved samples per revision unless a benchmark sets gate_rounds
BYTES_TOLERANCE = 0.01  # byte counters: within 1% is "unchanged" (allocator-independent, yet tiny
# buffers come and go with harmless changes); parameters, FLOPs and the rest compare exactly


class BenchmarkError(RuntimeError):
    """A benchmark that could not be imported, set up or run: names the benchmark."""

    def __init__(self, benchmark: str | None, message: str):
        super().__init__(message)
        self.benchmark = benchmark


@dataclass
class Benchmark:
    """One asv-style benchmark with one parameter combination."""

    name: str  # module.Class.method(params) -- the id used everywhere (reports, --bench, acceptance)
    kind: str  # time | peakmem | track
    unit: str
    factor: float  # timing/peakmem ratio that counts as a regression
    tolerance: float  # counter: relative tolerance
    higher_is_better: bool
    definition: str  # short hash of the benchmark's source (+ the shared helpers): differs -> say so
    number: int = 0  # calls per timing sample; 0 = calibrate
    rounds: int = DEFAULT_ROUNDS  # interleaved samples per revision (``gate_rounds``)
    gated: bool = True  # ``gate = False``: a reference baseline (not product code) the gate only lists
    default: bool = True  # ``gate_default = False``: gated only when --bench selects it (too costly)
    threshold: float = 0.0  # ``gate_threshold``: a quality drop must also exceed this to regress
    owner: Any = field(default=None, repr=False)  # the class, or None for a module-level function
    method: str = ""
    params: tuple[Any, ...] = ()

    def spec(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("owner", "params", "method"):
            d.pop(key)
        return d


def _attr(fn: Any, owner: Any, name: str, default: Any) -> Any:
    value = getattr(fn, name, None)
    if value is None and owner is not None:
        value = getattr(owner, name, None)
    return default if value is None else value


def _per_param(value: Any, combo: tuple[Any, ...], default: Any) -> Any:
    """A gate attribute: one value, or a mapping from the parameter values ("jade", or "a, 2") to one."""
    if isinstance(value, dict):
        return value.get(", ".join(str(v) for v in combo), default)
    return value


def _rounds(value: Any, combo: tuple[Any, ...]) -> int:
    """``gate_rounds``: a number, or a mapping from the parameter values to one."""
    return max(2, int(_per_param(value, combo, DEFAULT_ROUNDS)))


def _param_grid(owner: Any) -> list[tuple[Any, ...]]:
    params = getattr(owner, "params", None) if owner is not None else None
    if not params:
        return [()]
    if not isinstance(params[0], (list, tuple)):  # asv: a flat list is one parameter
        params = [params]
    return list(itertools.product(*params))


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return repr(obj)


def discover(root: str | os.PathLike[str], pattern: str | None = None) -> list[Benchmark]:
    """Every benchmark under ``root/benchmarks`` (a package importable from ``root``), sorted by name,
    filtered by the regular expression ``pattern`` (``re.search`` on the name) when given."""
    bench_dir = Path(root) / "benchmarks"
    if not (bench_dir / "__init__.py").exists():
        raise BenchmarkError(None, f"{bench_dir} is not a benchmark package (no __init__.py)")
    helpers = "".join(p.read_text(errors="replace") for p in sorted(bench_dir.glob("_*.py")))
    regex = re.compile(pattern) if pattern else None
    found: list[Benchmark] = []
    for path in sorted(bench_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        mod_name = f"benchmarks.{path.stem}"
        try:
            module = importlib.import_module(mod_name)
        except Exception as exc:
            raise BenchmarkError(mod_name, f"benchmark module {mod_name} does not import: {exc}") from exc
        for obj_name, obj in sorted(vars(module).items()):
            if getattr(obj, "__module__", None) != mod_name:
                continue
            if inspect.isclass(obj):
                members = [(m, getattr(obj, m)) for m in sorted(dir(obj)) if m.split("_", 1)[0] in KINDS]
                owner, prefix = obj, f"{path.stem}.{obj_name}."
            elif inspect.isfunction(obj) and obj_name.split("_", 1)[0] in KINDS:
                members, owner, prefix = [(obj_name, obj)], None, f"{path.stem}."
            else:
                continue
            digest = hashlib.sha256((_source(obj) + helpers).encode()).hexdigest()[:12]
            for method, fn in members:
                if not callable(fn) or "_" not in method:
                    continue
                kind = method.split("_", 1)[0]
                default_unit = {"time": "s", "peakmem": "bytes"}.get(kind, "unit")
                unit = str(_attr(fn, None, "unit", default_unit)) if kind == "track" else default_unit
                tol_default = BYTES_TOLERANCE if unit == "bytes" else 0.0
                for combo in _param_grid(owner):
                    suffix = f"({', '.join(str(v) for v in combo)})" if combo else ""
                    name = f"{prefix}{method}{suffix}"
                    if regex is not None and not regex.search(name):
                        continue
                    found.append(
                        Benchmark(
                            name=name,
                            kind=kind,
                            unit=unit,
                            factor=float(_attr(fn, owner, "gate_factor", DEFAULT_FACTOR)),
                            tolerance=float(_attr(fn, owner, "gate_tolerance", tol_default)),
                            higher_is_better=bool(_attr(fn, owner, "gate_higher_is_better", False)),
                            definition=digest,
                            number=int(_attr(fn, owner, "number", 0) or 0),
                            rounds=_rounds(_attr(fn, owner, "gate_rounds", DEFAULT_ROUNDS), combo),
                            gated=bool(_attr(fn, None, "gate", True)),
                            default=bool(_per_param(_attr(fn, owner, "gate_default", True), combo, False)),
                            threshold=float(_attr(fn, owner, "gate_threshold", 0.0)),
                            owner=owner,
                            method=method,
                            params=tuple(combo),
                        )
                    )
    return sorted(found, key=lambda b: b.name)


class Runner:
    """Sets benchmarks up (one instance per class and parameter combination, one ``setup_cache`` per
    class, as asv shares them) and calls them."""

    def __init__(self, benchmarks: list[Benchmark], cache_dir: str | os.PathLike[str] | None = None):
        self.by_name = {b.name: b for b in benchmarks}
        self._instances: dict[tuple[Any, tuple[Any, ...]], Any] = {}
        self._caches: dict[Any, tuple[Any, ...]] = {}
        self._own_cache_dir: tempfile.TemporaryDirectory[str] | None = None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    def _cache_args(self, b: Benchmark) -> tuple[Any, ...]:
        owner = b.owner
        if owner is None or not hasattr(owner, "setup_cache"):
            return ()
        if owner not in self._caches:
            # As asv does: setup_cache runs in a private directory, so the files it writes (20k-window
            # parquet files) never land in the checkout. An own directory lives as long as the runner;
            # the gate's --cache-dir as long as the gate, with the result pickled for the next worker.
            if self._cache_dir is None:
                self._own_cache_dir = tempfile.TemporaryDirectory(prefix="moola-bench-cache-")
                self._cache_dir = Path(self._own_cache_dir.name)
            saved = self._cache_dir / f"{owner.__module__}.{owner.__qualname__}.pickle"
            if saved.exists():
                self._caches[owner] = (pickle.loads(saved.read_bytes()),)
            else:
                cwd = os.getcwd()
                os.chdir(self._cache_dir)
                try:
                    value = owner().setup_cache()
                finally:
                    os.chdir(cwd)
                saved.write_bytes(pickle.dumps(value))
                self._caches[owner] = (value,)
        return self._caches[owner]

    def call(self, b: Benchmark) -> Callable[[], Any]:
        """The benchmark as a zero-argument callable, set up (NotImplementedError: skipped)."""
        args = self._cache_args(b) + b.params
        if b.owner is None:
            fn = sys.modules[f"benchmarks.{b.name.split('.')[0]}"].__dict__[b.method]
            setup = getattr(fn, "setup", None)
            if setup is not None:
                setup(*args)
            return lambda: fn(*args)
        key = (b.owner, b.params)
        if key not in self._instances:
            inst = b.owner()
            if hasattr(inst, "setup"):
                inst.setup(*args)
            self._instances[key] = inst
        method = getattr(self._instances[key], b.method)
        return lambda: method(*args)


def time_call(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call over ``number`` back-to-back calls (garbage collected before, not during)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if enabled:
            gc.enable()


def vm_hwm() -> float | None:
    """This process's peak RSS so far (VmHWM, bytes); None without /proc (not Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(int(line.split()[1]) * 1024)
    return None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies, so a worker the gate killed
    leaves no measuring process behind (elsewhere the template still ends at EOF on its inbox)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class PeakRss:
    """``peakmem_`` samples as asv takes them: each one in a process of its own.

    asv's fork server imports the benchmark suite, then forks one child per benchmark run, which loads
    the ``setup_cache`` result, runs ``setup``, calls the benchmark once and reports its ru_maxrss.
    Here a *template* process is forked from the worker right after discovery (interpreter, torch and
    the suite imported; nothing set up, allocated or freed by any benchmark yet), and every sample is
    a child forked from that template: it loads the pickled ``setup_cache`` result, runs the
    benchmark's ``setup`` and one call, and reports its VmHWM (the kernel starts a forked process's
    high-water mark at its own RSS). So a sample is the benchmark's own peak in asv's meaning: the
    imported interpreter + its setup + its call, whatever the worker ran before (an epoch's tensors,
    another benchmark's setup, a fragmented heap). Measured cost: a fork per sample, ~0.1 s over the
    setup and call (docs/benchmarks.md), where a fresh interpreter would pay the torch import each time.
    """

    def __init__(
        self,
        benchmarks: list[Benchmark],
        cache_dir: str | os.PathLike[str] | None = None,
        close_fds: tuple[int, ...] = (),
    ):
        self._own_cache: tempfile.TemporaryDirectory[str] | None = None
        if cache_dir is None:  # the samples share one setup_cache result, as asv's do
            self._own_cache = tempfile.TemporaryDirectory(prefix="moola-bench-cache-")
            cache_dir = self._own_cache.name
        self._benchmarks, self._cache_dir = benchmarks, str(cache_dir)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the template inherits (and later repeats) buffered output
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the template: never returns
            code = 1
            try:
                os.close(req_w)
                os.close(rep_r)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, *close_fds):  # the gate's pipes: EOF must still reach the gate
                    os.dup2(devnull, fd)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gate's to handle
                _die_with_parent(parent)
                self._serve_template(req_r, rep_w)
                code = 0
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(req_w, "w", buffering=1)
        self._replies = os.fdopen(rep_r, "r")

    @staticmethod
    def supported() -> bool:
        return hasattr(os, "fork") and vm_hwm() is not None

    def sample(self, name: str) -> float:
        """Peak RSS (bytes) of a fresh process that set up and ran ``name`` once. NotImplementedError:
        its setup skipped it; BenchmarkError: it failed, or its process died (killed for memory, say)."""
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        try:
            self._requests.write(json.dumps({"name": name, "cpus": cpus}) + "\n")
            reply = json.loads(self._replies.readline() or "null")
        except (OSError, ValueError) as exc:
            raise BenchmarkError(name, f"peak-RSS template process failed: {exc}") from exc
        if not isinstance(reply, dict):
            raise BenchmarkError(name, "peak-RSS template process exited")
        if "skipped" in reply:
            raise NotImplementedError(reply["skipped"])
        if "error" in reply:
            raise BenchmarkError(name, reply["error"])
        return float(reply["value"])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._requests.close()  # EOF: the template exits after its current sample
        self._replies.close()
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        if self._own_cache is not None:
            self._own_cache.cleanup()

    def _serve_template(self, requests: int, replies: int) -> None:
        with os.fdopen(requests) as inbox, os.fdopen(replies, "w", buffering=1) as outbox:
            for line in inbox:
                msg = json.loads(line)
                r, w = os.pipe()
                template = os.getpid()
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        for fd in (r, requests, replies):
                            os.close(fd)
                        _die_with_parent(template)
                        self._measure(msg, w)
                        code = 0
                    finally:
                        os._exit(code)
                os.close(w)
                with os.fdopen(r) as f:
                    answer = f.read().strip()
                _, status = os.waitpid(pid, 0)
                if not answer:
                    died = (
                        f"signal {-os.waitstatus_to_exitcode(status)}" if os.WIFSIGNALED(status) else "exit"
                    )
                    answer = json.dumps({"error": f"its measuring process died ({died}) before reporting"})
                outbox.write(answer + "\n")

    def _measure(self, msg: dict[str, Any], out_fd: int) -> None:
        try:
            if msg.get("cpus") and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, set(msg["cpus"]))
            runner = Runner(self._benchmarks, self._cache_dir)
            runner.call(runner.by_name[msg["name"]])()
            result: dict[str, Any] = {"value": vm_hwm()}
        except NotImplementedError as exc:
            result = {"skipped": str(exc) or "NotImplementedError"}
        except BaseException as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        with os.fdopen(out_fd, "w") as f:
            f.write(json.dumps(result))


def _emit(stream: Any, payload: dict[str, Any]) -> None:
    stream.write(json.dumps(payload) + "\n")
    stream.flush()


def _number_for(b: Benchmark, fn: Callable[[], Any], min_sample_s: float) -> int:
    if b.number > 0:
        return b.number
    once = time_call(fn, 1)
    return max(1, min(1000, math.ceil(min_sample_s / max(once, 1e-6))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the revision tree that must provide `moola`")
    parser.add_argument("--bench", default=None, help="regular expression selecting benchmarks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="where setup_cache runs and its result is kept")
    args = parser.parse_args(argv)

    # The protocol gets the real stdout; everything else printed goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        return _serve(args, proto)
    except BenchmarkError as exc:
        traceback.print_exc()
        _emit(proto, {"type": "error", "benchmark": exc.benchmark, "message": str(exc)[:500]})
        return 1
    except Exception as exc:  # fail closed: the gate turns this into "could not measure"
        traceback.print_exc()
        _emit(proto, {"type": "error", "benchmark": None, "message": f"{type(exc).__name__}: {exc}"[:500]})
        return 1


def _serve(args: argparse.Namespace, proto: Any) -> int:
    root = Path(args.root).resolve()
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(args.threads)
        with contextlib.suppress(RuntimeError):  # already set (only possible once per process)
            torch.set_num_interop_threads(1)
    import moola

    where = Path(moola.__file__).resolve()
    if root not in where.parents:
        raise RuntimeError(f"imported moola from {where}, not from the revision tree {root}")
    benchmarks = discover(root, args.bench)
    meta: dict[str, Any] = {
        "moola_path": str(where.parent),
        "python": sys.version.split()[0],
        "torch": getattr(sys.modules.get("torch"), "__version__", None),
        "threads": args.threads,
        "device": os.environ.get("MOOLA_BENCH_DEVICE", "cpu"),
        "pid": os.getpid(),
    }
    # Forked now, before any benchmark runs here: peakmem samples must not carry what the others left.
    peak = None
    if any(b.kind == "peakmem" for b in benchmarks) and PeakRss.supported():
        peak = PeakRss(benchmarks, args.cache_dir, close_fds=(proto.fileno(),))
    _emit(proto, {"type": "list", "benchmarks": [b.spec() for b in benchmarks], "meta": meta})
    try:
        return _commands(benchmarks, args.cache_dir, peak, proto)
    finally:
        if peak is not None:
            peak.close()


def _commands(benchmarks: list[Benchmark], cache_dir: str | None, peak: PeakRss | None, proto: Any) -> int:
    runner = Runner(benchmarks, cache_dir)
    calls: dict[str, tuple[Callable[[], Any], int]] = {}

    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "quit":
            break
        if cmd == "prepare":
            counters: dict[str, float] = {}
            distributions: dict[str, list[float]] = {}  # a track_ returning a Distribution: every run
            skipped: dict[str, str] = {}
            for name in msg["names"]:
                b = runner.by_name[name]
                try:
                    if b.kind == "peakmem":
                        if peak is None:
                            skipped[name] = "peak RSS cannot be measured on this platform (no fork or VmHWM)"
                            continue
                        # Set up in its own processes, never here; the first sample is the burn-in (and
                        # runs setup_cache when no earlier worker of this revision did).
                        for _ in range(max(1, int(msg.get("burn_in", 1)))):
                            peak.sample(name)
                        calls[name] = (lambda: None, 1)
                        continue
                    fn = runner.call(b)
                    if b.kind == "track":
                        value = fn()
                        if not isinstance(value, (int, float)) or isinstance(value, bool):
                            raise TypeError(f"returned {value!r}, not a number")
                        counters[name] = float(value)
                        samples = getattr(value, "samples", None)
                        if samples is not None:
                            distributions[name] = [float(v) for v in samples]
                        continue
                    number = _number_for(b, fn, float(msg.get("min_sample_s", 0.05)))
                    for _ in range(int(msg.get("burn_in", 1))):
                        time_call(fn, number)
                    calls[name] = (fn, number)
                except NotImplementedError as exc:
                    skipped[name] = str(exc) or "NotImplementedError"
                except BenchmarkError:
                    raise
                except Exception as exc:
                    traceback.print_exc()
                    raise BenchmarkError(name, f"{type(exc).__name__}: {exc}") from exc
            numbers = {n: c[1] for n, c in calls.items()}
            _emit(
                proto,
                {
                    "type": "ready",
                    "counters": counters,
                    "distributions": distributions,
                    "skipped": skipped,
                    "numbers": numbers,
                },
            )
        elif cmd == "pin":
            # Both workers on the SAME core for the timed rounds: neither gets a quieter core all run long.
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {int(msg["cpu"])})
            _emit(proto, {"type": "pinned"})
        elif cmd == "sample":
            name = msg["name"]
            fn, number = calls[name]
            number = int(msg.get("number") or number)  # the gate gives both sides the same count
            b = runner.by_name[name]
            try:
                value = peak.sample(name) if b.kind == "peakmem" and peak else time_call(fn, number)
            except BenchmarkError:
                raise
            except Exception as exc:
                traceback.print_exc()
                raise BenchmarkError(name, f"{type(exc).__name__}: {exc}") from exc
            _emit(proto, {"type": "sample", "value": value})
        else:
            raise RuntimeError(f"unknown command {cmd!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
