"""The ``moola-diag`` command line: parse options, call ``diagnostics.commands.run``, render.

Only typer and the torch-free diagnostics modules are imported here, so ``moola-diag --help`` is instant;
data, models and torch load inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from diagnostics import PROG
from diagnostics.commands import Options
from diagnostics.gate.cli import gate_command
from diagnostics.registry import CHECK_ORDER
from moola.cli import DropNullRowsOption, PointerConventionOption, SplitFileOption
from moola.clitools import UserErrorGroup, run_app, set_debug, state

app = typer.Typer(
    name=PROG,
    cls=UserErrorGroup,
    help="Catch moola's known failure modes automatically: each finding prints what was measured, what "
    "this model, data and machine should give, the evidence, and a one-line fix. "
    "Exit 0: nothing FAILs; 1: a check FAILs; 2: bad input or options.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CHECK_HELP = {
    "config": "Training configuration: default/selected model not legacy; batch size, steps per epoch and "
    "learning rate sane for the dataset size.",
    "params": "Trainable parameters per training sample vs thresholds, per-layer breakdown, and the "
    "registered model that fits the data.",
    "data": "Raw windows and the model's features: dtype, NaN/inf, shapes, feature width vs the model, "
    "class balance, pointers, duplicate windows.",
    "leakage": "Train/test leakage: identical and near-duplicate windows across the split, overlapping "
    "bars, and its symptoms after a short training run.",
    "sanity": "Instrumented training run (your --fit or the built-in trainer): the model learns; gradients are "
    "cleared per step; logits, not probabilities, reach the loss; windows train toward their own labels; no "
    "divergence; weights change only in step(); every window is seen; epoch time fits the machine's speed.",
    "stability": "Model quality as a distribution: the moola train recipe trained over fresh seeds on k-fold "
    "splits; accuracy, log-loss and the pointer head against their baselines with 95% intervals, where "
    "check-all's single run sits, and windows every run gets wrong.",
    "gpu": "GPU use during a short training burst: device, memory vs the analytic footprint, "
    "utilization, and whether parameters and batches are on the GPU (SKIP without a GPU).",
}

# --- the shared options (one definition, used by every check command) -------------------------------
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Labeled windows parquet to diagnose, split with --split. Default: the embedded synthetic "
        "174-window set.",
        dir_okay=False,
    ),
]
TrainOpt = Annotated[
    Path | None,
    typer.Option(
        "--train", help="Training windows parquet (use with --test; not with --data).", dir_okay=False
    ),
]
TestOpt = Annotated[
    Path | None,
    typer.Option("--test", help="Test windows parquet (use with --train).", dir_okay=False),
]
ValOpt = Annotated[
    Path | None,
    typer.Option("--val", help="Optional validation windows parquet (with --train/--test).", dir_okay=False),
]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="How to split --data or the default set: random | temporal | purged. Default: purged when the "
        "file has bar_start, else the last 20% of rows with --time-order row, else random (with a WARN); "
        "the embedded set: random.",
        metavar="KIND",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Registered model to diagnose (see `moola models`). Default: the moola CLI's default model.",
        metavar="NAME",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="Where training checks run: auto | cpu | cuda.", metavar="DEVICE"),
]
FitOpt = Annotated[
    str | None,
    typer.Option(
        "--fit",
        help="Your training function as MODULE:FUNC, called FUNC(model, X, y, epochs, device) with X a "
        "float32 tensor (N, T, F) and y a long tensor (N,). Default: moola's built-in trainer.",
        metavar="MODULE:FUNC",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the split and the checks' training runs.")]
JudgeSplitOpt = Annotated[
    bool,
    typer.Option(
        "--judge-split",
        help="Judge the --split-file rather than refuse it: rows listed in two parts load and count as leakage.",
    ),
]
TimeOrderOpt = Annotated[
    str | None,
    typer.Option(
        "--time-order",
        help="What orders windows in time: bar_start (default) or row (rows are in time order; used to "
        "split and to judge a split when there is no bar_start).",
        metavar="bar_start|row",
    ),
]
RunsOpt = Annotated[
    int | None,
    typer.Option(
        "--runs",
        help="stability: training runs of the quality estimator (default 4, two rounds on 2 cores; "
        "cached, so a rerun costs nothing).",
        metavar="N",
    ),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json", help="Also write the JSON report (schema-versioned) to this file.", dir_okay=False
    ),
]
ReportDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        help="Directory for report.json (schema-versioned) and report.md (PR-comment summary), each "
        "written atomically.",
        file_okay=False,
    ),
]
MaxTrainOpt = Annotated[
    int | None,
    typer.Option(
        "--max-train-windows",
        help="Training rows the training-based findings (sanity, accuracy, GPU burst) train on: a stratified "
        "sample of a larger split, seeded with --seed. Default: 475 (train accuracy within +-0.045 at 95%); "
        "0 = every row. Row-level findings always use every row.",
        metavar="N",
    ),
]
MaxTestOpt = Annotated[
    int | None,
    typer.Option(
        "--max-test-windows",
        help="Test rows the accuracy findings evaluate on (stratified sample). Default: 2401 (test accuracy "
        "within +-0.02 at 95%); 0 = every row.",
        metavar="N",
    ),
]
DebugOpt = Annotated[
    bool,
    typer.Option("--debug", help="Show tracebacks: user errors and crashing checks re-raise instead."),
]

CommandFn = Callable[..., None]


def _execute(names: Sequence[str], options: Options) -> int:
    """Run the checks, print the table and verdict; the exit code is 1 if anything FAILs."""
    from rich.console import Console

    from diagnostics.commands import run
    from diagnostics.render import print_report
    from diagnostics.render.progress import progress

    # Progress goes to stderr so stdout stays the report: a live bar on a terminal, else one line per
    # check, flushed, so logs show where a slow or interrupted run was.
    status = Console(stderr=True, highlight=False)
    with progress(status, total=len(names)) as say:
        outcome = run(options, names, progress=lambda name: say(f"running {name} ..."))
    # Wide enough for the six columns when stdout is not a terminal (CI logs, pipes).
    console = Console(width=None if Console().is_terminal else 160)
    print_report(outcome.results, outcome.meta, console)
    for path in outcome.written:
        console.print(f"wrote {path}")
    return outcome.exit_code


def _make_command(names: tuple[str, ...]) -> CommandFn:
    """One command function per check (or check-all) over the shared options."""

    def command(
        data: DataOpt = None,
        train: TrainOpt = None,
        test: TestOpt = None,
        val: ValOpt = None,
        split: SplitOpt = None,
        model: ModelOpt = None,
        device: DeviceOpt = "auto",
        fit: FitOpt = None,
        seed: SeedOpt = 0,
        split_file: SplitFileOption = None,
        judge_split: JudgeSplitOpt = False,
        time_order: TimeOrderOpt = None,
        pointer_convention: PointerConventionOption = None,
        drop_null_rows: DropNullRowsOption = False,
        max_train_windows: MaxTrainOpt = None,
        max_test_windows: MaxTestOpt = None,
        runs: RunsOpt = None,
        json_path: JsonOpt = None,
        report_dir: ReportDirOpt = Path("reports"),
        debug: DebugOpt = False,
    ) -> None:
        set_debug(state.debug or debug)
        options = Options(
            data=data,
            train=train,
            test=test,
            val=val,
            split=split,
            model=model,
            device=device,
            fit=fit,
            seed=seed,
            split_file=split_file,
            judge_split=judge_split,
            time_order=time_order,
            pointer_convention=pointer_convention,
            drop_null_rows=drop_null_rows,
            max_train_windows=max_train_windows,
            max_test_windows=max_test_windows,
            runs=runs,
            json_path=json_path,
            report_dir=report_dir,
            debug=state.debug,
        )
        code = _execute(names, options)
        if code:
            raise typer.Exit(code)

    return command


@app.callback()
def _root(debug: DebugOpt = False) -> None:
    set_debug(debug)


app.command(
    "check-all",
    help="Run every check (" + ", ".join(CHECK_ORDER) + ") and print one table; exit 1 if any FAILs.",
)(_make_command(CHECK_ORDER))
for _name in CHECK_ORDER:
    app.command(_name, help=CHECK_HELP[_name])(_make_command((_name,)))


@app.command("audit")
def audit_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory of `moola train`, or a foreign run's "
            "metrics.csv (Lightning/Keras CSVLogger) or JSON-lines file."
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="The data the run trained on (default: the path it recorded).", dir_okay=False
        ),
    ] = None,
    model: ModelOpt = None,
    json_path: JsonOpt = None,
    report_dir: ReportDirOpt = Path("reports/audit"),
    debug: DebugOpt = False,
) -> None:
    """Audit a finished or cut-short run: reproduce its metrics from model.pt, data changes, train vs
    validation, selection optimism, epoch times and memory vs physics, ratio, config, curve health."""
    set_debug(state.debug or debug)
    from rich.console import Console

    from diagnostics.audit.run import run_audit
    from diagnostics.render import print_report

    outcome = run_audit(run_dir, data=data, model=model, report_dir=report_dir, json_path=json_path)
    console = Console(width=None if Console().is_terminal else 160)
    print_report(outcome.results, outcome.meta, console)
    for path in outcome.written:
        console.print(f"wrote {path}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


# A broken gate install must fail loudly here, not silently drop the command.
app.command("gate")(gate_command)


def main() -> None:
    run_app(app, PROG)


if __name__ == "__main__":
    main()
