"""The live side of `moola train`: the rules after every epoch, the GPU statistics (through a fake
torch.cuda), the progress lines, and the floor they judge against."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console

from moola.models import get_model
from moola.progress import EpochDisplay, epoch_status
from moola.train import record
from moola.train.live import LiveRules


def _row(epoch: int, loss: float, val: float | None = None, t: float = 0.1, **extra) -> dict:
    return {"epoch": epoch, "train_loss_running": loss, "val_loss": val, "train_time_s": t, **extra}


def _feed(rules: LiveRules, rows: list[dict], model=None) -> None:
    state = SimpleNamespace(history=[], model=model)
    rules.on_train_start(state)
    for row in rows:
        state.history.append(row)
        rules.on_epoch_end(state)


def _rules(tmp_path, device="cpu", floor=0.01, patience=0):
    seen = []
    rules = LiveRules(notify=seen.append)
    rules.configure(tmp_path, device, floor, patience)
    return rules, seen


def test_a_healthy_curve_fires_nothing(tmp_path):
    rules, seen = _rules(tmp_path)
    _feed(rules, [_row(e, 0.7 - 0.05 * e, 0.7 - 0.04 * e) for e in range(1, 9)])
    assert seen == [] and not (tmp_path / "findings.jsonl").exists()


def test_each_rule_fires_once_and_is_written_as_it_happens(tmp_path):
    rules, seen = _rules(tmp_path, floor=0.05)
    rows = [_row(1, 0.7, 0.7), _row(2, float("nan"), 0.7, t=0.01), _row(3, float("nan"), 0.7, t=0.01)]
    state = SimpleNamespace(history=[], model=None)
    for row in rows[:2]:
        state.history.append(row)
        rules.on_epoch_end(state)
    on_disk = [json.loads(line) for line in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert {f["rule"] for f in on_disk} == {"nonfinite_loss", "epoch_too_fast"}  # written at epoch 2
    state.history.append(rows[2])
    rules.on_epoch_end(state)
    assert sorted(f.rule for f in seen) == ["epoch_too_fast", "nonfinite_loss"]  # not again at epoch 3


def test_a_loss_that_has_not_moved_warns_after_five_epochs(tmp_path):
    rules, seen = _rules(tmp_path)
    _feed(rules, [_row(e, 0.6931 + 1e-4 * (e % 2)) for e in range(1, 5)])
    assert seen == []
    rules2, seen2 = _rules(tmp_path)
    _feed(rules2, [_row(e, 0.6931 + 1e-4 * (e % 2)) for e in range(1, 6)])
    assert [f.rule for f in seen2] == ["loss_not_moved"] and seen2[0].level == "WARN"


@pytest.mark.parametrize(("patience", "level"), [(5, "INFO"), (0, "WARN")])
def test_overfitting_onset_names_the_epoch(tmp_path, patience, level):
    rules, seen = _rules(tmp_path, patience=patience)
    val = [0.7, 0.6, 0.5, 0.55, 0.6, 0.65]
    _feed(rules, [_row(e, 0.7 - 0.1 * e, v) for e, v in enumerate(val, 1)])
    assert [f.rule for f in seen] == ["overfitting_onset"]
    assert seen[0].values["onset_epoch"] == 3 and seen[0].level == level


def test_gpu_rules_params_off_the_gpu_and_an_idle_gpu(tmp_path):
    rules, seen = _rules(tmp_path, device="cuda")
    model = torch.nn.Linear(2, 2)  # CPU parameters while training "on cuda"
    rows = [_row(e, 0.7 - 0.05 * e, gpu_util_pct=u) for e, u in enumerate([90, 4, 3, 5], 1)]
    _feed(rules, rows, model=model)
    assert [f.rule for f in seen] == ["params_not_on_gpu", "gpu_idle"]
    on_gpu = SimpleNamespace(parameters=lambda: [SimpleNamespace(device=torch.device("cuda", 0))])
    busy, seen_busy = _rules(tmp_path / "b", device="cuda")
    rows = [_row(e, 0.7 - 0.05 * e, gpu_util_pct=u) for e, u in enumerate([90, 4, 60, 5], 1)]
    _feed(busy, rows, model=on_gpu)
    assert seen_busy == []


class FakeCuda:
    def __init__(self, peaks, utils):
        self.peaks, self.utils, self.resets = list(peaks), list(utils), 0

    def reset_peak_memory_stats(self, device):
        self.resets += 1

    def max_memory_allocated(self, device):
        return self.peaks.pop(0)

    def utilization(self, device):
        value = self.utils.pop(0)
        if isinstance(value, Exception):
            raise value
        return value


def test_gpu_epoch_stats_read_once_per_epoch_and_record_why_utilization_is_missing():
    fake = FakeCuda([10 * 2**20, 12 * 2**20], [37, ModuleNotFoundError("No module named 'pynvml'")])
    stats = record.GpuEpochStats(torch.device("cuda"), cuda=fake)
    state = SimpleNamespace(history=[])
    stats.on_train_start(state)
    for epoch in (1, 2):
        state.history.append({"epoch": epoch})
        stats.on_epoch_end(state)
    assert [r["gpu_peak_mem_bytes"] for r in state.history] == [10 * 2**20, 12 * 2**20]
    assert [r["gpu_util_pct"] for r in state.history] == [37.0, None]
    assert fake.resets == 3 and "pynvml" in stats.util_error


def test_gpu_epoch_stats_do_nothing_on_cpu():
    stats = record.GpuEpochStats(torch.device("cpu"))
    state = SimpleNamespace(history=[{"epoch": 1}])
    stats.on_train_start(state)
    stats.on_epoch_end(state)
    assert state.history == [{"epoch": 1}]


def test_the_live_floor_is_never_above_the_audits_bound_for_the_same_speeds():
    """moola's floor leaves out the non-LSTM layers, so it must not exceed diagnostics.physics' bound."""
    from diagnostics.physics import epoch_time_lower_bound

    for name in ("jade_compact", "enhanced_simple_lstm"):
        model = get_model(name)
        machine = {"matmul_flops_per_s": 5e10, "lstm_step_s": {"encoder": 3e-5}}
        floor = record.epoch_floor_s(model, 139, 16, 105, machine)
        bound = epoch_time_lower_bound(
            model, 139, 16, 105, device="cpu", peak_flops_per_s=5e10, step_latency_s={"encoder": 3e-5}
        )
        assert 0 < floor <= bound.seconds
        assert floor >= 0.5 * bound.seconds  # the LSTM is nearly all of these models' work


def test_fingerprint_changes_with_one_label_and_not_with_a_copy():
    rng = np.random.default_rng(0)
    ds = SimpleNamespace(
        X=rng.normal(size=(6, 105, 4)).astype(np.float32),
        y=np.array([0, 1, 0, 1, 0, 1]),
        classes=("a", "b"),
        pointers=None,
        path=None,
    )
    same = SimpleNamespace(**{**vars(ds), "X": ds.X.copy()})
    flipped = SimpleNamespace(**{**vars(ds), "y": np.array([1, 1, 0, 1, 0, 1])})
    fp = record.data_fingerprint(ds)["arrays_sha256"]
    assert record.data_fingerprint(same)["arrays_sha256"] == fp
    assert record.data_fingerprint(flipped)["arrays_sha256"] != fp


def test_off_a_terminal_each_epoch_is_one_plain_line_and_a_finding_shows_once(tmp_path):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=80)
    display = EpochDisplay(console, "jade_compact", 3)
    rules = LiveRules(notify=display.finding)
    rules.configure(tmp_path, "cpu", 0.05, 0)
    display.live = rules
    state = SimpleNamespace(history=[], model=None)
    display.on_train_start(state)
    for e in (1, 2, 3):
        state.history.append(_row(e, 0.7, 0.69, t=0.01, val_acc=0.5, val_macro_f1=0.4))
        display.on_epoch_end(state)
        rules.on_epoch_end(state)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/3 loss 0.700 | val 0.690 acc 0.500") and "0.2x floor" in lines[0]
    assert sum("epoch_too_fast" in line for line in lines) == 1 and len(lines) == 4


def test_status_shows_gpu_memory_and_utilization():
    text = epoch_status(_row(1, 0.5, 0.4, t=0.2, gpu_peak_mem_bytes=37.5 * 2**20, gpu_util_pct=20.0), 0.05)
    assert "4.0x floor" in text and "gpu 37.5 MiB 20%" in text


def test_an_epoch_below_the_floor_is_remeasured_once_before_it_is_called_impossible(tmp_path):
    calls = []

    def remeasure() -> float:
        calls.append(1)
        return 0.02  # the first measurement was slowed by a neighbour: the floor was too high

    rules, seen = _rules(tmp_path, floor=0.2)
    rules.configure(tmp_path, "cpu", 0.2, 0, remeasure=remeasure)
    _feed(rules, [_row(1, 0.7, t=0.05), _row(2, 0.6, t=0.05), _row(3, 0.5, t=0.01)])
    assert calls == [1] and rules.floor_s == 0.02
    assert [(f.rule, f.epoch) for f in seen] == [("epoch_too_fast", 3)]


def test_fastest_keeps_the_favourable_figures():
    a = {"matmul_flops_per_s": 1e10, "lstm_step_s": {"encoder": 3e-5}, "device": "cpu"}
    b = {"matmul_flops_per_s": 2e10, "lstm_step_s": {"encoder": 4e-5}}
    assert record.fastest(a, b) == {
        "matmul_flops_per_s": 2e10,
        "lstm_step_s": {"encoder": 3e-5},
        "device": "cpu",
    }


def test_train_run_wires_the_rules_writes_findings_and_records_the_remeasured_machine(tmp_path, monkeypatch):
    """A machine recorded as 10^6x slower than this one: every real epoch is 'impossible' there."""
    from moola.config import TrainConfig
    from moola.data.synthetic import generate
    from moola.train.run import train_run

    def slow(model, device, batch):
        return {"device": "cpu", "matmul_flops_per_s": 1e4, "lstm_step_s": {"encoder": 1.0}}

    monkeypatch.setattr(record, "measure_machine", slow)
    seen = []
    config = TrainConfig(n_epochs=2, device="cpu", out_dir=str(tmp_path))
    result = train_run(config, generate(40, seed=1), live=LiveRules(notify=seen.append))
    assert [f.rule for f in seen] == ["epoch_too_fast"]
    on_disk = [json.loads(line) for line in (result.run_dir / "findings.jsonl").read_text().splitlines()]
    assert [f["rule"] for f in on_disk] == ["epoch_too_fast"] and on_disk[0]["epoch"] == 1
    machine = json.loads((result.run_dir / "config.json").read_text())["machine"]
    assert machine["remeasured"] is True and machine["epoch_floor_s"] > 1


def test_the_overhead_measurement_runs_both_arms_and_times_the_callbacks():
    from diagnostics.audit.overhead import measure

    m = measure("jade_compact", epochs=3, pairs=2)
    assert len(m["ratios"]) == len(m["cpu_ratios"]) == 2 and all(r > 0 for r in m["ratios"])
    assert 0 < m["callbacks_s_per_epoch"] < m["epoch_s"]
    assert set(m["one_off_s"]) == {"machine_speeds", "fingerprint", "train_eval"}


def test_on_a_terminal_the_display_is_a_progress_bar(tmp_path):
    buf = io.StringIO()
    display = EpochDisplay(Console(file=buf, force_terminal=True, width=160), "jade_compact", 2)
    state = SimpleNamespace(history=[], model=None)
    display.on_train_start(state)
    for e in (1, 2):
        state.history.append(_row(e, 0.7, 0.69, t=0.01, val_acc=0.5, val_macro_f1=0.4))
        display.on_epoch_end(state)
    display.stop()
    assert display.progress is not None and "2/2" in buf.getvalue() and "epoch 1/2" not in buf.getvalue()
