"""``python -m diagnostics.quality``: the distribution a recipe produces on the embedded set, printed.

    python -m diagnostics.quality --model jade_compact --runs 24 [--pointers] [--holdout 2000] [--first-seed 0]

The README's quality table comes from this (and from ``moola-diag stability``); the gate's quality
benchmarks use the same plan with ``--holdout 2000``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from moola.clitools import UserErrorCommand, run_app

PROG = "python -m diagnostics.quality"


def quality_command(
    model: Annotated[str, typer.Option("--model", help="Registered model.")] = "jade_compact",
    runs: Annotated[int, typer.Option("--runs", help="Runs (seeds).", min=1)] = 24,
    pointers: Annotated[bool, typer.Option("--pointers", help="Train and score the pointer head.")] = False,
    holdout: Annotated[
        int,
        typer.Option(
            "--holdout", help="Also score a fresh synthetic hold-out of N windows (0: none).", min=0
        ),
    ] = 2000,
    first_seed: Annotated[int, typer.Option("--first-seed", help="First seed of the runs.")] = 0,
    json_path: Annotated[str | None, typer.Option("--json", help="Write the whole estimate here.")] = None,
) -> None:
    """Train moola train's recipe over fresh seeds and print each metric's mean, sd, 95% CI and range."""
    from dataclasses import replace

    from diagnostics import quality
    from moola.config import TrainConfig
    from moola.data.synthetic import default_dataset, generate
    from moola.io import atomic_write_json

    ds = default_dataset()
    config = replace(TrainConfig(model=model, device="cpu"), predict_pointers=pointers)
    plan = quality.default_plan(ds, config, runs, split="random", first_seed=first_seed)
    hold = generate(holdout, seed=20_261_201) if holdout else None  # the gate's hold-out seed
    est = quality.estimate(ds, plan, holdout=hold)
    print(f"{est.description}; {est.cached_runs} cached; {est.wall_s:.0f} s on {est.workers} worker(s)")
    for part in ("val", "holdout") if hold is not None else ("val",):
        for metric in quality.METRIC_DOCS:
            summary = est.summary(metric, part)
            if summary.n:
                print(f"{part:8s} {metric:26s} {summary.describe()}")
    if json_path:
        atomic_write_json(json_path, est.to_dict())


app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)
app.command(cls=UserErrorCommand)(quality_command)

if __name__ == "__main__":
    run_app(app, PROG)
