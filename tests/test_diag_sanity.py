"""The sanity check on real --fit functions: each classic training bug FAILs for the right reason."""

from __future__ import annotations

import dataclasses
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
    result = sanity._epoch_time(ctx, fake)
    assert result.status is Status.FAIL
    assert result.values["bound_s"] > 1e-6
    assert result.values["bound_s"] == max(result.values["flops_part_s"], result.values["latency_part_s"])


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
    assert sanity._init_loss(near).status is Status.PASS
    assert sanity._loss_decrease(near).status is Status.PASS
    far = SimpleNamespace(**base, init_loss=3.0, train_loss=3.1)
    assert sanity._init_loss(far).status is Status.WARN
    assert sanity._loss_decrease(far).status is Status.WARN
    nan = SimpleNamespace(**base, init_loss=0.7, train_loss=float("nan"))
    assert sanity._loss_decrease(nan).status is Status.FAIL


def test_overfit_batch_memorises_standardized_windows(overfit_cache):
    std = overfit_cache["overfit_batch_standardized"]
    assert std.ok and std.acc == 1.0 and std.loss < sanity.OVERFIT_TARGET_LOSS
    assert std.steps < sanity.OVERFIT_STEPS
    raw = overfit_cache["overfit_batch"]
    # moola's models standardize their inputs (set_input_stats), so the pipeline's model memorises too.
    assert raw.ok
    assert raw.n == std.n == sanity.OVERFIT_SAMPLES
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
