"""Checks are small functions ``check(ctx) -> list[CheckResult]`` registered here by name.

The CLI iterates the registry; adding a check is one decorated function in diagnostics/checks/.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from moola.errors import MoolaError

if TYPE_CHECKING:
    from diagnostics.context import DiagContext
    from diagnostics.result import CheckResult

CheckFn = Callable[["DiagContext"], "list[CheckResult]"]
HookFn = Callable[["DiagContext"], None]

# Order is the order check-all runs and prints them: cheap, static checks first.
CHECK_ORDER = ("config", "params", "data", "leakage", "sanity", "stability", "gpu")
_MODULES = {name: f"diagnostics.checks.{name}" for name in CHECK_ORDER}
# Not in check-all: the audit judges a finished run directory (``moola-diag audit RUN_DIR``).
_MODULES["audit"] = "diagnostics.checks.audit"
_REGISTRY: dict[str, CheckFn] = {}
# A check whose work can start before its turn (its own training runs, on otherwise idle cores) registers
# ``prefetch``; ``cancel`` stops that work when the run is interrupted.
_PREFETCH: dict[str, tuple[HookFn, HookFn | None]] = {}


def register(
    name: str, prefetch: HookFn | None = None, cancel: HookFn | None = None
) -> Callable[[CheckFn], CheckFn]:
    def decorate(fn: CheckFn) -> CheckFn:
        _REGISTRY[name] = fn
        if prefetch is not None:
            _PREFETCH[name] = (prefetch, cancel)
        return fn

    return decorate


def start_prefetch(names: Sequence[str], ctx: DiagContext) -> None:
    """Start the background work of the named checks that have some (check-all: the stability runs train
    on the second core while the checks before them run)."""
    for name in names:
        get_check(name)
        if name in _PREFETCH:
            _PREFETCH[name][0](ctx)


def has_prefetch(name: str) -> bool:
    """Whether ``name``'s work runs in the background (its check may wait for it)."""
    get_check(name)
    return name in _PREFETCH


def cancel_prefetch(ctx: DiagContext) -> None:
    for _, cancel in _PREFETCH.values():
        if cancel is not None:
            cancel(ctx)


def require_known(name: str) -> None:
    """Refuse an unknown check name before any data is loaded (no module import needed)."""
    if name not in _MODULES:
        raise MoolaError(f"unknown check {name!r}; choose from {', '.join(CHECK_ORDER)}")


def get_check(name: str) -> CheckFn:
    """The check function for ``name``, importing its module on first use (keeps --help torch-free)."""
    require_known(name)
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


def all_checks() -> list[tuple[str, CheckFn]]:
    return [(name, get_check(name)) for name in CHECK_ORDER]
