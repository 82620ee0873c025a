"""``moola-diag audit``: read the run, re-measure it, judge it, write the reports (the CLI only renders)."""

from __future__ import annotations

import time
from pathlib import Path

from diagnostics.commands import RunOutcome, versions
from diagnostics.context import Thresholds
from diagnostics.registry import get_check
from diagnostics.render import write_reports


def run_audit(
    run_dir: Path,
    data: Path | None = None,
    model: str | None = None,
    report_dir: Path | None = None,
    json_path: Path | None = None,
    thresholds: Thresholds | None = None,
) -> RunOutcome:
    """Audit the run at ``run_dir``; MoolaError (exit 2) for input that cannot be read."""
    from diagnostics.audit.context import CHECK, AuditContext
    from diagnostics.audit.reader import read_run
    from diagnostics.audit.replay import replay

    start = time.perf_counter()
    record = read_run(Path(run_dir))
    if model is not None:
        from moola.models import get_spec

        get_spec(model)  # an unknown name is one line
    rp = replay(record, data)
    ctx = AuditContext(record, rp, model or record.model_name, thresholds or Thresholds())
    results = list(get_check(CHECK)(ctx))  # type: ignore[arg-type]  # the audit's own context
    meta = {
        "run_dir": str(record.path),
        "kind": record.kind,
        "model": ctx.model_name or "-",
        "data": rp.data_source or record.data.get("path") or "-",
        "device": record.environment.get("device", "-"),
        "epochs": len(record.epochs),
        "checks": [CHECK],
        "thresholds": {"accuracy_gap": ctx.thresholds.accuracy_gap},
        "elapsed_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }
    written = write_reports(results, meta, report_dir, json_path)
    return RunOutcome(results=results, meta=meta, written=written)
