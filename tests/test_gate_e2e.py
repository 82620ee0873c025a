"""End-to-end gate runs on a throwaway git repo (a snapshot of this working tree plus a modified head).

Kept small (48 windows, 3 rounds of 1 epoch) so all of them fit the test budget; the power and
false-alarm measurements with full-size rounds live in ``python -m diagnostics.gate.sensitivity``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.gate import run
from diagnostics.gate.sensitivity import commit_variant, patch_double_hidden, snapshot_repo

REPO = Path(__file__).resolve().parents[1]
SMALL = {"rounds": 3, "epochs_per_round": 1, "n_windows": 48, "burn_in": 0}


@pytest.fixture(scope="module")
def trial_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("gate") / "repo"
    return repo, snapshot_repo(REPO, repo)


def _crash_patch(repo: Path) -> None:
    path = repo / "moola" / "train" / "trainer.py"
    path.write_text(
        path.read_text() + "\n\ndef fit_tensors(*args, **kwargs):\n    raise RuntimeError('boom')\n"
    )


def test_gate_flags_a_doubled_hidden_size(trial_repo: tuple[Path, str], tmp_path: Path) -> None:
    repo, base = trial_repo
    head = commit_variant(repo, base, "hidden", patch_double_hidden(), "jade_compact hidden x2")
    md = tmp_path / "gate.md"
    report = run(base, head, repo=repo, markdown=md, **SMALL)
    assert report.exit_code == 1, report.all_errors()
    named = " ".join(report.regressions)
    for counter in (
        "parameters[jade_compact]",
        "flops_per_epoch[jade_compact]",
        "alloc_bytes_per_epoch[jade_compact]",
    ):
        assert counter in named
    assert report.meta["head"]["moola_path"] != report.meta["base"]["moola_path"]
    assert "performance regression" in md.read_text() and "parameters[jade_compact]" in md.read_text()


def test_gate_passes_identical_revisions(trial_repo: tuple[Path, str]) -> None:
    repo, base = trial_repo
    report = run(base, base, repo=repo, **SMALL)
    assert report.exit_code == 0, report.all_errors() + report.regressions
    assert all(c.verdict == "unchanged" for c in report.counters) and len(report.counters) == 3
    assert len(report.samples["base"]) == len(report.samples["head"]) == SMALL["rounds"]


def test_gate_fails_closed_when_the_benchmark_crashes(trial_repo: tuple[Path, str]) -> None:
    repo, base = trial_repo
    head = commit_variant(repo, base, "crash", _crash_patch, "training crashes")
    report = run(base, head, repo=repo, **SMALL)
    assert report.exit_code == 2
    assert any("head worker failed" in e and "boom" in e for e in report.errors)


def test_an_interrupted_gate_stops_its_workers_and_keeps_the_previous_report(
    trial_repo: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diagnostics.gate import core

    repo, base = trial_repo
    md = tmp_path / "gate.md"
    md.write_text("previous gate report\n")
    started = []
    start_worker = core._start_worker
    monkeypatch.setattr(
        core, "_start_worker", lambda *a, **k: started.append(start_worker(*a, **k)) or started[-1]
    )

    def interrupt_mid_run(message: str) -> None:
        if message.startswith("round 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(base, base, repo=repo, markdown=md, progress=interrupt_mid_run, **SMALL)
    assert len(started) == 2 and all(w.proc.poll() is not None for w in started)  # none left running
    assert md.read_text() == "previous gate report\n"
    assert list(tmp_path.iterdir()) == [md]  # no half-written report beside it
