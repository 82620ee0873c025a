"""The GPU verification run (scripts/gpu-smoke, diagnostics/smoke/) on a machine without a GPU:
the one-line exit, the plan, step isolation and timeouts, and the report's format, through a fake runner
that writes what each step would write on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diagnostics import smoke
from diagnostics.render import to_json
from diagnostics.result import CheckResult, Status
from diagnostics.smoke import steps as smoke_steps
from moola.errors import MoolaError
from moola.io import dumps_json

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-smoke"
GPU = smoke.Presence(True, "NVIDIA H100 80GB HBM3")
MIB = 2**20


def check_report(model: str, statuses: dict[str, Status]) -> dict:
    results = [
        CheckResult(
            check,
            name,
            status,
            f"{name} measured",
            f"{name} expected",
            evidence=(f"{name} why",),
            values={"x": 1},
        )
        for (check, name), status in ((tuple(k.split(".")), v) for k, v in statuses.items())
    ]
    return to_json(
        results, {"model": model, "device": "cuda", "thresholds": {"gpu_memory_warn_factor": 10.0}}
    )


def fake_outputs(step: smoke.Step, out: Path, crash: bool = False) -> None:
    """What each step writes on a GPU machine (the shapes the parsers read; check reports via the real to_json).
    ``crash``: a check report also holds a check that raised (as cuDNN made sanity do on a real H200)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if step.key == "versions":
        payload = {
            "torch": "2.11.0+cu130",
            "torch_cuda": "13.0",
            "cudnn": 91300,
            "driver": "580.159.04",
            "nvml": "13.580.159.04",
            "cuda_driver": "13.0",
            "python": "3.12.3",
            "devices": [{"name": "NVIDIA H100 80GB HBM3", "total_memory": 80 * 1024 * MIB}],
        }
    elif step.key in ("check_all", "check_all_legacy", "gpu_check"):
        out.parent.mkdir(parents=True, exist_ok=True)
        legacy = step.key == "check_all_legacy"
        payload = check_report(
            "enhanced_simple_lstm" if legacy else "jade_compact",
            {
                "params.params_per_sample": Status.FAIL if legacy else Status.PASS,
                "sanity.epoch_time": Status.PASS,
                "gpu.placement": Status.PASS,
                "gpu.memory": Status.PASS,
                "gpu.utilization": Status.PASS,
            }
            | ({"sanity.crashed": Status.FAIL} if crash else {}),
        )
    elif step.key == "train":
        out = out / "jade_compact-20261127" / "summary.json"
        out.parent.mkdir(parents=True)
        payload = {
            "device": "cuda",
            "n_train": 139,
            "n_val": 35,
            "epochs_run": 60,
            "stopped_early": False,
            "train_time_s": 4.8,
            "mean_epoch_time_s": 0.08,
            "metrics": {"val_acc": 0.886},
        }
    elif step.key == "audit":
        payload = {
            "verdict": "PASS",
            "results": [
                {"check": "audit", "name": "epoch_time", "status": "PASS", "measured": "every epoch above"},
                {"check": "audit", "name": "memory", "status": "PASS", "measured": "peak 37.5 MiB (4.7x)"},
            ],
        }
    elif step.key == "bound":
        payload = {"bound_s": 0.02, "flops_part_s": 0.0005, "latency_part_s": 0.02, "n_train": 139}
    elif step.key == "burst":
        payload = {
            "n_forward": 1000,
            "epochs": 112,
            "seconds": 6.5,
            "nvml_before_cuda": 600 * MIB,
            "nvml_with_context": 1100 * MIB,
            "context_bytes": 500 * MIB,
            "own_peak": 12 * MIB,
            "budget_bytes": 8 * MIB,
            "workspace_bytes": 32 * MIB,
            "reserved": 64 * MIB,
            "process_bytes": None,
            "mean_util": 41.5,
            "max_util": 63.0,
            "n_samples": 300,
            "timeline": [[0.0, 0.0, 1100 * MIB], [0.5, 55.0, 1180 * MIB]],
            "verdicts": [
                CheckResult(
                    "gpu", "utilization", Status.PASS, "a kernel running 42% of the time", "x"
                ).to_dict()
            ],
        }
    elif step.key == "asv_gpu":
        payload = {
            "rows": [
                {
                    "param": "jade_compact",
                    "benchmark": "track_gpu_peak_alloc_bytes_epoch",
                    "status": "ok",
                    "value": 9_000_000,
                    "unit": "bytes",
                }
            ]
        }
    else:  # pytest_bench
        payload = {
            "benchmarks": [{"name": "test_train_epoch[jade_compact]", "stats": {"median": 0.05, "rounds": 1}}]
        }
    out.write_text(json.dumps(payload))


