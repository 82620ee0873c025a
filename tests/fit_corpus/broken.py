"""Broken training functions: each hides one silent bug that still "trains", and names the sanity finding
that must FAIL for it (``BROKEN``: function -> finding)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH = 16


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _batches(n):
    return torch.randperm(n).split(BATCH)


# ---------------------------------------------------------------- gradients not cleared between steps
def no_zero_grad(model, X, y, epochs, device):
    """zero_grad() forgotten: every step applies the sum of all gradients so far."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def zero_grad_once_per_epoch(model, X, y, epochs, device):
    """zero_grad() at the top of the epoch instead of per batch (DataLoader, SGD with momentum)."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    opt = torch.optim.SGD(_trainable(model), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        for xb, yb in loader:
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


def zero_grad_between_backward_and_step(model, X, y, epochs, device):
    """zero_grad() moved between backward() and step(): every step applies zero gradients."""
    opt = torch.optim.Adam(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.zero_grad()
            opt.step()


class _AccumulatingTrainer:
    """Gradient accumulation over 2 micro-batches whose zero_grad() never happens (an accumulation that never ends)."""

    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.AdamW(_trainable(model), lr=1e-3)

    def run(self, X, y, epochs):
        self.model.train()
        for _ in range(epochs):
            for i, idx in enumerate(torch.randperm(len(X)).split(BATCH // 2)):
                (F.cross_entropy(self.model(X[idx]), y[idx]) / 2).backward()
                if i % 2 == 1:
                    self.opt.step()  # the zero_grad() that belongs here is missing


def accumulation_never_cleared(model, X, y, epochs, device):
    _AccumulatingTrainer(model).run(X, y, epochs)


# ---------------------------------------------------------------- a loss that cannot reach zero
def softmax_into_cross_entropy(model, X, y, epochs, device):
    """Softmax outputs fed to F.cross_entropy, which applies log-softmax again."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            probs = F.softmax(model(X[idx]), dim=1)
            loss = F.cross_entropy(probs, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


class _SoftmaxTrainer:
    """A class with nn.CrossEntropyLoss behind a model wrapper that ends in nn.Softmax, with StepLR."""

    def __init__(self, model):
        self.net = nn.Sequential(model, nn.Softmax(dim=1))
        self.criterion = nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(_trainable(model), lr=1e-3)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=1, gamma=0.9)

    def fit(self, X, y, epochs):
        for _ in range(epochs):
            self.net.train()
            for idx in _batches(len(X)):
                self.opt.zero_grad()
                self.criterion(self.net(X[idx]), y[idx]).backward()
                self.opt.step()
            self.sched.step()


def softmax_module_into_ce_loss(model, X, y, epochs, device):
    _SoftmaxTrainer(model).fit(X, y, epochs)


