"""The gate report as text and Markdown, from its JSON (``GateReport.to_dict()``): the same payload the HTML
page (``render.html.gate_page``) and ``python -m diagnostics.render`` read, so a saved gate report renders
again to the same bytes. Nothing here measures or judges."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

Row = Mapping[str, Any]

QUALITY_COLUMNS = (
    "quality benchmark",
    "base mean ± sd (95% CI, runs)",
    "head mean ± sd (95% CI, runs)",
    "worse by (95% CI)",
    "p (worse, Holm)",
    "threshold",
    "verdict",
)

_CRITERIA = (
    "Timing/peak-RSS regression = paired one-sided Wilcoxon signed-rank p (Holm-adjusted) < alpha AND"
    " Hodges-Lehmann head/base > the benchmark's factor; counters regress beyond their tolerance"
    " unless benchmarks/accepted.json accepts the new value. Quality regression = base and head as two"
    " independent samples of fresh-seed runs, one-sided Mann-Whitney p (Holm over the quality family) <"
    " {quality_alpha} AND a Hodges-Lehmann drop beyond the benchmark's threshold."
)


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


def fmt_ci(ci_low: float | None, ci_high: float | None) -> str:
    """The Hodges–Lehmann ratio's interval; an unbounded end as 0 or ∞ (saved JSON holds ∞ as null)."""
    lo = "0" if ci_low is None or ci_low <= 0 else f"{ci_low:.3f}"
    hi = "∞" if ci_high is None or math.isinf(ci_high) else f"{ci_high:.3f}"
    return f"{lo}–{hi}"


def counter_change(c: Row) -> float | None:
    base, head = c.get("base"), c.get("head")
    return None if base in (None, 0) or head is None else head / base - 1.0


