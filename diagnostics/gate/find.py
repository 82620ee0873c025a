"""``moola-diag gate bisect --good REV --bad REV``: the first commit that regresses, with its numbers.

Like ``asv find``, but every probe is a full gate comparison (interleaved rounds, paired Wilcoxon with
Holm's correction, HL ratio with its CI, counters with tolerances) of a commit against ``good``, never
one sample per commit. Binary search over ``git rev-list --first-parent good..bad``: ``bad`` must
regress against ``good`` (checked first), and the search assumes that once a commit regresses, later
ones do too (a regression that is fixed and reintroduced bisects to one of its starts).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diagnostics.gate.core import repo_root, resolve_revision
from diagnostics.gate.core import run as gate_run
from diagnostics.gate.report import GateReport
from moola.errors import MoolaError


@dataclass
class BisectResult:
    good: str
    bad: str
    first_bad: str | None  # sha of the first regressing commit; None when bad does not regress
    subject: str = ""
    report: GateReport | None = None  # the probe that found first_bad regressing (vs good)
    probes: list[dict[str, Any]] = field(default_factory=list)  # sha, exit code, regressions, seconds

    @property
    def exit_code(self) -> int:
        """1: a regressing commit was named; 0: bad does not regress against good; 2: a probe failed."""
        if any(p["exit_code"] == 2 for p in self.probes):
            return 2
        return 1 if self.first_bad else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "bad": self.bad,
            "first_bad": self.first_bad,
            "subject": self.subject,
            "exit_code": self.exit_code,
            "probes": self.probes,
            "report": self.report.to_dict() if self.report else None,
        }


def run(
    good: str,
    bad: str,
    *,
    repo: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    **gate_options: Any,
) -> BisectResult:
    """Bisect between ``good`` and ``bad``; ``gate_options`` go to every probe (bench, rounds, ...)."""
    say = progress or (lambda _msg: None)
    root = repo_root(repo)
    good_rev = resolve_revision(root, good, "good")
    bad_rev = resolve_revision(root, bad, "bad")
    if "WORKTREE" in (good_rev.sha, bad_rev.sha):
        raise MoolaError("bisect walks commits: --good and --bad must be commits, not WORKTREE")
    proc = subprocess.run(
        ["git", "-C", str(root), "rev-list", "--first-parent", "--reverse", f"{good_rev.sha}..{bad_rev.sha}"],
        capture_output=True,
        text=True,
    )
    commits = proc.stdout.split()
    if proc.returncode != 0 or not commits or commits[-1] != bad_rev.sha:
        raise MoolaError(f"--bad {bad!r} is not a descendant of --good {good!r}")
    result = BisectResult(good=good_rev.sha, bad=bad_rev.sha, first_bad=None)

    def probe(sha: str) -> GateReport:
        say(f"probe {sha[:10]} against good {good_rev.sha[:10]}")
        report = gate_run(good_rev.sha, sha, repo=root, **gate_options)
        result.probes.append(
            {
                "sha": sha,
                "subject": report.head.subject,
                "exit_code": report.exit_code,
                "regressions": report.regressions,
                "errors": report.all_errors(),
                "seconds": report.wall_s,
            }
        )
        say(f"  {sha[:10]}: {report.status}")
        return report

    last = probe(bad_rev.sha)
    if last.exit_code != 1:
        return result
    lo, hi, hi_report = 0, len(commits) - 1, last  # commits[hi] regresses; everything before lo passed
    while lo < hi:
        mid = (lo + hi) // 2
        report = probe(commits[mid])
        if report.exit_code == 2:
            return result
        if report.exit_code == 1:
            hi, hi_report = mid, report
        else:
            lo = mid + 1
    result.first_bad, result.report = commits[hi], hi_report
    result.subject = hi_report.head.subject
    return result
