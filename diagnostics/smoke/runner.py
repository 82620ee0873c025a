"""Running the plan: each step in its own subprocess and process group, its output parsed, the report written
after every step (diagnostics.render.smoke renders it)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diagnostics.render.smoke import (
    readme_table,
    render_markdown,
    versions_line,
)
from diagnostics.smoke.plan import Step, describe_plan, plan
from diagnostics.smoke.steps import REPO
from moola.errors import MoolaError

PROG = "gpu-smoke"
SCHEMA = 1
BUDGET_S = 290.0  # the whole run: under 5 minutes, steps left out (recorded) once it is spent
MIN_STEP_S = 10.0  # a step is not started with less time than this left in the budget
TAIL_CHARS = 6000  # of each step's stdout / stderr kept in the JSON


# --------------------------------------------------------------------------- running one command


@dataclass
class Completed:
    """How one subprocess ended. ``returncode`` None: it timed out or could not start (see error)."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    error: str | None = None


Runner = Callable[[Sequence[str], float, dict[str, str], Path], Completed]


def run_subprocess(argv: Sequence[str], timeout_s: float, env: dict[str, str], cwd: Path) -> Completed:
    """Run ``argv`` in its own process group; on timeout (or our interruption) kill that whole group."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own group: a timeout kills its children too, and only them
        )
    except OSError as exc:
        return Completed(None, "", "", 0.0, error=f"could not start: {type(exc).__name__}: {exc}")

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild holds the pipes open: give up on the output
            out, err = "", ""
        return Completed(
            None,
            out,
            err,
            time.perf_counter() - t0,
            timed_out=True,
            error=f"timed out after {timeout_s:.0f} s",
        )
    except BaseException:  # Ctrl-C / SIGTERM of the smoke run: never leave the step running
        kill()
        raise
    return Completed(proc.returncode, out, err, time.perf_counter() - t0)


# --------------------------------------------------------------------------- is there a GPU?


@dataclass(frozen=True)
class Presence:
    gpu: bool
    reason: str  # why not, or what was found


def detect_gpu() -> Presence:
    """NVML first (fast, no torch); torch's CUDA only when NVML sees a GPU or cannot be asked.

    A GPU that torch cannot use (a CPU-only wheel) is a setup error the operator must fix: MoolaError.
    """
    from diagnostics.nvml import NvmlProbe, NvmlUnavailable

    names: list[str] = []
    nvml_reason = ""
    try:
        with NvmlProbe() as probe:
            names = [probe.name(i) for i in range(probe.device_count())]
    except NvmlUnavailable as exc:
        nvml_reason = str(exc)
    except Exception as exc:  # a query failing after init
        nvml_reason = f"NVML query failed: {type(exc).__name__}: {exc}"
    if nvml_reason and "nvidia-ml-py" not in nvml_reason:
        return Presence(False, nvml_reason)  # no driver: no GPU, and no need to import torch
    if not names and not nvml_reason:
        return Presence(False, "NVML sees 0 GPUs")
    try:
        import torch
    except ImportError as exc:
        raise MoolaError(f"torch is not importable ({exc}): install the README's requirements") from exc
    if torch.cuda.is_available():
        return Presence(True, ", ".join(names) or torch.cuda.get_device_name(0))
    if not names:
        return Presence(False, f"{nvml_reason}; torch {torch.__version__} sees no CUDA device")
    from moola.train.device import cuda_unavailable_reason

    raise MoolaError(
        f"NVML sees {', '.join(names)} but {cuda_unavailable_reason()}: install a CUDA build of torch "
        "(README: GPU verification run)"
    )


# --------------------------------------------------------------------------- parsing what each step wrote


def _tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def parse_check_report(path: Path) -> dict[str, Any]:
    report = _read_json(path)
    keep = ("check", "name", "status", "measured", "expected", "hint", "evidence")
    return {
        "verdict": report.get("verdict"),
        "counts": report.get("counts"),
        "meta": {k: report.get("meta", {}).get(k) for k in ("model", "device", "thresholds")},
        "results": [{k: r.get(k) for k in keep} for r in report.get("results", [])],
        "values": {f"{r['check']}.{r['name']}": r.get("values") for r in report.get("results", [])},
    }


def parse_train(runs: Path) -> dict[str, Any]:
    summaries = sorted(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        raise ValueError(f"no run directory with summary.json under {runs}")
    summary = _read_json(summaries[-1])
    keep = ("device", "n_train", "n_val", "epochs_run", "stopped_early", "train_time_s", "mean_epoch_time_s")
    data = {k: summary.get(k) for k in keep}
    data["run_dir"] = str(summaries[-1].parent)
    data["val_acc"] = (summary.get("metrics") or {}).get("val_acc")
    return data


def parse_pytest_bench(path: Path) -> dict[str, Any]:
    payload = _read_json(path)
    rows = []
    for bench in payload.get("benchmarks", []):
        stats = bench.get("stats", {})
        extra = bench.get("extra_info", {})
        rows.append(
            {
                "name": bench.get("name"),
                "median_s": stats.get("median"),
                "rounds": stats.get("rounds"),
                "value": extra.get("value"),  # track_/peakmem_ benchmarks: the counter, not a time
                "unit": extra.get("unit"),
            }
        )
    return {"benchmarks": rows, "machine": payload.get("machine_info", {}).get("node")}


def parse_step(step: Step, completed: Completed, repo: Path) -> dict[str, Any]:
    if step.out is None:
        return {}
    path = repo / step.out
    if step.key == "train":
        return parse_train(path)
    if step.key == "pytest_bench":
        return parse_pytest_bench(path)
    if step.key in ("check_all", "check_all_legacy", "gpu_check"):
        return parse_check_report(path)
    return _read_json(path)


# --------------------------------------------------------------------------- the orchestrator


@dataclass
class Outcome:
    key: str
    title: str
    command: str
    status: str  # ok | failed | timeout | skipped | interrupted
    timeout_s: float
    returncode: int | None = None
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""


def _git_sha(repo: Path) -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    return None


def _clear(path: Path) -> None:
    """Remove what an earlier run of this step wrote, so a failed step is never read as its old figures."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def run_step(step: Step, runner: Runner, env: dict[str, str], repo: Path, timeout_s: float) -> Outcome:
    outcome = Outcome(step.key, step.title, shlex.join(step.argv), "failed", timeout_s)
    if step.out is not None:
        _clear(repo / step.out)
    completed = runner(step.argv, timeout_s, {**env, **step.env}, repo)
    outcome.returncode, outcome.seconds = completed.returncode, completed.seconds
    outcome.stdout_tail, outcome.stderr_tail = _tail(completed.stdout), _tail(completed.stderr)
    if completed.timed_out:
        outcome.status, outcome.error = "timeout", completed.error
    elif completed.returncode is None:
        outcome.error = completed.error
    elif completed.returncode not in step.ok_codes:
        outcome.error = f"exit {completed.returncode}"
    else:
        outcome.status = "ok"
    if outcome.status != "timeout":  # a failed step may still have written its figures
        try:
            outcome.data = parse_step(step, completed, repo)
        except Exception as exc:
            if outcome.status == "ok":
                outcome.status = "failed"
                outcome.error = f"its output could not be read: {type(exc).__name__}: {exc}"
    # A FAIL verdict is a finding (exit 1 is fine); a check that raised on this device is a broken step.
    crashed = [
        f"{r['check']}: {r['measured']}" for r in outcome.data.get("results", []) if r["name"] == "crashed"
    ]
    if crashed and outcome.status == "ok":
        outcome.status, outcome.error = "failed", "a check crashed: " + "; ".join(crashed)
    return outcome


