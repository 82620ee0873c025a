"""Measurement worker for the benchmark gate: ONE revision's code, driven over stdin/stdout.

The gate copies this file (from ITS OWN revision: the measured revisions may not have it, or have
another version of it) into a temp dir and starts it as a script with PYTHONPATH = the revision's
tree, so ``import moola`` is that revision's code. It must therefore depend on nothing but the
standard library, numpy, torch and the moola contracts (``moola.data.synthetic.default_dataset``,
``moola.models.get_model``/``get_spec``, ``moola.features.transform``,
``moola.train.trainer.fit_tensors``).

Protocol (one JSON object per line; the worker's own stdout is redirected to stderr so a stray print
in the measured code cannot corrupt it):

    worker -> gate  {"type": "ready", "counters": {...}, "meta": {...}}   after setup + burn-in
    gate -> worker  "round"          worker -> gate  {"type": "round", "seconds": 0.37}
    gate -> worker  "quit"           (or EOF) the worker exits 0
    on any failure  {"type": "error", "message": "..."} and exit code 1

The gate keeps both workers alive and alternates rounds between them (A B B A A B ...), so the two
revisions see the same machine conditions and pay torch's import/warm-up cost once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PHYSICS_MODULE = "moola_gate_physics"  # the gate's own diagnostics/physics.py, copied beside this file


def _emit(stream: Any, payload: dict[str, Any]) -> None:
    stream.write(json.dumps(payload) + "\n")
    stream.flush()


def load_physics(path: Path | None = None) -> Any:
    """The analytic cost model (diagnostics/physics.py) loaded from a FILE, not from the measured tree:
    by default the gate's own copy beside this script, so both revisions are measured with one ruler.
    None when unavailable."""
    here = path or Path(__file__).resolve().parent / f"{PHYSICS_MODULE}.py"
    if not here.exists():
        return None
    spec = importlib.util.spec_from_file_location(PHYSICS_MODULE, here)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PHYSICS_MODULE] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


class AllocCounter:
    """Bytes of tensor storage created by every aten op (forward, backward, optimizer) under the mode.

    Deterministic on CPU: it depends only on the op sequence and shapes, not on the allocator, caching
    or thread scheduling. Outputs that alias an input (in-place ops, views) are not new allocations.
    """

    def __new__(cls) -> Any:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        class Mode(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.bytes = 0
                self.ops = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                out = func(*args, **(kwargs or {}))
                self.ops += 1
                inputs = {
                    t.untyped_storage().data_ptr()
                    for t in tree_flatten((args, kwargs))[0]
                    if isinstance(t, torch.Tensor)
                }
                seen: set[int] = set()
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        storage = t.untyped_storage()
                        ptr = storage.data_ptr()
                        if ptr not in inputs and ptr not in seen:
                            seen.add(ptr)
                            self.bytes += storage.nbytes()
                return out

        return Mode()


def flops_per_epoch(physics: Any, model: Any, n: int, batch: int, T: int, F: int) -> int | None:
    """Analytic training FLOPs of one epoch (``physics.count_flops(...).training_step`` per batch:
    full batches plus the ragged last one)."""
    if physics is None or not hasattr(physics, "count_flops"):
        return None

    def step_flops(b: int) -> int:
        count = physics.count_flops(model, b, T, n_features=F)
        return int(getattr(count, "training_step", count))

    full, rest = divmod(n, batch)
    return full * step_flops(batch) + (step_flops(rest) if rest else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="the revision tree that must provide `moola`")
    parser.add_argument("--model", default="jade_compact")
    parser.add_argument("--epochs-per-round", type=int, default=4)
    parser.add_argument("--windows", type=int, default=0, help="first N windows of the default set (0: all)")
    parser.add_argument("--burn-in", type=int, default=2, help="untimed rounds before 'ready'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-counters", action="store_true")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU (Linux)")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        # Both workers on the SAME core: neither gets a quieter core than the other for the whole run.
        os.sched_setaffinity(0, {args.cpu})

    # The protocol gets the real stdout; everything else printed goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        return _serve(args, proto)
    except Exception as exc:  # fail closed: the gate turns this into "could not measure"
        traceback.print_exc()
        _emit(proto, {"type": "error", "message": f"{type(exc).__name__}: {exc}"[:500]})
        return 1


def _serve(args: argparse.Namespace, proto: Any) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # already set (only possible once per process)
        torch.set_num_interop_threads(1)

    import moola

    root = Path(args.root).resolve()
    where = Path(moola.__file__).resolve()
    if root not in where.parents:
        raise RuntimeError(f"imported moola from {where}, not from the revision tree {root}")

    from moola.data.synthetic import default_dataset
    from moola.features import transform
    from moola.models import get_model, get_spec
    from moola.train.trainer import fit_tensors

    ds = default_dataset()
    if args.windows:
        ds = ds.subset(np.arange(min(args.windows, len(ds))))
    spec = get_spec(args.model)
    X_np = transform(ds.X, spec.feature_set)
    X = torch.as_tensor(np.ascontiguousarray(X_np, dtype=np.float32))
    y = torch.as_tensor(np.asarray(ds.y, dtype=np.int64))
    n, T, F = (int(s) for s in X.shape)

    def fresh_model() -> Any:
        torch.manual_seed(args.seed)
        return get_model(args.model, n_features=F, n_classes=ds.n_classes)

    counters: dict[str, int] = {}
    meta: dict[str, Any] = {
        "moola_path": str(where.parent),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n_windows": n,
        "window_length": T,
        "n_features": F,
        "epochs_per_round": args.epochs_per_round,
        "pid": os.getpid(),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    model = fresh_model()
    if not args.no_counters:
        counters["parameters"] = int(sum(p.numel() for p in model.parameters()))
        batch = 16  # TrainConfig's default batch size, which fit_tensors uses
        flops = flops_per_epoch(load_physics(), model, n, batch, T, F)
        if flops is not None:
            counters["flops_per_epoch"] = flops
        counter = AllocCounter()
        with counter:
            fit_tensors(model, X, y, 1, "cpu", seed=args.seed)
        counters["alloc_bytes_per_epoch"] = int(counter.bytes)
        meta["aten_ops_per_epoch"] = int(counter.ops)

    for _ in range(args.burn_in):
        fit_tensors(model, X, y, args.epochs_per_round, "cpu", seed=args.seed)
    _emit(proto, {"type": "ready", "counters": counters, "meta": meta})

    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "round":
            raise RuntimeError(f"unknown command {command!r}")
        t0 = time.perf_counter()
        fit_tensors(model, X, y, args.epochs_per_round, "cpu", seed=args.seed)
        _emit(proto, {"type": "round", "seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
