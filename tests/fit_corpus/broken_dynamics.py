"""Broken training functions of families no pattern finding was written for, in the habits of other people's
code (PyTorch tutorials, torch.optim docs, NLP and Keras-style loops, the silent-bug benchmarks' families):
each must FAIL on a finding that names the real problem; the outcome finding counts (``BROKEN_DYNAMICS``:
function -> the findings any of which may carry the FAIL).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH = 16


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------- the lr never does its job
def scheduler_stepped_per_batch(model, X, y, epochs, device):
    """A per-epoch schedule (StepLR, step_size in epochs, as in the torch.optim docs) stepped inside the batch
    loop: the lr is divided by 10 every 2 batches and ends near 0."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.SGD(_params(model), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    for _epoch in range(epochs):
        model.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()  # belongs after the batch loop


def manual_decay_per_batch(model, X, y, epochs, device):
    """A hand-written exponential decay applied to param_groups after every batch instead of every epoch."""
    opt = torch.optim.Adam(_params(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            for group in opt.param_groups:
                group["lr"] *= 0.5


def warmup_never_arrives(model, X, y, epochs, device):
    """A linear warm-up sized in optimizer steps (500) but stepped once per epoch: the lr never gets past a
    few percent of the value it was set to."""
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=500)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        warmup.step()


# ---------------------------------------------------------------- the updates never reach the weights
def tiny_clip_norm_sgd(model, X, y, epochs, device):
    """Gradients clipped to a norm of 1e-5 (meant 1.0) under SGD: every step is ~1e-7 long."""
    opt = torch.optim.SGD(_params(model), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-5)
            opt.step()


def loss_scaled_by_dataset_squared(model, X, y, epochs, device):
    """reduction='mean' already divides by the batch; the loop divides again by N^2 as if it had summed over
    the whole dataset twice: under plain SGD the lr is scaled to ~0."""
    criterion = nn.CrossEntropyLoss()  # mean
    opt = torch.optim.SGD(_params(model), lr=0.1)
    n = len(X)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n).split(BATCH):
            opt.zero_grad()
            loss = criterion(model(X[idx]), y[idx]) / (n * n)
            loss.backward()
            opt.step()


# ---------------------------------------------------------------- the loss does not train what it should
def ignore_index_zero(model, X, y, epochs, device):
    """nn.CrossEntropyLoss(ignore_index=0) copied from a sequence model where 0 was the padding id: every
    class-0 window is ignored, and the model learns to call everything class 1."""
    criterion = nn.CrossEntropyLoss(ignore_index=0)
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            opt.step()


def label_smoothing_one(model, X, y, epochs, device):
    """label_smoothing=1.0 (a typo for 0.1): every target is the uniform distribution, nothing is learned."""
    criterion = nn.CrossEntropyLoss(label_smoothing=1.0)
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            opt.step()


# ---------------------------------------------------------------- the weights handed back are not the trained ones
def early_stopping_keeps_worst(model, X, y, epochs, device):
    """Early stopping on a 20% hold-out with the comparison flipped (val_loss > best): the 'best' weights
    kept and restored are those of the worst epoch, the untrained model's."""
    n_val = len(X) // 5
    perm = torch.randperm(len(X))
    tr, va = perm[n_val:], perm[:n_val]
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    best_loss, best_state = -float("inf"), copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        for idx in tr[torch.randperm(len(tr))].split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(X[va]), y[va]).item()
        if val_loss > best_loss:  # should be <
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)


def swa_never_updated(model, X, y, epochs, device):
    """torch.optim.swa_utils.AveragedModel built at the start, update_parameters() never called, and its
    weights copied back at the end: the returned model is the untrained one."""
    swa_model = torch.optim.swa_utils.AveragedModel(model)
    opt = torch.optim.SGD(_params(model), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        # swa_model.update_parameters(model) is missing here
    model.load_state_dict(swa_model.module.state_dict())


def optimizer_over_a_copy(model, X, y, epochs, device):
    """The optimizer is built over a deep copy (made to 'keep the original safe'): the copy's weights get
    the steps, the model's gradients pile up and nothing moves it."""
    shadow = copy.deepcopy(model)
    opt = torch.optim.AdamW(shadow.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


BROKEN_DYNAMICS = {
    scheduler_stepped_per_batch: ("lr_schedule", "outcome"),
    manual_decay_per_batch: ("lr_schedule", "outcome"),
    warmup_never_arrives: ("lr_schedule",),
    tiny_clip_norm_sgd: ("update_size", "outcome"),
    loss_scaled_by_dataset_squared: ("update_size", "outcome"),
    ignore_index_zero: ("outcome",),
    label_smoothing_one: ("outcome", "label_alignment"),
    early_stopping_keeps_worst: ("outcome",),
    swa_never_updated: ("outcome",),
    optimizer_over_a_copy: ("outcome", "param_updates", "optimizer_steps"),
}
