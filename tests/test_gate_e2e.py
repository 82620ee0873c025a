"""End-to-end gate runs on a throwaway git repo (a snapshot of this working tree plus a modified head).

Each test is one realistic pull request, gated over the benchmarks it should move (``--bench``), at
the smallest sizes that still discriminate: 48 training windows, a 2,000-window loading file. Counter
regressions are exact, so they need no rounds at all. The timed ones are sized so that a wrong verdict
is rarer than 1 in 1,000 runs on this 2-core machine shared by several busy neighbours (load 5-12),
where one round's log(head/base) scatters by up to +-1 (a neighbour landing on the pinned CPU during
one side of a pair): resampling 24-round runs measured under that load (docs/benchmarks.md, "e2e
tests") gave 0 misses in 20,000 for the extra forward at 20 rounds (it missed ~50% at 8 rounds with
the old per-batch forward) and 0 in 4,000 for the slower forward at 32. The tests that must PASS
(a harmless change) run at ``QUIET_ALPHA``: under heavy noise the ratio > factor criterion barely
helps, so the family-wise false-alarm rate is close to alpha itself (3.7% at alpha 0.05, measured).
Power and false alarms at full size: ``python -m diagnostics.gate.sensitivity`` (docs/benchmarks.md).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from diagnostics.gate import run
from diagnostics.gate.report import GateReport
from diagnostics.gate.sensitivity import commit_variant, patch_double_hidden, patch_slow_call, snapshot_repo
from moola.errors import MoolaError

REPO = Path(__file__).resolve().parents[1]
SMALL_ENV = {"*": {"MOOLA_BENCH_WINDOWS": "48", "MOOLA_BENCH_LOAD_WINDOWS": "2000"}}
SMALL = {"rounds": 8, "burn_in": 1, "worker_env": SMALL_ENV, "min_sample_s": 0.02}
QUIET_ALPHA = 0.0005  # harmless changes: a false alarm <= 1 in 2,000 runs whatever the noise (Holm)
EPOCH = r"TrainEpoch\.time_epoch\(jade_compact\)"
MEMORY = r"Counters\.track_(alloc_bytes_per|peak_live_bytes)_epoch\(jade_compact\)"


@pytest.fixture(scope="module")
def trial_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("gate") / "repo"
    return repo, snapshot_repo(REPO, repo)


def _edit(relpath: str, pattern: str, replace: Callable[[re.Match[str]], str]) -> Callable[[Path], None]:
    """A patch that rewrites the one line matching ``pattern`` (fails loudly if the code changed shape)."""

    def patch(repo: Path) -> None:
        path = repo / relpath
        text = path.read_text()
        rx = re.compile(pattern, re.M)
        assert len(rx.findall(text)) == 1, f"{relpath}: {pattern!r} changed shape"
        path.write_text(rx.sub(replace, text))

    return patch


def _variant(trial_repo: tuple[Path, str], name: str, patch: Callable[[Path], None]) -> str:
    repo, base = trial_repo
    return commit_variant(repo, base, name, patch, name)


def _numbers(report: GateReport) -> str:
    """What decided the verdict, for an assertion message: every timing's ratio, 95% CI, p and rounds,
    every counter's values, and whatever kept the gate from measuring."""
    lines = [f"exit {report.exit_code}"]
    for t in report.timings:
        lines.append(
            f"{t.name}: {t.verdict}, x{t.ratio:.3f} (95% CI {t.ci_low:.3f}-{t.ci_high:.3f}), p_slower "
            f"{t.p_slower:.2g} (raw {t.p_slower_raw or t.p_slower:.2g}, Holm over {t.m_tests}), p_faster "
            f"{t.p_faster:.2g}, "
            f"{t.n_base} rounds, factor {t.factor}"
        )
    lines += [
        f"{c.name}: {c.verdict}, {c.base} -> {c.head} (tolerance {c.tolerance})" for c in report.counters
    ]
    return "\n".join(lines + report.all_errors())


# Every benchmark family, without the slowest calls (8-epoch accuracy, the per-row baseline, peak RSS).
DOCSTRING_SUITE = (
    r"(TrainEpoch\.time_epoch|Forward\.time_forward_batch|Counters\.track_(parameters|flops|alloc|peak)\w*)"
    r"\(jade_compact\)|LoadWindows\.(time_load_windows_20k|track_load)"
)
LOSS_LINE = r"^(?P<i>[ \t]+)loss, logits, _ = _loss\(.*\n"
STEP_LOOP = r"^(?P<i>[ \t]+)for step, start in enumerate\(range\(0, n, batch_size\), 1\):\n"
TRAINER = "moola/train/trainer.py"


