"""Reports built the way the tools build them (CheckResult + to_json, GateReport.to_dict), with every kind
of plot data, for the HTML tests and the README screenshots. Deterministic: fixed seeds, fixed timestamps."""

from __future__ import annotations

from typing import Any

import numpy as np

from diagnostics.result import CheckResult, Status, plot_data

CREATED = "2026-12-01T12:00:00+00:00"
META = {
    "model": "enhanced_simple_lstm",
    "data": "embedded synthetic default (174 windows)",
    "split": "random",
    "split_reason": "embedded synthetic set: windows never share bars (by construction), so stratified random",
    "n_train": 139,
    "n_test": 35,
    "device": "cuda",
    "thresholds": {"accuracy_gap": 0.1, "near_duplicate_fraction": 0.05, "epoch_slow_factor": 20.0},
    "elapsed_s": 63.2,
    "versions": {"python": "3.11", "moola": "0.1.0"},
}


def summary(metric: str, values: list[float]) -> dict[str, Any]:
    """The shape of ``diagnostics.quality.MetricSummary.to_dict()`` (fixed numbers)."""
    v = np.asarray(values)
    half = 2.776 * v.std(ddof=1) / np.sqrt(len(v))
    return {
        "metric": metric,
        "n": len(v),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)),
        "ci_low": float(v.mean() - half),
        "ci_high": float(v.mean() + half),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "values": values,
    }


def check_results() -> list[CheckResult]:
    """A run with a FAIL (last in run order, so the page must move it up), a WARN and every plot kind."""
    rng = np.random.default_rng(0)
    t = np.arange(0, 2.0, 0.05)
    curve = 0.7 * np.exp(-np.arange(60) / 25) + 0.05 * rng.random(60)
    return [
        CheckResult("config", "lr", Status.PASS, "AdamW lr 0.0001", "1e-05 <= lr <= 0.01"),
        CheckResult(
            "leakage",
            "near_duplicates",
            Status.PASS,
            "0 held-out window(s) within 0.05x",
            "0 windows",
            values={
                "fraction": 0.05,
                "distance_ratios": {"test_train": plot_data(rng.uniform(0.3, 1.8, 35))},
            },
        ),
        CheckResult(
            "leakage",
            "window_overlap",
            Status.PASS,
            "0 held-out window(s) overlapping",
            "0",
            values={"gaps": {"test_train": plot_data(rng.integers(0, 170, 35))}},
        ),
        CheckResult(
            "leakage",
            "majority_baseline",
            Status.WARN,
            "test accuracy 0.629, 95% CI [0.463, 0.768]",
            "CI above the majority-class share of the test set (0.571)",
            hint="more test windows",
            evidence=("majority class of train: 'consolidation'",),
            values={"test_acc": 0.629, "ci_low": 0.463, "ci_high": 0.768, "majority_share_test": 0.571},
        ),
        CheckResult(
            "leakage",
            "accuracy_gap",
            Status.PASS,
            "test 0.629 vs train 0.70",
            "test <= train + 0.1",
            values={"train_acc": 0.70, "test_acc": 0.629},
        ),
        CheckResult(
            "sanity",
            "loss_decrease",
            Status.PASS,
            "train loss 0.70 -> 0.22",
            "lower than at init",
            values={
                "init_loss": 0.70,
                "final_loss": 0.22,
                "test_loss": 0.35,
                "epoch_loss": plot_data(curve, ordered=True),
            },
        ),
        CheckResult(
            "sanity",
            "epoch_time",
            Status.PASS,
            "180 ms per epoch = 4.1x the lower bound 44 ms",
            ">= the bound",
            values={
                "epoch_s": 0.18,
                "bound_s": 0.044,
                "flops_part_s": 0.044,
                "latency_part_s": 0.03,
                "expected_s": 0.05,
                "plain_step_s": 0.005,
                "plain_steps": 9,
            },
        ),
        CheckResult(
            "stability",
            "accuracy",
            Status.PASS,
            "accuracy 0.860 (95% CI 0.841-0.879, 5 runs)",
            "beats the majority-class accuracy (0.571) across runs",
            values={
                "metric": "acc",
                "summary": summary("acc", [0.84, 0.86, 0.88, 0.85, 0.87]),
                "baseline": summary("majority_acc", [0.571, 0.571, 0.56, 0.58, 0.571]),
                "runs": 5,
                "curves": [
                    {
                        "train_loss": plot_data(curve * (1 + 0.1 * k), ordered=True),
                        "val_loss": plot_data(curve * (1.2 + 0.1 * k) + 0.1, ordered=True),
                        "train_acc": plot_data(1 - curve, ordered=True),
                        "val_acc": plot_data(0.9 - curve, ordered=True),
                    }
                    for k in range(3)
                ],
            },
        ),
        CheckResult(
            "gpu",
            "utilization",
            Status.PASS,
            "a kernel running 20% of the time",
            ">= 10%",
            values={
                "series": {
                    "t_s": plot_data(t, ordered=True),
                    "util": plot_data(50 + 40 * np.sin(t * 5), ordered=True),
                    "mem_used_mib": plot_data(500 + 10 * t, ordered=True),
                }
            },
        ),
        CheckResult("gpu", "device", Status.SKIP, "no usable GPU", "-"),
        CheckResult(
            "params",
            "params_per_sample",
            Status.FAIL,
            "565,636 params / 174 samples = 3,251:1",
            "<= 1,000:1 (WARN above), <= 3,000:1 (FAIL above)",
            hint="use --model jade_compact (56,324 params, 324:1)",
            evidence=("N = 174 labeled windows", "  encoder.l0   266,240"),
            values={
                "layers": {
                    "encoder.l0": 266240,
                    "encoder.l0_reverse": 266240,
                    "classifier.0": 16448,
                    "classifier.3": 130,
                    "pointer_head.0": 16448,
                    "pointer_head.3": 130,
                },
                "n_samples": 174,
                "params": 565636,
                "ratio": 3250.8,
                "warn_ratio": 1000.0,
                "fail_ratio": 3000.0,
                "model": "enhanced_simple_lstm",
            },
        ),
    ]


