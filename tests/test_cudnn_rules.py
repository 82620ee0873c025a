"""What cuDNN refuses and CPU kernels allow, checked on CPU over every check that check-all runs.

On a real GPU (H200, 27 Nov 2026) the sanity check's overfit run backpropagated through an LSTM in eval mode:
CPU kernels train, cuDNN raises "cudnn RNN backward can only be called in training mode", and the whole sanity
check became one crash FAIL. CI has no GPU, so the rule itself is asserted here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from diagnostics.commands import run_checks
from diagnostics.context import DiagContext, Thresholds
from diagnostics.registry import CHECK_ORDER
from moola.config import TrainConfig
from moola.data.splits import make_split
from moola.data.synthetic import generate
from moola.models import get_model


@contextmanager
def eval_mode_rnn_backwards() -> Iterator[list[str]]:
    """Collects the RNN modules whose output received a gradient while the module was in eval mode."""
    found: list[str] = []

    def on_forward(module: nn.Module, args: object, output: object) -> None:
        if not isinstance(module, nn.RNNBase) or module.training:
            return
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, torch.Tensor) and out.requires_grad:
            name = type(module).__name__
            out.register_hook(lambda grad: found.append(name))

    handle = nn.modules.module.register_module_forward_hook(on_forward)
    try:
        yield found
    finally:
        handle.remove()


def test_the_probe_sees_an_eval_mode_backward():
    model = get_model("jade_compact", 11).eval()
    with eval_mode_rnn_backwards() as found:
        model(torch.randn(2, 105, 11)).sum().backward()
        model.train()(torch.randn(2, 105, 11)).sum().backward()
    assert found == ["LSTM"]


def test_no_check_backpropagates_through_an_rnn_in_eval_mode():
    ds = generate(64, seed=3)
    train, test = make_split(ds, "random")
    th = dataclasses.replace(Thresholds(), sanity_epochs=2, overfit_steps=5, stability_runs=2)
    # workers=1: the stability runs train in this process, where the hook can see them.
    config = TrainConfig(n_epochs=2)
    ctx = DiagContext(ds, train, test, device="cpu", thresholds=th, config=config, workers=1)
    assert any(isinstance(m, nn.RNNBase) for m in get_model(ctx.model_name, 11).modules())
    with eval_mode_rnn_backwards() as found:
        run_checks(ctx, CHECK_ORDER, debug=True)
    assert found == []
