"""moola.io: atomic writes keep either the old file or the new one, with ordinary permissions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from moola.io import atomic_open, atomic_write_json, atomic_write_text, dumps_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = atomic_write_text(tmp_path / "report.md", "old\n")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("interrupted mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_an_interrupt_mid_write_is_cleaned_up_too(tmp_path: Path):
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "r.json") as handle:
        handle.write(b"{")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_new_files_get_the_umask_mode_and_rewrites_keep_the_old_mode(tmp_path: Path):
    old_umask = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "a.md", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        fresh.chmod(0o640)
        atomic_write_text(fresh, "y")
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old_umask)


def test_json_is_strict_and_deterministic(tmp_path: Path):
    payload = {"b": np.float32(0.5), "a": [np.int64(3), float("nan"), float("inf")], "c": np.bool_(True)}
    text = dumps_json(payload)
    assert json.loads(text) == {"a": [3, None, None], "b": 0.5, "c": True}
    assert text.index('"a"') < text.index('"b"')  # sorted keys: stable diffs between runs
    atomic_write_json(tmp_path / "r.json", payload)
    assert (tmp_path / "r.json").read_text() == text


def _bench_conftest():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pytest_bench" / "conftest.py"
    spec = importlib.util.spec_from_file_location("bench_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytest_benchmark_baselines_are_saved_atomically(tmp_path: Path, monkeypatch):
    import logging

    from pytest_benchmark.storage.file import FileStorage

    class Storage(FileStorage):  # a subclass, so the patch does not leak into other tests
        pass

    assert _bench_conftest().save_atomically(Storage)
    storage = Storage(tmp_path, logging.getLogger("bench"), default_machine_id="m")
    storage.save({"benchmarks": [{"name": "epoch", "stats": {"median": 0.09}}]}, "run")
    assert json.loads((tmp_path / "m" / "0001_run.json").read_text())["benchmarks"][0]["name"] == "epoch"

    def fail_after_writing(_fd):
        raise OSError("disk full")  # the bytes are written, the flush to disk fails

    monkeypatch.setattr(os, "fsync", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        storage.save({"benchmarks": []}, "run")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["0001_run.json"]  # nothing half-written
