"""The GPU verification run's Markdown (``reports/gpu-smoke.md``) and its README table, rendered from the
run's JSON (``reports/gpu-smoke.json``); diagnostics/smoke.py plans and runs the steps, this only renders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The smoke run's reference command and legacy model: named in the rendered text.
REFERENCE_TRAIN = ("--model", "jade_compact", "--device", "cuda", "--predict-pointers", "--n-epochs", "60")
REFERENCE = "python -m moola.cli train " + " ".join(REFERENCE_TRAIN)
LEGACY_MODEL = "enhanced_simple_lstm"


def versions_line(v: dict[str, Any]) -> str:
    card = (v.get("devices") or [{}])[0].get("name", "no CUDA device")
    return (
        f"{card} · driver {v.get('driver')} · NVML {v.get('nvml')} · CUDA driver {v.get('cuda_driver')} · "
        f"torch {v.get('torch')} (CUDA {v.get('torch_cuda')}, cuDNN {v.get('cudnn')})"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return " ".join(str(value).split()).replace("|", "\\|") or " "


def _counts(step: dict[str, Any] | None) -> str:
    """'exit 1: 30 PASS, 1 FAIL, 2 SKIP' from a check-all step, or its status when it has no report."""
    step = step or {}
    counts = (step.get("data") or {}).get("counts") or {}
    if not counts:
        return f"no report ({step.get('status', 'not run')})"
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"exit {step.get('returncode')}: {parts}"


def _mib(n: Any) -> str:
    return "n/a" if not isinstance(n, (int, float)) else f"{n / 2**20:,.1f} MiB"


def _sec(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "n/a"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.1f} ms"


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{x:.0f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _steps_by_key(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in report.get("steps", [])}


def reference_figures(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reference train next to its lower bound: per epoch and for the epochs it actually ran."""
    train = steps.get("train", {}).get("data") or {}
    bound = steps.get("bound", {}).get("data") or {}
    epochs = train.get("epochs_run")
    per_epoch = train.get("mean_epoch_time_s")
    bound_s = bound.get("bound_s")
    out: dict[str, Any] = {"epochs_run": epochs, "epoch_s": per_epoch, "bound_epoch_s": bound_s}
    if isinstance(bound_s, (int, float)):
        out["bound_60_s"] = bound_s * 60
        if isinstance(epochs, int):
            out["bound_total_s"] = bound_s * epochs
    if isinstance(per_epoch, (int, float)) and isinstance(bound_s, (int, float)) and bound_s > 0:
        out["ratio"] = per_epoch / bound_s
    return out


