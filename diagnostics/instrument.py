"""Watch ANY training function train a model, without touching its loop.

``with Instrument(model, X_ref, y_ref) as rec: fit(model, X, y, epochs, device)`` fills a ``Recording`` from
hooks:

- global optimizer step hooks (torch.optim.optimizer.register_optimizer_step_pre/post_hook): steps taken by
  every optimizer that holds one of the model's parameters, the lr of each step, the gradient norm just
  before it, whether the gradients it applies were cleared since the previous step, how many forwards fed
  it (gradient accumulation), and whether parameters changed between two steps (outside any optimizer);
- forward pre/post hooks on the model: calls, samples (batch dim of the input), train/eval mode,
  ``torch.is_grad_enabled()``, the input devices seen by the model's forward (``input_devices``), time spent
  inside forward; given the training rows (``X_ref``), which training windows each forward carried (exact
  row hashes of the float bits, vectorized) and, from the gradient the loss sends back into the logits, which
  class the loss pushed each of them toward (the label it was trained on; ``dL/dz_c < 0`` for the target
  class of any cross-entropy-like loss while predictions are not yet confident, so only the first epoch's
  worth of windows is read);
- per-parameter gradient hooks: which parameters ever received a non-zero gradient, and whether ``.grad``
  still held a previous step's gradient when the first backward after a step arrived;
- a TorchFunctionMode that sees the inputs and values of the standard loss functions (cross_entropy,
  nll_loss, binary_cross_entropy[_with_logits]): probabilities fed to a loss that applies its own
  (log-)softmax or sigmoid, non-log-probabilities fed to nll_loss, and the loss per call;
- parameter snapshots before/after: which parameters changed, by how much, their total norm, finiteness.

Everything per step stays on the device (no host sync inside the user's loop); it is read once on exit.
A black-box fit has no visible epochs, so timing is total wall time split into forward, backward+step
(from the last forward's end to the optimizer step's end) and everything else (data handling, Python,
evaluation). On CUDA these are host-side times (kernels run asynchronously). Every hook is removed on exit,
exceptions included.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

# Loss functions whose input must be logits (they apply their own log-softmax / sigmoid) or log-probabilities.
_LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy")


@dataclass
class Recording:
    """What one instrumented training run did (see module doc)."""

    optimizer_hooks: bool = False  # global optimizer hooks were available in this torch
    grad_hooks: str = "none"  # "tensor" | "none"
    optimizer_steps: int = 0  # steps of optimizers holding the model's parameters
    other_optimizer_steps: int = 0  # steps of optimizers that hold none of them
    lrs: list[float] = field(default_factory=list)  # per step: max lr over the model's param groups
    forward_calls: int = 0
    forward_calls_train: int = 0  # model.training and grad enabled: forwards that can train
    forward_calls_eval_mode: int = 0  # model.training False
    forward_calls_no_grad: int = 0  # grad disabled (no_grad or inference_mode)
    samples_seen: int = 0  # batch items over all forwards
    samples_seen_train: int = 0  # batch items over training forwards
    batch_sizes_train: list[int] = field(default_factory=list)
    # Devices of the inputs seen by the model's forward (the gpu check's placement verdict reads this).
    input_devices: set[str] = field(default_factory=set)
    steps_after_eval_forward: int = 0  # steps whose most recent forward ran with model.eval()
    steps_after_no_grad_forward: int = 0  # steps whose most recent forward ran without grad
    steps_without_forward: int = 0  # steps with no forward since the previous step
    trainable: list[str] = field(default_factory=list)  # names of parameters with requires_grad at entry
    frozen_at_exit: list[str] = field(default_factory=list)  # trainable at entry, requires_grad False at exit
    grad_nonzero: list[str] = field(default_factory=list)  # received a non-zero gradient at least once
    grad_events: int = 0  # gradient accumulations observed
    changed: list[str] = field(default_factory=list)  # trainable parameters whose values changed
    max_abs_update: dict[str, float] = field(default_factory=dict)
    # ---- per optimizer step (index = step)
    forwards_per_step: list[int] = field(
        default_factory=list
    )  # grad-enabled forwards since the previous step
    backwards_per_step: list[int] = field(default_factory=list)  # backward passes since the previous step
    grad_norms: list[float] = field(default_factory=list)  # L2 norm of the model's .grad just before the step
    stale_grad_steps: int = (
        0  # steps whose first backward found .grad still holding an earlier step's gradient
    )
    stale_checked_steps: int = 0  # steps after the first that had a backward (where staleness is decidable)
    cleared_before_step: int = 0  # steps after a backward whose .grad was all zero/None (cleared too early)
    outside_change_intervals: int = 0  # between-step intervals in which parameters changed outside any step
    outside_intervals: int = 0  # between-step intervals observed
    outside_changed: list[str] = field(default_factory=list)  # parameters changed between steps
    outside_max_change: float = 0.0
    # ---- parameters at entry/exit
    param_norm_before: float = 0.0  # L2 norm over all trainable parameters
    param_norm_after: float = 0.0
    nonfinite_params: list[str] = field(default_factory=list)
    # ---- which training windows reached the model (needs X_ref)
    rows_reference: int = 0  # training windows given (0: rows not tracked)
    row_sequence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1 = unmatched
    implied_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    implied_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Training forwards that repeat the rows of an earlier forward feeding the same step (a closure
    # re-evaluated, sharpness-aware minimization's second pass): not new windows given to the optimizer.
    repeat_forwards: int = 0
    repeat_samples: int = 0
    distinct_forwards_per_step: list[int] = field(default_factory=list)
    # Training windows seen only by forwards that cannot train (eval mode or no gradients): a hold-out
    # the fit carved out of the rows it was given (early stopping on an internal validation split).
    held_out_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    eval_phases: int = 0  # runs of non-training forwards that follow training forwards (evaluation passes)
    # ---- dynamics, per optimizer step
    # ||w_k - w_{k-1}|| / ||w_{k-1}|| between consecutive step ends (w_0: the weights at entry): the NET
    # change between steps, whatever happened inside one (a perturb-and-restore optimizer included)
    update_ratios: list[float] = field(default_factory=list)
    lr_declared_peak: float = 0.0  # max over steps of the groups' initial_lr / max_lr set by schedulers
    # ---- loss function calls seen by the TorchFunctionMode (with gradients enabled)
    loss_calls: dict[str, int] = field(default_factory=dict)
    loss_prob_inputs: dict[str, int] = field(default_factory=dict)  # calls whose input rows are probabilities
    nll_not_log_prob: int = 0  # nll_loss calls whose input rows are not log-probabilities
    losses: list[float] = field(default_factory=list)  # scalar loss values in call order
    wall_s: float = 0.0
    forward_s: float = 0.0
    backward_step_s: float = 0.0
    exception: str | None = None  # "TypeError: ..." when the training function raised

    @property
    def grad_never(self) -> list[str]:
        return [n for n in self.trainable if n not in set(self.grad_nonzero)]

    @property
    def unchanged(self) -> list[str]:
        return [n for n in self.trainable if n not in set(self.changed)]

    @property
    def other_s(self) -> float:
        return max(0.0, self.wall_s - self.forward_s - self.backward_step_s)

    @property
    def typical_train_batch(self) -> int:
        if not self.batch_sizes_train:
            return 0
        return max(self.batch_sizes_train)

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step: the median over steps, at least 1. Forwards over rows already
        fed to the same step are not new micro-batches (a re-evaluated closure, SAM's second pass)."""
        fps = [f for f in self.forwards_per_step if f > 0]
        if self.distinct_forwards_per_step and self.repeat_forwards:
            fps = [f for f in self.distinct_forwards_per_step if f > 0]
        return max(1, int(np.median(fps))) if fps else 1

    @property
    def samples_given_train(self) -> int:
        """Windows through training forwards, less those repeating a forward of the same step."""
        return self.samples_seen_train - self.repeat_samples


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value
    return None


