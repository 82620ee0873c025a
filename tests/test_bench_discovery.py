"""asv-style discovery and the gate worker's protocol, on a tiny fake revision tree (no torch needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).resolve().parents[1] / "diagnostics" / "gate" / "worker.py"

BENCH = """
import time

calls = []


class Suite:
    params = [["a", "b"], [1, 2]]
    param_names = ["name", "k"]

    def setup_cache(self):
        calls.append("cache")
        return 10

    def setup(self, cache, name, k):
        if name == "b" and k == 2:
            raise NotImplementedError("not in this revision")
        self.value = cache * k

    def time_work(self, cache, name, k):
        time.sleep(0.001)

    def track_value(self, cache, name, k):
        return self.value + len(calls)  # setup_cache ran once for the whole class

    track_value.unit = "bytes"

    def track_accuracy(self, cache, name, k):
        return 0.5

    track_accuracy.gate_higher_is_better = True


def time_function():
    pass


time_function.gate = False


def track_crash():
    raise ValueError("broken counter")
"""


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "moola").mkdir()
    (tmp_path / "moola" / "__init__.py").write_text("")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "_helpers.py").write_text("HELPER = 1\n")
    (tmp_path / "benchmarks" / "bench_fake.py").write_text(BENCH)
    return tmp_path


class Worker:
    def __init__(self, tree: Path):
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--root", str(tree)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(tree),
            env=env,
        )

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def test_discovery_names_params_units_and_gate_attributes(tree: Path) -> None:
    w = Worker(tree)
    listing = w.ask()
    specs = {b["name"]: b for b in listing["benchmarks"]}
    assert "bench_fake.Suite.time_work(a, 1)" in specs and "bench_fake.Suite.track_value(b, 2)" in specs
    assert len([n for n in specs if n.startswith("bench_fake.Suite.")]) == 3 * 4
    assert specs["bench_fake.Suite.track_value(a, 1)"]["unit"] == "bytes"
    assert specs["bench_fake.Suite.track_value(a, 1)"]["tolerance"] == 0.01  # bytes: 1% by default
    assert specs["bench_fake.Suite.track_accuracy(a, 1)"]["tolerance"] == 0.0
    assert specs["bench_fake.Suite.track_accuracy(a, 1)"]["higher_is_better"] is True
    assert specs["bench_fake.Suite.time_work(a, 1)"]["factor"] == 1.10
    assert specs["bench_fake.time_function"]["gated"] is False
    assert w.close() == 0


def test_worker_prepares_skips_samples_and_names_a_crash(tree: Path) -> None:
    w = Worker(tree)
    w.ask()
    names = [
        "bench_fake.Suite.track_value(a, 2)",
        "bench_fake.Suite.track_value(b, 1)",
        "bench_fake.Suite.time_work(b, 2)",
        "bench_fake.Suite.time_work(a, 1)",
    ]
    ready = w.ask(cmd="prepare", names=names, burn_in=0, min_sample_s=0.005)
    assert ready["counters"] == {names[0]: 21.0, names[1]: 11.0}  # cache 10 * k + one setup_cache call
    assert ready["skipped"] == {names[2]: "not in this revision"}
    assert ready["numbers"][names[3]] >= 1
    sample = w.ask(cmd="sample", name=names[3])
    assert sample["type"] == "sample" and sample["value"] >= 0.001
    crash = w.ask(cmd="prepare", names=["bench_fake.track_crash"])
    assert crash == {
        "type": "error",
        "benchmark": "bench_fake.track_crash",
        "message": "ValueError: broken counter",
    }
    assert w.proc.wait(timeout=30) == 1
