"""What a moola-diag command does, without typer: options -> context -> checks -> results + meta.

The CLI only parses and renders; tests and other tools call ``run`` / ``run_checks`` directly.
"""

from __future__ import annotations

import platform
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnostics.registry import (
    CHECK_ORDER,
    cancel_prefetch,
    get_check,
    has_prefetch,
    require_known,
    start_prefetch,
)
from diagnostics.render import discard_partial_reports, prerender, write_reports
from diagnostics.result import CheckResult, Status
from moola.errors import Interrupted, MoolaError, where_raised

if TYPE_CHECKING:
    from diagnostics.context import DiagContext


@dataclass(frozen=True)
class Options:
    """The options every moola-diag check command shares."""

    data: Path | None = None
    train: Path | None = None
    test: Path | None = None
    val: Path | None = None
    split: str | None = None
    model: str | None = None
    device: str = "auto"
    fit: str | None = None
    seed: int = 0
    split_file: Path | None = None
    judge_split: bool = False
    time_order: str | None = None
    pointer_convention: str | None = None
    drop_null_rows: bool = False
    max_train_windows: int | None = None
    max_test_windows: int | None = None
    runs: int | None = None  # stability: runs of the quality estimator (None: Thresholds.stability_runs)
    json_path: Path | None = None
    report_dir: Path | None = None
    debug: bool = False


@dataclass
class RunOutcome:
    results: list[CheckResult]
    meta: dict[str, Any]
    written: list[Path]

    @property
    def exit_code(self) -> int:
        from diagnostics.result import exit_code

        return exit_code(self.results)


def crash_result(name: str, exc: BaseException) -> CheckResult:
    """A check that raised is a FAIL naming the exception: a crashed check proves nothing (fail closed)."""
    where = where_raised(exc)
    lines = [line.rstrip() for line in traceback.format_exception_only(type(exc), exc) if line.strip()]
    evidence = (*lines, f"raised at {where} (rerun with --debug for the traceback)")
    return CheckResult(
        check=name,
        name="crashed",
        status=Status.FAIL,
        measured=f"check raised {type(exc).__name__}: {exc}"[:300],
        expected="the check completes",
        hint=f"rerun `moola-diag {name} --debug` for the traceback and report it",
        evidence=evidence,
        values={"exception": type(exc).__name__},
    )


def run_checks(
    ctx: DiagContext,
    names: Sequence[str] = CHECK_ORDER,
    debug: bool = False,
    results: list[CheckResult] | None = None,
    progress: Callable[[str], None] | None = None,
    before_waiting: Callable[[list[CheckResult]], None] | None = None,
) -> list[CheckResult]:
    """Run the named checks in order, appending to ``results`` (so an interrupted caller keeps what
    finished). A MoolaError (user mistake) propagates; any other exception becomes a FAIL result for
    that check (re-raised with ``debug``) so the other checks still run. ``progress(name)`` is called
    as each check starts; ``before_waiting(results so far)`` before a check whose work runs in the
    background (what is done meanwhile costs no time while that work still trains)."""
    results = [] if results is None else results
    for name in names:
        if progress is not None:
            progress(name)
        if before_waiting is not None and results and has_prefetch(name):
            before_waiting(results)
        try:
            found = list(get_check(name)(ctx))
        except MoolaError:
            raise
        except Exception as exc:
            if debug:
                raise
            found = [crash_result(name, exc)]
        results.extend(found)
    return results


def versions() -> dict[str, str]:
    import sys

    import numpy

    from moola import __version__

    out = {"python": platform.python_version(), "moola": __version__, "numpy": numpy.__version__}
    torch = sys.modules.get("torch")  # only report it if a check loaded it; never import it for this
    if torch is not None:
        out["torch"] = str(torch.__version__)
        out["cuda"] = str(getattr(torch.version, "cuda", None))
    out["platform"] = platform.platform(terse=True)
    return out


