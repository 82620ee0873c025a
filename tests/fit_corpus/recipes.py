"""Standard recipes written as other people write them (PyTorch tutorials and torch.optim docs, the
swa_utils docs, the reference SAM implementation's README, Keras/Lightning-style loops): none may FAIL or WARN.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

BATCH = 16


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def early_stopping_restore_best(model, X, y, epochs, device):
    """Early stopping on an internal 20% hold-out, patience 2, the best epoch's weights restored (the
    'keep the best model' pattern of the PyTorch transfer-learning tutorial)."""
    n_val = max(1, len(X) // 5)
    perm = torch.randperm(len(X))
    train_ds = TensorDataset(X[perm[n_val:]], y[perm[n_val:]])
    X_val, y_val = X[perm[:n_val]], y[perm[:n_val]]
    loader = DataLoader(train_ds, batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.Adam(_params(model), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    best_loss, best_wts, bad_epochs = float("inf"), copy.deepcopy(model.state_dict()), 0
    for _epoch in range(epochs):
        model.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = criterion(model(X_val), y_val).item()
        if val_loss < best_loss:
            best_loss, best_wts, bad_epochs = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= 2:
                break
    model.load_state_dict(best_wts)


def weighted_random_sampler(model, X, y, epochs, device):
    """Class-balanced batches with torch's WeightedRandomSampler (replacement=True, its default)."""
    counts = torch.bincount(y, minlength=2).double()
    weights = (1.0 / counts.clamp(min=1))[y]
    sampler = WeightedRandomSampler(weights, num_samples=len(y), replacement=True)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, sampler=sampler)
    optimizer = torch.optim.AdamW(_params(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()


def randint_batches(model, X, y, epochs, device):
    """Bootstrap batches drawn with torch.randint (with replacement, like a uniform WeightedRandomSampler):
    within one epoch some windows repeat, over the run every window is seen."""
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(X), BATCH):
            idx = torch.randint(len(X), (min(BATCH, len(X) - start),))
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def swa_utils_recipe(model, X, y, epochs, device):
    """Stochastic weight averaging as in the torch.optim.swa_utils docs: SGD, AveragedModel updated each
    epoch from swa_start, SWALR, the averaged weights copied back (no BatchNorm, so no update_bn)."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.SGD(_params(model), lr=0.05, momentum=0.9)
    swa_model = torch.optim.swa_utils.AveragedModel(model)
    swa_start = epochs // 2
    swa_scheduler = torch.optim.swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        for inputs, target in loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), target).backward()
            optimizer.step()
        if epoch >= swa_start:
            swa_model.update_parameters(model)
            swa_scheduler.step()
    model.load_state_dict(swa_model.module.state_dict())


def ema_weights(model, X, y, epochs, device):
    """An exponential moving average of the weights (swa_utils.get_ema_multi_avg_fn), updated every step
    and copied into the model at the end; the decay suits a run of this length."""
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.5)
    )
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            ema.update_parameters(model)
    model.load_state_dict(ema.module.state_dict())


def one_cycle_adamw_per_step(model, X, y, epochs, device):
    """AdamW under OneCycleLR stepped after every batch, total_steps = epochs x batches (as documented)."""
    batches = -(-len(X) // BATCH)
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * batches)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()


def warmup_cosine_per_step(model, X, y, epochs, device):
    """Linear warm-up then cosine decay (SequentialLR), both sized in steps and stepped per batch
    (the transformers-style schedule)."""
    batches = -(-len(X) // BATCH)
    total = epochs * batches
    warm = max(1, total // 10)
    opt = torch.optim.AdamW(_params(model), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm),
        ],
        milestones=[warm],
    )
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization as in the reference implementation (davda54/sam): first_step perturbs
    the weights toward higher loss, second_step restores them and lets the base optimizer step."""

    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        grad_norm = torch.norm(
            torch.stack(
                [p.grad.norm(p=2) for g in self.param_groups for p in g["params"] if p.grad is not None]
            ),
            p=2,
        )
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_(p.grad * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()


def sam_recipe(model, X, y, epochs, device):
    """SAM over AdamW, used as its README shows: forward/backward, first_step, forward/backward, second_step."""
    optimizer = SAM(_params(model), torch.optim.AdamW, rho=0.05, lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(BATCH):
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.first_step(zero_grad=True)
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.second_step(zero_grad=True)


def accumulate_four_dataloader(model, X, y, epochs, device):
    """Gradient accumulation over 4 micro-batches of 4 from a DataLoader, the loss divided by 4 (the
    accelerate / transformers habit), a step and zero_grad every 4th batch and at the epoch's end."""
    accum = 4
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH // accum, shuffle=True)
    opt = torch.optim.AdamW(_params(model), lr=1e-3)
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        for step, (xb, yb) in enumerate(loader, 1):
            (F.cross_entropy(model(xb), yb) / accum).backward()
            if step % accum == 0 or step == len(loader):
                opt.step()
                opt.zero_grad()


class LitStyle:
    """A Lightning-shaped module: training_step / validation_step / configure_optimizers, driven by a tiny
    trainer loop with a Keras-style validation_split of 0.2 (no early stopping) and a per-epoch scheduler."""

    def __init__(self, model):
        self.model = model

    def configure_optimizers(self):
        opt = torch.optim.Adam(_params(self.model), lr=1e-3)
        return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)

    def training_step(self, batch):
        x, t = batch
        return F.cross_entropy(self.model(x), t)

    @torch.no_grad()
    def validation_step(self, batch):
        x, t = batch
        return F.cross_entropy(self.model(x), t).item()


def lightning_style(model, X, y, epochs, device):
    module = LitStyle(model)
    opt, sched = module.configure_optimizers()
    n_val = len(X) // 5
    train_ds, val = TensorDataset(X[:-n_val], y[:-n_val]), (X[-n_val:], y[-n_val:])
    loader = DataLoader(train_ds, batch_size=BATCH, shuffle=True)
    for _ in range(epochs):
        model.train()
        for batch in loader:
            loss = module.training_step(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        module.validation_step(val)


RECIPES = (
    early_stopping_restore_best,
    weighted_random_sampler,
    randint_batches,
    swa_utils_recipe,
    ema_weights,
    one_cycle_adamw_per_step,
    warmup_cosine_per_step,
    sam_recipe,
    accumulate_four_dataloader,
    lightning_style,
)
