"""The gate's result: what was compared, the verdicts and the exit code (rendered by ``diagnostics.render.gate``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diagnostics.gate.stats import CounterComparison, QualityComparison, TimingComparison
from diagnostics.render.gate import fmt_ci, fmt_value

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
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # name -> side -> values
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # anything that kept the gate from measuring
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> side -> why
    only_base: list[str] = field(default_factory=list)  # selected benchmarks head no longer defines
    only_head: list[str] = field(default_factory=list)  # new on head: measured from the next base on
    definitions_differ: list[str] = field(default_factory=list)  # each side ran its own definition
    accepted_unused: list[str] = field(default_factory=list)  # acceptance entries that matched nothing
    not_gated: list[str] = field(default_factory=list)  # selected, but marked ``gate = False`` (baselines)
    not_default: list[str] = field(default_factory=list)  # ``gate_default = False``: only with --bench
    quality: list[QualityComparison] = field(default_factory=list)  # distributions of trained-model scores
    wall_s: float = 0.0

    @property
    def regressions(self) -> list[str]:
        """Names of the regressed benchmarks/counters, with the size of the change."""
        out = [
            f"{t.name}: x{t.ratio:.3f} (95% CI {fmt_ci(t.ci_low, t.ci_high)}, p={t.p_slower:.2g})"
            for t in self.timings
            if t.verdict == "regression"
        ]
        for c in self.counters:
            if c.verdict == "regression":
                change = f" ({c.change:+.2%})" if c.change is not None else ""
                out.append(f"{c.name}: {fmt_value(c.base, c.unit)} -> {fmt_value(c.head, c.unit)}{change}")
        for q in self.quality:
            if q.verdict == "regression":
                out.append(
                    f"{q.name}: mean {q.base['mean']:.4f} -> {q.head['mean']:.4f} (worse by {q.drop:.4f}, Hodges-Lehmann, 95% CI"
                    f" {q.drop_ci[0]:.4f}–{q.drop_ci[1]:.4f}, p={q.p_adjusted if q.p_adjusted is not None else q.p_worse:.2g},"
                    f" {q.base['n']} vs {q.head['n']} runs)"
                )
        return out

    @property
    def accepted(self) -> list[str]:
        return [
            f"{c.name}: {fmt_value(c.base, c.unit)} -> {fmt_value(c.head, c.unit)} accepted: {c.accepted_reason}"
            for c in self.counters
            if c.verdict == "accepted"
        ]

    @property
    def exit_code(self) -> int:
        # Fail closed: anything unmeasured (a crash, a missing counter, nothing compared) is never a pass.
        missing = [c.name for c in self.counters if c.verdict == "missing"]
        missing += [q.name for q in self.quality if q.verdict == "missing"]
        if self.errors or missing or not (self.timings or self.counters or self.quality):
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
        errs += [
            f"quality {q.name}: fewer than 2 runs on a side" for q in self.quality if q.verdict == "missing"
        ]
        if not (self.timings or self.counters or self.quality) and not self.errors:
            errs.append("no benchmark was compared")
        return errs

    def verdict_line(self) -> str:
        n = len(self.timings) + len(self.counters) + len(self.quality)
        if self.status == "error":
            return f"could not measure, fails closed: {self.all_errors()[0]}"
        if self.status == "regression":
            return (
                f"{len(self.regressions)} regression(s) in {n} compared benchmark(s): {self.regressions[0]}"
            )
        extra = f"; {len(self.accepted)} intended change(s) accepted" if self.accepted else ""
        return f"no performance regression in {n} benchmark(s){extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "verdict": self.verdict_line(),
            "base": asdict(self.base),
            "head": asdict(self.head),
            "settings": self.settings,
            "regressions": self.regressions,
            "accepted": self.accepted,
            "errors": self.all_errors(),
            "timings": [t.to_dict() for t in self.timings],
            "counters": [c.to_dict() for c in self.counters],
            "skipped": self.skipped,
            "only_base": self.only_base,
            "only_head": self.only_head,
            "definitions_differ": self.definitions_differ,
            "accepted_unused": self.accepted_unused,
            "not_gated": self.not_gated,
            "not_default": self.not_default,
            "quality": [q.to_dict() for q in self.quality],
            "samples": self.samples,
            "meta": self.meta,
            "wall_s": self.wall_s,
        }

    def to_markdown(self) -> str:
        """The pull-request comment, rendered from this report's JSON (``diagnostics.render.gate``)."""
        from diagnostics.render.gate import markdown
        from diagnostics.render.report import as_saved

        return markdown(as_saved(self.to_dict()))  # as its saved JSON reads: a re-render gives the same bytes