def _num(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def quality_cells(q: Row) -> list[str]:
    """One quality comparison as the report's cells (``QUALITY_COLUMNS``): terminal, Markdown and HTML. A value
    the saved JSON holds as null (an interval of one run) shows as —."""

    def side(d: Row) -> str:
        lo, hi = d.get("ci") or (None, None)
        return f"{_num(d.get('mean'), '.4f')} ± {_num(d.get('sd'), '.4f')} ({_num(lo, '.4f')}–{_num(hi, '.4f')}, {d.get('n', '—')})"

    p = q.get("p_adjusted") if q.get("p_adjusted") is not None else q.get("p_worse")
    lo, hi = q.get("drop_ci") or (None, None)
    drop = f"{_num(q.get('drop'), '+.4f')} ({_num(lo, '+.4f')}–{_num(hi, '+.4f')})"
    return [
        str(q["name"]),
        side(q.get("base") or {}),
        side(q.get("head") or {}),
        drop,
        _num(p, ".2g"),
        _num(q.get("threshold"), "g"),
        str(q.get("verdict")),
    ]


def _short(sha: str) -> str:
    return sha if sha == "WORKTREE" else sha[:10]


def _rounds(report: Row) -> str:
    """Rounds actually taken: one number, or the range when benchmarks set their own gate_rounds."""
    counts = sorted({len(s["base"]) for s in report.get("samples", {}).values()})
    if not counts:
        return str(report.get("settings", {}).get("rounds"))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _md_table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table and the blank line after it (nothing for no rows); ``align``: l or r per column."""
    if not rows:
        return []
    sep = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", sep, *("| " + " | ".join(r) + " |" for r in rows), ""]


_TIMING_HEADER = (
    "benchmark", "base median", "head median", "head/base (HL)", "95% CI of HL", "p (slower, Holm)", "factor",
    "verdict",
)  # fmt: skip


def _timing_rows(rows: Sequence[Row]) -> list[str]:
    cells = [
        [
            t["name"],
            fmt_value(t["base_median"], t["unit"]),
            fmt_value(t["head_median"], t["unit"]),
            f"{t['ratio']:.3f}",
            fmt_ci(t["ci_low"], t["ci_high"]),
            f"{t['p_slower']:.2g}",
            f"{t['factor']:.2f}",
            t["verdict"],
        ]
        for t in rows
    ]
    return _md_table(_TIMING_HEADER, "lrrrlrrl", cells)


def _counter_rows(rows: Sequence[Row]) -> list[str]:
    cells = []
    for c in rows:
        change = counter_change(c)
        reason = c.get("accepted_reason")
        cells.append(
            [
                c["name"],
                fmt_value(c["base"], c["unit"]),
                fmt_value(c["head"], c["unit"]),
                "" if change is None else f"{change:+.4%}",
                "exact" if c["tolerance"] == 0 else f"{c['tolerance']:.1%}",
                c["verdict"] + (f" ({reason})" if reason else ""),
            ]
        )
    return _md_table(("counter", "base", "head", "change", "tolerance", "verdict"), "lrrrrl", cells)


def _quality_rows(rows: Sequence[Row]) -> list[str]:
    return _md_table(QUALITY_COLUMNS, "lrrrrrl", [quality_cells(q) for q in rows])


def _by_verdict(rows: Sequence[Row], *verdicts: str) -> list[Row]:
    return [r for r in rows if r["verdict"] in verdicts]


def _notes(report: Row) -> list[str]:
    notes = []
    if report.get("definitions_differ"):
        notes.append(
            "each side measured with its own (different) definition: "
            + ", ".join(report["definitions_differ"])
        )
    if report.get("only_head"):
        notes.append("new on head (not compared): " + ", ".join(report["only_head"]))
    if report.get("only_base"):
        notes.append("removed on head (not compared): " + ", ".join(report["only_base"]))
    for name, sides in sorted(report.get("skipped", {}).items()):
        notes.append(f"skipped {name}: " + "; ".join(f"{k}: {v}" for k, v in sorted(sides.items())))
    if report.get("not_gated"):
        notes.append("reference baselines, not gated (gate = False): " + ", ".join(report["not_gated"]))
    if report.get("not_default"):
        notes.append(
            "gated only when --bench selects them (gate_default = False): " + ", ".join(report["not_default"])
        )
    if report.get("accepted_unused"):
        notes.append("acceptance entries that matched no change: " + ", ".join(report["accepted_unused"]))
    return notes


def markdown(report: Row) -> str:
    """The pull-request comment: verdict, errors, regressions, improvements, quality, the rest folded."""
    settings = report.get("settings", {})
    timings, counters, quality = report["timings"], report["counters"], report.get("quality", [])
    base, head = report["base"], report["head"]
    icon = {"pass": "✅", "regression": "❌", "error": "⚠️"}[report["status"]]
    lines = [
        f"## {icon} moola benchmark gate: {report['verdict']}",
        "",
        f"base `{base['spec']}` ({_short(base['sha'])}) vs head `{head['spec']}` ({_short(head['sha'])})"
        f" · alpha {settings.get('alpha')} ({settings.get('correction', 'holm')} over"
        f" {len(timings)} timed benchmark(s)) · {_rounds(report)} interleaved rounds"
        f" in {settings.get('processes', 1)} worker pair(s)"
        f" · {report.get('wall_s', 0.0):.0f} s",
        "",
    ]
    if report["errors"]:
        lines += ["**Errors**", ""] + [f"- {e}" for e in report["errors"]] + [""]
    bad_t = _by_verdict(timings, "regression")
    bad_c = _by_verdict(counters, "regression", "missing")
    bad_q = _by_verdict(quality, "regression", "missing")
    if bad_t or bad_c or bad_q:
        lines += ["### Regressions", "", *_timing_rows(bad_t), *_counter_rows(bad_c), *_quality_rows(bad_q)]
    good_t = _by_verdict(timings, "improvement")
    good_c = _by_verdict(counters, "improvement", "accepted")
    good_q = _by_verdict(quality, "improvement")
    if good_t or good_c or good_q:
        lines += ["### Improvements and accepted changes", ""]
        lines += _timing_rows(good_t) + _counter_rows(good_c) + _quality_rows(good_q)
    rest_q = [q for q in quality if q["verdict"] not in ("regression", "missing", "improvement")]
    if rest_q:  # quality is shown open: its distributions are the evidence either way
        lines += ["### Quality (unchanged)", "", *_quality_rows(rest_q)]
    rest_t = [t for t in timings if t["verdict"] not in ("regression", "improvement")]
    rest_c = [c for c in counters if c["verdict"] not in ("regression", "missing", "improvement", "accepted")]
    notes = _notes(report)
    if rest_t or rest_c or notes:
        lines += [
            f"<details><summary>{len(rest_t) + len(rest_c)} unchanged benchmark(s) and notes</summary>",
            "",
        ]
        lines += _timing_rows(rest_t) + _counter_rows(rest_c)
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        lines += ["</details>", ""]
    lines.append(_CRITERIA.format(quality_alpha=settings.get("quality_alpha", 0.02)))
    return "\n".join(lines) + "\n"


def print_table(report: Row, console: Console) -> None:
    """The terminal's rich tables: regressions first, then improvements/accepted, then the rest; the
    quality distributions; the verdict line."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(f"benchmark gate: base {report['base']['spec']} vs head {report['head']['spec']}"),
        title_justify="left",
    )
    for col, justify in (
        ("benchmark", "left"),
        ("base", "right"),
        ("head", "right"),
        ("head/base", "right"),
        ("95% CI / change", "right"),
        ("p (Holm)", "right"),
        ("verdict", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"regression": "bold red", "improvement": "green", "accepted": "cyan", "missing": "bold yellow"}
    rank = {"regression": 0, "missing": 0, "improvement": 1, "accepted": 1}
    rows: list[tuple[int, str, str, str, str, str, str, str]] = []
    for tm in report["timings"]:
        cells = (fmt_value(tm["base_median"], tm["unit"]), fmt_value(tm["head_median"], tm["unit"]))
        ci = fmt_ci(tm["ci_low"], tm["ci_high"])
        rows.append(
            (
                rank.get(tm["verdict"], 2),
                tm["name"],
                *cells,
                f"{tm['ratio']:.3f}",
                ci,
                f"{tm['p_slower']:.2g}",
                tm["verdict"],
            )
        )
    for c in report["counters"]:
        change = counter_change(c)
        ratio = "" if change is None else f"{c['head'] / c['base']:.3f}"
        cells = (fmt_value(c["base"], c["unit"]), fmt_value(c["head"], c["unit"]))
        shown_change = "" if change is None else f"{change:+.3%}"
        rows.append((rank.get(c["verdict"], 2), c["name"], *cells, ratio, shown_change, "", c["verdict"]))
    for _, name, *cells, verdict in sorted(rows, key=lambda r: r[0]):
        shown = f"[{style[verdict]}]{verdict}[/]" if verdict in style else verdict
        t.add_row(escape(name), *cells, shown)
    if t.row_count:
        console.print(t)
    quality = report.get("quality", [])
    if quality:  # shown open, as in the Markdown: the two distributions are the evidence either way
        q_table = Table(
            title="quality: base and head as independent samples of fresh-seed runs", title_justify="left"
        )
        for i, col in enumerate(QUALITY_COLUMNS):
            q_table.add_column(col, justify="left" if i in (0, len(QUALITY_COLUMNS) - 1) else "right")
        for q in sorted(quality, key=lambda q: rank.get(q["verdict"], 2)):
            *cells, verdict = quality_cells(q)
            shown = f"[{style[verdict]}]{verdict}[/]" if verdict in style else verdict
            q_table.add_row(*(escape(c) for c in cells), shown)
        console.print(q_table)
    for line in report.get("accepted", []):
        console.print(f"[cyan]accepted:[/] {escape(line)}")
    for err in report["errors"]:
        console.print(f"[bold yellow]error:[/] {escape(err)}")
    colour = {"pass": "green", "regression": "bold red", "error": "bold yellow"}[report["status"]]
    console.print(
        f"[{colour}]{report['status'].upper()}[/]: {escape(report['verdict'])}  ({report.get('wall_s', 0.0):.0f} s)"
    )
