"""Watch ANY training function train a model, without touching its loop.

``with Instrument(model) as rec: fit(model, X, y, epochs, device)`` fills a ``Recording`` from hooks:

- global optimizer step hooks (torch.optim.optimizer.register_optimizer_step_pre/post_hook): steps taken by
  every optimizer that holds one of the model's parameters, and the lr of each step;
- forward pre/post hooks on the model: calls, samples (batch dim of the input), train/eval mode,
  ``torch.is_grad_enabled()``, input device, time spent inside forward;
- per-parameter gradient hooks (post-accumulate-grad, else tensor hooks): which parameters ever received a
  non-zero gradient;
- parameter snapshots before/after: which parameters changed, and by how much.

A black-box fit has no visible epochs, so timing is total wall time split into forward, backward+step
(from the last forward's end to the optimizer step's end) and everything else (data handling, Python,
evaluation). On CUDA these are host-side times (kernels run asynchronously); nothing here synchronizes,
so instrumenting does not change what is measured. Every hook is removed on exit, exceptions included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Recording:
    """What one instrumented training run did (see module doc)."""

    optimizer_hooks: bool = False  # global optimizer hooks were available in this torch
    grad_hooks: str = "none"  # "post_accumulate" | "tensor" | "none"
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
    input_devices: set[str] = field(default_factory=set)
    steps_after_eval_forward: int = 0  # steps whose most recent forward ran with model.eval()
    steps_after_no_grad_forward: int = 0  # steps whose most recent forward ran without grad
    steps_without_forward: int = 0  # steps with no forward since the previous step
    trainable: list[str] = field(default_factory=list)  # names of parameters with requires_grad at entry
    grad_nonzero: list[str] = field(default_factory=list)  # received a non-zero gradient at least once
    grad_events: int = 0  # gradient accumulations observed
    changed: list[str] = field(default_factory=list)  # trainable parameters whose values changed
    max_abs_update: dict[str, float] = field(default_factory=dict)
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


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, str | None]:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0]), str(value.device)
    return 0, None


class Instrument:
    """Context manager recording how ``model`` is trained by whatever runs inside it."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.recording = Recording()
        self._handles: list[Any] = []
        self._flags: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._param_ids: set[int] = set()
        self._t_start = 0.0
        self._fwd_start: float | None = None
        self._last_fwd_end: float | None = None
        self._last_fwd_mode: tuple[bool, bool] | None = None  # (training, grad_enabled)
        self._fwd_since_step = 0
        self._step_t0: float | None = None
        self._step_counts = False

    # ---------------------------------------------------------------- hooks
    def _forward_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        rec = self.recording
        grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        training = bool(module.training)
        n, dev = _batch_size(args, kwargs)
        rec.forward_calls += 1
        rec.samples_seen += n
        if dev is not None:
            rec.input_devices.add(dev)
        if not training:
            rec.forward_calls_eval_mode += 1
        if not grad:
            rec.forward_calls_no_grad += 1
        if training and grad:
            rec.forward_calls_train += 1
            rec.samples_seen_train += n
            rec.batch_sizes_train.append(n)
        self._last_fwd_mode = (training, grad)
        self._fwd_since_step += 1
        self._fwd_start = time.perf_counter()

    def _forward_post(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        now = time.perf_counter()
        if self._fwd_start is not None:
            self.recording.forward_s += now - self._fwd_start
        self._fwd_start = None
        self._last_fwd_end = now

    def _holds_model_params(self, optimizer: Any) -> list[dict[str, Any]]:
        return [g for g in optimizer.param_groups if any(id(p) in self._param_ids for p in g["params"])]

    def _step_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        rec = self.recording
        groups = self._holds_model_params(optimizer)
        self._step_counts = bool(groups)
        if not groups:
            rec.other_optimizer_steps += 1
            return
        rec.optimizer_steps += 1
        rec.lrs.append(max(float(g.get("lr", 0.0)) for g in groups))
        if self._fwd_since_step == 0 or self._last_fwd_mode is None:
            rec.steps_without_forward += 1
        else:
            training, grad = self._last_fwd_mode
            rec.steps_after_eval_forward += int(not training)
            rec.steps_after_no_grad_forward += int(not grad)
        # backward + step: from the end of the forward that fed this step (or now) to the step's end
        self._step_t0 = self._last_fwd_end if self._fwd_since_step else time.perf_counter()
        self._fwd_since_step = 0

    def _step_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._step_counts and self._step_t0 is not None:
            self.recording.backward_step_s += time.perf_counter() - self._step_t0
        self._step_t0 = None

    def _grad_flag(self, name: str, grad: torch.Tensor | None) -> None:
        if grad is None:
            return
        self.recording.grad_events += 1
        # Kept on the grad's device: no host sync per step.
        flag = (grad != 0).any()
        prev = self._flags.get(name)
        self._flags[name] = flag if prev is None else (prev.to(flag.device) | flag)

    # ---------------------------------------------------------------- context manager
    def __enter__(self) -> Recording:
        import torch
        import torch.optim.optimizer as optim_mod

        rec = self.recording
        named = [(n, p) for n, p in self.model.named_parameters()]
        self._param_ids = {id(p) for _, p in named}
        rec.trainable = [n for n, p in named if p.requires_grad]
        self._before = {n: p.detach().clone() for n, p in named if p.requires_grad}
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._forward_pre, with_kwargs=True))
            self._handles.append(self.model.register_forward_hook(self._forward_post, with_kwargs=True))
            pre = getattr(optim_mod, "register_optimizer_step_pre_hook", None)
            post = getattr(optim_mod, "register_optimizer_step_post_hook", None)
            if callable(pre) and callable(post):
                self._handles.append(pre(self._step_pre))
                self._handles.append(post(self._step_post))
                rec.optimizer_hooks = True
            use_post_acc = hasattr(torch.Tensor, "register_post_accumulate_grad_hook")
            rec.grad_hooks = "post_accumulate" if use_post_acc else "tensor"
            for name, p in named:
                if not p.requires_grad:
                    continue
                if use_post_acc:
                    h = p.register_post_accumulate_grad_hook(
                        lambda t, name=name: self._grad_flag(name, t.grad)
                    )
                else:
                    h = p.register_hook(lambda g, name=name: self._grad_flag(name, g))
                self._handles.append(h)
        except BaseException:
            self._remove()
            raise
        self._t_start = time.perf_counter()
        return rec

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        import torch

        rec = self.recording
        rec.wall_s = time.perf_counter() - self._t_start
        self._remove()
        if exc is not None:
            rec.exception = f"{exc_type.__name__}: {exc}"
        rec.grad_nonzero = [n for n in rec.trainable if n in self._flags and bool(self._flags[n].item())]
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, before in self._before.items():
                p = params.get(name)
                if p is None:
                    continue
                now = p.detach().to(before.device)
                if now.shape != before.shape:
                    rec.changed.append(name)
                    continue
                delta = float((now - before).abs().max()) if now.numel() else 0.0
                rec.max_abs_update[name] = delta
                if delta > 0 or not torch.equal(now, before):
                    rec.changed.append(name)
        self._before = {}
        self._flags = {}
        return False
