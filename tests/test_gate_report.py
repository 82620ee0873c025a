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
    assert report.regressions == ["parameters: 100 -> 101 (+1.00%)"]
    md = report.to_markdown()
    assert "parameters: 100 -> 101" in md
    # regressions come first, the unchanged rest is folded
    assert md.index("### Regressions") < md.index("<details>") < md.index("| flops |")


def test_fail_closed_on_errors_missing_counters_and_missing_timings() -> None:
    assert _report(errors=("head worker failed: boom",)).exit_code == 2
    assert _report(timings=False).exit_code == 0  # counters alone are a comparison (--bench Counters)
    nothing = _report(timings=False)
    nothing.counters = []
    assert nothing.exit_code == 2 and "no benchmark was compared" in nothing.all_errors()
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


def test_markdown_shows_units_accepted_changes_and_notes() -> None:
    from diagnostics.gate.stats import CounterSpec

    report = _report()
    report.counters = compare_counters(
        {"peak": 100_000, "params": 10},
        {"peak": 200_000, "params": 12},
        {"peak": CounterSpec(0.01, unit="bytes"), "params": CounterSpec(unit="parameters")},
        {"params": (12.0, "two more on purpose")},
    )
    report.definitions_differ = ["train 4 epoch(s) [jade_compact]"]
    md = report.to_markdown()
    assert report.exit_code == 1 and md.splitlines()[0].startswith("## ❌")
    assert "| peak | 100,000 B | 200,000 B |" in md and "10 parameters" in md
    assert "accepted (two more on purpose)" in md and "own (different) definition" in md
    assert " ms |" in md  # timings carry their unit


def test_bench_that_selects_nothing_and_a_bad_regex_are_moola_errors() -> None:
    with pytest.raises(MoolaError, match="not a regular expression"):
        run("HEAD", "HEAD", bench="(", repo=REPO)


def test_malformed_acceptance_entries_are_one_line_errors(tmp_path: Path) -> None:
    from diagnostics.gate.core import load_accepted

    path = tmp_path / "accepted.json"
    assert load_accepted(path) == {}
    path.write_text('{"accepted": [{"benchmark": "b", "value": 3, "reason": "why"}]}')
    assert load_accepted(path) == {"b": (3.0, "why")}
    for text, match in (
        ("{", "not valid JSON"),
        ('{"accepted": {}}', "top level"),
        ('{"accepted": [{"benchmark": "b", "value": "3", "reason": "why"}]}', "entry 0 .b.: 'value'"),
        ('{"accepted": [{"benchmark": "b", "value": 3}]}', "'reason'"),
        ('{"accepted": [{"benchmark": "b", "value": 3, "reason": "x", "when": 1}]}', "unknown key"),
    ):
        path.write_text(text)
        with pytest.raises(MoolaError, match=match) as err:
            load_accepted(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bisect", "--good", "HEAD"], "needs --good REV and --bad REV"),
        (["bisect", "--good", "does-not-exist-123", "--bad", "HEAD"], "does-not-exist-123"),
        (["frobnicate", "--base", "HEAD"], "unknown gate action"),
        ([], "needs --base"),
    ],
)
def test_cli_bisect_and_missing_options_are_one_line_errors(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from diagnostics.gate.__main__ import app

    result = CliRunner().invoke(app, [*args, "--repo", str(REPO)])
    assert result.exit_code == 2
    out = (result.stderr if hasattr(result, "stderr") else result.output).strip()
    assert out.count("\n") == 0 and message in out


def _tiny_benchmark_repo(root: Path) -> Path:
    """A git repo whose benchmark package needs nothing but the standard library (and an empty moola)."""
    import subprocess

    (root / "benchmarks").mkdir(parents=True)
    (root / "moola").mkdir()
    (root / "moola" / "__init__.py").write_text("")
    (root / "benchmarks" / "__init__.py").write_text("")
    (root / "benchmarks" / "bench_tiny.py").write_text(
        "import os\n\n\n"
        "def time_sum():\n"
        "    sum(range(2000))\n"
        "    with open(os.environ['PID_LOG'], 'a') as log:\n"
        "        log.write(f'{os.getpid()}\\n')\n\n\n"
        "def time_sorted():\n"
        "    sorted(range(2000, 0, -1))\n\n\n"
        "time_sorted.gate_rounds = 5\n"
    )
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], check=True)
    return root


