"""One self-contained HTML page per report (checks, gate, sensitivity), rendered from its JSON.

No script, no CDN, no external file: the styles are inline and the plots are inline SVG (plots.py), so the
page opens offline from a CI artifact. Layout: the verdict on top; then one section per check, the checks
with a FAIL first and, inside each, the findings most severe first, each with its status, measured value,
expected value, fix hint, plot and (folded) evidence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from diagnostics import PROG
from diagnostics.render import plots
from diagnostics.render.common import SEVERITY, by_severity, meta_line, split_line, verdict_text, worst_status
from diagnostics.render.gate import QUALITY_COLUMNS, fmt_ci, fmt_value, quality_cells

CSS = """
:root { --pass:#2e7d32; --warn:#b07a00; --fail:#c62828; --skip:#757575; --line:#e0e0e0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #212121;
       background: #fafafa; }
header.verdict { padding: 18px 28px; color: #fff; }
header.verdict h1 { margin: 0 0 4px; font-size: 20px; }
header.verdict p { margin: 2px 0; opacity: .92; }
.verdict-PASS { background: var(--pass); } .verdict-WARN { background: var(--warn); }
.verdict-FAIL, .verdict-regression { background: var(--fail); } .verdict-SKIP, .verdict-error { background: var(--skip); }
.verdict-pass { background: var(--pass); }
main { max-width: 1040px; margin: 0 auto; padding: 12px 20px 40px; }
nav.toc { margin: 10px 0 4px; display: flex; flex-wrap: wrap; gap: 6px; }
nav.toc a { text-decoration: none; color: inherit; border: 1px solid var(--line); border-radius: 12px;
            padding: 2px 10px; background: #fff; }
section.check { margin-top: 22px; }
section.check > h2 { font-size: 17px; margin: 0 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
article.finding { background: #fff; border: 1px solid var(--line); border-left: 5px solid var(--skip);
                  border-radius: 4px; padding: 10px 14px; margin: 8px 0; }
article.status-PASS { border-left-color: var(--pass); } article.status-WARN { border-left-color: var(--warn); }
article.status-FAIL { border-left-color: var(--fail); }
article.finding h3 { font-size: 15px; margin: 0 0 6px; font-family: ui-monospace, monospace; }
.badge { display: inline-block; min-width: 44px; text-align: center; color: #fff; border-radius: 3px;
         font: bold 11px/18px system-ui, sans-serif; padding: 0 6px; margin-right: 6px; vertical-align: 1px; }
.badge-PASS, .badge-pass, .badge-unchanged { background: var(--pass); } .badge-WARN { background: var(--warn); }
.badge-FAIL, .badge-regression, .badge-missing { background: var(--fail); }
.badge-SKIP, .badge-new { background: var(--skip); } .badge-improvement, .badge-accepted { background: #1565c0; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th { text-align: left; width: 92px; color: #616161; font-weight: 600; vertical-align: top; padding: 1px 8px 1px 0; }
table.kv td { padding: 1px 0; }
table.grid { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
table.grid th, table.grid td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; }
table.grid td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure.plot { margin: 8px 0 4px; }
figure.plot svg { width: 100%; height: auto; max-width: 760px; display: block; }
figure.plot figcaption { color: #616161; font-size: 12px; }
details { margin-top: 6px; } summary { cursor: pointer; color: #424242; }
pre { background: #f5f5f5; padding: 8px; overflow-x: auto; font-size: 12px; margin: 4px 0; }
.plot-error { color: var(--fail); }
footer { color: #757575; font-size: 12px; text-align: center; padding: 16px; }
"""


def page(title: str, header_class: str, header: str, body: str, footer: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header class="verdict {header_class}">\n{header}\n</header>\n<main>\n{body}\n</main>\n'
        f"<footer>{footer}</footer>\n</body>\n</html>\n"
    )


def badge(status: str) -> str:
    return f'<span class="badge badge-{escape(status)}">{escape(status)}</span>'


def figure_html(plot_id: str, svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure class="plot" data-plot="{escape(plot_id)}">\n{svg}\n{cap}</figure>'


def safe_plot(plot_id: str, draw: Any, *args: Any, caption: str = "") -> str:
    """A plot, or one visible line saying why it could not be drawn: a report is never lost to a plot."""
    try:
        svg = plots.render(draw, *args)
    except Exception as exc:
        return f'<p class="plot-error" data-plot="{escape(plot_id)}">plot {escape(plot_id)} failed: {escape(repr(exc))}</p>'
    return figure_html(plot_id, svg, caption) if svg else ""


def anchor(*parts: str) -> str:
    return "-".join(p.replace("/", "-").replace(".", "-").replace(" ", "-") for p in parts)


# --------------------------------------------------------------------------- check reports


def _plots_of(r: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    try:
        return [figure_html(pid, svg) for pid, svg in plots.finding_plots(r, meta)]
    except Exception as exc:  # a report is never lost to a plot: say so on the page instead
        return [
            f'<p class="plot-error">plot of {escape(r["check"])}/{escape(r["name"])} failed: {escape(repr(exc))}</p>'
        ]


def finding_html(r: Mapping[str, Any], figures: Sequence[str]) -> str:
    """One finding in full: status, measured, expected, fix, its plots, and its evidence folded."""
    rows = [("measured", r["measured"]), ("expected", r["expected"])]
    if r.get("hint"):
        rows.append(("fix", r["hint"]))
    kv = "".join(f"<tr><th>{k}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    parts = [
        f'<article class="finding status-{r["status"]}" id="{anchor(r["check"], r["name"])}">',
        f"<h3>{badge(r['status'])}{escape(r['check'])}/{escape(r['name'])}</h3>",
        f'<table class="kv">{kv}</table>',
        *figures,
    ]
    if r.get("evidence"):
        lines = "\n".join(escape(line) for line in r["evidence"])
        parts.append(
            f'<details class="evidence"><summary>evidence ({len(r["evidence"])} line(s))</summary>'
            f"<pre>{lines}</pre></details>"
        )
    parts.append("</article>")
    return "\n".join(parts)


def compact_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The plain findings (PASS or SKIP, nothing to picture) as one row each."""
    body = "".join(
        f'<tr id="{anchor(r["check"], r["name"])}" class="status-{r["status"]}"><td>{badge(r["status"])}</td>'
        f"<td><code>{escape(r['name'])}</code></td><td>{escape(r['measured'])}</td><td>{escape(r['expected'])}</td></tr>"
        for r in rows
    )
    return (
        '<table class="grid compact"><tr><th>status</th><th>finding</th><th>measured</th><th>expected</th></tr>'
        f"{body}</table>"
    )


def check_html(payload: Mapping[str, Any]) -> str:
    """The check report (``report.json``) as one page: verdict, then each check's findings, FAIL first."""
    meta, rows = payload.get("meta", {}), payload["results"]
    verdict = verdict_text(payload["verdict"], payload["counts"])
    by_check: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_check.setdefault(r["check"], []).append(r)
    order = sorted(
        by_check, key=lambda c: -SEVERITY[worst_status(by_check[c])]
    )  # stable: run order among equals
    header = [f"<h1>{escape(PROG)}: {escape(verdict)}</h1>"]
    header += [f'<p class="{cls}">{escape(text)}</p>' for cls, text in
               (("meta", meta_line(meta)), ("split", split_line(meta))) if text]  # fmt: skip
    if meta.get("interrupted"):
        stop = meta["interrupted"]
        header.append(
            f'<p class="interrupted"><strong>Interrupted by {escape(stop["signal"])}</strong>: only '
            f"{escape(', '.join(stop['completed']))} completed.</p>"
        )
    toc = "".join(
        f'<a href="#check-{anchor(c)}">{badge(worst_status(by_check[c]))}{escape(c)}</a>' for c in order
    )
    body = [f'<nav class="toc">{toc}</nav>']
    for c in order:
        findings = by_severity(by_check[c])
        body.append(f'<section class="check" id="check-{anchor(c)}">')
        body.append(f"<h2>{badge(worst_status(findings))}{escape(c)} ({len(findings)} finding(s))</h2>")
        plain = []
        for r in findings:
            figures = _plots_of(r, meta)
            if figures or r["status"] in ("FAIL", "WARN"):
                body.append(finding_html(r, figures))
            else:
                plain.append(r)
        if plain:
            body.append(compact_table(plain))
        body.append("</section>")
    versions = meta.get("versions", {})
    footer = " · ".join(
        escape(str(x))
        for x in (
            f"{payload.get('tool', {}).get('name', PROG)} {payload.get('tool', {}).get('version', '')}".strip(),
            payload.get("created", ""),
            f"{meta['elapsed_s']:.1f} s" if isinstance(meta.get("elapsed_s"), (int, float)) else "",
            ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"schema {payload.get('schema_version')}",
        )
        if x
    )
    return page(
        f"{PROG}: {verdict}", f"verdict-{payload['verdict']}", "\n".join(header), "\n".join(body), footer
    )


# --------------------------------------------------------------------------- gate reports


def timing_table(timings: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("benchmark", "base median", "head median", "head/base (HL)",
                                             "95% CI", "p (slower, Holm)", "factor", "verdict"))  # fmt: skip
    rows = "".join(
        f'<tr id="{anchor("t", t["name"])}"><td>{escape(t["name"])}</td><td class="num">{fmt_value(t["base_median"], t["unit"])}</td>'
        f'<td class="num">{fmt_value(t["head_median"], t["unit"])}</td><td class="num">{t["ratio"]:.3f}</td>'
        f'<td class="num">{fmt_ci(t["ci_low"], t["ci_high"])}</td><td class="num">{t["p_slower"]:.2g}</td><td class="num">{t["factor"]:.2f}</td>'
        f"<td>{badge(t['verdict'])}</td></tr>"
        for t in timings
    )
    return f'<table class="grid timings"><tr>{head}</tr>{rows}</table>'


def counter_table(counters: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("counter", "base", "head", "change", "tolerance", "verdict"))
    rows = []
    for c in counters:
        change = "" if c.get("change") is None else f"{c['change']:+.4%}"
        tol = "exact" if not c.get("tolerance") else f"{c['tolerance']:.1%}"
        why = f" {escape(c['accepted_reason'])}" if c.get("accepted_reason") else ""
        rows.append(
            f"<tr><td>{escape(c['name'])}</td><td class='num'>{fmt_value(c['base'], c['unit'])}</td>"
            f"<td class='num'>{fmt_value(c['head'], c['unit'])}</td><td class='num'>{change}</td>"
            f"<td class='num'>{tol}</td><td>{badge(c['verdict'])}{why}</td></tr>"
        )
    return f'<table class="grid counters"><tr>{head}</tr>{"".join(rows)}</table>'


def quality_html(quality: Sequence[Mapping[str, Any]]) -> str:
    """Quality benchmarks (``QualityComparison.to_dict()``): a table and each one's two distributions."""
    head = "".join(f"<th>{h}</th>" for h in QUALITY_COLUMNS)
    rows = []
    for q in quality:  # the terminal's and the Markdown's cells
        name, *values, verdict = quality_cells(q)
        cells = "".join(f"<td class='num'>{escape(v)}</td>" for v in values)
        rows.append(f"<tr><td>{escape(name)}</td>{cells}<td>{badge(verdict)}</td></tr>")
    figs = [safe_plot(anchor("quality", str(q.get("name"))), plots.quality_distributions, q) for q in quality]
    return f'<table class="grid quality"><tr>{head}</tr>{"".join(rows)}</table>\n' + "\n".join(
        f for f in figs if f
    )


def gate_html(payload: Mapping[str, Any]) -> str:
    """The gate report (``GateReport.to_dict()``): verdict, regressions with their samples, then the rest."""
    status = payload["status"]
    base, head = payload["base"], payload["head"]
    s = payload.get("settings", {})
    header = (
        f"<h1>moola benchmark gate: {escape(status.upper())}: {escape(payload['verdict'])}</h1>\n"
        f"<p class='meta'>base {escape(base['spec'])} ({escape(base['sha'][:10])}) vs head {escape(head['spec'])} "
        f"({escape(head['sha'][:10])}) · alpha {escape(str(s.get('alpha')))} · "
        f"{payload.get('wall_s', 0):.0f} s</p>"
    )
    samples = payload.get("samples", {})
    timings, counters = payload.get("timings", []), payload.get("counters", [])
    quality = payload.get("quality") or []
    rank = {"regression": 0, "missing": 0, "improvement": 1, "accepted": 1}
    body = []
    if payload.get("errors"):
        body.append("<section class='errors'><h2>Errors</h2><ul>"
                    + "".join(f"<li>{escape(e)}</li>" for e in payload["errors"]) + "</ul></section>")  # fmt: skip
    groups = (("regressions", "Regressions", 0), ("changes", "Improvements and accepted changes", 1),
              ("unchanged", "Unchanged", 2))  # fmt: skip
    for key, title, level in groups:
        ts = [t for t in timings if rank.get(t["verdict"], 2) == level]
        cs = [c for c in counters if rank.get(c["verdict"], 2) == level]
        qs = [q for q in quality if rank.get(q.get("verdict", ""), 2) == level]
        if level == 2 and qs:  # unchanged quality stays open: its distributions are the evidence either way
            body.append(
                f'<section class="quality" id="quality"><h2>Quality (unchanged)</h2>\n{quality_html(qs)}\n</section>'
            )
        if not (ts or cs or (qs and level < 2)):
            continue
        inner = []
        if ts:
            inner.append(timing_table(ts))
            inner += [safe_plot(anchor("samples", t["name"]), plots.timing_samples, t, samples.get(t["name"], {}))
                      for t in ts]  # fmt: skip
        if cs:
            inner.append(counter_table(cs))
        if qs and level < 2:
            inner.append(quality_html(qs))
        content = "\n".join(x for x in inner if x)
        if level == 2:
            content = f"<details><summary>{len(ts) + len(cs)} benchmark(s)</summary>\n{content}\n</details>"
        body.append(f'<section class="gate-group" id="{key}"><h2>{title}</h2>\n{content}\n</section>')
    if timings:
        body.append(
            f'<section id="overview"><h2>All timed benchmarks</h2>\n{safe_plot("ratio-overview", plots.ratio_overview, timings)}\n</section>'
        )
    notes = [
        f"{label}: {', '.join(payload[key])}"
        for key, label in (
            ("only_head", "new on head (not compared)"),
            ("only_base", "removed on head (not compared)"),
            ("definitions_differ", "each side measured with its own (different) definition"),
            ("not_gated", "reference baselines, not gated"),
            ("accepted_unused", "acceptance entries that matched no change"),
        )
        if payload.get(key)
    ]
    notes += [
        f"skipped {name}: " + "; ".join(f"{k}: {v}" for k, v in sorted(sides.items()))
        for name, sides in sorted((payload.get("skipped") or {}).items())
    ]
    if notes:
        body.append(
            "<section id='notes'><h2>Notes</h2><ul>"
            + "".join(f"<li>{escape(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    footer = (
        "Timing regression = paired one-sided Wilcoxon p (Holm-adjusted) &lt; alpha AND Hodges-Lehmann head/base "
        "&gt; the benchmark's factor; counters regress beyond their tolerance unless benchmarks/accepted.json "
        "accepts the new value."
    )
    return page(f"gate: {status}", f"verdict-{status}", header, "\n".join(body), footer)


def sensitivity_html(results: Mapping[str, Any]) -> str:
    """The sensitivity tool's JSON: detections and false alarms, and each trial's largest ratio."""
    s, summary = results.get("settings", {}), results.get("summary", {})
    trials = summary.get("trials", 0)
    quality = s.get("family") == "quality"
    injected = (
        f"label flips of {s.get('flip') or 0:.0%}" if quality else f"{s.get('slowdown') or 0:.0%} slowdowns"
    )
    verdict = (
        f"detected {summary.get('detections')}/{trials} injected {injected}; "
        f"{summary.get('false_alarms')}/{trials} false alarms on {'reseeding' if quality else 'identical'} revisions"
    )
    ok = (
        summary.get("errors", 0) == 0
        and summary.get("detections") == trials
        and not summary.get("false_alarms")
    )
    header = f"<h1>gate sensitivity ({escape(str(s.get('family')))}): {escape(verdict)}</h1>\n<p class='meta'>" + \
        escape(" · ".join(f"{k} {v}" for k, v in s.items())) + "</p>"  # fmt: skip
    rows = "".join(
        f"<tr><td>{kind}</td><td class='num'>{i + 1}</td><td class='num'>{r['exit_code']}</td>"
        f"<td class='num'>{plots._largest(r)[0] or float('nan'):.3f}</td>"
        f"<td class='num'>{r.get('seconds', 0):.1f}</td></tr>"
        for kind in ("slow", "identical")
        for i, r in enumerate(results.get(kind, []))
    )
    table = ("<table class='grid trials'><tr><th>head</th><th>trial</th><th>exit</th><th>largest ratio (or quality drop)</th>"
             f"<th>seconds</th></tr>{rows}</table>")  # fmt: skip
    body = [
        f"<section id='trials'><h2>Trials</h2>\n{safe_plot('sensitivity-ratios', plots.sensitivity_ratios, results)}\n{table}\n</section>"
    ]
    body.append(
        f"<section id='summary'><h2>Summary</h2><pre>{escape(json.dumps(summary, indent=1))}</pre></section>"
    )
    return page("gate sensitivity", "verdict-pass" if ok else "verdict-FAIL", header, "\n".join(body))
