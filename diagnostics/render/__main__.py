"""Re-render a saved report: ``python -m diagnostics.render reports/report.json [--out report.html]``.

Reads a check report (``report.json``), a gate report (``--json`` of the gate) or the sensitivity tool's JSON,
and writes its HTML (default: beside it, same stem, ``.html``), atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from moola.errors import MoolaError


def render_file(path: Path, out: Path | None = None) -> Path:
    from diagnostics.render import html
    from moola.io import atomic_write_text

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MoolaError(f"{path}: cannot read a JSON report ({exc})") from None
    if isinstance(payload, dict) and "results" in payload and "schema_version" in payload:
        page = html.check_html(payload)
    elif isinstance(payload, dict) and "timings" in payload and "status" in payload:
        page = html.gate_html(payload)
    elif isinstance(payload, dict) and "summary" in payload and "slow" in payload:
        page = html.sensitivity_html(payload)
    else:
        raise MoolaError(f"{path}: not a moola-diag check, gate or sensitivity report")
    return atomic_write_text(out or path.with_suffix(".html"), page)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if (
        not args
        or args[0] in ("-h", "--help")
        or len(args) not in (1, 3)
        or (len(args) == 3 and args[1] != "--out")
    ):
        print(__doc__.strip().splitlines()[0])
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        print(f"wrote {render_file(Path(args[0]), Path(args[2]) if len(args) == 3 else None)}")
    except MoolaError as exc:
        print(f"python -m diagnostics.render: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
