"""A ``peakmem_`` sample of the gate's worker is the benchmark's own peak RSS (asv's meaning), never the
worker's high-water mark left by the benchmarks it ran before.

The worker runs on a throwaway tree: this checkout's ``moola`` (the worker insists on importing it
from the tree) and a three-benchmark suite: ``Hog`` holds 400 MB from its setup, as a training
benchmark holds its data; ``peakmem_small`` and ``peakmem_bigger`` touch 16 MB and 96 MB in their call.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from diagnostics.gate import core

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
SUITE = """
HOG, SMALL, BIGGER = 400 << 20, 16 << 20, 96 << 20


class Hog:
    def setup(self):
        self.hog = b"\\x01" * HOG  # touched, so resident, and alive as long as the instance

    def time_hold(self):
        sum(self.hog[:: 1 << 16])


def peakmem_small():
    b"\\x01" * SMALL


def peakmem_bigger():
    b"\\x01" * BIGGER


def peakmem_skipped():
    pass


def _skip():
    raise NotImplementedError("not on this machine")


peakmem_skipped.setup = _skip
"""

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "fork") and Path("/proc/self/status").exists()), reason="fork and /proc (Linux)"
)


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "moola", tree / "moola", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "benchmarks").mkdir()
    (tree / "benchmarks" / "__init__.py").write_text("")
    (tree / "benchmarks" / "bench_mem.py").write_text(SUITE)
    shutil.copyfile(core.WORKER_SOURCE, tmp_path / "moola_gate_worker.py")
    return tree


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _worker(tree: Path, tmp_path: Path) -> core._Worker:
    w = core._start_worker(
        "base", "WORKTREE", tree, tmp_path, python=core.sys.executable, threads=1, timeout_s=120, extra_env={}
    )
    w.expect("list", 300)
    return w


def test_a_peakmem_sample_is_the_benchmarks_own_peak_not_the_workers(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    w = _worker(tree, tmp_path)
    try:
        small, bigger = "bench_mem.peakmem_small", "bench_mem.peakmem_bigger"
        w.send(
            cmd="prepare", names=[small, bigger, "bench_mem.peakmem_skipped"], burn_in=1, min_sample_s=0.01
        )
        ready = w.expect("ready")
        assert ready["skipped"] == {"bench_mem.peakmem_skipped": "not on this machine"}
        alone = w.sample(small)
        w.send(cmd="prepare", names=["bench_mem.Hog.time_hold"], burn_in=1, min_sample_s=0.01)
        w.expect("ready")
        w.sample("bench_mem.Hog.time_hold")  # the worker now holds 400 MB
        after = [w.sample(small), w.sample(bigger), w.sample(small)]
        # The old worker reported its own high-water mark: >= 400 MB more once Hog had run.
        assert abs(after[0] - alone) < 8 * MB and abs(after[2] - alone) < 8 * MB, [
            v / MB for v in (alone, *after)
        ]
        # ... and a sample still sees its own call: 96 - 16 = 80 MB more for the bigger one.
        assert 70 * MB < after[1] - after[0] < 90 * MB, [v / MB for v in after]
        (template,) = _children(w.proc.pid)
    finally:
        w.close()
    assert w.proc.returncode == 0 and _gone(template)


def test_a_killed_worker_leaves_no_measuring_process_behind(tmp_path: Path) -> None:
    w = _worker(_tree(tmp_path), tmp_path)
    try:
        (template,) = _children(w.proc.pid)
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait(timeout=10)
        assert _gone(template)
    finally:
        w.close()
