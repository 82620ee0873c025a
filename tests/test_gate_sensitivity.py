"""The sensitivity tool injects what it is asked to: ``--inject spin`` is CPU work, not a sleep."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from diagnostics.gate.sensitivity import measure, patch_family, patch_slow_call
from moola.errors import MoolaError

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["spin", "sleep"])
def test_injected_slowdown_is_cpu_work_only_when_spinning(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work.py").write_text(
        "import time\n\n\ndef work():\n    t = time.perf_counter()\n    while time.perf_counter() - t < 0.05:\n        pass\n"
    )
    patch_slow_call("work.py", "work", 1.0, mode)(tmp_path)
    module = _load(tmp_path / "work.py", f"gate_work_{mode}")
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # a sleep returns at once and is recorded
    wall, cpu = time.perf_counter(), time.thread_time()
    module.work()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    if mode == "spin":
        # No sleep, yet the call took the injected 100% longer: the time was spent running Python.
        assert slept == [] and wall >= 0.095
    else:
        # The slowdown is the recorded sleep; the call itself spun only its own 0.05 s, which cannot cost more
        # CPU than that however busy the machine is (a wall-time bound here could flake under load).
        assert len(slept) == 1 and slept[0] >= 0.05 and cpu < 0.095


def test_the_measured_variant_is_the_injection_that_was_asked_for(tmp_path: Path) -> None:
    # Before the fix, --inject was parsed and ignored: every trial's head slept.
    res = measure(family="train", trials=0, inject="spin", out=None, repo=str(REPO), progress=lambda _m: None)
    diff = res["variant_diff"]
    assert "_gate_acc +=" in diff and "sleep" not in diff
    res = measure(family="load", trials=0, inject="sleep", out=None, repo=str(REPO), progress=lambda _m: None)
    assert "_gate_time.sleep(" in res["variant_diff"] and "load_windows = _gate_slow" in res["variant_diff"]


def test_unknown_family_or_injection_is_a_user_error() -> None:
    with pytest.raises(MoolaError, match="--family"):
        patch_family("gpu", 0.2)
    with pytest.raises(MoolaError, match="--inject"):
        measure(trials=0, inject="nap", out=None)


def test_quality_trials_draw_one_fresh_seed_block_each_from_first_trial_on(monkeypatch) -> None:
    """--first-trial moves every trial onto seeds no earlier trial used; both sides share the block."""
    import diagnostics.gate.sensitivity as sens

    seen: list[tuple[str, str]] = []

    class Report:
        def to_dict(self) -> dict:
            row = {"name": "q", "verdict": "ok", "drop": 0.0, "base": {"mean": 0.8}, "p_worse": 0.5}
            return {"exit_code": 0, "quality": [row], "timings": [], "regressions": []}

    def fake_gate(base, head, **options):  # type: ignore[no-untyped-def]
        seen.append((head, options["worker_env"]["*"]["MOOLA_BENCH_QUALITY_SEED"]))
        return Report()

    monkeypatch.setattr(sens, "run", fake_gate)
    res = measure(
        family="quality", trials=2, first_trial=20, out=None, repo=str(REPO), progress=lambda _m: None
    )
    assert [seed for _, seed in seen] == ["21000", "21000", "22000", "22000"]
    assert res["settings"]["first_trial"] == 20 and len(res["identical"]) == 2
    with pytest.raises(MoolaError, match="--first-trial"):
        measure(family="quality", trials=1, first_trial=-1, out=None)


def test_saved_quality_trials_are_redecided_by_the_current_rule(tmp_path):
    """scripts/rescore-quality-trials judges the runs a sensitivity record saved with today's rule."""
    import json
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(3)

    def trial(drop: float, exit_code: int) -> dict:
        base, head = rng.normal(0.83, 0.03, 24), rng.normal(0.83 - drop, 0.03, 24)
        q = {"name": "bench_quality.Quality.track_holdout_accuracy(jade_compact)", "unit": "accuracy",
             "threshold": 0.02, "higher_is_better": True,
             "base": {"values": base.tolist()}, "head": {"values": head.tolist()}}  # fmt: skip
        return {"quality": [q], "exit_code": exit_code, "head_variant": "slow"}

    record = tmp_path / "trials.json"
    record.write_text(json.dumps({"slow": [trial(0.05, 0)], "identical": [trial(0.0, 0)]}))
    from pathlib import Path

    script = [str(Path(__file__).resolve().parents[1] / "scripts" / "rescore-quality-trials")]
    out = subprocess.run([sys.executable, *script, str(record)], capture_output=True, text=True, check=True)
    assert "slow: 1/1 flagged by the current rule (0/1 by the gate that ran them)" in out.stdout
    assert "identical: 0/1 flagged" in out.stdout
    bad = subprocess.run([sys.executable, *script, "pyproject.toml"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