def test_extra_no_grad_forward_per_batch_is_a_timing_regression(trial_repo: tuple[Path, str]) -> None:
    head = _variant(
        trial_repo,
        "extra-forward",
        # Running training accuracy over every training window, after each step (for a progress log):
        # x1.5-1.7 per epoch. The old test's forward of the batch alone (x1.2-1.3) sat too close to the
        # 1.10 factor for the noise here (HL 1.18, p 0.039 in 24 rounds in one of six runs).
        _edit(
            TRAINER, LOSS_LINE, lambda m: f"{m[0]}{m['i']}with torch.no_grad():\n{m['i']}    model(train.X)\n"
        ),
    )
    report = run(trial_repo[1], head, bench=EPOCH, repo=trial_repo[0], **{**SMALL, "rounds": 20})
    assert report.exit_code == 1, _numbers(report)
    (timing,) = report.timings
    assert timing.verdict == "regression" and timing.ratio > 1.1, _numbers(report)
    assert "time_epoch(jade_compact)" in report.regressions[0], _numbers(report)


def test_a_docstring_edit_passes_the_suite(trial_repo: tuple[Path, str], tmp_path: Path) -> None:
    repo = trial_repo[0]
    head = _variant(
        trial_repo,
        "docstring",
        _edit(
            TRAINER, r"^(?P<i>[ \t]+)\"\"\"The ``--fit MODULE:FUNC`` plug-in protocol", lambda m: m[0] + ","
        ),
    )
    md = tmp_path / "gate.md"
    report = run(
        trial_repo[1],
        head,
        bench=DOCSTRING_SUITE,
        repo=repo,
        markdown=md,
        **{**SMALL, "rounds": 16, "alpha": QUIET_ALPHA},
    )
    assert report.exit_code == 0, _numbers(report)
    assert report.counters and all(c.verdict == "unchanged" for c in report.counters), _numbers(report)
    assert {t.name.split(".")[1] for t in report.timings} == {"TrainEpoch", "Forward", "LoadWindows"}, (
        _numbers(report)
    )
    assert all(t.m_tests == len(report.timings) for t in report.timings), _numbers(report)  # Holm, all
    assert md.read_text().startswith("## ✅ moola benchmark gate: no performance regression")


def test_per_row_load_windows_is_a_loading_regression(trial_repo: tuple[Path, str]) -> None:
    def per_row(repo: Path) -> None:
        path = repo / "moola" / "data" / "loader.py"
        path.write_text(
            path.read_text() + "\n\nload_windows = load_windows_naive  # back to one window at a time\n"
        )

    head = _variant(trial_repo, "per-row-loader", per_row)
    report = run(
        trial_repo[1],
        head,
        bench=r"LoadWindows\.(time_load_windows_20k|track_load_peak)",
        repo=trial_repo[0],
        **SMALL,
    )
    assert report.exit_code == 1, _numbers(report)
    named = " ".join(report.regressions)
    assert "time_load_windows_20k" in named and report.timings[0].ratio > 3, _numbers(report)
    assert "track_load_peak_traced_bytes" in named, _numbers(report)  # per-row objects show in memory


def test_keeping_every_loss_graph_alive_is_a_peak_memory_regression(trial_repo: tuple[Path, str]) -> None:
    def keep_losses(repo: Path) -> None:
        # retain_graph=True (say, to debug "backward through the graph a second time") plus a list of the
        # losses for epoch-end logging: every batch's saved activations stay alive until the epoch ends.
        _edit(TRAINER, STEP_LOOP, lambda m: f"{m['i']}_kept = []\n{m[0]}")(repo)
        _edit(
            TRAINER,
            r"^(?P<i>[ \t]+)loss\.backward\(\)\n",
            lambda m: f"{m['i']}loss.backward(retain_graph=True)\n{m['i']}_kept.append(loss)\n",
        )(repo)

    head = _variant(trial_repo, "keep-losses", keep_losses)
    report = run(trial_repo[1], head, bench=MEMORY, repo=trial_repo[0], **SMALL)
    assert report.exit_code == 1, _numbers(report)
    by_kind = {c.name.split(".")[-1].split("(")[0]: c for c in report.counters}
    assert by_kind["track_peak_live_bytes_epoch"].verdict == "regression", _numbers(report)
    assert by_kind["track_peak_live_bytes_epoch"].change > 0.5, _numbers(report)
    assert by_kind["track_alloc_bytes_per_epoch"].verdict == "unchanged", _numbers(report)  # same ops
    assert by_kind["track_alloc_bytes_per_epoch"].head == by_kind["track_alloc_bytes_per_epoch"].base, (
        _numbers(report)
    )
    assert not report.timings, _numbers(report)  # counters only: no timed rounds were needed


def test_one_extra_small_tensor_per_epoch_is_within_tolerance(trial_repo: tuple[Path, str]) -> None:
    head = _variant(
        trial_repo,
        "tiny-tensor",
        _edit(TRAINER, STEP_LOOP, lambda m: f"{m['i']}_marker = torch.zeros(4)\n{m[0]}"),
    )
    report = run(trial_repo[1], head, bench=MEMORY, repo=trial_repo[0], **SMALL)
    assert report.exit_code == 0, _numbers(report)
    alloc = next(c for c in report.counters if "alloc" in c.name)
    assert alloc.head - alloc.base == 16 and alloc.verdict == "unchanged" and alloc.tolerance == 0.01, (
        _numbers(report)
    )