def _implied_target(g: torch.Tensor) -> torch.Tensor:
    """The class each row's loss gradient pushes up (argmin of dL/dz), or -1 where the gradient is all zero
    (a saturated row carries no information about its target)."""
    import torch

    return torch.where(
        g.abs().sum(dim=1) > 0, g.argmin(dim=1), torch.full_like(g[:, 0], -1, dtype=torch.int64)
    )


def _norms(tensors: list[torch.Tensor], order: float) -> list[torch.Tensor]:
    """Per-tensor norms in one fused call where torch offers it (per step, so it matters), else one by one."""
    import torch

    try:
        return list(torch._foreach_norm(tensors, order))
    except (AttributeError, RuntimeError, TypeError):
        return [torch.linalg.vector_norm(t.float(), order) for t in tensors]


def _max_moves(params: list[torch.Tensor], snapshot: list[torch.Tensor], dev: torch.device) -> torch.Tensor:
    """Largest absolute change of each parameter since its snapshot: a (P,) tensor on ``dev``."""
    import torch

    same = all(
        p.shape == s.shape and p.device == s.device and p.numel()
        for p, s in zip(params, snapshot, strict=True)
    )
    if same and params:
        diffs = torch._foreach_sub([p.detach() for p in params], snapshot)
        return torch.stack([n.float().to(dev) for n in _norms(diffs, float("inf"))])
    return torch.stack([_moved(p, s, dev) for p, s in zip(params, snapshot, strict=True)])


