"""What every renderer shares: status order and colours, the verdict line, the run's setting in one line.

Everything here reads the JSON form of a report (``CheckResult.to_dict()`` rows and the report's ``meta``),
so a saved ``report.json`` renders exactly as the run that wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from diagnostics.result import CheckResult

STATUS_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}
ORDER = ("FAIL", "WARN", "PASS", "SKIP")
SEVERITY = {"SKIP": 0, "PASS": 1, "WARN": 2, "FAIL": 3}
MAX_EVIDENCE_LINES = 12  # per finding in the human outputs; the JSON keeps everything the check returned


def as_rows(results: Iterable[CheckResult | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Findings in their JSON form, whether given as results or as rows of a saved report."""
    return [r.to_dict() if isinstance(r, CheckResult) else dict(r) for r in results]


def counts(results: Iterable[CheckResult | Mapping[str, Any]]) -> dict[str, int]:
    tally = {s: 0 for s in ORDER}
    for r in as_rows(results):
        tally[r["status"]] += 1
    return tally


def worst_status(rows: Sequence[Mapping[str, Any]]) -> str:
    return max((r["status"] for r in rows), key=SEVERITY.__getitem__, default="SKIP")


def verdict_text(verdict: str, tally: Mapping[str, int]) -> str:
    """``FAIL: 1 FAIL, 2 WARN, 9 PASS, 1 SKIP`` (statuses with zero findings left out)."""
    parts = ", ".join(f"{tally[s]} {s}" for s in ORDER if tally.get(s))
    return f"{verdict}: {parts or 'no findings'}"


def verdict_line(results: Sequence[CheckResult | Mapping[str, Any]]) -> str:
    rows = as_rows(results)
    return verdict_text(worst_status(rows), counts(rows))


def meta_line(meta: Mapping[str, Any]) -> str:
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


def split_line(meta: Mapping[str, Any]) -> str:
    """Which split the run judged and why (a random split of market windows can leak: say so up front)."""
    reason = meta.get("split_reason")
    return f"split {meta.get('split')}: {reason}" if reason else ""


def evidence_lines(evidence: Sequence[str]) -> list[str]:
    lines = list(evidence[:MAX_EVIDENCE_LINES])
    if len(evidence) > MAX_EVIDENCE_LINES:
        lines.append(f"... {len(evidence) - MAX_EVIDENCE_LINES} more line(s) in the JSON report")
    return lines


def by_severity(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Most severe first, keeping the run's order among equals (a FAIL and its plot come first)."""
    return sorted(rows, key=lambda r: -SEVERITY[r["status"]])
