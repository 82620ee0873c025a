"""The GPU verification run's plan: every step, its command, timeout and output file, in running order."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diagnostics.render.smoke import (
    LEGACY_MODEL,
    REFERENCE,
    REFERENCE_TRAIN,
)
from diagnostics.smoke.steps import BURST_STEPS, REPO

# --------------------------------------------------------------------------- the plan


@dataclass
class Step:
    key: str
    title: str
    argv: list[str]
    timeout_s: float
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] = field(default_factory=dict)
    out: str | None = None  # a file (relative to the repo) the step writes, read by its parser


def plan(python: str, report_dir: Path, repo: Path = REPO, device: str = "cuda") -> list[Step]:
    """Every step, in the order they run (most important first: later ones may meet the time budget).

    ``device`` is "cuda" except for the CPU rehearsal, which runs the same plumbing without a GPU.
    """
    work = report_dir / "gpu-smoke"
    train_args = [device if a == "cuda" else a for a in REFERENCE_TRAIN]

    def rel(p: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(p.relative_to(repo))
        return str(p)

    def inner(name: str, *extra: str) -> list[str]:
        return [
            python,
            "-m",
            "diagnostics.smoke",
            "--inner",
            name,
            "--device",
            device,
            "--out",
            rel(work / f"{name}.json"),
            *extra,
        ]

    def check_all(model: str | None, sub: str) -> list[str]:
        argv = [python, "-m", "diagnostics.cli", "check-all", "--device", device]
        argv += ["--model", model] if model else []
        return [*argv, "--report-dir", rel(work / sub)]

    return [
        Step("versions", "Versions and card", inner("versions"), 60, out=rel(work / "versions.json")),
        Step(
            "check_all",
            "moola-diag check-all --device cuda (default model)",
            check_all(None, "check-all-default"),
            120,
            ok_codes=(0, 1),  # 1 = a check FAILs: a verdict, recorded, not a broken step
            out=rel(work / "check-all-default" / "report.json"),
        ),
        Step(
            "train",
            "Reference command: " + REFERENCE,
            [python, "-m", "moola.cli", "train", *train_args, "--out-dir", rel(work / "runs")],
            150,
            out=rel(work / "runs"),
        ),
        Step(
            "audit",
            "moola-diag audit of the reference run",
            inner("audit"),
            90,
            out=rel(work / "audit.json"),
        ),
        Step(
            "bound",
            "Physical lower bound of that epoch on this GPU",
            inner("bound"),
            90,
            out=rel(work / "bound.json"),
        ),
        Step(
            "burst",
            "Training burst with NVML sampling",
            inner("burst", "--steps", str(BURST_STEPS if device == "cuda" else 40)),
            90,
            out=rel(work / "burst.json"),
        ),
        Step(
            "check_all_legacy",
            f"moola-diag check-all --device cuda --model {LEGACY_MODEL}",
            check_all(LEGACY_MODEL, "check-all-legacy"),
            150,
            ok_codes=(0, 1),
            out=rel(work / "check-all-legacy" / "report.json"),
        ),
        Step(
            "gpu_check",
            "moola-diag gpu --device cuda (fresh process)",
            [
                python,
                "-m",
                "diagnostics.cli",
                "gpu",
                "--device",
                device,
                "--report-dir",
                rel(work / "gpu-check"),
            ],
            90,
            ok_codes=(0, 1),
            out=rel(work / "gpu-check" / "report.json"),
        ),
        Step(
            "asv_gpu", "asv Gpu benchmarks, once each", inner("asv_gpu"), 90, out=rel(work / "asv_gpu.json")
        ),
        Step(
            "pytest_bench",
            "pytest-benchmark training benchmarks, MOOLA_BENCH_DEVICE=cuda",
            [
                python,
                "-m",
                "pytest",
                "benchmarks/pytest_bench",
                "-k",
                "Forward or TrainEpoch or Gpu",  # what runs on MOOLA_BENCH_DEVICE (loading is CPU-only)
                "--benchmark-only",
                "--benchmark-min-rounds=1",  # once each, as asked; the JSON still has each timing
                "--benchmark-max-time=0.05",
                f"--benchmark-json={rel(work / 'pytest_bench.json')}",
                "-q",
                "-p",
                "no:cacheprovider",
            ],
            120,
            env={"MOOLA_BENCH_DEVICE": device},
            out=rel(work / "pytest_bench.json"),
        ),
    ]


def describe_plan(steps: Sequence[Step]) -> str:
    return "; ".join(step.title for step in steps)
