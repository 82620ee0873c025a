"""What the live rules cost inside ``moola train``, side by side in one process, and what an audit costs.

    python -m diagnostics.audit.overhead [--model jade_compact] [--epochs 20] [--pairs 6]

Per pair, the same seeded training (no early stopping) runs twice in alternating order (AB, BA, ...):
A with the metrics writer only (what ``moola train`` ran before the audit fields), B with the writer plus
everything this adds per epoch (GPU statistics, the live rules, the progress line). Reported: the median over
the pairs of B/A of the fastest epoch-to-epoch interval (callbacks included), and the callbacks' own time
per epoch measured directly (the robust figure on a shared machine). Then the one-off costs per run (machine speeds, fingerprint, eval-mode train
metrics) and the wall time of ``moola-diag audit`` on a default ``moola train`` run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


class _Timed:
    """Wraps a callback; accumulates the seconds spent in its hooks."""

    def __init__(self, inner: Any):
        self.inner, self.seconds = inner, 0.0
        for hook in ("on_train_start", "on_epoch_end", "on_train_end"):
            if hasattr(inner, hook):
                setattr(self, hook, self._wrap(getattr(inner, hook)))

    def _wrap(self, fn: Any) -> Any:
        def call(state: Any) -> None:
            t0 = time.perf_counter()
            fn(state)
            self.seconds += time.perf_counter() - t0

        return call


class _Stamp:
    """The last callback: the time each epoch ended, so epoch-to-epoch intervals include every callback."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_epoch_end(self, state: Any) -> None:
        self.times.append((time.perf_counter(), time.process_time()))


def _one(config: Any, data: Any, live: bool, tmp: Path) -> tuple[float, float, float]:
    """(the fastest epoch-to-epoch interval in wall time and in this process's CPU time, callbacks
    included; seconds per epoch inside the added callbacks). The fastest interval is what a neighbour's
    bursts disturb least; CPU time leaves out the time this process waited for a core."""
    import torch
    from rich.console import Console

    from moola.models import get_model
    from moola.progress import EpochDisplay
    from moola.train.live import LiveRules
    from moola.train.record import GpuEpochStats
    from moola.train.run import _MetricsWriter
    from moola.train.trainer import fit

    train_ds, val_ds, n_features, n_classes = data
    torch.manual_seed(config.seed)
    model = get_model(config.model, n_features=n_features, n_classes=n_classes)
    run = Path(tempfile.mkdtemp(dir=tmp))
    callbacks: list[Any] = [_MetricsWriter(run / "metrics.jsonl")]
    added: list[_Timed] = []
    if live:
        display = EpochDisplay(
            Console(file=io.StringIO(), force_terminal=False), config.model, config.n_epochs
        )
        rules = LiveRules(notify=display.finding)
        rules.configure(run, "cpu", 1e-9, 0)
        display.live = rules
        added = [_Timed(GpuEpochStats(torch.device(config.device))), _Timed(rules), _Timed(display)]
        callbacks = [added[0], callbacks[0], added[1], added[2]]
    stamp = _Stamp()
    result = fit(model, train_ds, val_ds, config, callbacks=[*callbacks, stamp])
    pairs = list(zip(stamp.times, stamp.times[1:], strict=False))
    wall = min(b[0] - a[0] for a, b in pairs)
    cpu = min(b[1] - a[1] for a, b in pairs)
    return wall, cpu, sum(c.seconds for c in added) / result.n_epochs_run


