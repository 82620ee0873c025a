"""The quality gate's statistics and plumbing: two independent samples, Holm, a practical threshold."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks._common import Distribution
from diagnostics.gate.report import GateReport, RevisionInfo
from diagnostics.gate.stats import compare_quality, holm_quality


def sample(mean: float, sd: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


def test_a_five_point_drop_over_24_runs_is_a_regression():
    base, head = sample(0.85, 0.04, 24, 1), sample(0.80, 0.04, 24, 2)
    q = compare_quality("acc", base, head, threshold=0.02, alpha=0.02)
    assert q.verdict == "regression" and q.p_worse < 0.001
    assert q.drop == pytest.approx(np.median(np.subtract.outer(base, head)))  # Hodges-Lehmann
    assert q.mean_drop == pytest.approx(np.mean(base) - np.mean(head))
    assert q.drop_ci[0] < q.drop < q.drop_ci[1]


def test_runs_that_collapsed_in_the_base_sample_do_not_hide_a_drop_of_the_bulk():
    """About 4% of the default recipe's runs stop early near the majority share. Two of them in the base's 24
    pull its mean down and its sd up; a five-point drop of every other run must still be a regression."""
    base = [*sample(0.83, 0.03, 22, 21), 0.57, 0.60]
    head = sample(0.78, 0.03, 24, 22)
    q = compare_quality("acc", base, head, threshold=0.02, alpha=0.02)
    assert q.verdict == "regression" and q.p_worse < 0.001
    assert 0.035 < q.drop < 0.065 and q.mean_drop < q.drop  # the mean difference is what the tail shrank


def test_a_significant_drop_inside_the_threshold_is_not_a_regression():
    base, head = sample(0.850, 0.002, 30, 3), sample(0.845, 0.002, 30, 4)  # significant, 0.5 points
    q = compare_quality("acc", base, head, threshold=0.02, alpha=0.02)
    assert q.p_worse < 1e-6 and q.verdict == "unchanged"


def test_lower_is_better_metrics_regress_upward():
    q = compare_quality("loss", sample(0.35, 0.02, 20, 5), sample(0.45, 0.02, 20, 6), higher_is_better=False)
    assert q.verdict == "regression" and q.drop > 0
    better = compare_quality(
        "loss", sample(0.45, 0.02, 20, 7), sample(0.35, 0.02, 20, 8), higher_is_better=False
    )
    assert better.verdict == "improvement"


def test_identical_samples_and_too_few_runs():
    same = [0.8, 0.82, 0.79]
    assert compare_quality("acc", same, same).verdict == "unchanged"
    assert compare_quality("acc", [0.8], [0.7, 0.71]).verdict == "missing"


def test_holm_raises_the_bar_for_a_family():
    # p = 0.012 alone is a regression at alpha 0.02; as the best of three tests it is not (3 x 0.012).
    drop = compare_quality("a", sample(0.85, 0.04, 24, 11), sample(0.80, 0.04, 24, 12), threshold=0.0)
    one = replace(drop, p_worse=0.012)
    others = [compare_quality(n, sample(0.85, 0.04, 24, 13), sample(0.85, 0.04, 24, 14)) for n in "bc"]
    alone = holm_quality([one], 0.02)[0]
    family = holm_quality([one, *others], 0.02)[0]
    assert alone.verdict == "regression"
    assert family.p_adjusted == pytest.approx(min(1.0, 3 * 0.012)) and family.verdict == "unchanged"


def test_a_quality_regression_fails_the_report_and_shows_both_distributions():
    q = compare_quality(
        "bench_quality.Quality.track_holdout_accuracy(jade_compact)",
        sample(0.85, 0.04, 24, 1),
        sample(0.78, 0.04, 24, 2),
        threshold=0.02,
        alpha=0.02,
    )
    (q,) = holm_quality([q], 0.02)
    report = GateReport(
        RevisionInfo("base", "main", "a" * 40),
        RevisionInfo("head", "pr", "b" * 40),
        {"quality_alpha": 0.02},
        quality=[q],
    )
    assert report.exit_code == 1
    md = report.to_markdown()
    assert md.startswith("## ❌") and "### Regressions" in md and "(jade_compact)" in report.regressions[0]
    row = next(line for line in md.splitlines() if line.startswith("| bench_quality"))
    assert "24)" in row and "regression" in row
    payload = report.to_dict()
    assert payload["quality"][0]["base"]["n"] == 24 and len(payload["quality"][0]["head"]["values"]) == 24


def test_a_distribution_is_its_mean_for_asv_and_its_runs_for_the_gate():
    d = Distribution([0.8, 0.9])
    assert float(d) == pytest.approx(0.85) and d.samples == (0.8, 0.9)
    assert isinstance(d, float)
    with pytest.raises(ValueError):
        Distribution([])


FAKE_BENCH = """
class Sample(float):
    def __new__(cls, values):
        obj = super().__new__(cls, sum(values) / len(values))
        obj.samples = tuple(values)
        return obj


class Quality:
    params = [["small", "big"]]
    gate_threshold = 0.02

    def track_accuracy(self, model):
        return Sample([0.8, 0.9, 0.85])

    track_accuracy.gate_higher_is_better = True
    track_accuracy.gate_default = {"small": True}
"""


def test_the_worker_ships_every_run_and_the_gate_attributes(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parents[1] / "diagnostics" / "gate" / "worker.py"
    (tmp_path / "moola").mkdir()
    (tmp_path / "moola" / "__init__.py").write_text("")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "bench_q.py").write_text(FAKE_BENCH)
    proc = subprocess.run(
        [sys.executable, str(worker), "--root", str(tmp_path)],
        input=json.dumps({"cmd": "prepare", "names": ["bench_q.Quality.track_accuracy(small)"]}) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
        check=True,
    )
    listing, ready = (json.loads(line) for line in proc.stdout.splitlines())
    specs = {b["name"]: b for b in listing["benchmarks"]}
    assert specs["bench_q.Quality.track_accuracy(small)"]["default"] is True
    assert specs["bench_q.Quality.track_accuracy(big)"]["default"] is False  # only with --bench
    assert specs["bench_q.Quality.track_accuracy(small)"]["threshold"] == 0.02
    assert ready["distributions"] == {"bench_q.Quality.track_accuracy(small)": [0.8, 0.9, 0.85]}
    assert ready["counters"]["bench_q.Quality.track_accuracy(small)"] == pytest.approx(0.85)