def _check_section(title: str, step: dict[str, Any] | None) -> list[str]:
    lines = [f"### {title}", ""]
    if not step or not step.get("data", {}).get("results"):
        lines.append(f"No report ({(step or {}).get('status', 'not run')}; see Failures).")
        return [*lines, ""]
    data = step["data"]
    lines.append(
        f"Exit {step.get('returncode')}, verdict **{data.get('verdict')}**, {step.get('seconds', 0):.1f} s."
    )
    lines.append("")
    rows = [(r["check"], r["name"], r["status"], r["measured"], r["expected"]) for r in data["results"]]
    lines += [*_table(("check", "finding", "status", "measured", "expected"), rows), ""]
    # The evidence behind the GPU-related verdicts (context overhead, NVML's meaning, the bound's parts).
    for r in data["results"]:
        if (r["check"] == "gpu" or (r["check"], r["name"]) == ("sanity", "epoch_time")) and r.get("evidence"):
            lines.append(f"- **{r['check']}.{r['name']}**: " + "; ".join(r["evidence"]))
    return [*lines, ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The human report; every section present even when its step failed (it then says so)."""
    steps = _steps_by_key(report)
    versions = (steps.get("versions") or {}).get("data") or {}
    state = "complete" if report.get("complete") else (report.get("interrupted") or "in progress")
    lines = [
        "# moola GPU verification run"
        + (" (CPU rehearsal: plumbing only, no GPU figures)" if report.get("rehearsal") else ""),
        "",
        f"{report.get('started', '?')} · {report.get('host', '?')} · git {report.get('git') or '?'} · "
        f"{report.get('seconds', 0):.0f} s of a {report.get('budget_s', 0):.0f} s budget · {state}",
        "",
        "## Versions",
        "",
    ]
    card = (versions.get("devices") or [{}])[0]
    lines += _table(
        ("item", "value"),
        [
            ("GPU", card.get("name", report.get("gpu", "?"))),
            ("GPU memory", _mib(card.get("total_memory"))),
            ("driver", versions.get("driver")),
            ("NVML", versions.get("nvml")),
            ("CUDA (driver supports)", versions.get("cuda_driver")),
            ("CUDA (torch built with)", versions.get("torch_cuda")),
            ("cuDNN", versions.get("cudnn")),
            ("torch", versions.get("torch")),
            ("python", versions.get("python")),
            ("packages", ", ".join(f"{k} {v}" for k, v in (versions.get("packages") or {}).items()) or None),
            ("nvidia-smi", versions.get("nvidia_smi")),
        ],
    )
    lines += ["", "## Steps", ""]
    lines += _table(
        ("step", "status", "seconds", "exit", "command"),
        [
            (s["key"], s["status"], f"{s.get('seconds', 0):.1f}", s.get("returncode"), s.get("command"))
            for s in report.get("steps", [])
        ],
    )
    lines += ["", "## check-all --device cuda", ""]
    lines += _check_section("default model", steps.get("check_all"))
    lines += _check_section(LEGACY_MODEL, steps.get("check_all_legacy"))
    lines += _check_section(
        "gpu check alone (fresh process: its CUDA context is measured)", steps.get("gpu_check")
    )

    ref = reference_figures(steps)
    train = (steps.get("train") or {}).get("data") or {}
    bound = (steps.get("bound") or {}).get("data") or {}
    lines += ["## Reference training vs the physical lower bound", ""]
    lines += [f"`{REFERENCE}`", ""]
    lines += _table(
        ("", "value"),
        [
            (
                "process wall time (start-up, data, training, checkpoint)",
                _sec((steps.get("train") or {}).get("seconds")),
            ),
            ("training loop (summary.json train_time_s)", _sec(train.get("train_time_s"))),
            ("epochs run (early stopping may end sooner)", ref.get("epochs_run", "n/a")),
            ("measured epoch (mean)", _sec(ref.get("epoch_s"))),
            (
                "lower bound per epoch = max(compute, sequential)",
                f"{_sec(bound.get('bound_s'))} = max({_sec(bound.get('flops_part_s'))}, {_sec(bound.get('latency_part_s'))})",
            ),
            ("measured / bound", f"{ref['ratio']:.1f}x" if "ratio" in ref else "n/a"),
            ("floor for the epochs run", _sec(ref.get("bound_total_s"))),
            ("floor for 60 epochs", _sec(ref.get("bound_60_s"))),
            ("audit of that run: epoch_time", _verdict_of(steps.get("audit"), "audit", "epoch_time")),
            ("audit of that run: memory", _verdict_of(steps.get("audit"), "audit", "memory")),
            ("validation accuracy (best epoch)", train.get("val_acc", "n/a")),
        ],
    )
    lines += ["", "## NVML during a training burst", ""]
    burst = (steps.get("burst") or {}).get("data") or {}
    if burst:
        lines += _table(
            ("", "value"),
            [
                (
                    "burst",
                    f"{burst.get('n_forward')} forwards, {burst.get('epochs')} epochs in {_sec(burst.get('seconds'))}",
                ),
                (
                    "NVML device used before CUDA / with the context",
                    f"{_mib(burst.get('nvml_before_cuda'))} / {_mib(burst.get('nvml_with_context'))}",
                ),
                ("CUDA context (difference)", _mib(burst.get("context_bytes"))),
                (
                    "torch: burst's own peak / analytic footprint + data",
                    f"{_mib(burst.get('own_peak'))} / {_mib(burst.get('budget_bytes'))}",
                ),
                (
                    "torch: cuBLAS workspace, reserved",
                    f"{_mib(burst.get('workspace_bytes'))}, {_mib(burst.get('reserved'))}",
                ),
                ("NVML: this process", _mib(burst.get("process_bytes"))),
                (
                    "NVML utilization mean / max (share of time a kernel ran)",
                    f"{_pct(burst.get('mean_util'))} / {_pct(burst.get('max_util'))} over {burst.get('n_samples')} samples",
                ),
            ],
        )
        verdicts = burst.get("verdicts") or []
        if verdicts:
            lines += [""]
            lines += _table(
                ("finding", "status", "measured", "expected"),
                [(v["name"], v["status"], v["measured"], v["expected"]) for v in verdicts],
            )
        timeline = burst.get("timeline") or []
        if timeline:
            lines += ["", "Timeline (every few samples): seconds, kernel-running %, device memory used", ""]
            lines += _table(
                ("t", "util %", "used"), [(f"{t:.2f}", f"{u:.0f}", _mib(m)) for t, u, m in timeline]
            )
    else:
        lines.append(f"No data ({(steps.get('burst') or {}).get('status', 'not run')}; see Failures).")
    lines += ["", "## GPU benchmarks", ""]
    asv_rows = ((steps.get("asv_gpu") or {}).get("data") or {}).get("rows") or []
    bench_rows = ((steps.get("pytest_bench") or {}).get("data") or {}).get("benchmarks") or []
    rows = [
        ("asv", r.get("benchmark"), r.get("param"), r.get("status"), r.get("value"), r.get("unit"))
        for r in asv_rows
    ]
    rows += [
        ("pytest-benchmark", r.get("name"), "", "ok", r.get("value"), r.get("unit"))
        if r.get("value") is not None
        else (
            "pytest-benchmark",
            r.get("name"),
            "",
            "ok",
            _sec(r.get("median_s")),
            f"median of {r.get('rounds')}",
        )
        for r in bench_rows
    ]
    lines += (
        _table(("suite", "benchmark", "model", "status", "value", "unit"), rows)
        if rows
        else ["No benchmark ran (see Failures)."]
    )

    lines += ["", "## For the README", ""]
    lines += readme_table(report)
    failed = [s for s in report.get("steps", []) if s["status"] != "ok"]
    lines += ["", "## Failures", ""]
    if not failed:
        lines.append("None: every step ran.")
    for s in failed:
        lines += [f"### {s['key']}: {s['status']}", "", f"{s.get('error') or ''}", "", "```text"]
        tail = (s.get("stderr_tail") or s.get("stdout_tail") or "").splitlines()[-25:]
        lines += [*tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _verdict_of(step: dict[str, Any] | None, check: str, name: str) -> str:
    for r in ((step or {}).get("data") or {}).get("results") or []:
        if r["check"] == check and r["name"] == name:
            return f"{r['status']}: {r['measured']}"
    return "n/a"


def readme_table(report: dict[str, Any]) -> list[str]:
    """The measured table (card, figures, verdicts) to paste into the README."""
    steps = _steps_by_key(report)
    versions = (steps.get("versions") or {}).get("data") or {}
    card = (versions.get("devices") or [{}])[0].get("name", report.get("gpu", "?"))
    ref = reference_figures(steps)
    burst = (steps.get("burst") or {}).get("data") or {}
    default, legacy = steps.get("check_all"), steps.get("check_all_legacy")
    rows = [
        (
            "card / driver / torch",
            f"{card} / {versions.get('driver')} / {versions.get('torch')} (CUDA {versions.get('torch_cuda')})",
        ),
        ("check-all jade_compact", _counts(default)),
        (f"check-all {LEGACY_MODEL}", _counts(legacy)),
        ("sanity epoch_time (jade_compact)", _verdict_of(default, "sanity", "epoch_time")),
        ("gpu placement", _verdict_of(default, "gpu", "placement")),
        ("gpu memory", _verdict_of(default, "gpu", "memory")),
        ("gpu utilization", _verdict_of(default, "gpu", "utilization")),
        (
            "reference train, 60 epochs max",
            f"{_cell(ref.get('epochs_run'))} epochs, {_sec(ref.get('epoch_s'))}/epoch vs bound {_sec(ref.get('bound_epoch_s'))}"
            + (f" ({ref['ratio']:.1f}x)" if "ratio" in ref else ""),
        ),
        ("floor for 60 epochs", _sec(ref.get("bound_60_s"))),
        ("audit of that run: epoch_time", _verdict_of(steps.get("audit"), "audit", "epoch_time")),
        ("audit of that run: memory", _verdict_of(steps.get("audit"), "audit", "memory")),
        ("CUDA context (NVML)", _mib(burst.get("context_bytes"))),
        (
            "burst torch peak / footprint+data",
            f"{_mib(burst.get('own_peak'))} / {_mib(burst.get('budget_bytes'))}",
        ),
    ]
    return _table(("measured on this card", "value"), rows)