def test_each_benchmark_gets_its_gate_rounds_unless_rounds_overrides(tmp_path: Path) -> None:
    repo = _tiny_benchmark_repo(tmp_path / "repo")
    pid_log = tmp_path / "pids.txt"
    env = {"*": {"PID_LOG": str(pid_log)}}
    options = {"repo": repo, "burn_in": 0, "min_sample_s": 0.002, "pin_cpu": False, "worker_env": env}
    report = run("HEAD", "HEAD", **options)
    taken = {name.split(".")[-1]: len(s["head"]) for name, s in report.samples.items()}
    assert taken == {"time_sum": 15, "time_sorted": 5}, report.all_errors()
    assert "5-15 interleaved rounds in 2 worker pair(s)" in report.to_markdown()
    assert len(set(pid_log.read_text().split())) == 2 * 2  # two worker pairs (the default), one per side

    pid_log.unlink()
    report = run("HEAD", "HEAD", rounds=3, processes=3, **options)
    assert {len(s["base"]) for s in report.samples.values()} == {3}
    assert "· 3 interleaved rounds in 3 worker pair(s)" in report.to_markdown()
    assert len(set(pid_log.read_text().split())) == 2 * 3


def test_round_schedule_spreads_short_benchmarks_over_every_worker_pair() -> None:
    from diagnostics.gate.core import round_schedule

    pairs = round_schedule({"short": 15, "long": 45, "tiny": 2}, processes=2)
    assert [len(p) for p in pairs] == [22, 23]
    for name, want in (("short", 15), ("long", 45), ("tiny", 2)):
        per_pair = [sum(name in due for due in p) for p in pairs]
        assert sum(per_pair) == want and min(per_pair) >= 1
        assert max(per_pair) - min(per_pair) <= 1 + want // 15  # evenly split, not bunched in one pair


def test_gate_rounds_may_depend_on_the_benchmark_parameter() -> None:
    from diagnostics.gate.worker import discover

    rounds = {
        b.name.split(".", 1)[1]: b.rounds for b in discover(REPO, r"time_epoch|LoadWindows\.(time|peak)")
    }
    assert rounds["TrainEpoch.time_epoch(jade)"] == 10  # from the dict, by parameter value
    assert rounds["TrainEpoch.time_epoch(jade_compact)"] == 15  # not in the dict: the default
    assert rounds["LoadWindows.time_load_windows_20k"] == 45  # from the class
    assert rounds["LoadWindows.peakmem_load_windows_20k"] == 15  # the method overrides its class


def test_the_terminal_report_shows_both_quality_distributions() -> None:
    """The console table once left the quality rows out: a gate that passed on them showed none of them."""
    from rich.console import Console

    from diagnostics.gate.cli import print_report
    from diagnostics.gate.stats import compare_quality, holm_quality

    report = _report()
    base = [0.84, 0.86, 0.80, 0.88, 0.83, 0.85, 0.82, 0.87]
    head = [v - 0.06 for v in base]
    report.quality = holm_quality(
        [compare_quality("Quality.track_holdout_accuracy(jade_compact)", base, head, threshold=0.02)], 0.02
    )
    console = Console(width=250, record=True)
    print_report(report, console)
    out = console.export_text()
    row = next(line for line in out.splitlines() if "track_holdout_accuracy" in line)
    assert "0.8438 ± 0.0267 (0.8214–0.8661, 8)" in row and "0.7837 ± 0.0267" in row
    assert "+0.0600 (+0.0300–+0.0900)" in row and "regression" in row
    assert out.rstrip().splitlines()[-1].startswith("REGRESSION")
