"""LSTM window classifiers with an optional pointer head (start/end bar of the pattern).

Imports torch at module level: only ``moola.models.get_model`` (called when a command runs) imports this.
"""

from __future__ import annotations

import torch
from torch import nn


def _head(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    # Dropout has no parameters, so head parameter counts are Linear(in->hidden) + Linear(hidden->out).
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
    )


class LSTMClassifier(nn.Module):
    """(B, T, F) windows -> class logits (B, C), and optionally pointers (B, 2) in [0, 1].

    pooling="last": the final hidden state of each direction (forward after bar T-1, backward after
    bar 0), concatenated, so both directions summarize the whole window.
    pooling="attention": a softmax over time of a learned per-timestep score, weighting the outputs.
    Pointers are sigmoid outputs meaning bar index / (T - 1).
    """

    def __init__(
        self,
        input_size: int,
        n_classes: int = 2,
        *,
        hidden_size: int = 128,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.1,
        head_hidden: int = 64,
        pooling: str = "last",
        name: str = "lstm",
    ):
        super().__init__()
        self.name = name
        self.pooling = pooling
        # Per-feature input standardization, fitted on the training windows by ``set_input_stats``.
        # Buffers, not parameters: they travel with the checkpoint but add nothing to the parameter count.
        # Scale-free features are ~1e-2 in size; without this an lr of 1e-4 barely moves the model.
        self.register_buffer("input_mean", torch.zeros(input_size))
        self.register_buffer("input_std", torch.ones(input_size))
        self.encoder = nn.LSTM(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # nn.LSTM only applies dropout between stacked layers (and warns otherwise).
            dropout=dropout if num_layers > 1 else 0.0,
        )
        rep = hidden_size * (2 if bidirectional else 1)
        # No bias: softmax over time is shift-invariant, so a bias would get exactly zero gradient.
        self.attention = nn.Linear(rep, 1, bias=False) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = _head(rep, head_hidden, n_classes, dropout)
        self.pointer_head = _head(rep, head_hidden, 2, dropout)
        self.hparams = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "bidirectional": bidirectional,
            "n_classes": n_classes,
            "head_hidden": head_hidden,
            "pooling": pooling,
            "dropout": dropout,
        }

    @torch.no_grad()
    def set_input_stats(self, X: torch.Tensor) -> None:
        """Fit the input standardization to training windows X (N, T, F)."""
        flat = X.reshape(-1, X.shape[-1]).to(self.input_mean.device, torch.float32)
        self.input_mean.copy_(flat.mean(dim=0))
        # A constant feature keeps std 1 rather than dividing by ~0.
        std = flat.std(dim=0) if flat.shape[0] > 1 else torch.ones_like(self.input_std)
        self.input_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def set_pointer_head(self, enabled: bool) -> None:
        """Make the pointer head trainable (True) or frozen (False)."""
        for p in self.pointer_head.parameters():
            p.requires_grad_(enabled)

    @property
    def pointer_head_enabled(self) -> bool:
        return any(p.requires_grad for p in self.pointer_head.parameters())

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled window representation (B, rep) shared by both heads."""
        out, (h_n, _) = self.encoder((x - self.input_mean) / self.input_std)
        if self.attention is not None:
            weights = torch.softmax(self.attention(out), dim=1)  # (B, T, 1)
            rep = (weights * out).sum(dim=1)
        elif self.encoder.bidirectional:
            rep = torch.cat([h_n[-2], h_n[-1]], dim=1)  # last layer: forward, backward
        else:
            rep = h_n[-1]
        return self.dropout(rep)

    def forward(
        self, x: torch.Tensor, with_pointers: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rep = self.represent(x)
        logits = self.classifier(rep)
        if not with_pointers:
            return logits
        return logits, torch.sigmoid(self.pointer_head(rep))
