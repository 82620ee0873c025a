"""Model registry, exact parameter counts, forward contract, pointer-head toggling, option errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moola.errors import MoolaError
from moola.features import FEATURE_SETS
from moola.models import ModelSpec, count_parameters, get_model, get_spec, list_models

NAMES = ("enhanced_simple_lstm", "jade", "jade_compact")


def lstm_params(n_in: int, hidden: int, layers: int, bidirectional: bool) -> int:
    """nn.LSTM: per layer and direction 4 gates x (W_ih, W_hh, b_ih, b_hh)."""
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(layers):
        inp = n_in if layer == 0 else hidden * dirs
        total += dirs * 4 * hidden * (inp + hidden + 2)
    return total


def head_params(rep: int, hidden: int, out: int) -> int:
    return rep * hidden + hidden + hidden * out + out


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_the_three_models_with_their_feature_sets():
    specs = {spec.name: spec for spec in list_models()}
    assert tuple(specs) == NAMES
    assert all(isinstance(s, ModelSpec) for s in specs.values())
    assert specs["enhanced_simple_lstm"].legacy and specs["enhanced_simple_lstm"].feature_set == "ohlc4"
    assert not specs["jade"].legacy and specs["jade"].feature_set == "relative11"
    assert not specs["jade_compact"].legacy and specs["jade_compact"].feature_set == "relative11"
    for spec in specs.values():
        assert spec.description and spec.defaults
        assert get_spec(spec.name) is spec


def test_enhanced_simple_lstm_has_exactly_565636_parameters():
    model = get_model("enhanced_simple_lstm", n_features=4, n_classes=2)
    assert n_params(model.encoder) == 532_480 == lstm_params(4, 128, 2, True)
    assert n_params(model.classifier) == 16_578 == n_params(model.pointer_head)
    assert count_parameters(model) == 565_636 == n_params(model)
    # Defaults come from the feature set: ohlc4 is 4 wide.
    assert count_parameters(get_model("enhanced_simple_lstm")) == 565_636


def test_jade_compact_stays_under_one_thousand_params_per_sample_of_174():
    model = get_model("jade_compact")
    expected = lstm_params(11, 64, 1, True) + 128 + head_params(128, 64, 2) * 2  # + attention score
    assert count_parameters(model) == expected < 174_000


def test_jade_parameter_count_matches_its_architecture():
    model = get_model("jade", n_classes=3)
    expected = lstm_params(11, 128, 2, True) + 256 + head_params(256, 64, 3) + head_params(256, 64, 2)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("name", NAMES)
def test_forward_contract(name: str):
    torch.manual_seed(0)
    width = len(FEATURE_SETS[get_spec(name).feature_set])
    model = get_model(name, n_classes=3).eval()
    x = torch.randn(5, 105, width)
    logits = model(x)
    assert logits.shape == (5, 3)
    logits2, pointers = model(x, with_pointers=True)
    assert pointers.shape == (5, 2)
    assert (pointers >= 0).all() and (pointers <= 1).all()
    torch.testing.assert_close(logits, logits2)
    assert isinstance(model.encoder, nn.LSTM) and model.encoder.batch_first
    assert isinstance(model.classifier, nn.Module) and isinstance(model.pointer_head, nn.Module)
    hp = model.hparams
    assert hp["input_size"] == width == model.encoder.input_size
    assert hp["hidden_size"] == model.encoder.hidden_size
    assert hp["num_layers"] == model.encoder.num_layers
    assert hp["bidirectional"] is True and hp["n_classes"] == 3
    # Windows are independent: one window's output does not depend on its batch mates.
    torch.testing.assert_close(model(x[1:2]), logits[1:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_receives_gradient(name: str):
    torch.manual_seed(1)
    model = get_model(name)
    x = torch.randn(4, 105, model.hparams["input_size"])
    logits, pointers = model(x, with_pointers=True)
    (logits.square().sum() + pointers.sum()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_set_pointer_head_toggles_trainability():
    model = get_model("jade_compact")
    total = count_parameters(model)
    head = n_params(model.pointer_head)
    model.set_pointer_head(False)
    assert not any(p.requires_grad for p in model.pointer_head.parameters())
    assert count_parameters(model) == total - head
    assert all(p.requires_grad for p in model.classifier.parameters())
    model.set_pointer_head(True)
    assert count_parameters(model) == total


def test_overrides_change_the_architecture():
    model = get_model("jade_compact", hidden_size=32, num_layers=2, n_features=4)
    assert model.encoder.hidden_size == 32 and model.encoder.num_layers == 2
    assert count_parameters(model) == lstm_params(4, 32, 2, True) + 64 + head_params(64, 64, 2) * 2


def test_unknown_model_names_the_valid_choices():
    with pytest.raises(MoolaError, match=r"unknown model 'resnet'.*enhanced_simple_lstm.*jade.*jade_compact"):
        get_model("resnet")


def test_unknown_override_names_the_valid_options():
    with pytest.raises(MoolaError, match=r"unknown option\(s\) hiden_size.*hidden_size"):
        get_model("jade", hiden_size=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_size": 0},
        {"num_layers": 1.5},
        {"dropout": 1.0},
        {"pooling": "max"},
        {"bidirectional": "yes"},
        {"n_features": 0},
        {"n_classes": True},
    ],
)
def test_bad_option_values_are_user_errors(kwargs):
    with pytest.raises(MoolaError, match="jade_compact"):
        get_model("jade_compact", **kwargs)
