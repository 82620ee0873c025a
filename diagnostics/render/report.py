"""The check report's files: the versioned JSON (the machine contract), and the Markdown and HTML rendered
from that JSON, all written atomically through moola.io."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diagnostics import PROG
from diagnostics.render import markdown, plots
from diagnostics.render.common import counts
from diagnostics.result import SCHEMA_VERSION, CheckResult, exit_code, worst


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


def to_markdown(results: Sequence[CheckResult], meta: dict[str, Any]) -> str:
    """A PR-comment summary: verdict line, the table, then evidence and hints for each WARN/FAIL."""
    return markdown.check_markdown(to_json(results, meta))


KINDS = ("json", "md", "html")


def report_paths(
    report_dir: str | os.PathLike[str] | None, json_path: str | os.PathLike[str] | None, partial: bool = False
) -> list[tuple[Path, str]]:
    """``(path, "json" | "md" | "html")`` for ``report_dir/report.{json,md,html}`` and ``json_path``; an
    interrupted run's go beside them as ``report.partial.*`` / ``<json_path stem>.partial.json``, never over
    them."""
    infix = ".partial" if partial else ""
    paths = []
    if report_dir is not None:
        paths += [(Path(report_dir) / f"report{infix}.{kind}", kind) for kind in KINDS]
    if json_path is not None:
        paths.append((Path(json_path).with_suffix(f"{infix}.json") if partial else Path(json_path), "json"))
    return paths


def _as_saved(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The JSON text of ``payload`` and the payload read back from it (sorted keys, strict values)."""
    import json

    from moola.io import dumps_json

    text = dumps_json(payload)
    return text, json.loads(text)


def as_saved(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` as its saved JSON reads back (NaN and ∞ as null): what every renderer is given."""
    return _as_saved(payload)[1]


def render_all(payload: dict[str, Any], kinds: set[str]) -> dict[str, str]:
    """Each requested kind's text, the Markdown and HTML rendered from the JSON exactly as it is saved,
    so a saved report re-renders to the same bytes."""
    text, saved = _as_saved(payload)
    out = {"json": text}
    out.update({kind: render_payload(saved, "check", kind) for kind in ("md", "html") if kind in kinds})
    return out


def prerender(results: Sequence[CheckResult], meta: dict[str, Any]) -> None:
    """Draw the plots of the findings already known (memoized in ``plots``) and load what the last check
    and the page need, while a check's background runs still train: the report at the end then costs
    only the plots of what is new. Quietly does nothing where a plot fails (the page will say so)."""
    from diagnostics.quality.summary import t_quantile

    t_quantile(0.975, 3)  # loads scipy.special, which the stability summaries need
    _, saved = _as_saved(to_json(results, meta))  # the plots are memoized on the saved form
    for finding in saved["results"]:
        with contextlib.suppress(Exception):
            plots.finding_plots(finding, saved["meta"])


def write_reports(
    results: Sequence[CheckResult],
    meta: dict[str, Any],
    report_dir: str | os.PathLike[str] | None,
    json_path: str | os.PathLike[str] | None = None,
    partial: bool = False,
) -> list[Path]:
    """Write the JSON, Markdown and HTML reports to ``report_paths``, each atomically.

    Everything is rendered before the first byte is written, so a rendering bug cannot leave a
    half-updated set either.
    """
    from moola.io import atomic_write_text

    paths = report_paths(report_dir, json_path, partial)
    rendered = render_all(to_json(results, meta), {kind for _, kind in paths})
    return [atomic_write_text(path, rendered[kind]) for path, kind in paths]


def discard_partial_reports(
    report_dir: str | os.PathLike[str] | None, json_path: str | os.PathLike[str] | None = None
) -> None:
    """A complete run supersedes an earlier interrupted one: remove its partial files."""
    for path, _kind in report_paths(report_dir, json_path, partial=True):
        path.unlink(missing_ok=True)


# kind -> format -> (module of diagnostics.render, function). ``text`` renderers print to a rich Console.
RENDERERS: dict[str, dict[str, tuple[str, str]]] = {
    "check": {
        "html": ("html", "check_html"),
        "md": ("markdown", "check_markdown"),
        "text": ("text", "print_report"),
    },
    "gate": {"html": ("html", "gate_html"), "md": ("gate", "markdown"), "text": ("gate", "print_table")},
    "sensitivity": {"html": ("html", "sensitivity_html")},
}


def render_payload(payload: dict[str, Any], kind: str, fmt: str) -> str:
    """A saved report's JSON payload of ``kind`` ("check", "gate", "sensitivity") rendered as ``fmt``
    ("html", "md", "text"); a format that kind has no renderer for is a user error."""
    import importlib

    from moola.errors import MoolaError

    if fmt not in RENDERERS[kind]:
        raise MoolaError(f"--format {fmt}: a {kind} report renders as {', '.join(RENDERERS[kind])}")
    module, name = RENDERERS[kind][fmt]
    render = getattr(importlib.import_module(f"diagnostics.render.{module}"), name)
    if fmt != "text":
        return render(payload)
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=160, highlight=False, color_system=None)
    if kind == "check":
        render(payload["results"], payload.get("meta", {}), console)
    else:
        render(payload, console)
    return out.getvalue()


def write_html(path: str | os.PathLike[str], payload: dict[str, Any], kind: str = "check") -> Path:
    """Write the HTML page of a check, gate or sensitivity payload atomically, rendered from the JSON as
    it is saved (so re-rendering the saved JSON gives the same page)."""
    from moola.io import atomic_write_text

    return atomic_write_text(path, render_payload(as_saved(payload), kind, "html"))