class FakeRunner:
    """Runs nothing: writes each step's outputs (unless told to fail it) and records what it was asked."""

    def __init__(
        self, report_dir: Path, fail: dict[str, smoke.Completed] | None = None, crash: tuple[str, ...] = ()
    ):
        self.steps = {tuple(s.argv): s for s in smoke.plan(sys.executable, report_dir, REPO)}
        self.fail = fail or {}
        self.crash = crash
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, argv, timeout_s, env, cwd):
        step = self.steps[tuple(argv)]
        self.calls.append((step.key, timeout_s, env))
        if step.key in self.fail:
            return self.fail[step.key]
        fake_outputs(step, Path(cwd) / step.out, crash=step.key in self.crash)
        code = 1 if step.key == "check_all_legacy" or step.key in self.crash else 0  # a FAIL: exit 1
        return smoke.Completed(code, f"{step.key} stdout", "", 1.5)


def run_fake(tmp_path: Path, **kwargs):
    report_dir = tmp_path / "reports"
    runner = FakeRunner(report_dir, kwargs.pop("fail", None), kwargs.pop("crash", ()))
    lines: list[str] = []
    code = smoke.run(report_dir, runner=runner, detect=lambda: GPU, echo=lines.append, **kwargs)
    return code, runner, lines, report_dir


# --------------------------------------------------------------------------- no GPU: one line, exit 0


def test_no_gpu_here_is_one_line_and_exit_0(tmp_path):
    """The real script on this machine: without a GPU, one line naming the reason and the plan, nothing written.
    (With a GPU, --budget 0 leaves every step out at once: exit 1 and a report saying so.)"""
    presence = smoke.detect_gpu()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--budget", "0", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not presence.gpu:
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == 1 and out.stderr == ""
        assert lines[0].startswith("gpu-smoke: no GPU here (") and presence.reason in lines[0]
        assert "check-all --device cuda" in lines[0] and smoke.REFERENCE in lines[0]
        assert "gpu-smoke.json" in lines[0]
        assert list(tmp_path.iterdir()) == []
    else:
        assert out.returncode == 1
        report = json.loads((tmp_path / "gpu-smoke.json").read_text())
        assert {s["status"] for s in report["steps"]} == {"skipped"}


def test_no_gpu_decided_by_the_detector_runs_nothing(tmp_path):
    lines: list[str] = []

    def runner(*args):
        raise AssertionError("nothing may run without a GPU")

    code = smoke.run(
        tmp_path, runner=runner, detect=lambda: smoke.Presence(False, "NVML sees 0 GPUs"), echo=lines.append
    )
    assert code == 0 and len(lines) == 1 and "NVML sees 0 GPUs" in lines[0]


def test_gpu_without_cuda_torch_is_a_one_line_setup_error(monkeypatch):
    """NVML sees a card but torch is a CPU build: a user error naming what to install (exit 2), not 'no GPU'."""

    class Nvml:
        def nvmlInit(self):
            pass

        def nvmlShutdown(self):
            pass

        def nvmlDeviceGetCount(self):
            return 1

        def nvmlDeviceGetHandleByIndex(self, i):
            return i

        def nvmlDeviceGetName(self, h):
            return "NVIDIA H100 80GB HBM3"

    monkeypatch.setitem(sys.modules, "pynvml", Nvml())
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only build, wherever this runs
    with pytest.raises(MoolaError, match=r"NVML sees NVIDIA H100 80GB HBM3 but torch .* CUDA build of torch"):
        smoke.detect_gpu()


