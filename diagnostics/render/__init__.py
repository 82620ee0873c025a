"""Rendering only: report JSON in, terminal table / Markdown / HTML out (the checks never format, this never
measures). Every renderer reads the JSON form, so a saved report re-renders the same
(``python -m diagnostics.render reports/report.json``).

common.py   verdict line, meta line, status order          text.py      the rich table (terminal)
markdown.py PR-comment Markdown                             html.py      the self-contained HTML page
plots.py    matplotlib figures of a finding's values        report.py    JSON payload and atomic writing
"""

from __future__ import annotations

from diagnostics.render.common import (
    MAX_EVIDENCE_LINES,
    STATUS_STYLE,
    counts,
    meta_line,
    split_line,
    verdict_line,
)
from diagnostics.render.report import (
    discard_partial_reports,
    prerender,
    report_paths,
    to_json,
    to_markdown,
    write_reports,
)
from diagnostics.render.text import print_report, render_table

__all__ = [
    "MAX_EVIDENCE_LINES",
    "STATUS_STYLE",
    "counts",
    "discard_partial_reports",
    "meta_line",
    "prerender",
    "print_report",
    "render_table",
    "report_paths",
    "split_line",
    "to_json",
    "to_markdown",
    "verdict_line",
    "write_reports",
]
