"""The sanity check on real --fit functions: each classic training bug FAILs for the right reason."""

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from diagnostics.checks import sanity
from diagnostics.context import DiagContext, Thresholds
from diagnostics.instrument import Recording
from diagnostics.result import Status
from diagnostics.training import short_training
from moola.data.splits import make_split
from moola.data.synthetic import generate
from moola.errors import MoolaError
from tests import fit_plugins

THRESHOLDS = Thresholds(sanity_epochs=2)


@pytest.fixture(scope="module")
def data():
    ds = generate(64, seed=3)
    train, test = make_split(ds, "random")
    return ds, train, test


@pytest.fixture(scope="module")
def overfit_cache(data):
    """The overfit-one-batch runs do not depend on the fit function: compute them once for all tests."""
    ds, train, test = data
    ctx = DiagContext(ds, train, test, device="cpu", thresholds=THRESHOLDS)
    return {
        "overfit_batch": sanity.overfit_batch(ctx),
        "overfit_batch_standardized": sanity.overfit_batch(ctx, standardize=True),
    }


def _ctx(data, fit, cache=None) -> DiagContext:
    ds, train, test = data
    spec = None if fit is None else f"fit_plugins:{fit.__name__}"
    return DiagContext(
        ds, train, test, device="cpu", fit=fit, fit_spec=spec, thresholds=THRESHOLDS, cache=dict(cache or {})
    )


def _run(data, overfit_cache, fit):
    ctx = _ctx(data, fit, overfit_cache)
    results = sanity.check_sanity(ctx)
    return {r.name: r for r in results}, ctx


def _fails(found):
    return {name for name, r in found.items() if r.status is Status.FAIL}


