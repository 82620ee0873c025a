"""Killing a real ``moola-diag check-all`` mid-run: the previous report survives byte for byte, the
completed checks land in report.partial.*, nothing half-written is left, and the exit code says which
signal stopped it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from diagnostics.commands import Options, run
from diagnostics.registry import CHECK_ORDER

REPO = Path(__file__).resolve().parents[1]


def _default_interrupt_handling() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A shell without job control starts a background job
    (``pytest &``, a CI runner) with SIGINT ignored, the child inherits that, and Python then installs no
    KeyboardInterrupt handler: the run would ignore the test's SIGINT and finish with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _moola_diag(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "diagnostics.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_interrupt_handling,
    )


@pytest.fixture(scope="module")
def previous_report(tmp_path_factory) -> Path:
    """A real earlier report (from the quick `config` check) that an interrupted run must not touch."""
    root = tmp_path_factory.mktemp("previous")
    run(Options(report_dir=root / "reports"), ("config",))
    return root / "reports"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_killed_run_keeps_previous_report_and_saves_partial(
    previous_report: Path, tmp_path: Path, signum, code
):
    reports = tmp_path / "reports"
    reports.mkdir()
    for p in previous_report.iterdir():
        (reports / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in reports.iterdir()}

    proc = _moola_diag("check-all", "--report-dir", str(reports), cwd=tmp_path)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # progress lines: stop once three checks have finished
        seen.append(line)
        if "running leakage" in line:
            break
    else:
        pytest.fail(f"no progress line for leakage; stderr: {''.join(seen)}")
    proc.send_signal(signum)
    stdout, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest

    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("moola-diag: interrupted: ") and "report.partial.json" in last, last
    # The previous complete report is untouched; the partial one sits beside it; no temp files.
    assert {name: (reports / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in reports.iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
        "report.partial.html",
        "report.partial.json",
        "report.partial.md",
    ]
    partial = json.loads((reports / "report.partial.json").read_text())
    done = partial["meta"]["interrupted"]["completed"]
    assert done[:3] == ["config", "params", "data"] and len(done) < len(CHECK_ORDER)
    assert partial["meta"]["interrupted"]["signal"] == signal.Signals(signum).name
    assert {r["check"] for r in partial["results"]} == set(done)
    assert "Interrupted by" in (reports / "report.partial.md").read_text()
    assert "Interrupted by" in (reports / "report.partial.html").read_text()
    assert stdout == ""  # no table for an incomplete run: the partial files are the record


def test_a_complete_run_removes_a_stale_partial_report(previous_report: Path, tmp_path: Path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.partial.json").write_text("{}")
    (reports / "report.partial.md").write_text("stale")
    (reports / "report.partial.html").write_text("stale")
    run(Options(report_dir=reports), ("config",))
    assert sorted(p.name for p in reports.iterdir()) == ["report.html", "report.json", "report.md"]


def test_interrupt_before_any_check_completes_writes_nothing(monkeypatch, tmp_path: Path):
    from diagnostics import registry
    from moola.errors import Interrupted

    def interrupted(_ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(registry._REGISTRY, "config", interrupted)
    with pytest.raises(Interrupted, match="no check completed; previous report left untouched") as err:
        run(Options(report_dir=tmp_path / "reports"), ("config",))
    assert err.value.exit_code == 130
    assert not (tmp_path / "reports").exists()