def test_slower_inference_path_is_a_forward_regression(trial_repo: tuple[Path, str]) -> None:
    head = _variant(
        trial_repo, "slow-forward", patch_slow_call("moola/models/lstm.py", "LSTMClassifier.forward", 0.5)
    )
    report = run(
        trial_repo[1],
        head,
        bench=r"Forward\.time_forward_batch\(jade_compact\)",
        repo=trial_repo[0],
        **{**SMALL, "rounds": 32},  # 20 ms samples: cheap rounds; 8 missed ~10% under load
    )
    assert report.exit_code == 1, _numbers(report)
    assert report.timings[0].verdict == "regression" and report.timings[0].ratio > 1.2, _numbers(report)


def test_intended_counter_change_is_accepted_from_the_heads_file(trial_repo: tuple[Path, str]) -> None:
    name = "bench_training.Counters.track_parameters(jade_compact)"

    def wider_and_accepted(repo: Path) -> None:
        patch_double_hidden()(repo)
        (repo / "benchmarks" / "accepted.json").write_text(
            f'{{"accepted": [{{"benchmark": "{name}", "value": 177796, "reason": "twice the hidden size"}}]}}\n'
        )
        subprocess.run(["git", "-C", str(repo), "add", "benchmarks/accepted.json"], check=True)

    head = _variant(trial_repo, "wider", wider_and_accepted)
    report = run(
        trial_repo[1],
        head,
        bench=r"Counters\.track_(parameters|flops).*\(jade_compact\)",
        repo=trial_repo[0],
        **SMALL,
    )
    verdicts = {c.name: c.verdict for c in report.counters}
    assert verdicts[name] == "accepted", _numbers(report)
    assert report.exit_code == 1, _numbers(report)  # the FLOPs were not accepted
    assert "twice the hidden size" in report.to_markdown(), _numbers(report)
    assert report.regressions == [r for r in report.regressions if "flops" in r], _numbers(report)


def test_crashing_benchmark_is_named_with_its_revision(trial_repo: tuple[Path, str]) -> None:
    def crash(repo: Path) -> None:
        path = repo / TRAINER
        path.write_text(
            path.read_text() + "\n\ndef fit_tensors(*args, **kwargs):\n    raise RuntimeError('boom')\n"
        )

    head = _variant(trial_repo, "crash", crash)
    report = run(trial_repo[1], head, bench=EPOCH, repo=trial_repo[0], **SMALL)
    assert report.exit_code == 2, _numbers(report)
    (err,) = report.errors
    assert (
        "TrainEpoch.time_epoch(jade_compact) crashed on head" in err and head[:10] in err and "boom" in err
    ), _numbers(report)
    assert "\n" not in err, _numbers(report)


def test_bench_selecting_nothing_is_a_one_line_error(trial_repo: tuple[Path, str]) -> None:
    repo, base = trial_repo
    with pytest.raises(MoolaError, match="selects no benchmark"):
        run(base, base, bench="no-such-benchmark", repo=repo, **SMALL)


# Two probes must find the twice-slower forward, one must pass the harmless commit before it.
BISECT = {**SMALL, "rounds": 24, "alpha": QUIET_ALPHA}


def test_bisect_names_the_first_regressing_commit(
    trial_repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diagnostics.gate import find

    reports: list[GateReport] = []  # every probe's numbers, for the assertion messages
    monkeypatch.setattr(find, "gate_run", lambda *a, **k: reports.append(run(*a, **k)) or reports[-1])

    def probes() -> str:
        return "\n".join(f"probe {r.head.subject!r}: {_numbers(r)}" for r in reports)

    repo, base = trial_repo
    touch = _edit(TRAINER, r"^(?P<i>[ \t]+)\"\"\"The one training loop", lambda m: m[0] + " ")
    c1 = commit_variant(repo, base, "b1", touch, "harmless 1")
    c2 = commit_variant(
        repo, c1, "b2", patch_slow_call("moola/models/lstm.py", "LSTMClassifier.forward", 1.0), "slow"
    )
    c3 = commit_variant(
        repo,
        c2,
        "b3",
        _edit(TRAINER, r"^(?P<i>[ \t]+)\"\"\"The one training loop", lambda m: m[0] + "x"),
        "harmless 2",
    )
    result = find.run(base, c3, repo=repo, bench=r"Forward\.time_forward_batch\(jade_compact\)", **BISECT)
    assert result.first_bad == c2 and result.exit_code == 1, probes()
    assert result.report is not None and result.report.timings[0].verdict == "regression", probes()
    assert len(result.probes) <= 3, probes()


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
        run(base, base, bench=EPOCH, repo=repo, markdown=md, progress=interrupt_mid_run, **SMALL)
    assert len(started) == 2 and all(w.proc.poll() is not None for w in started)  # none left running

    def interrupt_in_second_pair(message: str) -> None:
        if "worker pair 2" in message and message.startswith("round"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(base, base, bench=EPOCH, repo=repo, markdown=md, progress=interrupt_in_second_pair, **SMALL)
    assert len(started) == 2 + 4 and all(w.proc.poll() is not None for w in started)
    assert md.read_text() == "previous gate report\n"
    assert list(tmp_path.iterdir()) == [md]  # no half-written report beside it