def test_dry_run_prints_every_step_and_writes_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    keys = [line.split(" ", 1)[0] for line in out.stdout.splitlines()[:-1]]
    assert keys == [s.key for s in smoke.plan(sys.executable, tmp_path)]
    assert "--model jade_compact --device cuda --predict-pointers --n-epochs 60" in out.stdout
    assert "check-all --device cuda --model enhanced_simple_lstm" in out.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--budget", "abc"], "argument --budget: invalid float value"),
        (["--only", "nope"], "--only nope: unknown step"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, words):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith("gpu-smoke: error: ") and words in line


# --------------------------------------------------------------------------- the run, with a fake runner


def test_full_run_writes_one_json_and_one_markdown(tmp_path):
    code, runner, lines, report_dir = run_fake(tmp_path)
    assert code == 0, lines
    # Printed as well: the versions, and the headline table (the GPU tool returns the output's tail).
    assert any(
        "NVIDIA H100 80GB HBM3 · driver 580.159.04 · NVML 13.580.159.04 · CUDA driver 13.0" in x
        for x in lines
    )
    assert "| measured on this card | value |" in lines and lines[-1].startswith("gpu-smoke: 10/10 steps ok")
    assert [c[0] for c in runner.calls] == [s.key for s in smoke.plan(sys.executable, report_dir)]
    # Subprocesses import this checkout even when it is not installed.
    assert all(c[2]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO) for c in runner.calls)
    assert dict(runner.calls[-1][2]).get("MOOLA_BENCH_DEVICE") == "cuda"
    report = json.loads((report_dir / "gpu-smoke.json").read_text())
    assert report["complete"] is True and report["gpu"] == GPU.reason
    steps = {s["key"]: s for s in report["steps"]}
    assert {s["status"] for s in steps.values()} == {"ok"}  # exit 1 of check-all is a verdict, not a failure
    assert steps["check_all_legacy"]["returncode"] == 1
    assert steps["check_all_legacy"]["data"]["verdict"] == "FAIL"
    assert steps["train"]["data"]["epochs_run"] == 60 and steps["bound"]["data"]["bound_s"] == 0.02
    assert smoke.reference_figures(steps)["ratio"] == pytest.approx(4.0)  # 80 ms / 20 ms

    md = (report_dir / "gpu-smoke.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Versions",
        "## Steps",
        "## check-all --device cuda",
        "## Reference training vs the physical lower bound",
        "## NVML during a training burst",
        "## GPU benchmarks",
        "## For the README",
        "## Failures",
    ]
    assert "| driver | 580.159.04 |" in md and "| CUDA (torch built with) | 13.0 |" in md
    assert "| measured / bound | 4.0x |" in md and "| floor for 60 epochs | 1.20 s |" in md
    assert "| CUDA context (difference) | 500.0 MiB |" in md
    assert "| NVML utilization mean / max (share of time a kernel ran) | 42% / 63% over 300 samples |" in md
    assert "| params | params_per_sample | FAIL |" in md  # the legacy model's verdict table
    assert "- **gpu.memory**: memory why" in md and "params_per_sample why" not in md  # GPU evidence only
    assert "| card / driver / torch | NVIDIA H100 80GB HBM3 / 580.159.04 / 2.11.0+cu130 (CUDA 13.0) |" in md
    assert "| check-all enhanced_simple_lstm | exit 1: 1 FAIL, 4 PASS |" in md
    assert "| audit of that run: memory | PASS: peak 37.5 MiB (4.7x) |" in md
    assert "None: every step ran." in md
    # Every table row has as many cells as its header.
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            widths = {r.replace("\\|", "").count("|") for r in rows}
            assert len(widths) == 1, block


