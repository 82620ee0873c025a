"""The GPU verification run: one command, under 5 minutes on one GPU, everything into one JSON + Markdown.

``python3 scripts/gpu-smoke`` (or ``python -m diagnostics.smoke``) runs, each step in its own subprocess
with its own timeout, so a hang or a CUDA crash costs that step only and the rest still run:

  versions         driver, NVML, CUDA (driver and torch's build), cuDNN, torch; the card (nvidia-smi too)
  check_all        moola-diag check-all --device cuda on the embedded set (default model)
  train            the reference command: python -m moola.cli train --model jade_compact --device cuda
                   --predict-pointers --n-epochs 60, timed
  audit            moola-diag audit of that run: its epoch times against the bound from the speeds it
                   recorded, its recorded torch peak memory against the analytic footprint, and the rest
  bound            the physical lower bound of that training's epoch on this GPU (diagnostics.physics, the
                   function the sanity check uses)
  burst            a training burst of the gpu check's model, NVML sampled every 20 ms, the CUDA context
                   measured as NVML device memory before vs after this process creates it
  check_all_legacy moola-diag check-all --device cuda --model enhanced_simple_lstm
  gpu_check        moola-diag gpu --device cuda in a fresh process (its context is measured there)
  asv_gpu          the asv suite's Gpu benchmarks, each called once (asv itself need not be installed)
  pytest_bench     MOOLA_BENCH_DEVICE=cuda pytest benchmarks/pytest_bench (training benchmarks, short)

Modules: plan.py (the steps and their commands), runner.py (subprocesses, parsing, the report), steps.py (the
steps of its own, run as ``--inner NAME``: versions, bound, burst, asv_gpu, audit), cli.py (the options).

and writes ``reports/gpu-smoke.json`` and ``reports/gpu-smoke.md`` atomically after every step (a killed
run leaves what it had). Without a GPU it prints one line saying so and what it would have run, exit 0.
Exit 1 when a step failed, timed out or was left out for time; 2 on a setup error (a GPU but no CUDA torch).
Nothing here imports torch: the steps do, in their subprocesses.
"""

from diagnostics.render.smoke import REFERENCE, reference_figures
from diagnostics.smoke.cli import main
from diagnostics.smoke.plan import Step, describe_plan, plan
from diagnostics.smoke.runner import Completed, Presence, detect_gpu, run, run_subprocess

__all__ = [
    "REFERENCE",
    "Completed",
    "Presence",
    "Step",
    "describe_plan",
    "detect_gpu",
    "main",
    "plan",
    "reference_figures",
    "run",
    "run_subprocess",
]
