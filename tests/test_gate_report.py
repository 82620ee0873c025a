"""The gate's report: exit codes (fail closed), Markdown, option validation and the CLI's one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.gate import GateReport, RevisionInfo, run
from diagnostics.gate.stats import compare_counters, compare_timings
from moola.errors import MoolaError

REPO = Path(__file__).resolve().parents[1]


def _report(head_params: int = 100, timings: bool = True, errors: tuple[str, ...] = ()) -> GateReport:
    report = GateReport(
        base=RevisionInfo("base", "main", "a" * 40),
        head=RevisionInfo("head", "HEAD", "b" * 40),
        settings={"factor": 1.1, "alpha": 0.01, "rounds": 15},
    )
    if timings:
        base = [0.30, 0.31, 0.29, 0.30, 0.32, 0.30, 0.31, 0.30, 0.29, 0.30]
        report.timings.append(compare_timings("train 4 epoch(s) [jade_compact]", base, base[::-1]))
    report.counters = compare_counters(
        {"parameters": 100, "flops": 10}, {"parameters": head_params, "flops": 10}
    )
    report.errors.extend(errors)
    return report


def test_clean_report_passes() -> None:
    report = _report()
    assert report.exit_code == 0 and report.status == "pass" and report.regressions == []
    md = report.to_markdown()
    assert "no performance regression" in md and "| parameters | 100 | 100 |" in md


def test_counter_increase_fails_and_is_named() -> None:
    report = _report(head_params=101)
    assert report.exit_code == 1
    assert report.regressions == ["parameters: 100 -> 101 (+1.0%)"]
    assert "parameters: 100 -> 101" in report.to_markdown()


def test_fail_closed_on_errors_missing_counters_and_missing_timings() -> None:
    assert _report(errors=("head worker failed: boom",)).exit_code == 2
    assert _report(timings=False).exit_code == 2
    missing = _report()
    missing.counters = compare_counters({"parameters": 100}, {})
    assert missing.exit_code == 2
    assert "could not be measured" in " ".join(missing.all_errors())
    # a regression with an error is still an error (2), never hidden behind 1 or 0
    assert _report(head_params=200, errors=("x",)).exit_code == 2
    assert "could not measure" in _report(errors=("x",)).to_markdown()


def test_report_dict_is_json_ready() -> None:
    import json

    payload = json.loads(json.dumps(_report(head_params=101).to_dict()))
    assert payload["status"] == "regression" and payload["exit_code"] == 1


def test_nonexistent_revision_is_a_moola_error() -> None:
    with pytest.raises(MoolaError, match="does-not-exist"):
        run("does-not-exist-123", "HEAD", repo=REPO)
    with pytest.raises(MoolaError, match="--head"):
        run("HEAD", "no/such/branch", repo=REPO)


def test_bad_options_are_moola_errors() -> None:
    with pytest.raises(MoolaError, match="factor"):
        run("HEAD", "HEAD", factor=0.9, repo=REPO)
    with pytest.raises(MoolaError, match="rounds"):
        run("HEAD", "HEAD", rounds=1, repo=REPO)


def test_not_a_repository_is_a_moola_error(tmp_path: Path) -> None:
    with pytest.raises(MoolaError, match="not inside a git repository"):
        run("HEAD", repo=tmp_path)


def test_cli_prints_one_line_and_exits_2_for_a_bad_revision() -> None:
    from typer.testing import CliRunner

    from diagnostics.gate.__main__ import app

    result = CliRunner().invoke(app, ["--base", "does-not-exist-123", "--repo", str(REPO)])
    assert result.exit_code == 2
    out = (result.stderr if hasattr(result, "stderr") else result.output).strip()
    assert out.count("\n") == 0 and "does-not-exist-123" in out


def test_cli_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, diagnostics.gate.cli, diagnostics.gate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