@pytest.mark.parametrize("fit", [None, fit_plugins.fit_correct], ids=["builtin", "correct"])
def test_correct_training_has_no_fail(data, overfit_cache, fit):
    found, ctx = _run(data, overfit_cache, fit)
    assert _fails(found) == set(), {n: found[n].measured for n in _fails(found)}
    st = short_training(ctx)
    n = len(ctx.train_idx)
    assert found["samples_per_epoch"].values["samples_per_epoch"] == n
    assert found["optimizer_steps"].values["steps_per_epoch"] == -(-n // 16)
    assert found["epoch_time"].values["epoch_s"] >= found["epoch_time"].values["bound_s"]
    assert st.train_loss < st.init_loss


def test_no_optimizer_step(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_no_step)
    assert found["optimizer_steps"].status is Status.FAIL
    assert found["optimizer_steps"].values["steps"] == 0
    assert found["gradients"].status is Status.PASS  # backward ran: the gradients were there
    assert found["learning_rate"].status is Status.SKIP
    assert found["param_updates"].status is Status.FAIL


def test_zero_learning_rate(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_zero_lr)
    assert found["learning_rate"].status is Status.FAIL
    assert "learning rate is 0" in found["learning_rate"].measured
    assert found["optimizer_steps"].status is Status.PASS
    assert found["gradients"].status is Status.PASS


def test_single_batch_per_epoch(data, overfit_cache):
    found, ctx = _run(data, overfit_cache, fit_plugins.fit_single_batch)
    assert found["samples_per_epoch"].status is Status.FAIL
    assert found["samples_per_epoch"].values["samples_per_epoch"] == 16 < len(ctx.train_idx)
    assert found["train_mode"].status is Status.PASS
    assert found["learning_rate"].status is Status.PASS


def test_eval_mode_under_no_grad(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_eval_no_grad)
    assert found["train_mode"].status is Status.FAIL
    assert "no_grad" in found["train_mode"].measured
    assert found["gradients"].status is Status.FAIL
    assert found["learning_rate"].status is not Status.FAIL  # the lr is fine; the graph is missing


def test_fit_that_does_nothing(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_noop)
    assert found["epoch_time"].status is Status.FAIL and "no training work" in found["epoch_time"].measured


def test_fit_that_raises_is_a_user_error_naming_it(data):
    # Nothing can be measured once the user's function died: one line and exit 2, not a verdict.
    ctx = _ctx(data, fit_plugins.fit_raises)
    with pytest.raises(
        MoolaError,
        match=r"--fit fit_plugins:fit_raises: raised ValueError: expected 3 arguments \(at fit_plugins.py:\d+\)",
    ):
        short_training(ctx)


def test_epoch_faster_than_physics_fails(data, overfit_cache):
    # A fit that claims to have run an epoch in 1 microsecond while doing work: impossible.
    ds, train, test = data
    ctx = DiagContext(ds, train, test, device="cpu", fit=fit_plugins.fit_correct, thresholds=THRESHOLDS)
    st = short_training(ctx)
    rec = dataclasses.replace(st.recording)
    fake = SimpleNamespace(**{f.name: getattr(st, f.name) for f in dataclasses.fields(st)})
    fake.recording, fake.wall_s, fake.epoch_s = rec, 1e-6 * st.epochs, 1e-6
    result = sanity.epoch_time_verdict(ctx, fake)
    assert result.status is Status.FAIL
    assert result.values["bound_s"] > 1e-6
    assert result.values["bound_s"] == max(result.values["flops_part_s"], result.values["latency_part_s"])


@pytest.mark.parametrize(("plain_epoch_in_bounds", "status"), [(10.0, Status.PASS), (0.0, Status.WARN)])
def test_slow_epochs_are_judged_against_the_models_own_plain_steps(
    data, monkeypatch, plain_epoch_in_bounds, status
):
    """100x the bound is a GPU's normal for a small model when its plain steps (kernel launches) take 10x the
    bound per epoch (H200: 34x); it is slow when plain steps run at the bound, as on a CPU."""
    from diagnostics import physics

    ds, train, test = data
    ctx = DiagContext(ds, train, test, device="cpu", fit=fit_plugins.fit_correct, thresholds=THRESHOLDS)
    st = short_training(ctx)
    bound = sanity.epoch_time_verdict(ctx, st).values["bound_s"]
    batch = st.recording.typical_train_batch
    steps = -(-st.n_train // batch)
    seen = []

    def plain_step(model, X, y, repeats=3):
        seen.append(tuple(X.shape))
        return plain_epoch_in_bounds * bound / steps

    monkeypatch.setattr(physics, "measure_training_step", plain_step)
    fake = SimpleNamespace(**{f.name: getattr(st, f.name) for f in dataclasses.fields(st)})
    fake.epoch_s = 100 * bound
    fake.wall_s = fake.epoch_s * st.epochs
    result = sanity.epoch_time_verdict(ctx, fake)
    assert result.status is status
    assert seen[0] == (batch, st.window_length, st.n_features)
    assert result.values["expected_s"] == pytest.approx(max(bound, plain_epoch_in_bounds * bound))
    assert any(f"{steps} plain AdamW steps" in line for line in result.evidence)


def test_init_loss_and_loss_decrease_verdicts():
    base = {
        "n_classes": 2,
        "n_train": 10,
        "init_train_acc": 0.5,
        "epochs": 1,
        "train_acc": 0.5,
        "recording": Recording(),
    }
    near = SimpleNamespace(**base, init_loss=0.70, train_loss=0.60)
    assert sanity.init_loss_verdict(near, THRESHOLDS).status is Status.PASS
    assert sanity.loss_decrease_verdict(near, THRESHOLDS).status is Status.PASS
    far = SimpleNamespace(**base, init_loss=3.0, train_loss=3.1)
    assert sanity.init_loss_verdict(far, THRESHOLDS).status is Status.WARN
    assert sanity.loss_decrease_verdict(far, THRESHOLDS).status is Status.WARN
    nan = SimpleNamespace(**base, init_loss=0.7, train_loss=float("nan"))
    assert sanity.loss_decrease_verdict(nan, THRESHOLDS).status is Status.FAIL


def test_overfit_batch_memorises_standardized_windows(overfit_cache):
    std = overfit_cache["overfit_batch_standardized"]
    assert std.ok and std.acc == 1.0 and std.loss < THRESHOLDS.overfit_target_loss
    assert std.steps < THRESHOLDS.overfit_steps
    raw = overfit_cache["overfit_batch"]
    # moola's models standardize their inputs (set_input_stats), so the pipeline's model memorises too.
    assert raw.ok
    assert raw.n == std.n == THRESHOLDS.overfit_samples
    assert np.isfinite(raw.initial_loss)


def test_thread_probe_times_both_thread_counts_and_restores(data):
    import torch

    ds, train, test = data
    ctx = DiagContext(ds, train, test, device="cpu", thresholds=THRESHOLDS)
    st = short_training(ctx)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        probe = sanity.thread_probe(ctx, st)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert probe is not None
    threads, many, one = probe
    assert threads == 2 and many > 0 and one > 0


def test_fit_that_hangs_is_stopped_at_the_stated_limit(data):
    ds, train, test = data
    limited = dataclasses.replace(THRESHOLDS, fit_time_limit_s=0.5, fit_time_factor=0.0)
    ctx = DiagContext(
        ds, train, test, device="cpu", fit=fit_plugins.fit_hangs, fit_spec="p:fit_hangs", thresholds=limited
    )
    with pytest.raises(MoolaError, match=r"--fit p:fit_hangs: did not return within 0.5 s for 2 epoch\(s\)"):
        short_training(ctx)
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the alarm is off again
    import torch

    assert torch._C._len_torch_function_stack() == 0  # the loss-watching mode did not leak


def test_time_limit_never_leaves_torch_state_behind():
    """The alarm used to land inside torch's function-mode dispatch in about 3% of stops, leaving the mode
    to be re-pushed by a generator's finalizer after the Instrument had removed it. 300 stops: with that
    bug the chance of seeing none is 0.97**300 < 1e-3; with the fix each stop is clean by construction."""
    import torch

    from diagnostics.instrument import Instrument
    from diagnostics.training import _FitTimeout, call_with_limit

    model = torch.nn.Linear(4, 2)
    X = torch.randn(8, 4)

    def fit_spinning_on_tensor_calls():
        with Instrument(model):
            done = False
            while not done:
                done = len(X) < 0

    leaked = 0
    for _ in range(300):
        with pytest.raises(_FitTimeout):
            call_with_limit(fit_spinning_on_tensor_calls, 0.001)
        if torch._C._len_torch_function_stack():
            leaked += 1
            while torch._C._len_torch_function_stack():
                torch._C._pop_torch_function_stack()
    assert leaked == 0
    assert torch.is_grad_enabled()


def test_an_interrupt_at_any_line_of_instrument_enter_leaves_nothing_installed():
    """The time limit or Ctrl-C can land on any line of ``Instrument.__enter__``; ``__exit__`` then never
    runs, so whatever ``__enter__`` had installed must come off there. It once left its loss-watching mode
    on torch's stack when the alarm landed on the line after the push (1 stop in ~1,000)."""
    import torch
    import torch.optim.optimizer as optim_mod

    from diagnostics.instrument import Instrument

    model = torch.nn.Linear(4, 2)
    enter = Instrument.__enter__.__code__
    lines = sorted({line for _, _, line in enter.co_lines() if line and line > enter.co_firstlineno})
    global_hooks = (optim_mod._global_optimizer_pre_hooks, optim_mod._global_optimizer_post_hooks)
    hooks_before = [len(h) for h in global_hooks]
    interrupted_at = []
    for target in lines:
        fired = []

        def on_line(frame, event, arg, target=target, fired=fired):
            if event == "line" and frame.f_lineno == target and not fired:
                fired.append(target)
                raise KeyboardInterrupt
            return on_line

        sys.settrace(lambda frame, event, arg: on_line if frame.f_code is enter else None)
        try:
            with Instrument(model):
                pass
        except KeyboardInterrupt:
            interrupted_at += fired
        finally:
            sys.settrace(None)
        assert torch._C._len_torch_function_stack() == 0, f"mode left on the stack (line {target})"
        assert [len(h) for h in global_hooks] == hooks_before, f"optimizer hooks left (line {target})"
        assert not model._forward_pre_hooks and not model._forward_hooks, f"module hooks left (line {target})"
        assert all(not p._backward_hooks for p in model.parameters()), f"tensor hooks left (line {target})"
    assert len(interrupted_at) >= 10  # the trace really landed inside __enter__, line after line


def test_time_limit_still_stops_a_loop_that_never_leaves_library_code(monkeypatch):
    from diagnostics import training

    monkeypatch.setattr(training, "_in_library_internals", lambda frame: True)

    def spin():
        while True:
            pass

    with pytest.raises(training._FitTimeout):
        training.call_with_limit(spin, 0.01, max_defer_s=0.05)


def test_fit_returning_a_different_model_is_a_user_error(data):
    with pytest.raises(MoolaError, match=r"returned a different .* than the model it was given"):
        short_training(_ctx(data, fit_plugins.fit_returns_copy))


def test_fit_returning_its_own_model_is_fine(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_returns_model)
    assert _fails(found) == set()


def test_undeclared_freeze_fails_and_names_the_declaration(data, overfit_cache):
    found, _ = _run(data, overfit_cache, fit_plugins.fit_freezes_encoder_undeclared)
    assert found["gradients"].status is Status.FAIL
    assert "moola_frozen = ('encoder',)" in found["gradients"].hint
    assert found["param_updates"].status is Status.FAIL


def test_declared_frozen_prefix_must_name_parameters(data):
    with pytest.raises(
        MoolaError, match="moola_frozen names 'decoder', which matches no trainable parameter"
    ):
        short_training(_ctx(data, fit_plugins.fit_declares_unknown_frozen))


def test_instrument_identifies_rows_labels_and_accumulation():
    """Rows are identified exactly whatever the batching; labels come from dL/dlogits; k micro-batches/step."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from diagnostics.instrument import Instrument

    torch.manual_seed(0)
    X = torch.randn(12, 5, 3)
    y = torch.tensor([0, 1, 2] * 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(15, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    order = torch.tensor([5, 3, 11, 0, 1, 2, 4, 6, 7, 8, 9, 10])
    with Instrument(model, X, y) as rec:
        for i, idx in enumerate(order.split(3)):  # 4 micro-batches, a step after every 2
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            if i % 2 == 1:
                opt.step()
                opt.zero_grad()
        model(X[:2] + 1.0)  # rows that are not training windows
    assert rec.row_sequence.tolist() == [*order.tolist(), -1, -1]
    assert rec.implied_rows.tolist() == order.tolist()
    assert rec.implied_labels.tolist() == y[order].tolist()
    assert rec.forwards_per_step == [2, 2] and rec.accumulation == 2
    assert rec.stale_grad_steps == 0 and rec.stale_checked_steps == 1
    assert rec.loss_calls == {"cross_entropy": 4} and rec.loss_prob_inputs == {"cross_entropy": 0}
    assert rec.outside_change_intervals == 0 and rec.outside_intervals == 1
