"""Correct training functions in common styles: no sanity finding may FAIL or WARN on any of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH = 16


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def adamw_loop(model, X, y, epochs, device):
    """Hand loop, AdamW, shuffled mini-batches, a no_grad evaluation pass after each epoch."""
    model.to(device)
    X, y = X.to(device), y.to(device)
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            model(X)


def grad_accumulation(model, X, y, epochs, device):
    """Two micro-batches of 8 per optimizer step; gradients cleared after each step; the loss scaled by 1/2."""
    accum, micro = 2, BATCH // 2
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        batches = torch.randperm(len(X)).split(micro)
        for i, idx in enumerate(batches):
            (F.cross_entropy(model(X[idx]), y[idx]) / accum).backward()
            if (i + 1) % accum == 0 or i == len(batches) - 1:
                opt.step()
                opt.zero_grad(set_to_none=True)


def one_cycle_sgd(model, X, y, epochs, device):
    """SGD with momentum under OneCycleLR (per-step scheduler)."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    opt = torch.optim.SGD(_trainable(model), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()


def cosine_adam(model, X, y, epochs, device):
    """Adam with a cosine schedule stepped per epoch."""
    opt = torch.optim.Adam(_trainable(model), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        sched.step()


def time_ordered(model, X, y, epochs, device):
    """Unshuffled, time-ordered batches (windows in the order given)."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(X), BATCH):
            xb, yb = X[start : start + BATCH], y[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


def label_smoothing(model, X, y, epochs, device):
    """nn.CrossEntropyLoss(label_smoothing=0.1): a loss with a floor above 0, on purpose."""
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            opt.step()


def grad_clipping(model, X, y, epochs, device):
    """Gradient norm clipping between backward and step (changes .grad, not the weights)."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            opt.step()


def sgd_nesterov_steplr(model, X, y, epochs, device):
    """SGD, Nesterov momentum, weight decay, StepLR."""
    opt = torch.optim.SGD(_trainable(model), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        sched.step()


def dataloader_drop_last(model, X, y, epochs, device):
    """DataLoader over a TensorDataset, shuffled, dropping the last partial batch."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb.to(device)), yb.to(device)).backward()
            opt.step()


def frozen_encoder(model, X, y, epochs, device):
    """Fine-tune the classifier on a frozen encoder, declared below with ``moola_frozen``."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(_trainable(model), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


frozen_encoder.moola_frozen = ("encoder",)


class _Trainer:
    """A class wrapping the loop: log_softmax + NLLLoss, AdamW, a per-epoch scheduler."""

    def __init__(self, model, lr=1e-3):
        self.model = model
        self.criterion = nn.NLLLoss()
        self.opt = torch.optim.AdamW(_trainable(model), lr=lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=0.9)

    def train_step(self, xb, yb):
        self.opt.zero_grad()
        loss = self.criterion(F.log_softmax(self.model(xb), dim=1), yb)
        loss.backward()
        self.opt.step()
        return loss.item()

    def fit(self, X, y, epochs):
        for _ in range(epochs):
            self.model.train()
            for idx in torch.randperm(len(X)).split(BATCH):
                self.train_step(X[idx], y[idx])
            self.sched.step()


def class_trainer_nll(model, X, y, epochs, device):
    _Trainer(model).fit(X, y, epochs)


def closure_style(model, X, y, epochs, device):
    """Functional style: a loss function and optimizer.step(closure), the forward running inside step()."""
    opt = torch.optim.Adam(_trainable(model), lr=1e-3)

    def loss_fn(xb, yb):
        return F.cross_entropy(model(xb), yb)

    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):

            def closure(idx=idx):
                opt.zero_grad()
                loss = loss_fn(X[idx], y[idx])
                loss.backward()
                return loss

            opt.step(closure)


def bce_with_logits_onehot(model, X, y, epochs, device):
    """BCEWithLogitsLoss on one-hot targets over the C logits (correct: logits in, sigmoid inside the loss)."""
    criterion = nn.BCEWithLogitsLoss()
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            logits = model(X[idx])
            target = F.one_hot(y[idx], logits.shape[1]).float()
            opt.zero_grad()
            criterion(logits, target).backward()
            opt.step()


def weighted_ce_plateau(model, X, y, epochs, device):
    """Class-weighted cross-entropy, ReduceLROnPlateau on the epoch's mean loss."""
    counts = torch.bincount(y, minlength=2).float()
    criterion = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts.clamp(min=1)))
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    for _ in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            loss = criterion(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step(total)


CORRECT = (
    adamw_loop,
    grad_accumulation,
    one_cycle_sgd,
    cosine_adam,
    time_ordered,
    label_smoothing,
    grad_clipping,
    sgd_nesterov_steplr,
    dataloader_drop_last,
    frozen_encoder,
    class_trainer_nll,
    closure_style,
    bce_with_logits_onehot,
    weighted_ce_plateau,
)
