"""The quality gate end to end on a throwaway repository: pull requests that cost accuracy but no time
exit 1, with effects of different sizes; pull requests that only change how random numbers are drawn
exit 0. Small settings that still discriminate: 6 runs a side of a 10-epoch recipe at lr 3e-3 (the full
recipe and its power: ``python -m diagnostics.gate.sensitivity --family quality``, README).
Each side trains its own seeds 0..5: a reseed draws other numbers, the test is unpaired, so it is the
statistics, not identical numbers, that keep these at exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diagnostics.gate import run
from diagnostics.gate.sensitivity import (
    commit_variant,
    patch_label_flip,
    patch_reseed,
    snapshot_repo,
)

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"n_epochs": 10, "lr": 3e-3}
ENV = {"*": {"MOOLA_BENCH_QUALITY_RUNS": "6", "MOOLA_BENCH_QUALITY_RECIPE": json.dumps(RECIPE)}}
QUALITY = r"Quality\..*\(jade_compact\)"


@pytest.fixture(scope="module")
def trial_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("gate-quality") / "repo"
    return repo, snapshot_repo(REPO, repo)


def gate(trial_repo: tuple[Path, str], name: str, patch) -> object:
    repo, base = trial_repo
    head = commit_variant(repo, base, name, patch, name)
    return run(base, head, bench=QUALITY, repo=repo, worker_env=ENV, pin_cpu=False)


def explain(report) -> str:
    return (
        "; ".join(
            f"{q.name}: base {q.base['mean']:.4f} head {q.head['mean']:.4f} drop {q.drop:+.4f} "
            f"CI {q.drop_ci[0]:+.4f}..{q.drop_ci[1]:+.4f} p {q.p_adjusted}"
            for q in report.quality
        )
        + " | errors: "
        + "; ".join(report.all_errors())
    )


def drop_input_standardization(repo: Path) -> None:
    """A refactor that loses the trainer's input standardization: the scale-free features (~1e-2)
    then barely move the LSTM (README: jade_compact stays near the majority share)."""
    path = repo / "moola" / "train" / "trainer.py"
    text = path.read_text()
    old = '    if hasattr(model, "set_input_stats"):\n        model.set_input_stats(train.X)\n'
    assert old in text
    path.write_text(text.replace(old, ""))


@pytest.mark.parametrize(
    ("name", "patch"),
    [
        ("no-input-standardization", drop_input_standardization),  # a large drop
        ("mislabelled-quarter", patch_label_flip(0.25)),  # a moderate drop
    ],
)
def test_a_pull_request_that_costs_accuracy_is_a_quality_regression(trial_repo, name, patch):
    report = gate(trial_repo, name, patch)
    assert report.exit_code == 1, explain(report)
    acc = next(q for q in report.quality if "accuracy" in q.name)
    assert acc.verdict == "regression" and acc.drop > acc.threshold, explain(report)
    assert not report.timings  # no time was gated: the verdict is the distributions'
    assert any("track_holdout_accuracy(jade_compact)" in r for r in report.regressions)


@pytest.mark.parametrize("kind", ["init-seed", "fold-permutation"])
def test_a_pull_request_that_only_reseeds_passes(trial_repo, kind, tmp_path):
    md = tmp_path / "gate.md"
    repo, base = trial_repo
    head = commit_variant(repo, base, f"reseed-{kind}", patch_reseed(kind), kind)
    report = run(base, head, bench=QUALITY, repo=repo, worker_env=ENV, pin_cpu=False, markdown=md)
    assert report.exit_code == 0, explain(report)
    assert len(report.quality) == 2 and all(q.verdict == "unchanged" for q in report.quality)
    # The distributions differ run by run (a reseed) yet the gate says so and passes.
    acc = next(q for q in report.quality if "accuracy" in q.name)
    assert acc.base["values"] != acc.head["values"], explain(report)
    assert "### Quality (unchanged)" in md.read_text()