def _moved(p: torch.Tensor, snapshot: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Largest absolute change of ``p`` since ``snapshot`` (inf if it was resized), as a 0-d tensor on dev."""
    import torch

    if p.shape != snapshot.shape:
        return torch.full((), float("inf"), device=dev)
    if not p.numel():
        return torch.zeros((), device=dev)
    return (p.detach() - snapshot.to(p.device)).abs().max().float().to(dev)


def net_change(now: list[torch.Tensor], prev: list[torch.Tensor]) -> torch.Tensor:
    """(||now - prev||^2, ||prev||^2) over all parameters, as a (2,) float64 tensor on the first one's device."""
    import torch

    if not now:
        return torch.zeros(2, dtype=torch.float64)
    dev = now[0].device
    same = all(a.shape == b.shape and a.device == b.device for a, b in zip(now, prev, strict=True))
    if not same:
        return torch.tensor([float("inf"), 1.0], dtype=torch.float64, device=dev)
    diffs = torch._foreach_sub(now, prev)
    d = torch.stack([n.double().to(dev) for n in _norms(diffs, 2.0)]).pow(2).sum()
    w = torch.stack([n.double().to(dev) for n in _norms(prev, 2.0)]).pow(2).sum()
    return torch.stack([d, w])


def row_hashes(X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact int64 hash per row of the float bits: sum(bits * w) with |bits| < 2^31 and w < 2^20, so no
    partial sum overflows and the value does not depend on batching or summation order."""
    import torch

    bits = X.detach().contiguous().reshape(X.shape[0], -1).view(torch.int32).to(torch.int64)
    return (bits * weights).sum(dim=1)


def update_ratios(squares: np.ndarray) -> list[float]:
    """Per step ||dw|| / ||w|| from rows of (||dw||^2, ||w||^2). A diverged step's inf/inf is NaN, which the
    nan-aware medians of the update_size finding leave out."""
    with np.errstate(invalid="ignore"):
        return (np.sqrt(squares[:, 0]) / np.sqrt(np.maximum(squares[:, 1], 1e-300))).tolist()


def _drop_mode(mode: Any) -> None:
    """Make sure ``mode`` is off torch's function-mode stack (an interrupted dispatch can leave it there),
    keeping any other mode in place: a leaked mode would intercept every later torch call."""
    import torch

    try:
        stack = list(torch.overrides._get_current_function_mode_stack())
        if not any(m is mode for m in stack):
            return
        above = []
        while stack:
            top = torch._C._pop_torch_function_stack()
            stack.pop()
            if top is mode:
                break
            above.append(top)
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)
    except (AttributeError, RuntimeError):  # private API moved: the suppress above did what it could
        return


class _LossWatch:
    """A TorchFunctionMode (built lazily: torch is imported only when instrumenting) around the fit."""

    @staticmethod
    def make(instrument: Instrument) -> Any:
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        targets = {getattr(F, name): name for name in _LOSSES}

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                name = targets.get(func)
                if name is not None and torch.is_grad_enabled():
                    inp = args[0] if args else kwargs.get("input")
                    if isinstance(inp, torch.Tensor) and isinstance(out, torch.Tensor):
                        instrument._loss_call(name, inp, out)
                return out

        return Mode()


class Instrument:
    """Context manager recording how ``model`` is trained by whatever runs inside it.

    ``X_ref``/``y_ref`` (optional): the training windows handed to the fit, to identify which of them each
    forward carries and which label the loss trained each on.
    """

    def __init__(
        self, model: nn.Module, X_ref: torch.Tensor | None = None, y_ref: torch.Tensor | None = None
    ):
        self.model = model
        self.recording = Recording()
        self._handles: list[Any] = []
        self._flags: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._param_ids: set[int] = set()
        self._params: list[tuple[str, torch.Tensor]] = []
        self._t_start = 0.0
        self._fwd_start: float | None = None
        self._last_fwd_end: float | None = None
        self._last_fwd_mode: tuple[bool, bool] | None = None  # (training, grad_enabled)
        self._fwd_since_step = 0
        self._grad_fwd_since_step = 0
        self._step_t0: float | None = None
        self._step_counts = False
        self._X_ref, self._y_ref = X_ref, y_ref
        self._ref_sorted: np.ndarray | None = None
        self._ref_order: np.ndarray | None = None
        self._hash_w: dict[str, torch.Tensor] = {}
        self._row_hashes: list[torch.Tensor] = []
        self._implied: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        self._implied_budget = 0
        self._steps_done = 0
        self._seen_since_step: set[str] = set()
        self._events_since_step = 0
        self._stale_now: dict[str, torch.Tensor] = {}
        self._fresh_nonzero: list[torch.Tensor] = []  # this step interval's backward produced a non-zero grad
        self._stale: list[torch.Tensor] = []
        self._cleared: list[torch.Tensor] = []
        self._gnorms: list[torch.Tensor] = []
        self._snapshot: list[torch.Tensor] | None = None
        self._outside: list[torch.Tensor] = []
        self._outside_max: torch.Tensor | None = None
        self._loss_vals: list[torch.Tensor] = []
        self._prob_flags: list[tuple[str, torch.Tensor]] = []
        self._nll_flags: list[torch.Tensor] = []
        self._mode: Any = None
        self._pending_hash: torch.Tensor | None = None
        self._fwd_meta: list[tuple[int, int]] = []  # per hashed training forward: (step index, rows)
        self._eval_hashes: list[torch.Tensor] = []
        self._in_train_phase = False
        self._updates: list[torch.Tensor] = []  # per step: (||delta||^2, ||w_prev||^2)

    # ---------------------------------------------------------------- hooks
    def _hash_weights(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        key = str(x.device)
        if key not in self._hash_w:
            gen = torch.Generator().manual_seed(0x5EED)
            w = torch.randint(1, 2**20, (int(np.prod(x.shape[1:])),), generator=gen, dtype=torch.int64)
            self._hash_w[key] = w.to(x.device)
        return self._hash_w[key]

    def _forward_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        rec = self.recording
        grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        training = bool(module.training)
        x = _first_tensor(args, kwargs)
        n = int(x.shape[0]) if x is not None else 0
        rec.forward_calls += 1
        rec.samples_seen += n
        if x is not None:
            rec.input_devices.add(str(x.device))
        if not training:
            rec.forward_calls_eval_mode += 1
        if not grad:
            rec.forward_calls_no_grad += 1
        if training and grad:
            rec.forward_calls_train += 1
            rec.samples_seen_train += n
            rec.batch_sizes_train.append(n)
            self._in_train_phase = True
        elif self._in_train_phase:
            rec.eval_phases += 1
            self._in_train_phase = False
        self._pending_hash = None
        ref = self._X_ref
        hashable = (
            ref is not None
            and x is not None
            and x.dtype == torch.float32
            and tuple(x.shape[1:]) == tuple(ref.shape[1:])
        )
        if grad:
            self._grad_fwd_since_step += 1
            if training and hashable:
                h = row_hashes(x, self._hash_weights(x))
                self._row_hashes.append(h)
                self._fwd_meta.append((rec.optimizer_steps, n))
                self._pending_hash = h
        if not (training and grad) and hashable:
            self._eval_hashes.append(row_hashes(x, self._hash_weights(x)))
        self._last_fwd_mode = (training, grad)
        self._fwd_since_step += 1
        self._fwd_start = time.perf_counter()

    def _forward_post(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        now = time.perf_counter()
        if self._fwd_start is not None:
            self.recording.forward_s += now - self._fwd_start
        self._fwd_start = None
        self._last_fwd_end = now
        h, self._pending_hash = self._pending_hash, None
        logits = output[0] if isinstance(output, tuple) and output else output
        if h is None or self._implied_budget <= 0 or not hasattr(logits, "register_hook"):
            return
        if not logits.requires_grad or logits.dim() != 2 or logits.shape[0] != h.shape[0]:
            return
        # The loss's gradient w.r.t. the logits: dL/dz_c < 0 pushes class c up, i.e. c is the target.
        self._implied_budget -= int(h.shape[0])
        slot: list[torch.Tensor] = []
        self._implied.append((h, slot))
        logits.register_hook(lambda g, slot=slot: slot.append(_implied_target(g.detach())))

    def _holds_model_params(self, optimizer: Any) -> list[dict[str, Any]]:
        return [g for g in optimizer.param_groups if any(id(p) in self._param_ids for p in g["params"])]

    def _step_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        rec = self.recording
        groups = self._holds_model_params(optimizer)
        self._step_counts = bool(groups)
        if not groups:
            rec.other_optimizer_steps += 1
            return
        rec.optimizer_steps += 1
        rec.lrs.append(max(float(g.get("lr", 0.0)) for g in groups))
        # Schedulers record the lr they start from (initial_lr) and OneCycleLR its peak (max_lr).
        declared = max(float(g.get(k) or 0.0) for g in groups for k in ("initial_lr", "max_lr"))
        rec.lr_declared_peak = max(rec.lr_declared_peak, declared)
        if self._fwd_since_step == 0 or self._last_fwd_mode is None:
            rec.steps_without_forward += 1
        else:
            training, grad = self._last_fwd_mode
            rec.steps_after_eval_forward += int(not training)
            rec.steps_after_no_grad_forward += int(not grad)
        rec.forwards_per_step.append(self._grad_fwd_since_step)
        n_backward = self._events_since_step // max(1, len(self._seen_since_step))
        rec.backwards_per_step.append(n_backward)
        # Only the gradients this optimizer applies: a parameter outside it may keep any .grad it likes.
        held = {id(p) for g in groups for p in g["params"]}
        mine = [(n, p) for n, p in self._params if id(p) in held]
        grads = [p.grad for _, p in mine if p.grad is not None]
        dev = self._params[0][1].device if self._params else torch.device("cpu")
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([n.float().to(dev) for n in _norms(grads, 2.0)]))
        else:
            norm = torch.zeros((), device=dev)
        self._gnorms.append(norm)
        if n_backward > 0:
            if self._fresh_nonzero:
                fresh = torch.stack([f.to(dev) for f in self._fresh_nonzero]).any()
                # Backward produced non-zero gradients, yet the step sees none: cleared in between.
                self._cleared.append(fresh & (norm == 0))
            names = {m for m, _ in mine}
            stale = [f.to(dev) for n, f in self._stale_now.items() if n in names]
            if stale:
                self._stale.append(torch.stack(stale).any())
        # Parameters that moved since the previous step's end moved outside any optimizer step.
        if self._snapshot is not None:
            diffs = _max_moves([p for _, p in self._params], self._snapshot, dev)
            self._outside.append(diffs.max() > 0)
            self._outside_max = (
                diffs if self._outside_max is None else torch.maximum(self._outside_max, diffs)
            )
        self._stale_now = {}
        self._fresh_nonzero = []
        self._seen_since_step = set()
        self._events_since_step = 0
        self._grad_fwd_since_step = 0
        # backward + step: from the end of the forward that fed this step (or now) to the step's end
        self._step_t0 = self._last_fwd_end if self._fwd_since_step else time.perf_counter()
        self._fwd_since_step = 0

    def _step_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        if self._step_counts:
            self._steps_done += 1
            now = [p.detach() for _, p in self._params]
            prev = (
                self._snapshot if self._snapshot is not None else [self._before[n] for n, _ in self._params]
            )
            self._updates.append(net_change(now, prev))
            if self._snapshot is None:
                self._snapshot = [p.clone() for p in now]
            else:
                torch._foreach_copy_(self._snapshot, now)
            if self._step_t0 is not None:
                self.recording.backward_step_s += time.perf_counter() - self._step_t0
        self._step_t0 = None

    def _on_grad(self, name: str, param: torch.Tensor, grad: torch.Tensor | None) -> None:
        import torch

        if grad is None:
            return
        self.recording.grad_events += 1
        self._events_since_step += 1
        if name not in self._seen_since_step:
            self._seen_since_step.add(name)
            # Called before accumulation: a non-zero .grad at the first backward after a step was never cleared.
            if self._steps_done > 0:
                before = param.grad
                self._stale_now[name] = (
                    (before != 0).any()
                    if before is not None
                    else torch.zeros((), dtype=torch.bool, device=grad.device)
                )
        # Kept on the grad's device: no host sync per step.
        flag = (grad != 0).any()
        self._fresh_nonzero.append(flag)
        prev = self._flags.get(name)
        self._flags[name] = flag if prev is None else (prev.to(flag.device) | flag)

    def _loss_call(self, name: str, inp: torch.Tensor, out: torch.Tensor) -> None:
        import torch

        rec = self.recording
        rec.loss_calls[name] = rec.loss_calls.get(name, 0) + 1
        if out.dim() == 0 and out.requires_grad:
            self._loss_vals.append(out.detach().float())
        x = inp.detach()
        if not x.is_floating_point() or x.dim() < 1 or x.numel() == 0:
            return
        in_unit = ((x >= 0) & (x <= 1)).all()
        if name in ("cross_entropy", "nll_loss") and x.dim() >= 2:
            # Rows in [0, 1] summing to 1: softmax outputs (logits essentially never look like this).
            self._prob_flags.append((name, in_unit & ((x.sum(dim=1) - 1).abs() < 1e-4).all()))
            if name == "nll_loss":
                # nll_loss expects log-probabilities: every row's logsumexp is 0.
                self._nll_flags.append((torch.logsumexp(x.float(), dim=1).abs() > 1e-3).any())
        elif name == "binary_cross_entropy_with_logits":
            self._prob_flags.append((name, in_unit))

    # ---------------------------------------------------------------- context manager
    def __enter__(self) -> Recording:
        import torch.optim.optimizer as optim_mod

        rec = self.recording
        named = [(n, p) for n, p in self.model.named_parameters()]
        self._param_ids = {id(p) for _, p in named}
        self._params = [(n, p) for n, p in named if p.requires_grad]
        rec.trainable = [n for n, _ in self._params]
        self._before = {n: p.detach().clone() for n, p in self._params}
        if self._X_ref is not None:
            ref = self._X_ref.detach().cpu()
            h = row_hashes(ref, self._hash_weights(ref)).numpy()
            self._ref_order = np.argsort(h, kind="stable")
            self._ref_sorted = h[self._ref_order]
            rec.rows_reference = int(ref.shape[0])
            self._implied_budget = int(ref.shape[0])  # one epoch's worth of windows
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._forward_pre, with_kwargs=True))
            self._handles.append(self.model.register_forward_hook(self._forward_post, with_kwargs=True))
            pre = getattr(optim_mod, "register_optimizer_step_pre_hook", None)
            post = getattr(optim_mod, "register_optimizer_step_post_hook", None)
            if callable(pre) and callable(post):
                self._handles.append(pre(self._step_pre))
                self._handles.append(post(self._step_post))
                rec.optimizer_hooks = True
            # Tensor hooks run before the gradient is accumulated into .grad: they see both.
            rec.grad_hooks = "tensor"
            for name, p in self._params:
                self._handles.append(p.register_hook(lambda g, name=name, p=p: self._on_grad(name, p, g)))
            self._t_start = time.perf_counter()
            self._mode = _LossWatch.make(self)
            self._mode.__enter__()
            # Nothing runs after the push outside this ``try``: an exception there (the fit's time limit,
            # Ctrl-C) would skip ``__exit__`` and leave the mode on torch's stack.
            return rec
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            # An exception raised inside torch's mode dispatch (the fit's time limit, Ctrl-C) can unwind
            # past its re-push, leaving the mode already popped: then nothing is left to remove.
            with contextlib.suppress(RuntimeError):
                mode.__exit__(None, None, None)
            _drop_mode(mode)
        while self._handles:
            self._handles.pop().remove()

    def _finish_rows(self) -> None:
        """Map the recorded row hashes to training-row indices (one host transfer)."""
        import torch

        rec = self.recording
        if self._ref_sorted is None or self._ref_order is None:
            return

        def lookup(h: np.ndarray) -> np.ndarray:
            pos = np.clip(np.searchsorted(self._ref_sorted, h), 0, max(len(self._ref_sorted) - 1, 0))
            hit = self._ref_sorted[pos] == h if len(self._ref_sorted) else np.zeros(len(h), bool)
            return np.where(hit, self._ref_order[pos], -1).astype(np.int64)

        if self._row_hashes:
            rec.row_sequence = lookup(torch.cat([h.cpu() for h in self._row_hashes]).numpy())
            self._find_repeats(rec.row_sequence)
        if self._eval_hashes:
            evaluated = lookup(torch.cat([h.cpu() for h in self._eval_hashes]).numpy())
            trained = rec.row_sequence[rec.row_sequence >= 0]
            rec.held_out_rows = np.setdiff1d(evaluated[evaluated >= 0], trained)
        done = [(h, slot[0]) for h, slot in self._implied if slot]
        if done:
            rows = lookup(torch.cat([h.cpu() for h, _ in done]).numpy())
            labels = torch.cat([lab.cpu() for _, lab in done]).numpy().astype(np.int64)
            keep = (rows >= 0) & (labels >= 0)
            rec.implied_rows, rec.implied_labels = rows[keep], labels[keep]

    def _find_repeats(self, seq: np.ndarray) -> None:
        """Per step, the training forwards whose rows equal an earlier forward's feeding the same step."""
        rec = self.recording
        steps = max(rec.optimizer_steps, 1)
        distinct = [0] * (steps + 1)
        seen: dict[int, set[bytes]] = {}
        start = 0
        for step, n in self._fwd_meta:  # one entry per forward, not per window
            rows = seq[start : start + n].tobytes()
            start += n
            bucket = seen.setdefault(step, set())
            if rows in bucket:
                rec.repeat_forwards += 1
                rec.repeat_samples += n
            else:
                bucket.add(rows)
                distinct[min(step, steps)] += 1
        # index k: forwards feeding step k (0-based); the tail after the last step feeds none
        rec.distinct_forwards_per_step = distinct[: rec.optimizer_steps]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        import torch

        rec = self.recording
        rec.wall_s = time.perf_counter() - self._t_start
        self._remove()
        if exc is not None:
            rec.exception = f"{exc_type.__name__}: {exc}"
        rec.grad_nonzero = [n for n in rec.trainable if n in self._flags and bool(self._flags[n].item())]
        params = dict(self.model.named_parameters())
        rec.frozen_at_exit = [n for n in rec.trainable if n in params and not params[n].requires_grad]
        sq_before = sq_after = 0.0
        with torch.no_grad():
            for name, before in self._before.items():
                sq_before += float(before.double().pow(2).sum())
                p = params.get(name)
                if p is None:
                    continue
                now = p.detach().to(before.device)
                if not bool(torch.isfinite(now).all()):
                    rec.nonfinite_params.append(name)
                else:
                    sq_after += float(now.double().pow(2).sum())
                if now.shape != before.shape:
                    rec.changed.append(name)
                    continue
                delta = float((now - before).abs().max()) if now.numel() else 0.0
                rec.max_abs_update[name] = delta
                if delta > 0 or not torch.equal(now, before):
                    rec.changed.append(name)
        rec.param_norm_before, rec.param_norm_after = sq_before**0.5, sq_after**0.5
        if self._gnorms:
            rec.grad_norms = torch.stack([g.cpu() for g in self._gnorms]).tolist()
        rec.stale_checked_steps = len(self._stale)
        rec.stale_grad_steps = int(torch.stack([s.cpu() for s in self._stale]).sum()) if self._stale else 0
        rec.cleared_before_step = (
            int(torch.stack([c.cpu() for c in self._cleared]).sum()) if self._cleared else 0
        )
        rec.outside_intervals = len(self._outside)
        if self._outside:
            rec.outside_change_intervals = int(torch.stack([o.cpu() for o in self._outside]).sum())
        if self._outside_max is not None:
            per_param = self._outside_max.cpu().tolist()
            rec.outside_changed = [n for (n, _), d in zip(self._params, per_param, strict=False) if d > 0]
            rec.outside_max_change = max(per_param, default=0.0)
        if self._updates:
            u = torch.stack([v.cpu() for v in self._updates]).numpy()
            rec.update_ratios = update_ratios(u)
        if self._loss_vals:
            rec.losses = torch.stack([v.cpu() for v in self._loss_vals]).tolist()
        for name in {n for n, _ in self._prob_flags}:
            flags = torch.stack([f.cpu() for n, f in self._prob_flags if n == name])
            rec.loss_prob_inputs[name] = int(flags.sum())
        if self._nll_flags:
            rec.nll_not_log_prob = int(torch.stack([f.cpu() for f in self._nll_flags]).sum())
        self._finish_rows()
        self._before, self._flags, self._snapshot = {}, {}, None
        self._row_hashes, self._implied, self._loss_vals = [], [], []
        self._prob_flags, self._nll_flags, self._outside, self._gnorms = [], [], [], []
        self._fwd_meta, self._eval_hashes, self._updates = [], [], []
        return False