def nll_on_probabilities(model, X, y, epochs, device):
    """nll_loss on softmax probabilities (it expects log-probabilities)."""
    opt = torch.optim.SGD(_trainable(model), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.nll_loss(torch.softmax(model(X[idx]), dim=1), y[idx]).backward()
            opt.step()


def nll_on_raw_logits(model, X, y, epochs, device):
    """nn.NLLLoss on raw logits (the log_softmax is missing): unbounded below."""
    criterion = nn.NLLLoss()
    opt = torch.optim.Adam(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            opt.step()


def sigmoid_into_bce_with_logits(model, X, y, epochs, device):
    """Sigmoid outputs fed to BCEWithLogitsLoss, which applies its own sigmoid (DataLoader)."""
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    criterion = nn.BCEWithLogitsLoss()
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            probs = torch.sigmoid(model(xb))
            opt.zero_grad()
            criterion(probs, F.one_hot(yb, probs.shape[1]).float()).backward()
            opt.step()


# ---------------------------------------------------------------- labels detached from their windows
def _plain(model, X, y, epochs, lr=1e-3):
    opt = torch.optim.AdamW(_trainable(model), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def labels_permuted(model, X, y, epochs, device):
    """y shuffled on its own ("shuffle the training set") while X keeps its order."""
    _plain(model, X, y[torch.randperm(len(y))], epochs)


def labels_constant(model, X, y, epochs, device):
    """Every target is class 0 (a label column read as the wrong field)."""
    _plain(model, X, torch.zeros_like(y), epochs)


def labels_shifted(model, X, y, epochs, device):
    """Labels misaligned by one window (an off-by-one when building targets), via a DataLoader."""
    loader = DataLoader(TensorDataset(X, torch.roll(y, 1)), batch_size=BATCH, shuffle=True)
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


def separate_shuffles(model, X, y, epochs, device):
    """Windows and labels each drawn through their own permutation every epoch."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        xi, yi = torch.randperm(len(X)), torch.randperm(len(y))
        for s in range(0, len(X), BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[xi[s : s + BATCH]]), y[yi[s : s + BATCH]]).backward()
            opt.step()


# ---------------------------------------------------------------- divergence
def sgd_huge_lr(model, X, y, epochs, device):
    """SGD at lr 50 (a units slip: 5e1 for 5e-1)."""
    opt = torch.optim.SGD(_trainable(model), lr=50.0)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def gradient_ascent(model, X, y, epochs, device):
    """The loss's sign flipped (a "score" maximised with a minimiser): the loss grows."""
    opt = torch.optim.Adam(_trainable(model), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            (-F.cross_entropy(model(X[idx]), y[idx])).backward()
            opt.step()


def per_class_mean_nan(model, X, y, epochs, device):
    """A per-class averaged loss: a batch without some class averages over nothing -> NaN, then NaN weights."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.arange(len(X))[torch.argsort(y, stable=True)].split(BATCH):
            out, yb = model(X[idx]), y[idx]
            loss = sum(F.cross_entropy(out[yb == c], yb[yb == c]) for c in range(out.shape[1]))
            opt.zero_grad()
            loss.backward()
            opt.step()


# ---------------------------------------------------------------- parameters changed outside the optimizer
def reinit_head_each_epoch(model, X, y, epochs, device):
    """The classifier re-initialised at the start of every epoch (setup code inside the epoch loop)."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for layer in model.classifier.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def clamp_weights_after_step(model, X, y, epochs, device):
    """Every weight clipped into [-0.02, 0.02] after each step (a misplaced constraint)."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            with torch.no_grad():
                for p in _trainable(model):
                    p.clamp_(-0.02, 0.02)


def restore_stale_checkpoint(model, X, y, epochs, device):
    """ "Keep the best weights", but the best is never updated: each epoch starts again from the initial weights."""
    best = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    for _ in range(epochs):
        model.load_state_dict(best)
        model.train()
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


# ---------------------------------------------------------------- weights collapsing toward zero
def huge_weight_decay(model, X, y, epochs, device):
    """AdamW weight_decay=50 (meant 5e-2 ... 5e-4): lr*wd = 0.5 shrinks every weight by half per step."""
    _plain_opt = torch.optim.AdamW(_trainable(model), lr=1e-2, weight_decay=50.0)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            _plain_opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            _plain_opt.step()


def l2_penalty_dominates(model, X, y, epochs, device):
    """A hand-written L2 penalty with its coefficient off by orders of magnitude (SGD)."""
    opt = torch.optim.SGD(_trainable(model), lr=0.05)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            penalty = sum((p**2).sum() for p in _trainable(model))
            loss = F.cross_entropy(model(X[idx]), y[idx]) + 5.0 * penalty
            opt.zero_grad()
            loss.backward()
            opt.step()


# ---------------------------------------------------------------- coverage
def half_the_windows_twice(model, X, y, epochs, device):
    """An index bug: each epoch walks the first half of the windows twice (N samples, N/2 distinct)."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    half = len(X) // 2
    for _ in range(epochs):
        order = torch.cat([torch.randperm(half), torch.randperm(half)])
        for idx in order.split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


# ---------------------------------------------------------------- earlier families (kept)
def optimizer_over_last_layer(model, X, y, epochs, device):
    """The optimizer holds only the classifier's last layer; the encoder never moves."""
    last = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
    opt = torch.optim.AdamW(last.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def detached_logits(model, X, y, epochs, device):
    """Logits detached before the loss, plus a tiny auxiliary term that keeps backward() running."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            logits = model(X[idx])
            loss = (
                F.cross_entropy(logits.detach().requires_grad_(), y[idx])
                + 0.0 * model.classifier[0].weight.sum()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()


def trains_in_eval_mode(model, X, y, epochs, device):
    """model.eval() left on from a validation pass: the training forwards run in eval mode."""
    opt = torch.optim.AdamW(_trainable(model), lr=1e-3)
    for _ in range(epochs):
        model.eval()
        for idx in _batches(len(X)):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


BROKEN = {
    no_zero_grad: "grad_clearing",
    zero_grad_once_per_epoch: "grad_clearing",
    zero_grad_between_backward_and_step: "grad_clearing",
    accumulation_never_cleared: "grad_clearing",
    softmax_into_cross_entropy: "loss_inputs",
    softmax_module_into_ce_loss: "loss_inputs",
    nll_on_probabilities: "loss_inputs",
    nll_on_raw_logits: "loss_inputs",
    sigmoid_into_bce_with_logits: "loss_inputs",
    labels_permuted: "label_alignment",
    labels_constant: "label_alignment",
    labels_shifted: "label_alignment",
    separate_shuffles: "label_alignment",
    sgd_huge_lr: "divergence",
    gradient_ascent: "divergence",
    per_class_mean_nan: "divergence",
    reinit_head_each_epoch: "outside_updates",
    clamp_weights_after_step: "outside_updates",
    restore_stale_checkpoint: "outside_updates",
    huge_weight_decay: "weight_norm",
    l2_penalty_dominates: "weight_norm",
    half_the_windows_twice: "coverage",
    optimizer_over_last_layer: "param_updates",
    detached_logits: "gradients",
    trains_in_eval_mode: "train_mode",
}