def write_reports(report: dict[str, Any], report_dir: Path) -> tuple[Path, Path]:
    from moola.io import atomic_write_json, atomic_write_text

    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_json(report_dir / "gpu-smoke.json", report)
    md_path = atomic_write_text(report_dir / "gpu-smoke.md", render_markdown(report))
    return json_path, md_path


def run(
    report_dir: Path = Path("reports"),
    *,
    budget_s: float = BUDGET_S,
    dry_run: bool = False,
    rehearse: bool = False,
    only: Sequence[str] | None = None,
    runner: Runner = run_subprocess,
    detect: Callable[[], Presence] = detect_gpu,
    echo: Callable[[str], None] = print,
    python: str = sys.executable,
    repo: Path = REPO,
) -> int:
    """The whole verification run; returns the exit code (see the module doc)."""
    report_dir = report_dir.resolve()  # relative to the caller's directory, as moola-diag's --report-dir
    steps = plan(python, report_dir, repo, "cpu" if rehearse else "cuda")
    if only:
        unknown = sorted(set(only) - {s.key for s in steps})
        if unknown:
            raise MoolaError(
                f"--only {','.join(unknown)}: unknown step; steps: {', '.join(s.key for s in steps)}"
            )
        steps = [s for s in steps if s.key in set(only)]
    outputs = f"{report_dir / 'gpu-smoke.json'} and {report_dir / 'gpu-smoke.md'}"
    if dry_run:
        for step in steps:
            echo(f"{step.key} (timeout {step.timeout_s:.0f} s): {shlex.join(step.argv)}")
        echo(f"budget {budget_s:.0f} s; writes {outputs}")
        return 0
    presence = Presence(False, "CPU rehearsal: no GPU figures") if rehearse else detect()
    if not presence.gpu and not rehearse:
        echo(
            f"{PROG}: no GPU here ({presence.reason}); with one it would run: {describe_plan(steps)}; into {outputs}"
        )
        return 0

    # Subprocesses import this checkout whether or not it is installed (the lent GPU machine has no network).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "moola-gpu-smoke",
        "started": started.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": python,
        "git": _git_sha(repo),
        "gpu": presence.reason,
        "rehearsal": rehearse,
        "budget_s": budget_s,
        "complete": False,
        "steps": [],
    }
    outcomes: list[Outcome] = []
    interrupted: str | None = None
    try:
        for step in steps:
            left = budget_s - (time.perf_counter() - t0)
            if left < MIN_STEP_S:
                outcome = Outcome(step.key, step.title, shlex.join(step.argv), "skipped", step.timeout_s)
                outcome.error = f"left out: {max(left, 0):.0f} s of the {budget_s:.0f} s budget remained"
            else:
                echo(f"{PROG}: {step.key} ...")
                outcome = run_step(step, runner, env, repo, min(step.timeout_s, left))
            outcomes.append(outcome)
            echo(
                f"{PROG}: {step.key}: {outcome.status} in {outcome.seconds:.1f} s"
                + (f" ({outcome.error})" if outcome.error else "")
            )
            if step.key == "versions" and outcome.data:
                echo(f"{PROG}: {versions_line(outcome.data)}")
            report["steps"] = [asdict(o) for o in outcomes]
            report["seconds"] = time.perf_counter() - t0
            write_reports(report, report_dir)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C / SIGTERM)"
        done = {o.key for o in outcomes}
        outcomes += [
            Outcome(s.key, s.title, shlex.join(s.argv), "interrupted", s.timeout_s)
            for s in steps
            if s.key not in done
        ]
    report["steps"] = [asdict(o) for o in outcomes]
    report["seconds"] = time.perf_counter() - t0
    report["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report["complete"] = interrupted is None
    report["interrupted"] = interrupted
    json_path, md_path = write_reports(report, report_dir)
    bad = [o.key for o in outcomes if o.status != "ok"]
    for line in readme_table(report):  # the headline figures, also in the command's output
        echo(line)
    echo(
        f"{PROG}: {len(outcomes) - len(bad)}/{len(steps)} steps ok in {report['seconds']:.0f} s"
        + (f"; not ok: {', '.join(bad)}" if bad else "")
        + f"; wrote {json_path} and {md_path}"
    )
    if interrupted:
        return 130
    return 1 if bad or len(outcomes) < len(steps) else 0
