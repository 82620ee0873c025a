"""Model registry: ``get_model(name, ...)`` and ``list_models()``.

torch is imported only inside ``get_model`` so that CLIs can list models without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moola.errors import MoolaError
from moola.features import FEATURE_SETS

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    legacy: bool
    feature_set: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "enhanced_simple_lstm",
            legacy=True,
            feature_set="ohlc4",
            description="legacy BiLSTM 2x128, final states",
            defaults={
                "hidden_size": 128,
                "num_layers": 2,
                "bidirectional": True,
                "dropout": 0.1,
                "head_hidden": 64,
                "pooling": "last",
            },
        ),
        ModelSpec(
            "jade",
            legacy=False,
            feature_set="relative11",
            description="BiLSTM 2x128, attention pooling",
            defaults={
                "hidden_size": 128,
                "num_layers": 2,
                "bidirectional": True,
                "dropout": 0.2,
                "head_hidden": 64,
                "pooling": "attention",
            },
        ),
        ModelSpec(
            "jade_compact",
            legacy=False,
            feature_set="relative11",
            description="BiLSTM 1x64, attention pooling",
            defaults={
                "hidden_size": 64,
                "num_layers": 1,
                "bidirectional": True,
                "dropout": 0.2,
                "head_hidden": 64,
                "pooling": "attention",
            },
        ),
    )
}

_POOLINGS = ("attention", "last")


def list_models() -> list[ModelSpec]:
    """Every registered model, in registration order."""
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    spec = _SPECS.get(name)
    if spec is None:
        raise MoolaError(f"unknown model {name!r}; valid: {', '.join(_SPECS)}")
    return spec


def _validate(name: str, hp: dict[str, Any]) -> None:
    for key in ("hidden_size", "num_layers", "head_hidden"):
        value = hp[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoolaError(f"model {name!r}: {key} must be a positive integer, got {value!r}")
    if not isinstance(hp["bidirectional"], bool):
        raise MoolaError(f"model {name!r}: bidirectional must be true or false, got {hp['bidirectional']!r}")
    dropout = hp["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise MoolaError(f"model {name!r}: dropout must be in [0, 1), got {dropout!r}")
    if hp["pooling"] not in _POOLINGS:
        raise MoolaError(
            f"model {name!r}: pooling must be one of {', '.join(_POOLINGS)}, got {hp['pooling']!r}"
        )


def get_model(name: str, n_features: int | None = None, n_classes: int = 2, **overrides: Any) -> nn.Module:
    """A freshly initialized model (uses torch's global RNG: seed it first for reproducible weights).

    ``n_features`` defaults to the width of the model's feature set; ``overrides`` replace entries of
    its ``ModelSpec.defaults`` (hidden_size, num_layers, bidirectional, dropout, head_hidden, pooling).
    """
    spec = get_spec(name)
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise MoolaError(
            f"model {name!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(spec.defaults)}"
        )
    if n_features is None:
        n_features = len(FEATURE_SETS[spec.feature_set])
    for label, value in (("n_features", n_features), ("n_classes", n_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoolaError(f"model {name!r}: {label} must be a positive integer, got {value!r}")
    hp = {**spec.defaults, **overrides}
    _validate(name, hp)

    from moola.models.lstm import LSTMClassifier

    return LSTMClassifier(n_features, n_classes, name=name, **hp)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["ModelSpec", "count_parameters", "get_model", "get_spec", "list_models"]
