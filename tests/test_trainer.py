"""The training loop, the run directory, devices and metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moola.config import TrainConfig
from moola.data.dataset import WindowDataset
from moola.errors import MoolaError
from moola.features import transform
from moola.models import count_parameters, get_model
from moola.train import metrics
from moola.train.device import resolve_device
from moola.train.run import train_run
from moola.train.trainer import TrainState, fit, fit_tensors


def ohlc_windows(n: int, seed: int = 0, t: int = 105, flip_labels: bool = False) -> WindowDataset:
    """Random-walk OHLC windows whose class is the drift (up vs flat): learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    r = rng.normal(0, 0.005, (n, t)) + np.where(y == 1, 0.003, 0.0)[:, None]
    c = 100 * np.exp(np.cumsum(r, axis=1)) * rng.uniform(0.5, 2, (n, 1))
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.003, (n, t)))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.003, (n, t)))
    return WindowDataset(
        X=np.stack([o, h, lo, c], axis=-1).astype(np.float32),
        y=(1 - y if flip_labels else y).astype(np.int64),
        classes=("consolidation", "retracement"),
        window_id=np.array([f"w{seed}-{i}" for i in range(n)]),
        pointers=np.sort(rng.integers(0, t, (n, 2)), axis=1),
    )


def feature_windows(n: int, seed: int = 0, flip_labels: bool = False) -> WindowDataset:
    ds = ohlc_windows(n, seed, flip_labels=flip_labels)
    return ds.with_features(transform(ds.X, "relative11"))


def cpu_config(**kw) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", "n_epochs": 2, **kw})


def fresh(name: str = "jade_compact", seed: int = 0, **kw):
    torch.manual_seed(seed)
    return get_model(name, **kw)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


class Recorder:
    """Records every hook call and snapshots parameters at start and after each epoch."""

    def __init__(self):
        self.calls: list[tuple[str, int, int, int, int, int]] = []
        self.losses: list[float] = []
        self.start: dict[str, torch.Tensor] = {}
        self.epoch_states: list[dict[str, torch.Tensor]] = []
        self.frozen: list[str] = []

    def _log(self, hook: str, s: TrainState) -> None:
        self.calls.append(
            (hook, s.epoch, s.step_in_epoch, s.global_step, s.batch_size, s.n_samples_seen_epoch)
        )

    def on_train_start(self, s: TrainState) -> None:
        self._log("start", s)
        self.start = trainable_snapshot(s.model)
        self.frozen = [k for k, p in s.model.named_parameters() if not p.requires_grad]

    def on_step_end(self, s: TrainState) -> None:
        self._log("step", s)
        self.losses.append(s.loss)

    def on_epoch_end(self, s: TrainState) -> None:
        self._log("epoch", s)
        self.epoch_states.append({k: v.detach().clone() for k, v in s.model.state_dict().items()})

    def on_train_end(self, s: TrainState) -> None:
        self._log("end", s)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """3 epochs of the CLI default model on the default 174-window data set, pointers on."""
    recorder = Recorder()
    config = cpu_config(n_epochs=3, predict_pointers=True, out_dir=str(tmp_path_factory.mktemp("runs")))
    result = train_run(config, callbacks=[recorder])
    return config, result, recorder


def test_three_epochs_lower_the_loss_and_update_every_trainable_parameter(default_run):
    _, result, recorder = default_run
    assert len(result.history) == 3
    assert result.history[-1]["train_loss_running"] < result.history[0]["train_loss_running"]
    assert recorder.frozen == []  # pointers on: every parameter is trainable
    after = dict(result.model.named_parameters())
    assert set(recorder.start) == set(after)
    unchanged = [k for k, before in recorder.start.items() if torch.equal(before, after[k].detach())]
    assert unchanged == []
    assert result.n_params == count_parameters(result.model) == sum(p.numel() for p in after.values())
    row = result.history[-1]
    assert 0 <= row["val_acc"] <= 1 and 0 <= row["majority_acc"] <= 1 and 0 <= row["val_macro_f1"] <= 1
    assert 0 <= row["pointer_mae_bars"] <= 104
    assert row["epoch_time_s"] > 0 and result.device == "cpu"


def test_run_directory_holds_config_metrics_checkpoint_and_summary(default_run):
    config, result, _ = default_run
    run_dir = Path(result.run_dir)
    assert run_dir.parent == Path(config.out_dir) and run_dir.name.startswith("jade_compact-")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"] == config.to_dict()
    assert TrainConfig.from_dict(saved["config"]) == config
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["device"] == "cpu"
    assert "git_sha" in saved["environment"]
    assert saved["data"]["n_train"] + saved["data"]["n_val"] == 174
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(result.history))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_params_trainable"] == result.n_params
    assert summary["best_epoch"] == result.history[result.best_epoch]["epoch"]
    assert summary["metrics"]["val_acc"] == result.history[result.best_epoch]["val_acc"]
    assert not list(run_dir.glob("*.partial"))


