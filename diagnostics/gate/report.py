"""The gate's result: what was compared, the verdicts, the exit code, and its Markdown for a PR comment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diagnostics.gate.stats import CounterComparison, TimingComparison

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class RevisionInfo:
    label: str  # "base" or "head"
    spec: str  # what the user asked for (a ref, a sha, or WORKTREE)
    sha: str  # resolved commit, or "WORKTREE" for the uncommitted working tree
    subject: str = ""  # commit subject line, for the report


@dataclass
class GateReport:
    base: RevisionInfo
    head: RevisionInfo
    settings: dict[str, Any]
    timings: list[TimingComparison] = field(default_factory=list)
    counters: list[CounterComparison] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # "base"/"head" -> seconds per round
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # anything that kept the gate from measuring
    wall_s: float = 0.0

    @property
    def regressions(self) -> list[str]:
        """Names of the regressed benchmarks/counters, with the size of the change."""
        out = [
            f"{t.name}: x{t.ratio:.3f} slower (p={t.p_slower:.2g})"
            for t in self.timings
            if t.verdict == "regression"
        ]
        for c in self.counters:
            if c.verdict == "regression":
                change = f" ({c.change:+.1%})" if c.change is not None else ""
                out.append(f"{c.name}: {_fmt_int(c.base)} -> {_fmt_int(c.head)}{change}")
        return out

    @property
    def exit_code(self) -> int:
        # Fail closed: anything unmeasured (a crash, a missing counter, no samples) is never a pass.
        missing = [c.name for c in self.counters if c.verdict == "missing"]
        if self.errors or missing or not self.timings:
            return EXIT_ERROR
        return EXIT_REGRESSION if self.regressions else EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "pass", EXIT_REGRESSION: "regression", EXIT_ERROR: "error"}[self.exit_code]

    def all_errors(self) -> list[str]:
        errs = list(self.errors)
        errs += [
            f"counter {c.name} could not be measured on head" for c in self.counters if c.verdict == "missing"
        ]
        if not self.timings and not self.errors:
            errs.append("no timing comparison was made")
        return errs

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "base": asdict(self.base),
            "head": asdict(self.head),
            "settings": self.settings,
            "regressions": self.regressions,
            "errors": self.all_errors(),
            "timings": [t.to_dict() for t in self.timings],
            "counters": [c.to_dict() for c in self.counters],
            "samples": self.samples,
            "meta": self.meta,
            "wall_s": self.wall_s,
        }

    def to_markdown(self) -> str:
        icon = {"pass": "✅", "regression": "❌", "error": "⚠️"}[self.status]
        headline = {
            "pass": "no performance regression",
            "regression": "performance regression",
            "error": "could not measure (fails closed)",
        }[self.status]
        lines = [
            f"## {icon} moola benchmark gate: {headline}",
            "",
            f"base `{self.base.spec}` ({_short(self.base.sha)}) vs head `{self.head.spec}` ({_short(self.head.sha)})"
            f" · factor {self.settings.get('factor')} · alpha {self.settings.get('alpha')}"
            f" · {self.settings.get('rounds')} interleaved rounds per side · {self.wall_s:.0f} s",
            "",
        ]
        if self.regressions:
            lines += ["**Regressions**", ""] + [f"- {r}" for r in self.regressions] + [""]
        errors = self.all_errors()
        if errors:
            lines += ["**Errors**", ""] + [f"- {e}" for e in errors] + [""]
        if self.timings:
            lines += [
                "| timing | base median | head median | head/base (HL) | 95% CI | p (slower) | verdict |",
                "|---|---:|---:|---:|---|---:|---|",
            ]
            for t in self.timings:
                lines.append(
                    f"| {t.name} | {t.base_median * 1e3:.1f} ms | {t.head_median * 1e3:.1f} ms | {t.ratio:.3f}"
                    f" | {t.ci_low:.3f}–{t.ci_high:.3f} | {t.p_slower:.2g} | {t.verdict} |"
                )
            lines.append("")
        if self.counters:
            lines += ["| counter (exact) | base | head | change | verdict |", "|---|---:|---:|---:|---|"]
            for c in self.counters:
                change = "" if c.change is None else f"{c.change:+.2%}"
                lines.append(
                    f"| {c.name} | {_fmt_int(c.base)} | {_fmt_int(c.head)} | {change} | {c.verdict} |"
                )
            lines.append("")
        test = self.timings[0].test if self.timings else "a one-sided rank test"
        lines.append(
            f"Regression = {test} one-sided p < alpha AND Hodges-Lehmann head/base > factor;"
            " counters compare exactly (any increase regresses)."
        )
        return "\n".join(lines) + "\n"


def _short(sha: str) -> str:
    return sha if sha == "WORKTREE" else sha[:10]


def _fmt_int(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"
