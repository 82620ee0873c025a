"""``python3 scripts/gpu-smoke`` / ``python -m diagnostics.smoke``: options, and ``--inner NAME`` for one step."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diagnostics.render.smoke import (
    LEGACY_MODEL,
)
from diagnostics.smoke.runner import BUDGET_S, PROG, run
from diagnostics.smoke.steps import BURST_STEPS, INNER, run_inner
from moola.errors import MoolaError

# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as every moola entry point
        self.exit(2, f"{PROG}: error: {message} (see '{PROG} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog=PROG,
        description="The GPU verification run (under 5 minutes on one GPU): versions, check-all --device cuda "
        f"(default model and {LEGACY_MODEL}), the reference training vs its physical lower bound, an NVML-sampled "
        "training burst and the GPU benchmarks, into reports/gpu-smoke.json and .md. Without a GPU: one line, "
        "exit 0.",
    )
    parser.add_argument(
        "--report-dir", type=Path, default=Path("reports"), help="where gpu-smoke.json/.md go"
    )
    parser.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default %(default)s)"
    )
    parser.add_argument("--only", help="comma-separated step keys to run (see --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and commands, run nothing")
    parser.add_argument("--inner", choices=sorted(INNER), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=BURST_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rehearse-on-cpu",
        action="store_true",
        help="run every step on the CPU, without a GPU: tests the plumbing and the report, no GPU figures",
    )
    args = parser.parse_args(argv)
    if args.inner:
        return run_inner(args.inner, args.out, args.device, args.steps)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through run_subprocess, which kills the running step

    with contextlib.suppress(ValueError):  # not the main thread (e.g. called from a test runner thread)
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run(
            args.report_dir,
            budget_s=args.budget,
            dry_run=args.dry_run,
            rehearse=args.rehearse_on_cpu,
            only=[s for s in (args.only or "").split(",") if s] or None,
        )
    except MoolaError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
