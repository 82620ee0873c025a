"""The gate's result: what was compared, the verdicts, the exit code, and its Markdown for a PR comment."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from diagnostics.gate.stats import CounterComparison, QualityComparison, TimingComparison

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class RevisionInfo:
    label: str  # "base" or "head"
    spec: str  # what the user asked for (a ref, a sha, or WORKTREE)
    sha: str  # resolved commit, or "WORKTREE" for the uncommitted working tree
    subject: str = ""  # commit subject line, for the report


def fmt_value(value: float | None, unit: str) -> str:
    """A measured value with its unit: seconds scaled to s/ms/µs, bytes with thousands separators."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if unit == "s":
        if abs(value) >= 1.0:
            return f"{value:.3f} s"
        return f"{value * 1e3:.2f} ms" if abs(value) >= 1e-3 else f"{value * 1e6:.1f} µs"
    if unit == "bytes":
        return f"{round(value):,} B"
    if float(value).is_integer():
        return f"{int(value):,} {unit}".rstrip()
    return f"{value:.4g} {unit}".rstrip()


def _fmt_ci(t: TimingComparison) -> str:
    lo = "0" if t.ci_low <= 0 else f"{t.ci_low:.3f}"
    hi = "∞" if math.isinf(t.ci_high) else f"{t.ci_high:.3f}"
    return f"{lo}–{hi}"


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
            f"{t.name}: x{t.ratio:.3f} (95% CI {_fmt_ci(t)}, p={t.p_slower:.2g})"
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

    def _rounds(self) -> str:
        """Rounds actually taken: one number, or the range when benchmarks set their own gate_rounds."""
        counts = sorted({len(s["base"]) for s in self.samples.values()})
        if not counts:
            return str(self.settings.get("rounds"))
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

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

    def _timing_rows(self, rows: list[TimingComparison]) -> list[str]:
        if not rows:
            return []
        lines = [
            "| benchmark | base median | head median | head/base (HL) | 95% CI of HL | p (slower, Holm) | factor | verdict |",
            "|---|---:|---:|---:|---|---:|---:|---|",
        ]
        for t in rows:
            lines.append(
                f"| {t.name} | {fmt_value(t.base_median, t.unit)} | {fmt_value(t.head_median, t.unit)}"
                f" | {t.ratio:.3f} | {_fmt_ci(t)} | {t.p_slower:.2g} | {t.factor:.2f} | {t.verdict} |"
            )
        return [*lines, ""]

    def _counter_rows(self, rows: list[CounterComparison]) -> list[str]:
        if not rows:
            return []
        lines = ["| counter | base | head | change | tolerance | verdict |", "|---|---:|---:|---:|---:|---|"]
        for c in rows:
            change = "" if c.change is None else f"{c.change:+.4%}"
            verdict = c.verdict + (f" ({c.accepted_reason})" if c.accepted_reason else "")
            lines.append(
                f"| {c.name} | {fmt_value(c.base, c.unit)} | {fmt_value(c.head, c.unit)} | {change}"
                f" | {'exact' if c.tolerance == 0 else f'{c.tolerance:.1%}'} | {verdict} |"
            )
        return [*lines, ""]

    def _quality_rows(self, rows: list[QualityComparison]) -> list[str]:
        if not rows:
            return []
        lines = [
            "| " + " | ".join(QUALITY_COLUMNS) + " |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += ["| " + " | ".join(quality_cells(q)) + " |" for q in rows]
        return [*lines, ""]

    def to_markdown(self) -> str:
        icon = {"pass": "✅", "regression": "❌", "error": "⚠️"}[self.status]
        lines = [
            f"## {icon} moola benchmark gate: {self.verdict_line()}",
            "",
            f"base `{self.base.spec}` ({_short(self.base.sha)}) vs head `{self.head.spec}` ({_short(self.head.sha)})"
            f" · alpha {self.settings.get('alpha')} ({self.settings.get('correction', 'holm')} over"
            f" {len(self.timings)} timed benchmark(s)) · {self._rounds()} interleaved rounds"
            f" in {self.settings.get('processes', 1)} worker pair(s)"
            f" · {self.wall_s:.0f} s",
            "",
        ]
        errors = self.all_errors()
        if errors:
            lines += ["**Errors**", ""] + [f"- {e}" for e in errors] + [""]
        bad_t = [t for t in self.timings if t.verdict == "regression"]
        bad_c = [c for c in self.counters if c.verdict in ("regression", "missing")]
        bad_q = [q for q in self.quality if q.verdict in ("regression", "missing")]
        if bad_t or bad_c or bad_q:
            lines += ["### Regressions", "", *self._timing_rows(bad_t), *self._counter_rows(bad_c)]
            lines += self._quality_rows(bad_q)
        good_t = [t for t in self.timings if t.verdict == "improvement"]
        good_c = [c for c in self.counters if c.verdict in ("improvement", "accepted")]
        good_q = [q for q in self.quality if q.verdict == "improvement"]
        if good_t or good_c or good_q:
            lines += ["### Improvements and accepted changes", ""]
            lines += self._timing_rows(good_t) + self._counter_rows(good_c) + self._quality_rows(good_q)
        rest_q = [q for q in self.quality if q not in bad_q and q not in good_q]
        if rest_q:  # quality is shown open: its distributions are the evidence either way
            lines += ["### Quality (unchanged)", "", *self._quality_rows(rest_q)]
        rest_t = [t for t in self.timings if t not in bad_t and t not in good_t]
        rest_c = [c for c in self.counters if c not in bad_c and c not in good_c]
        notes = []
        if self.definitions_differ:
            notes.append(
                "each side measured with its own (different) definition: "
                + ", ".join(self.definitions_differ)
            )
        if self.only_head:
            notes.append("new on head (not compared): " + ", ".join(self.only_head))
        if self.only_base:
            notes.append("removed on head (not compared): " + ", ".join(self.only_base))
        for name, sides in sorted(self.skipped.items()):
            notes.append(f"skipped {name}: " + "; ".join(f"{k}: {v}" for k, v in sorted(sides.items())))
        if self.not_gated:
            notes.append("reference baselines, not gated (gate = False): " + ", ".join(self.not_gated))
        if self.not_default:
            notes.append(
                "gated only when --bench selects them (gate_default = False): " + ", ".join(self.not_default)
            )
        if self.accepted_unused:
            notes.append("acceptance entries that matched no change: " + ", ".join(self.accepted_unused))
        if rest_t or rest_c or notes:
            lines += [
                f"<details><summary>{len(rest_t) + len(rest_c)} unchanged benchmark(s) and notes</summary>",
                "",
            ]
            lines += self._timing_rows(rest_t) + self._counter_rows(rest_c)
            lines += [f"- {n}" for n in notes] + ([""] if notes else [])
            lines += ["</details>", ""]
        lines.append(
            "Timing/peak-RSS regression = paired one-sided Wilcoxon signed-rank p (Holm-adjusted) < alpha AND"
            " Hodges-Lehmann head/base > the benchmark's factor; counters regress beyond their tolerance"
            " unless benchmarks/accepted.json accepts the new value. Quality regression = base and head as two"
            " independent samples of fresh-seed runs, one-sided Mann-Whitney p (Holm over the quality family) <"
            f" {self.settings.get('quality_alpha', 0.02)} AND a Hodges-Lehmann drop beyond the benchmark's threshold."
        )
        return "\n".join(lines) + "\n"


QUALITY_COLUMNS = (
    "quality benchmark",
    "base mean ± sd (95% CI, runs)",
    "head mean ± sd (95% CI, runs)",
    "worse by (95% CI)",
    "p (worse, Holm)",
    "threshold",
    "verdict",
)


def quality_cells(q: QualityComparison) -> list[str]:
    """One quality comparison as the report's cells (``QUALITY_COLUMNS``): the terminal and the Markdown."""

    def side(d: dict[str, Any]) -> str:
        lo, hi = d["ci"]
        return f"{d['mean']:.4f} ± {d['sd']:.4f} ({lo:.4f}–{hi:.4f}, {d['n']})"

    p = q.p_adjusted if q.p_adjusted is not None else q.p_worse
    drop = f"{q.drop:+.4f} ({q.drop_ci[0]:+.4f}–{q.drop_ci[1]:+.4f})"
    return [q.name, side(q.base), side(q.head), drop, f"{p:.2g}", f"{q.threshold:g}", q.verdict]


def _short(sha: str) -> str:
    return sha if sha == "WORKTREE" else sha[:10]