def test_failed_and_timed_out_steps_are_recorded_and_the_rest_run(tmp_path):
    report_dir = tmp_path / "reports"
    stale = report_dir / "gpu-smoke" / "runs" / "old-run"
    stale.mkdir(parents=True)
    (stale / "summary.json").write_text(json.dumps({"epochs_run": 3}))  # an earlier run's figures
    fail = {
        "check_all": smoke.Completed(2, "", "moola-diag: error: --device cuda: CUDA is not available", 3.0),
        "train": smoke.Completed(None, "epoch 1\n", "", 150.0, timed_out=True, error="timed out after 150 s"),
    }
    code, runner, lines, _ = run_fake(tmp_path, fail=fail)
    assert code == 1
    assert len(runner.calls) == len(smoke.plan(sys.executable, report_dir))  # every step still ran
    report = json.loads((report_dir / "gpu-smoke.json").read_text())
    steps = {s["key"]: s for s in report["steps"]}
    assert steps["check_all"]["status"] == "failed" and steps["check_all"]["error"] == "exit 2"
    assert steps["train"]["status"] == "timeout" and steps["train"]["data"] == {}
    assert not stale.exists()  # never read as this run's figures
    assert steps["bound"]["status"] == "ok"
    md = (report_dir / "gpu-smoke.md").read_text()
    assert "### check_all: failed" in md and "CUDA is not available" in md
    assert "### train: timeout" in md and "timed out after 150 s" in md
    assert "No report (failed; see Failures)." in md
    assert "not ok: check_all, train" in lines[-1]


def test_a_step_whose_output_cannot_be_read_fails(tmp_path):
    report_dir = tmp_path / "reports"
    ok_but_silent = {"bound": smoke.Completed(0, "", "", 2.0)}  # exit 0 but no bound.json
    code, _, _, _ = run_fake(tmp_path, fail=ok_but_silent)
    assert code == 1
    steps = {s["key"]: s for s in json.loads((report_dir / "gpu-smoke.json").read_text())["steps"]}
    assert steps["bound"]["status"] == "failed" and "could not be read" in steps["bound"]["error"]


def test_a_check_that_crashed_on_the_gpu_fails_its_step(tmp_path):
    """Exit 1 with a FAIL verdict is a finding; exit 1 because a check raised on this device is not."""
    code, runner, lines, report_dir = run_fake(tmp_path, crash=("check_all",))
    assert code == 1
    assert len(runner.calls) == len(smoke.plan(sys.executable, report_dir))
    steps = {s["key"]: s for s in json.loads((report_dir / "gpu-smoke.json").read_text())["steps"]}
    assert steps["check_all"]["status"] == "failed"
    assert steps["check_all"]["error"] == "a check crashed: sanity: crashed measured"
    assert steps["check_all_legacy"]["status"] == "ok"  # its FAIL is the params verdict, not a crash
    assert "not ok: check_all" in lines[-1]


def test_an_interrupted_run_keeps_what_it_had(tmp_path):
    """Ctrl-C / SIGTERM (the GPU lease's timeout) during a step: the report says so, exit 130."""

    report_dir = tmp_path / "reports"
    runner = FakeRunner(report_dir)

    def interrupting(argv, timeout_s, env, cwd):
        if runner.steps[tuple(argv)].key == "train":
            raise KeyboardInterrupt
        return runner(argv, timeout_s, env, cwd)

    code = smoke.run(report_dir, runner=interrupting, detect=lambda: GPU, echo=lambda line: None)
    assert code == 130
    report = json.loads((report_dir / "gpu-smoke.json").read_text())
    assert report["complete"] is False and "interrupted" in report["interrupted"]
    statuses = [s["status"] for s in report["steps"]]
    assert statuses[:2] == ["ok", "ok"] and set(statuses[2:]) == {"interrupted"}
    assert "interrupted (Ctrl-C / SIGTERM)" in (report_dir / "gpu-smoke.md").read_text()


def test_the_budget_caps_each_step_and_leaves_out_the_rest(tmp_path):
    code, runner, _, report_dir = run_fake(tmp_path, budget_s=5.0)  # below MIN_STEP_S: nothing starts
    assert code == 1 and runner.calls == []
    steps = json.loads((report_dir / "gpu-smoke.json").read_text())["steps"]
    assert {s["status"] for s in steps} == {"skipped"} and "budget" in steps[0]["error"]
    code, runner, _, _ = run_fake(tmp_path / "b", budget_s=100.0)
    assert all(timeout <= 100.0 for _, timeout, _ in runner.calls)