def test_checkpoint_round_trip_gives_identical_logits(default_run):
    _, result, _ = default_run
    state = torch.load(Path(result.run_dir) / "model.pt", weights_only=True)
    clone = fresh("jade_compact", seed=99)
    clone.load_state_dict(state)
    x = torch.as_tensor(feature_windows(7, seed=5).X)
    result.model.eval()
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            clone(x, with_pointers=True), result.model(x, with_pointers=True), rtol=0, atol=0
        )


def test_metrics_jsonl_grows_while_training(tmp_path: Path):
    seen = []

    class Watch:
        def on_epoch_end(self, s: TrainState) -> None:
            (run_dir,) = tmp_path.iterdir()
            seen.append(len((run_dir / "metrics.jsonl").read_text().splitlines()))

    train_run(cpu_config(n_epochs=3, out_dir=str(tmp_path)), ohlc_windows(40), callbacks=[Watch()])
    assert seen == [1, 2, 3]


def test_training_is_deterministic_on_cpu():
    train, val = feature_windows(40, seed=1), feature_windows(16, seed=2)
    config = cpu_config(predict_pointers=True, seed=7)

    def run(seed_config: TrainConfig):
        model = fresh(seed=3)
        res = fit(model, train, val, seed_config)
        return model.state_dict(), [row["train_loss_running"] for row in res.history]

    (a, la), (b, lb) = run(config), run(config)
    assert la == lb
    assert all(torch.equal(a[k], b[k]) for k in a)
    c, _ = run(cpu_config(predict_pointers=True, seed=8))  # another shuffle/noise seed: other weights
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_callbacks_fire_with_the_right_counts():
    n, batch, epochs = 37, 8, 3
    recorder = Recorder()
    res = fit(
        fresh(),
        feature_windows(n),
        feature_windows(10, 1),
        cpu_config(n_epochs=epochs, batch_size=batch),
        [recorder],
    )
    hooks = [c[0] for c in recorder.calls]
    steps = math.ceil(n / batch)
    assert hooks == ["start"] + (["step"] * steps + ["epoch"]) * epochs + ["end"]
    step_calls = [c for c in recorder.calls if c[0] == "step"]
    assert [c[2] for c in step_calls] == list(range(1, steps + 1)) * epochs  # step_in_epoch
    assert [c[3] for c in step_calls] == list(range(1, steps * epochs + 1))  # global_step
    assert [c[1] for c in step_calls] == [e for e in range(1, epochs + 1) for _ in range(steps)]
    for epoch in range(epochs):
        sizes = [c[4] for c in step_calls[epoch * steps : (epoch + 1) * steps]]
        assert sizes == [batch] * (steps - 1) + [n - batch * (steps - 1)]
    assert [c[5] for c in recorder.calls if c[0] == "epoch"] == [n] * epochs  # samples seen per epoch
    assert all(math.isfinite(x) for x in recorder.losses) and len(recorder.losses) == steps * epochs
    assert len(res.history) == epochs


def test_a_callback_can_stop_training():
    class StopAfterTwo:
        def on_epoch_end(self, s: TrainState) -> None:
            s.stop_training = s.epoch >= 2

    res = fit(fresh(), feature_windows(20), None, cpu_config(n_epochs=9), [StopAfterTwo()])
    assert res.n_epochs_run == 2


@pytest.mark.parametrize("predict_pointers", [False, True])
def test_pointer_head_is_frozen_when_off_and_trained_when_on(predict_pointers: bool):
    model = fresh()
    before = {k: v.clone() for k, v in model.pointer_head.state_dict().items()}
    cls_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    res = fit(
        model,
        feature_windows(32),
        feature_windows(12, 1),
        cpu_config(n_epochs=1, predict_pointers=predict_pointers),
    )
    assert all(p.requires_grad == predict_pointers for p in model.pointer_head.parameters())
    changed = {k: not torch.equal(before[k], v) for k, v in model.pointer_head.state_dict().items()}
    assert all(changed.values()) if predict_pointers else not any(changed.values())
    assert all(not torch.equal(cls_before[k], v) for k, v in model.classifier.state_dict().items())
    assert (res.history[0]["pointer_mae_bars"] is not None) == predict_pointers


