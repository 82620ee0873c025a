"""Markdown for a pull-request comment, from a check report's JSON (``report.to_json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnostics import PROG
from diagnostics.render.common import by_severity, evidence_lines, meta_line, split_line, verdict_text


def cell(text: Any) -> str:
    """A Markdown table cell: tables break on pipes and newlines."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def check_markdown(payload: Mapping[str, Any]) -> str:
    """Verdict line, the table, then evidence and hints for each WARN/FAIL (FAIL first)."""
    meta, rows = payload.get("meta", {}), payload["results"]
    lines = [f"## {PROG}: {verdict_text(payload['verdict'], payload['counts'])}", ""]
    if meta:
        lines += [meta_line(meta), ""]
    if split_line(meta):
        lines += [split_line(meta), ""]
    if meta.get("training_sample"):
        lines += [meta["training_sample"], ""]
    if meta.get("interrupted"):
        stop = meta["interrupted"]
        lines += [f"**Interrupted by {stop['signal']}**: only {', '.join(stop['completed'])} completed.", ""]
    lines += [
        "| check | finding | status | measured | expected | hint |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        status = f"**{r['status']}**" if r["status"] in ("WARN", "FAIL") else r["status"]
        lines.append(
            f"| {cell(r['check'])} | {cell(r['name'])} | {status} | {cell(r['measured'])} "
            f"| {cell(r['expected'])} | {cell(r['hint'])} |"
        )
    flagged = by_severity([r for r in rows if r["status"] in ("FAIL", "WARN")])
    if flagged:
        lines += ["", "### Findings to act on"]
        for r in flagged:
            lines += [
                "",
                f"**{r['status']} `{r['check']}/{r['name']}`**: {r['measured']} (expected {r['expected']})",
            ]
            if r["hint"]:
                lines.append(f"- fix: {r['hint']}")
            if r["evidence"]:
                lines += ["", "```text", *evidence_lines(r["evidence"]), "```"]
    return "\n".join(lines) + "\n"