def test_only_runs_the_named_steps_and_rejects_unknown_ones(tmp_path):
    code, runner, _, _ = run_fake(tmp_path, only=["versions", "bound"])
    assert code == 0 and [c[0] for c in runner.calls] == ["versions", "bound"]
    with pytest.raises(MoolaError, match="--only nope: unknown step"):
        run_fake(tmp_path, only=["nope"])


# --------------------------------------------------------------------------- the real subprocess runner


def test_timeout_kills_the_step_and_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    t0 = time.perf_counter()
    done = smoke.run_subprocess([sys.executable, "-c", code], 3.0, dict(os.environ), tmp_path)
    assert done.timed_out and done.returncode is None and time.perf_counter() - t0 < 30
    assert "started" in done.stdout
    child = int(pid_file.read_text())
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the step's child {child} survived the timeout")


def test_run_subprocess_reports_exit_codes_and_unstartable_commands(tmp_path):
    done = smoke.run_subprocess(
        [sys.executable, "-c", "import sys; sys.exit(3)"], 30, dict(os.environ), tmp_path
    )
    assert (done.returncode, done.timed_out) == (3, False)
    missing = smoke.run_subprocess([str(tmp_path / "no-such-program")], 30, dict(os.environ), tmp_path)
    assert missing.returncode is None and "could not start" in missing.error


# --------------------------------------------------------------------------- the inner steps, on the CPU


def test_inner_steps_run_on_the_cpu_and_write_json(monkeypatch):
    """The code the GPU steps run, exercised here on the CPU with small settings (the rehearsal's path)."""
    versions = smoke_steps.inner_versions("cpu")
    assert versions["torch"] and versions["python"] and versions["packages"]["numpy"]
    assert all(d["name"] and d["total_memory"] > 0 for d in versions["devices"])
    bound = smoke_steps.inner_bound("cpu")
    assert (
        bound["n_train"] == 139
        and bound["bound_s"] == max(bound["flops_part_s"], bound["latency_part_s"]) > 0
    )
    burst = smoke_steps.inner_burst("cpu", steps=2)
    assert burst["n_forward"] >= 2 and burst["input_devices"] == ["cpu"] and burst["budget_bytes"] > 0
    names = [v["name"] for v in burst["verdicts"]]
    assert names == ["placement", "memory", "utilization"]
    monkeypatch.setenv("MOOLA_BENCH_DEVICE", "cpu")
    asv = smoke_steps.inner_asv_gpu("cpu")
    assert asv["rows"] and all(".Gpu." in r["benchmark"] for r in asv["rows"])
    assert {r["status"] for r in asv["rows"]} == {"ok" if torch.cuda.is_available() else "skipped"}
    for payload in (versions, bound, burst, asv):
        json.loads(dumps_json(payload))  # strict JSON, as atomic_write_json writes it


def test_inner_audit_audits_the_newest_reference_run(tmp_path):
    from moola.config import TrainConfig
    from moola.data.synthetic import generate
    from moola.train.run import train_run

    train_run(TrainConfig(n_epochs=2, device="cpu", out_dir=str(tmp_path / "runs")), generate(60, seed=2))
    data = smoke_steps.inner_audit(tmp_path / "runs", tmp_path / "audit")
    found = {r["name"]: r for r in data["results"]}
    assert found["epoch_time"]["status"] == "PASS" and found["epoch_time"]["values"]["bound_s"] > 0
    assert found["memory"]["status"] == "SKIP"  # trained on the CPU: no GPU memory recorded
    assert (tmp_path / "audit" / "report.json").exists()
    json.loads(dumps_json(data))
    with pytest.raises(ValueError, match="no run directory"):
        smoke_steps.inner_audit(tmp_path / "empty", tmp_path / "audit2")
