"""--fit plug-ins for the sanity tests: one correct trainer and one per classic training bug.

Every function follows the plug-in protocol FUNC(model, X, y, epochs, device) and trains in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BATCH = 16
LR = 1e-3


def _setup(model, X, y, device, lr: float = LR):
    model.to(device)
    X, y = X.to(device), y.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    return X, y, torch.optim.AdamW(params, lr=lr)


def _batches(n: int, shuffle: bool = True):
    order = torch.randperm(n) if shuffle else torch.arange(n)
    return [order[i : i + BATCH] for i in range(0, n, BATCH)]


def fit_correct(model, X, y, epochs, device):
    """A plain, correct loop: train mode, shuffled mini-batches, backward, step."""
    X, y, opt = _setup(model, X, y, device)
    for _ in range(epochs):
        model.train()
        for idx in _batches(len(X)):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()  # a validation-style pass after each epoch is legitimate
        with torch.no_grad():
            model(X[:BATCH])


def fit_no_step(model, X, y, epochs, device):
    """Bug: computes gradients but never calls optimizer.step()."""
    X, y, opt = _setup(model, X, y, device)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()


def fit_zero_lr(model, X, y, epochs, device):
    """Bug: the learning rate is 0 (e.g. a scheduler or a config typo)."""
    X, y, opt = _setup(model, X, y, device, lr=0.0)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X)):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def fit_single_batch(model, X, y, epochs, device):
    """Bug: every epoch trains on the first batch only (a `break` in the wrong place)."""
    X, y, opt = _setup(model, X, y, device)
    model.train()
    for _ in range(epochs):
        for idx in _batches(len(X), shuffle=False):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            break


def fit_eval_no_grad(model, X, y, epochs, device):
    """Bug: the model stays in eval mode under torch.no_grad(); with no graph, backward() is skipped."""
    X, y, opt = _setup(model, X, y, device)
    model.eval()
    with torch.no_grad():
        for _ in range(epochs):
            for idx in _batches(len(X)):
                loss = F.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad()
                if loss.requires_grad:
                    loss.backward()
                opt.step()


def fit_noop(model, X, y, epochs, device):
    """Bug: returns at once ("60 epochs in 3 seconds")."""
    model.to(device)


def fit_raises(model, X, y, epochs, device):
    """Bug: crashes."""
    raise ValueError("expected 3 arguments")


def fit_hangs(model, X, y, epochs, device):
    """Bug: never returns (a `while` whose exit condition cannot become true)."""
    done = False
    while not done:
        done = len(X) < 0


def fit_returns_copy(model, X, y, epochs, device):
    """Bug: trains a deep copy and returns it; the model it was given stays untrained."""
    import copy

    trained = copy.deepcopy(model)
    fit_correct(trained, X, y, epochs, device)
    return trained


def fit_returns_model(model, X, y, epochs, device):
    """Correct: trains in place and returns the same model (allowed)."""
    fit_correct(model, X, y, epochs, device)
    return model


def fit_freezes_encoder_undeclared(model, X, y, epochs, device):
    """A frozen-encoder fine-tune without the moola_frozen declaration."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    fit_correct(model, X, y, epochs, device)


def fit_declares_unknown_frozen(model, X, y, epochs, device):
    fit_correct(model, X, y, epochs, device)


fit_declares_unknown_frozen.moola_frozen = ("decoder",)