def measure(model: str = "jade_compact", epochs: int = 20, pairs: int = 6) -> dict[str, Any]:
    import torch

    from moola.config import TrainConfig
    from moola.data.splits import make_split
    from moola.data.synthetic import default_dataset
    from moola.features import transform
    from moola.models import get_model, get_spec
    from moola.train import record
    from moola.train.trainer import evaluate_dataset

    config = replace(TrainConfig(), model=model, n_epochs=epochs, early_stopping_patience=0, device="cpu")
    ds = default_dataset()
    train_idx, val_idx = make_split(ds, config.split, config.val_fraction, config.seed, config.embargo_bars)
    feats = ds.with_features(transform(ds.X, get_spec(model).feature_set))
    data = (feats.subset(train_idx), feats.subset(val_idx), feats.n_features, ds.n_classes)
    ratios, cpu_ratios, direct, base = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        _one(replace(config, n_epochs=2), data, True, Path(tmp))  # warm-up: allocator, oneDNN primitives
        for i in range(pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {live: _one(config, data, live, Path(tmp)) for live in order}
            ratios.append(got[True][0] / got[False][0])
            cpu_ratios.append(got[True][1] / got[False][1])
            direct.append(got[True][2])
            base.append(got[False][0])
    epoch_s = statistics.median(base)
    m = get_model(model, n_features=feats.n_features, n_classes=ds.n_classes)
    t0 = time.perf_counter()
    record.measure_machine(m, torch.device("cpu"), config.batch_size)
    machine_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    record.data_fingerprint(ds)
    fingerprint_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_dataset(m, data[0], config, "cpu")
    eval_s = time.perf_counter() - t0
    return {
        "model": model,
        "epochs": epochs,
        "pairs": pairs,
        "epoch_s": epoch_s,
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "cpu_ratios": cpu_ratios,
        "callbacks_s_per_epoch": statistics.median(direct),
        "callbacks_share": statistics.median(direct) / epoch_s,
        "one_off_s": {"machine_speeds": machine_s, "fingerprint": fingerprint_s, "train_eval": eval_s},
        "threads": torch.get_num_threads(),
    }


def audit_time(repeats: int = 3) -> dict[str, Any]:
    """Train a default run (``moola train`` defaults, embedded data) once, audit it ``repeats`` times."""
    from diagnostics.audit.run import run_audit
    from moola.config import TrainConfig
    from moola.train.run import train_run

    t0 = time.perf_counter()
    import torch._dynamo  # noqa: F401  # what FlopCounterMode (the bound's FLOP count) imports on first use

    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train_run(replace(TrainConfig(), device="cpu", out_dir=tmp))
        train_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            outcome = run_audit(result.run_dir, report_dir=None)
            times.append(time.perf_counter() - t0)
    return {
        "train_s": train_s,
        "epochs_run": len(result.history),
        "audit_s": times,
        "dynamo_import_s": import_s,
        "verdict": max((r.status for r in outcome.results), key=lambda s: s.severity).value,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m diagnostics.audit.overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default="jade_compact")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--no-audit", action="store_true", help="skip timing the audit of a default run")
    args = parser.parse_args(argv)
    m = measure(args.model, args.epochs, args.pairs)
    print(
        f"live rules, {m['model']}, {m['pairs']} interleaved pairs of {m['epochs']} epochs ({m['threads']} thread(s)): "
        f"fastest epoch {m['epoch_s'] * 1e3:.1f} ms without; with/without median {m['ratio_median']:.3f} "
        f"(pairs {', '.join(f'{r:.3f}' for r in m['ratios'])}); in CPU time {m['cpu_ratio_median']:.3f} "
        f"(pairs {', '.join(f'{r:.3f}' for r in m['cpu_ratios'])}); the added callbacks themselves "
        f"{m['callbacks_s_per_epoch'] * 1e6:.0f} us per epoch = {m['callbacks_share']:.3%} of an epoch"
    )
    one = m["one_off_s"]
    print(
        "one-off per run: machine speeds {:.0f} ms, fingerprint {:.1f} ms, eval-mode train metrics {:.1f} ms".format(
            one["machine_speeds"] * 1e3, one["fingerprint"] * 1e3, one["train_eval"] * 1e3
        )
    )
    if not args.no_audit:
        a = audit_time()
        print(
            f"audit of a default run ({a['epochs_run']} epochs, trained in {a['train_s']:.1f} s): "
            f"{', '.join(f'{t:.2f}' for t in a['audit_s'])} s after a one-off {a['dynamo_import_s']:.1f} s import "
            f"of torch._dynamo (FlopCounterMode's); verdict {a['verdict']}"
        )


if __name__ == "__main__":
    main()