def test_early_stopping_triggers_on_a_plateau():
    # lr = 0 leaves the weights (and so the validation loss) exactly constant after epoch 1.
    config = cpu_config(n_epochs=20, lr=0.0, early_stopping_patience=3)
    res = fit(fresh(), feature_windows(24), feature_windows(12, 1), config)
    assert res.stopped_early and res.n_epochs_run == 4 and res.best_epoch == 0
    assert len({row["val_loss"] for row in res.history}) == 1


def test_early_stopping_restores_the_best_weights():
    # Validation labels are the opposite of the training rule: the better the fit, the worse val loss.
    recorder = Recorder()
    config = cpu_config(n_epochs=30, lr=3e-3, early_stopping_patience=2, augment=False)
    model = fresh()
    res = fit(model, feature_windows(48), feature_windows(24, 1, flip_labels=True), config, [recorder])
    assert res.stopped_early and res.n_epochs_run == res.best_epoch + 1 + 2 < 30
    val_losses = [row["val_loss"] for row in res.history]
    assert res.best_val_loss == min(val_losses) == val_losses[res.best_epoch]
    kept, last = recorder.epoch_states[res.best_epoch], recorder.epoch_states[-1]
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, last[k]) for k, v in model.state_dict().items())


def test_fit_tensors_trains_in_place_for_the_plugin_protocol():
    ds = feature_windows(30)
    model = fresh()
    before = trainable_snapshot(model)
    out = fit_tensors(model, torch.as_tensor(ds.X), torch.as_tensor(ds.y), 2, "cpu")
    assert out is None
    after = dict(model.named_parameters())
    changed = {k: not torch.equal(before[k], after[k].detach()) for k in before}
    # Classification only: everything but the (frozen) pointer head is trained.
    assert changed == {k: not k.startswith("pointer_head.") for k in before}
    assert not any(p.requires_grad for p in model.pointer_head.parameters())


def test_cuda_without_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MoolaError, match=r"--device cuda: CUDA is not available on this machine \(torch "):
        resolve_device("cuda")
    with pytest.raises(MoolaError, match="CUDA is not available"):
        fit(fresh(), feature_windows(8), None, cpu_config(device="cuda"))
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_is_chosen_when_torch_reports_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_device_lists_the_choices():
    with pytest.raises(MoolaError, match="auto, cpu, cuda"):
        resolve_device("tpu")


def test_pointer_training_without_pointer_columns_is_a_user_error():
    ds = feature_windows(8)
    no_pointers = WindowDataset(X=ds.X, y=ds.y, classes=ds.classes, window_id=ds.window_id, path="w.parquet")
    with pytest.raises(MoolaError, match=r"w\.parquet.*no pointer"):
        fit(fresh(), no_pointers, None, cpu_config(predict_pointers=True))


def test_feature_width_mismatch_is_a_user_error():
    with pytest.raises(MoolaError, match="expects 11 features per bar but the data has 4"):
        fit(fresh(), ohlc_windows(8), None, cpu_config())


def test_metrics_against_hand_computation():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # Per-class F1: class 0 P=2/3 R=2/3; class 1 P=1/2 R=1/2; class 2 P=R=1.
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics.majority_accuracy(y_true) == pytest.approx(3 / 6)
    assert metrics.majority_accuracy(np.array([1, 1, 0]), y_reference=np.array([0, 0, 1])) == pytest.approx(
        1 / 3
    )
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    pred = np.array([[0.0, 1.0], [0.5, 0.25]])
    true = np.array([[2, 100], [52, 26]])
    assert metrics.pointer_mae_bars(pred, true, window_length=105) == pytest.approx((2 + 4 + 0 + 0) / 4)
    assert metrics.macro_f1(torch.tensor([1, 1]), torch.tensor([1, 1])) == 1.0


def test_fit_standardizes_inputs_with_training_statistics_only():
    train, val = feature_windows(40, seed=1), feature_windows(16, seed=2)
    model = fresh()
    fit(model, train, val, cpu_config(n_epochs=1))
    flat = torch.as_tensor(train.X).reshape(-1, train.X.shape[2])
    torch.testing.assert_close(model.input_mean, flat.mean(dim=0))
    std = flat.std(dim=0)
    # A constant feature (this data's first one) keeps std 1 instead of dividing by zero.
    assert (std < 1e-8).any()
    torch.testing.assert_close(model.input_std, torch.where(std > 1e-8, std, torch.ones_like(std)))
    # The statistics are buffers: saved with the checkpoint, never counted as parameters.
    assert {"input_mean", "input_std"} <= set(model.state_dict())
    assert all(name not in dict(model.named_parameters()) for name in ("input_mean", "input_std"))
