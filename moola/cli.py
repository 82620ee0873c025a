"""The ``moola`` command line: train, list models, generate and inspect data.

Parses options, calls the library, renders with rich. torch, pandas and the models are imported inside
the commands so that ``moola --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from moola.clitools import UserErrorGroup, run_app, set_debug
from moola.config import TrainConfig

PROG = "moola"
DEFAULTS = TrainConfig()

app = typer.Typer(
    name=PROG,
    cls=UserErrorGroup,
    help="Moola: classify windows of 105 OHLC bars into pattern classes (and regress pattern pointers).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate or inspect labeled window files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Labeled windows parquet (window_id, label, features[, pointer_start, pointer_end, source, "
        "bar_start]). Default: the embedded synthetic 174-window set.",
        dir_okay=False,
    ),
]
# Shared with moola-diag (diagnostics/cli.py): how the earlier pipeline's files are read.
SplitFileOption = Annotated[
    Path | None,
    typer.Option(
        "--split-file",
        help='JSON of row indices: {"train": [...], "val": [...]} (also "test"; keys *_idx, '
        "*_indices). Replaces --split.",
        dir_okay=False,
    ),
]
PointerConventionOption = Annotated[
    str | None,
    typer.Option(
        "--pointer-convention",
        help="How pointer_start/pointer_end count bars: absolute (0-104) or inner (from bar 30, 0-44). "
        "Default: the file's metadata, else absolute only when values exceed 44 (else an error). "
        "expansion_start/expansion_end are always absolute.",
        metavar="absolute|inner",
    ),
]
DropNullRowsOption = Annotated[
    bool,
    typer.Option(
        "--drop-null-rows", help="Drop windows with null features (named) instead of refusing the file."
    ),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for user errors.")] = False,
) -> None:
    set_debug(debug)


def _load(data: Path | None, pointer_convention: str | None = None, drop_null_rows: bool = False) -> Any:
    if data is None:
        from moola.data.synthetic import default_dataset

        return default_dataset()
    from moola.data.loader import load_windows

    return load_windows(data, pointer_convention=pointer_convention, drop_null_rows=drop_null_rows)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Model name from 'moola models'.")] = DEFAULTS.model,
    data: DataOption = None,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = DEFAULTS.device,
    predict_pointers: Annotated[
        bool, typer.Option("--predict-pointers", help="Also train the pointer head (pattern start/end bars).")
    ] = DEFAULTS.predict_pointers,
    n_epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = (
        DEFAULTS.n_epochs
    ),
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per optimizer step.")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = DEFAULTS.lr,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")] = DEFAULTS.weight_decay,
    pointer_loss_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the pointer loss next to cross-entropy.")
    ] = DEFAULTS.pointer_loss_weight,
    patience: Annotated[
        int, typer.Option(min=0, help="Early stopping: epochs without val-loss improvement (0: off).")
    ] = DEFAULTS.early_stopping_patience,
    augment: Annotated[bool, typer.Option(help="Jitter and scaling augmentation on training batches.")] = (
        DEFAULTS.augment
    ),
    split: Annotated[
        str, typer.Option(help="Validation split: random, temporal or purged.")
    ] = DEFAULTS.split,
    val_fraction: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Share of windows for validation.")
    ] = (DEFAULTS.val_fraction),
    features: Annotated[
        str | None, typer.Option(help="Feature set (ohlc4 or relative11). Default: the model's own.")
    ] = DEFAULTS.features,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, initialisation, shuffling and augmentation.")
    ] = (DEFAULTS.seed),
    out_dir: Annotated[
        Path, typer.Option(help="Parent folder of the run directory.", file_okay=False)
    ] = Path(DEFAULTS.out_dir),
    split_file: SplitFileOption = None,
    pointer_convention: PointerConventionOption = None,
    drop_null_rows: DropNullRowsOption = False,
) -> None:
    """Train a model and write a run directory (config, per-epoch metrics, checkpoint, summary)."""
    from rich.console import Console

    from moola.progress import EpochDisplay
    from moola.train.live import LiveRules
    from moola.train.run import train_run

    config = TrainConfig(
        model=model,
        features=features,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        device=device,  # type: ignore[arg-type]  # validated by resolve_device
        predict_pointers=predict_pointers,
        pointer_loss_weight=pointer_loss_weight,
        early_stopping_patience=patience,
        augment=augment,
        seed=seed,
        split=split,  # type: ignore[arg-type]  # validated by make_split
        val_fraction=val_fraction,
        out_dir=str(out_dir),
        split_file=None if split_file is None else str(split_file),
    )
    dataset = _load(data, pointer_convention, drop_null_rows)
    warning = ""
    if data is not None and split_file is None and split == "random" and dataset.bar_start is None:
        # The earlier pipeline forbade this: neighbouring market windows share bars, so validation leaks.
        warning = (
            f"{PROG}: warning: {data} has no bar_start and no --split-file: the random validation split "
            "can leak between overlapping windows (pass --split-file)"
        )
    console = Console(stderr=True, highlight=False)
    display = EpochDisplay(console, model, n_epochs, warning)
    live = LiveRules(notify=display.finding)
    display.live = live
    try:
        result = train_run(config, dataset, callbacks=[display], live=live)
    finally:
        display.stop()
    _print_run_summary(result)


def _print_run_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    best = result.history[result.best_epoch] if result.history else {}
    table = Table(title="training run", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("run directory", str(result.run_dir))
    table.add_row("device", str(result.device))
    table.add_row("parameters", f"{result.n_params:,}")
    table.add_row("epochs run", str(len(result.history)))
    table.add_row("best epoch", str(result.best_epoch + 1))
    # Running figures come from the epoch (augmented batches, dropout on); *_eval from the kept weights
    # in eval mode, measured as val_* are: only those two are comparable.
    shown = {**best, **{k: v for k, v in result.metrics.items() if k.endswith("_eval")}}
    for key in (
        "train_loss_running",
        "train_loss_eval",
        "val_loss",
        "train_acc_running",
        "train_acc_eval",
        "val_acc",
        "val_macro_f1",
        "majority_acc",
        "pointer_mae_bars",
    ):
        value = shown.get(key)
        if value is not None:
            table.add_row(key, f"{value:.4f}")
    Console().print(table)


@app.command()
def models(
    n_features: Annotated[
        int | None,
        typer.Option(help="Input width to count parameters for. Default: each model's feature set."),
    ] = None,
    n_classes: Annotated[int, typer.Option(min=2, help="Number of classes to count parameters for.")] = 2,
) -> None:
    """List registered models: parameters, feature set, and whether they are legacy."""
    from rich.console import Console
    from rich.table import Table

    from moola.models import get_model, list_models

    table = Table(title="moola models")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    for column in ("features", "legacy", "default", "description"):
        table.add_column(column)
    for spec in list_models():
        model = get_model(spec.name, n_features=n_features, n_classes=n_classes)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        table.add_row(
            spec.name,
            f"{n_params:,}",
            spec.feature_set,
            "yes" if spec.legacy else "no",
            "*" if spec.name == DEFAULTS.model else "",
            spec.description,
        )
    Console().print(table)


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.", dir_okay=False)],
    n_windows: Annotated[int, typer.Option(min=2, help="Number of labeled windows.")] = 174,
    seed: Annotated[
        int, typer.Option(help="Generator seed: the same seed gives byte-identical windows.")
    ] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write the deterministic synthetic window set (the embedded default is 174 windows, seed 0)."""
    from moola.data.loader import save_windows
    from moola.data.synthetic import generate
    from moola.errors import MoolaError

    if out.exists() and not force:
        raise MoolaError(f"--out {out}: file exists (pass --force to overwrite)")
    path = save_windows(generate(n_windows=n_windows, seed=seed), out)
    typer.echo(f"wrote {n_windows} windows to {path}")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[
        Path | None,
        typer.Argument(help="Parquet file to inspect. Default: the embedded dataset.", dir_okay=False),
    ] = None,
    pointer_convention: PointerConventionOption = None,
    drop_null_rows: DropNullRowsOption = False,
) -> None:
    """Validate a window file and summarise it: which column was used for what, shape, dtype, classes,
    pointers, provenance."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    ds = _load(path, pointer_convention, drop_null_rows)
    table = Table(title=str(path) if path else "embedded default dataset", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for role, used in ds.columns:  # which column fed what (the earlier pipeline's names included)
        table.add_row(f"column: {role}", used)
    table.add_row("windows", f"{len(ds):,}")
    table.add_row("shape (N, T, F)", str(tuple(ds.X.shape)))
    table.add_row("dtype", f"{ds.X.dtype} ({'C-contiguous' if ds.X.flags.c_contiguous else 'strided'})")
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    table.add_row(
        "classes",
        ", ".join(f"{name}: {n} ({n / len(ds):.0%})" for name, n in zip(ds.classes, counts, strict=True)),
    )
    if ds.pointers is not None:
        length = ds.pointers[:, 1] - ds.pointers[:, 0] + 1
        table.add_row(
            "pointers",
            f"present; pattern length {length.min()}-{length.max()} bars (median {np.median(length):g})",
        )
    else:
        table.add_row("pointers", "absent")
    if ds.has_provenance:
        sources = np.unique(ds.source)
        table.add_row(
            "provenance", f"{len(sources)} sources; bar_start {ds.bar_start.min()}..{ds.bar_start.max()}"
        )
    else:
        table.add_row("provenance", "absent (overlap checks fall back to bar hashing)")
    table.add_row("memory", f"{ds.X.nbytes / 2**20:.2f} MiB")
    # Wide enough that the column roles stay on one line when stdout is not a terminal (logs, pipes).
    Console(width=None if Console().is_terminal else 160).print(table)


def main() -> None:
    run_app(app, PROG)


if __name__ == "__main__":
    main()
