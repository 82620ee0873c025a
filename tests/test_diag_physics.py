"""The analytic cost model (diagnostics.physics) and the training instrumentation (diagnostics.instrument)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diagnostics import physics
from diagnostics.instrument import Instrument
from moola.models import get_model
from moola.train.trainer import fit_tensors


class TinyNet(nn.Module):
    """LSTM + Linear: a non-moola model, to show count_flops is a generic module walk."""

    def __init__(self, n_features: int = 4, hidden: int = 8, n_classes: int = 3):
        super().__init__()
        self.rnn = nn.LSTM(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_torch_flop_counter_counts_nothing_for_lstm():
    # The reason physics counts LSTMs analytically: torch's counter has no formula for the fused op.
    lstm = nn.LSTM(4, 8, batch_first=True)
    with FlopCounterMode(display=False) as counter:
        lstm(torch.zeros(2, 5, 4))
    assert counter.get_total_flops() == 0


def test_lstm_flops_matches_hand_count():
    # I=2, H=3, one step, one direction, one sample:
    # gate matmuls 2*4H*I + 2*4H*H = 48 + 72; two bias adds 2*4H = 24;
    # sigmoid 3H + tanh H + c update 3H + tanh(c) H + o*tanh(c) H = 27.
    per_step = 48 + 72 + 24 + 27
    assert physics.lstm_step_flops(2, 3) == per_step == 171
    assert physics.lstm_flops(2, 3, num_layers=1, bidirectional=False, T=4, batch=5) == per_step * 4 * 5
    # Bidirectional, 2 layers: layer 1 reads both directions (I = 2H = 6): 8*3*(6+3) + 17*3 = 267.
    layer1 = 8 * 3 * (6 + 3) + 17 * 3
    assert physics.lstm_flops(2, 3, 2, True, T=4, batch=5) == 2 * (per_step + layer1) * 4 * 5


def test_count_flops_is_analytic_lstm_plus_counted_rest():
    torch.manual_seed(0)
    model = TinyNet()
    count = physics.count_flops(model, batch=6, T=10, n_features=4)
    lstm_part = physics.lstm_flops(4, 8, 1, False, 10, 6)
    linear_part = 2 * 6 * 8 * 3  # addmm (6 x 8) @ (8 x 3)
    assert count.lstm_forward == lstm_part
    assert count.other_forward == linear_part
    assert count.forward == lstm_part + linear_part
    assert count.backward == 2 * count.forward
    assert count.per_sample == pytest.approx(3 * count.forward / 6)
    assert count.training_step == 3 * count.forward


def test_count_flops_on_moola_models():
    torch.manual_seed(0)
    model = get_model("jade_compact")
    count = physics.count_flops(model, batch=16, T=105, n_features=11)
    assert count.lstm_forward == physics.lstm_flops(11, 64, 1, True, 105, 16)
    # Attention scores and the classifier head are counted by torch's counter, and are small.
    assert 0 < count.other_forward < 0.05 * count.lstm_forward
    legacy = physics.count_flops(get_model("enhanced_simple_lstm"), batch=16, T=105, n_features=4)
    assert legacy.lstm_forward == physics.lstm_flops(4, 128, 2, True, 105, 16)
    assert legacy.forward > 10 * count.forward


def test_training_memory_counts_params_grads_adam_and_activations():
    torch.manual_seed(0)
    model = get_model("jade_compact")
    model.set_pointer_head(False)
    n_all = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mem = physics.training_memory_bytes(model, batch=16, T=105, n_features=11)
    assert mem.params == 4 * n_all
    assert mem.grads == 4 * n_train < mem.params  # the frozen pointer head has no gradients
    assert mem.optimizer_state == 2 * mem.grads  # AdamW: exp_avg + exp_avg_sq
    # The LSTM alone keeps T*B*(4H + c + h) floats per direction, plus its input.
    lstm_floats = 105 * 16 * (6 * 64) * 2 + 105 * 16 * 11
    assert mem.detail["lstm_activations"] == 4 * lstm_floats
    assert mem.activations > mem.detail["lstm_activations"]
    assert mem.total == mem.params + mem.grads + mem.optimizer_state + mem.activations
    sgd = physics.training_memory_bytes(model, batch=16, T=105, n_features=11, optimizer="sgd")
    assert sgd.optimizer_state == 0
    bigger = physics.training_memory_bytes(model, batch=64, T=105, n_features=11)
    assert bigger.activations == pytest.approx(4 * mem.activations, rel=0.01)


def test_measurements_are_positive_and_plausible():
    peak = physics.measure_matmul_throughput("cpu", fresh=True)
    assert 1e8 < peak < 1e14  # between a very slow core and far beyond any CPU
    step = physics.measure_step_latency("cpu", batch=4, hidden=16, input_size=3, fresh=True)
    assert 0 <= step < 0.1


def test_epoch_bound_is_below_a_real_epoch():
    torch.manual_seed(0)
    model = get_model("jade_compact", hidden_size=16)
    model.set_pointer_head(False)
    X, y = torch.randn(64, 105, 11), torch.randint(0, 2, (64,))
    bound = physics.epoch_time_lower_bound(model, 64, 16, 105, 11, "cpu")
    assert bound.seconds == max(bound.flops_part, bound.latency_part) > 0
    ev = bound.evidence
    assert bound.flops_part == pytest.approx(ev["flops_per_epoch"] / ev["peak_flops_per_s"])
    assert ev["sequential_steps"] == (64 // 16) * 2 * 105
    with Instrument(model) as rec:
        fit_tensors(model, X, y, 2, "cpu")
    assert rec.optimizer_steps == 8
    assert rec.wall_s / 2 >= bound.seconds
    # A plain step does an epoch's share of the same FLOPs and dependent steps: no faster than the bound allows.
    step = physics.measure_training_step(model, X[:16], y[:16])
    assert 4 * step >= bound.seconds


def test_instrument_records_a_training_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    model[1].bias.requires_grad_(False)
    X, y = torch.randn(10, 3, 4), torch.randint(0, 2, (10,))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    with Instrument(model) as rec:
        for lr in (0.5, 0.25):
            opt.param_groups[0]["lr"] = lr
            model.train()
            loss = nn.functional.cross_entropy(model(X[:6]), y[:6])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            model(X)
    assert rec.optimizer_hooks and rec.optimizer_steps == 2
    assert rec.lrs == [0.5, 0.25]
    assert rec.forward_calls == 3 and rec.forward_calls_train == 2
    assert rec.forward_calls_eval_mode == 1 and rec.forward_calls_no_grad == 1
    assert rec.samples_seen_train == 12 and rec.samples_seen == 22
    assert rec.steps_after_eval_forward == 0 and rec.steps_after_no_grad_forward == 0
    assert rec.trainable == ["1.weight"]  # the frozen bias is not expected to train
    assert rec.grad_nonzero == ["1.weight"] and rec.changed == ["1.weight"]
    assert rec.input_devices == {"cpu"}
    assert rec.wall_s >= rec.forward_s > 0


def _hook_counts(model: nn.Module) -> tuple[int, ...]:
    import torch.optim.optimizer as optim_mod

    params = list(model.parameters())
    return (
        len(model._forward_hooks),
        len(model._forward_pre_hooks),
        sum(len(getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in params),
        sum(len(p._backward_hooks or {}) for p in params),
        len(optim_mod._global_optimizer_pre_hooks),
        len(optim_mod._global_optimizer_post_hooks),
    )


def test_instrument_removes_every_hook_even_on_error():
    model = nn.Linear(3, 2)
    before = _hook_counts(model)
    with Instrument(model):
        assert _hook_counts(model) != before
    assert _hook_counts(model) == before
    with pytest.raises(RuntimeError, match="boom"), Instrument(model) as rec:
        model(torch.zeros(1, 3))
        raise RuntimeError("boom")
    assert _hook_counts(model) == before
    assert rec.exception == "RuntimeError: boom" and rec.forward_calls == 1


def test_instrument_flags_eval_no_grad_steps_and_untouched_params():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Instrument(model) as rec:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(4, 3))
        opt.step()  # nothing to apply: no gradients
    assert rec.optimizer_steps == 1
    assert rec.steps_after_eval_forward == 1 and rec.steps_after_no_grad_forward == 1
    assert rec.grad_never == ["weight", "bias"] and rec.unchanged == ["weight", "bias"]
    assert math.isclose(rec.max_abs_update["weight"], 0.0)


def test_physics_leaves_rng_and_model_untouched():
    torch.manual_seed(0)
    model = get_model("jade_compact", hidden_size=8)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X, y = torch.randn(4, 105, 11), torch.tensor([0, 1, 0, 1])
    rng = torch.get_rng_state()
    physics.training_memory_bytes(model, 4, 105, 11)
    physics.epoch_time_lower_bound(model, 16, 4, 105, 11, "cpu", fresh=True)
    assert 0 < physics.measure_training_step(model, X, y) < math.inf
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