def check_payload() -> dict[str, Any]:
    from diagnostics.render import to_json

    return to_json(check_results(), META, created=CREATED)


def gate_report() -> Any:
    """A gate run with one timing regression, an improvement, an accepted counter and unchanged ones."""
    from diagnostics.gate.report import GateReport, RevisionInfo
    from diagnostics.gate.stats import CounterComparison, QualityComparison, TimingComparison

    # Fixed statistics (not recomputed), so the page's golden outline does not move with the gate's maths.
    rng = np.random.default_rng(1)
    samples, timings = {}, []
    for name, slow, base_s, ci, p, verdict in (
        ("TrainEpoch.time_epoch(jade_compact)", 1.25, 0.092, (1.229, 1.260), 3.1e-05, "regression"),
        ("Forward.time_forward_batch(jade_compact)", 1.0, 0.00237, (0.982, 1.013), 0.61, "unchanged"),
        ("LoadWindows.time_load_windows_20k", 0.85, 0.10, (0.838, 0.861), 1.0, "improvement"),
    ):
        base = base_s * (1 + 0.02 * rng.standard_normal(15))
        head = base_s * slow * (1 + 0.02 * rng.standard_normal(15))
        samples[name] = {"base": base.tolist(), "head": head.tolist()}
        timings.append(
            TimingComparison(
                name,
                15,
                15,
                float(np.median(base)),
                float(np.median(head)),
                slow,
                *ci,
                p_slower=p,
                p_faster=1 - p,
                factor=1.10,
                alpha=0.05,
                verdict=verdict,
            )
        )
    counters = [
        CounterComparison("Counters.track_params(jade_compact)", 56324, 56324, "unchanged", unit="params"),
        CounterComparison(
            "Counters.track_bytes(jade_compact)",
            2.318e8,
            2.401e8,
            "accepted",
            tolerance=0.01,
            unit="bytes",
            accepted_reason="bigger attention",
        ),
    ]

    def side(values: list[float]) -> dict[str, Any]:
        v = np.asarray(values)
        half = 2.776 * v.std(ddof=1) / np.sqrt(len(v))
        return {
            "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)),
            "ci": [v.mean() - half, v.mean() + half],
            "n": len(v),
            "values": values,
        }

    quality = [
        QualityComparison(
            "Quality.track_val_acc(jade_compact)",
            "accuracy",
            True,
            0.02,
            side([0.86, 0.88, 0.85, 0.87, 0.86]),
            side([0.79, 0.81, 0.80, 0.78, 0.82]),
            drop=0.064,
            drop_ci=(0.045, 0.083),
            p_worse=0.0004,
            p_better=0.9996,
            verdict="regression",
            p_adjusted=0.0008,
        ),
    ]
    return GateReport(
        base=RevisionInfo("base", "main", "0123456789abcdef", "docs"),
        head=RevisionInfo("head", "WORKTREE", "WORKTREE"),
        settings={"alpha": 0.05, "processes": 2, "rounds": 15},
        timings=timings,
        counters=counters,
        samples=samples,
        quality=quality,
        wall_s=259.0,
    )


def gate_payload() -> dict[str, Any]:
    """``gate_report()``'s JSON, as the gate writes it."""
    payload = gate_report().to_dict()
    return payload


def outline(page: str) -> str:
    """The page's structure, one element per line, indented: tag, id, classes, data-plot, and the text of
    headings, summaries and table headers. An inline SVG is one line with its size (its drawing is
    matplotlib's, checked in the browser test), so the outline is stable across matplotlib versions."""
    from html.parser import HTMLParser

    lines: list[str] = []

    class Outline(HTMLParser):
        depth, in_svg, text_of = 0, 0, None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if self.in_svg:
                self.in_svg += 1
                return
            desc = tag + "".join(f"#{a['id']}" for _ in [0] if a.get("id"))
            desc += "".join(f".{c}" for c in (a.get("class") or "").split())
            if a.get("data-plot"):
                desc += f"[plot={a['data-plot']}]"
            if tag == "svg":
                self.in_svg = 1
                desc += f" {a.get('width')}x{a.get('height')}"
            lines.append("  " * self.depth + desc)
            if tag not in ("meta", "br", "svg"):
                self.depth += 1
            self.text_of = tag if tag in ("h1", "h2", "h3", "summary", "th", "title", "figcaption") else None

        def handle_endtag(self, tag: str) -> None:
            if self.in_svg:
                self.in_svg -= 1
                return
            if tag not in ("meta", "br"):
                self.depth -= 1
            self.text_of = None

        def handle_data(self, data: str) -> None:
            if self.text_of and data.strip() and not self.in_svg:
                lines.append("  " * self.depth + f'"{" ".join(data.split())}"')

    Outline().feed(page)
    return "\n".join(lines) + "\n"