def build_meta(ctx: DiagContext, names: Sequence[str], elapsed_s: float | None = None) -> dict[str, Any]:
    from diagnostics.loading import data_source
    from diagnostics.sampling import training_sample

    sample = training_sample(ctx)
    sampled = {"training_sample": sample.describe()} if sample.sampled else {}
    return {
        **sampled,
        "data": data_source(ctx),
        "n_windows": len(ctx.dataset),
        "n_train": len(ctx.train_idx),
        "n_test": len(ctx.test_idx),
        "n_val": None if ctx.val_idx is None else len(ctx.val_idx),
        "classes": list(ctx.dataset.classes),
        "split": ctx.split_kind,
        "split_reason": ctx.split_reason,
        "model": ctx.model_name,
        "device": ctx.device,
        "fit": ctx.fit_spec,
        "checks": list(names),
        "thresholds": asdict(ctx.thresholds),
        "elapsed_s": None if elapsed_s is None else round(elapsed_s, 3),
        "versions": versions(),
    }


def run(
    options: Options,
    names: Sequence[str] = CHECK_ORDER,
    progress: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Build the context, run the checks, write the requested reports."""
    from diagnostics.loading import build_context

    for name in names:
        require_known(name)
    start = time.perf_counter()
    ctx = build_context(
        data=options.data,
        train=options.train,
        test=options.test,
        val=options.val,
        split=options.split,
        model=options.model,
        device=options.device,
        fit=options.fit,
        seed=options.seed,
        split_file=options.split_file,
        judge_split=options.judge_split,
        time_order=options.time_order,
        pointer_convention=options.pointer_convention,
        drop_null_rows=options.drop_null_rows,
        max_train_windows=options.max_train_windows,
        max_test_windows=options.max_test_windows,
    )
    if options.runs is not None:
        if options.runs < 1:
            raise MoolaError(f"--runs {options.runs}: need at least one run")
        ctx.thresholds = replace(ctx.thresholds, stability_runs=int(options.runs))
    results: list[CheckResult] = []
    try:

        def prepare_report(done: list[CheckResult]) -> None:
            if options.report_dir is not None:  # the HTML page's plots, drawn while the runs train
                prerender(done, build_meta(ctx, names))

        if len(names) > 1:  # work of a later check that can run beside the earlier ones starts now
            start_prefetch(names, ctx)
        run_checks(
            ctx, names, debug=options.debug, results=results, progress=progress, before_waiting=prepare_report
        )
    except KeyboardInterrupt as interrupt:
        cancel_prefetch(ctx)
        raise _interrupted(ctx, names, results, options, start, interrupt) from None
    except BaseException:  # a user error (exit 2) must not wait for background runs to finish
        cancel_prefetch(ctx)
        raise
    meta = build_meta(ctx, names, elapsed_s=time.perf_counter() - start)
    written = write_reports(results, meta, options.report_dir, options.json_path)
    discard_partial_reports(options.report_dir, options.json_path)  # superseded by the complete run
    return RunOutcome(results=results, meta=meta, written=written)


def _interrupted(
    ctx: DiagContext,
    names: Sequence[str],
    results: list[CheckResult],
    options: Options,
    start: float,
    interrupt: KeyboardInterrupt,
) -> Interrupted:
    """Save the findings of the checks that completed beside (never over) the previous report."""
    signum = getattr(interrupt, "signum", signal.SIGINT)
    done = list(dict.fromkeys(r.check for r in results))
    kept = "previous report left untouched"
    if not results:
        return Interrupted(f"no check completed; {kept}", signum)
    meta = build_meta(ctx, names, elapsed_s=time.perf_counter() - start)
    meta["interrupted"] = {"signal": signal.Signals(signum).name, "completed": done}
    written = write_reports(results, meta, options.report_dir, options.json_path, partial=True)
    where = ", ".join(str(p) for p in written) or "nowhere (no --report-dir or --json)"
    return Interrupted(
        f"{len(done)}/{len(names)} check(s) completed, partial results in {where}; {kept}", signum
    )
