"""Rendering only: results in, table / JSON / Markdown out (the checks never format, this never measures).

The JSON report is the machine contract (``schema_version``); the Markdown is a PR-comment summary; the
rich table is what a person sees in the terminal. Reports are written atomically through moola.io.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnostics import PROG
from diagnostics.result import SCHEMA_VERSION, CheckResult, Status, exit_code, worst

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


STATUS_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}
_ORDER = ("FAIL", "WARN", "PASS", "SKIP")
MAX_EVIDENCE_LINES = 12  # per finding in the human outputs; the JSON keeps everything the check returned


def counts(results: Sequence[CheckResult]) -> dict[str, int]:
    tally = {s: 0 for s in _ORDER}
    for r in results:
        tally[r.status.value] += 1
    return tally


def verdict_line(results: Sequence[CheckResult]) -> str:
    """``FAIL: 1 FAIL, 2 WARN, 9 PASS, 1 SKIP`` (statuses with zero findings left out)."""
    tally = counts(results)
    parts = ", ".join(f"{n} {s}" for s, n in tally.items() if n)
    return f"{worst(results).value}: {parts or 'no findings'}"


def render_table(results: Sequence[CheckResult], title: str | None = None) -> Table:
    """One row per finding: check, finding, status (coloured), measured, expected, hint."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("measured", ratio=3)
    table.add_column("expected", ratio=2)
    table.add_column("hint", ratio=3)
    for r in results:
        table.add_row(
            r.check,
            r.name,
            Text(r.status.value, style=STATUS_STYLE[r.status.value]),
            r.measured,
            r.expected,
            r.hint,
        )
    return table


def meta_line(meta: dict[str, Any]) -> str:
    """The run's setting in one line: model, data, split sizes, device, fit."""
    parts = []
    if "model" in meta:
        parts.append(f"model {meta['model']}")
    if "data" in meta:
        parts.append(f"data {meta['data']}")
    if "split" in meta:
        sizes = "/".join(
            f"{meta[k]} {k[2:]}" for k in ("n_train", "n_val", "n_test") if meta.get(k) is not None
        )
        parts.append(f"split {meta['split']}" + (f" ({sizes})" if sizes else ""))
    if "device" in meta:
        parts.append(f"device {meta['device']}")
    if meta.get("fit"):
        parts.append(f"fit {meta['fit']}")
    return " · ".join(parts)


def split_line(meta: dict[str, Any]) -> str:
    """Which split the run judged and why (a random split of market windows can leak: say so up front)."""
    reason = meta.get("split_reason")
    return f"split {meta.get('split')}: {reason}" if reason else ""


def print_report(results: Sequence[CheckResult], meta: dict[str, Any], console: Console) -> None:
    """Terminal output: the split and why, the table, the evidence behind each WARN/FAIL, and the verdict."""
    from rich.text import Text

    if split_line(meta):
        console.print(Text(split_line(meta)))
    if meta.get("training_sample"):
        console.print(Text(meta["training_sample"]))
    console.print(render_table(results, title=f"{PROG} · {meta_line(meta)}" if meta else PROG))
    for r in results:
        if r.status in (Status.WARN, Status.FAIL) and r.evidence:
            console.print(Text(f"{r.status.value} {r.check}/{r.name}:", style=STATUS_STYLE[r.status.value]))
            for line in _evidence(r):
                console.print(Text(f"  {line}"))
    verdict = worst(results).value
    console.print(Text(f"verdict {verdict_line(results)}", style=STATUS_STYLE[verdict]))


def _evidence(r: CheckResult) -> list[str]:
    lines = list(r.evidence[:MAX_EVIDENCE_LINES])
    if len(r.evidence) > MAX_EVIDENCE_LINES:
        lines.append(f"... {len(r.evidence) - MAX_EVIDENCE_LINES} more line(s) in the JSON report")
    return lines


def to_json(
    results: Sequence[CheckResult], meta: dict[str, Any], created: str | None = None
) -> dict[str, Any]:
    """The versioned, machine-readable report (stable keys; bump SCHEMA_VERSION when they change)."""
    from moola import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": PROG, "version": __version__},
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "meta": dict(meta),
        "verdict": worst(results).value,
        "exit_code": exit_code(results),
        "counts": counts(results),
        "results": [r.to_dict() for r in results],
    }


def _cell(text: str) -> str:
    # Markdown tables break on pipes and newlines.
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def to_markdown(results: Sequence[CheckResult], meta: dict[str, Any]) -> str:
    """A PR-comment summary: verdict line, the table, then evidence and hints for each WARN/FAIL."""
    lines = [f"## {PROG}: {verdict_line(results)}", ""]
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
    for r in results:
        status = f"**{r.status.value}**" if r.status in (Status.WARN, Status.FAIL) else r.status.value
        lines.append(
            f"| {_cell(r.check)} | {_cell(r.name)} | {status} | {_cell(r.measured)} "
            f"| {_cell(r.expected)} | {_cell(r.hint)} |"
        )
    flagged = sorted(
        (r for r in results if r.status in (Status.FAIL, Status.WARN)), key=lambda r: -r.status.severity
    )
    if flagged:
        lines += ["", "### Findings to act on"]
        for r in flagged:
            lines += ["", f"**{r.status.value} `{r.check}/{r.name}`**: {r.measured} (expected {r.expected})"]
            if r.hint:
                lines.append(f"- fix: {r.hint}")
            if r.evidence:
                lines += ["", "```text", *_evidence(r), "```"]
    return "\n".join(lines) + "\n"


def report_paths(
    report_dir: str | os.PathLike[str] | None, json_path: str | os.PathLike[str] | None, partial: bool = False
) -> list[tuple[Path, str]]:
    """``(path, "json" | "md")`` for ``report_dir/report.{json,md}`` and ``json_path``; an interrupted
    run's go beside them as ``report.partial.*`` / ``<json_path stem>.partial.json``, never over them."""
    infix = ".partial" if partial else ""
    paths = []
    if report_dir is not None:
        paths += [
            (Path(report_dir) / f"report{infix}.json", "json"),
            (Path(report_dir) / f"report{infix}.md", "md"),
        ]
    if json_path is not None:
        paths.append((Path(json_path).with_suffix(f"{infix}.json") if partial else Path(json_path), "json"))
    return paths


def write_reports(
    results: Sequence[CheckResult],
    meta: dict[str, Any],
    report_dir: str | os.PathLike[str] | None,
    json_path: str | os.PathLike[str] | None = None,
    partial: bool = False,
) -> list[Path]:
    """Write the JSON and Markdown reports to ``report_paths``, each atomically.

    Everything is rendered before the first byte is written, so a rendering bug cannot leave a
    half-updated pair either.
    """
    from moola.io import atomic_write_json, atomic_write_text

    payload = to_json(results, meta)
    markdown = to_markdown(results, meta)
    return [
        atomic_write_text(path, markdown) if kind == "md" else atomic_write_json(path, payload)
        for path, kind in report_paths(report_dir, json_path, partial)
    ]


def discard_partial_reports(
    report_dir: str | os.PathLike[str] | None, json_path: str | os.PathLike[str] | None = None
) -> None:
    """A complete run supersedes an earlier interrupted one: remove its partial files."""
    for path, _kind in report_paths(report_dir, json_path, partial=True):
        path.unlink(missing_ok=True)
