"""Turn the ``--device`` option into a ``torch.device``, failing with one clear line when CUDA is missing."""

from __future__ import annotations

import torch

from moola.errors import MoolaError

VALID_DEVICES = ("auto", "cpu", "cuda")


def cuda_unavailable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, from what torch itself reports (no version checks)."""
    if getattr(torch.version, "cuda", None) is None:
        return f"torch {torch.__version__} is built without CUDA"
    return f"torch {torch.__version__} has CUDA {torch.version.cuda} but no usable GPU/driver was found"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda if available else cpu; "cpu"; "cuda" / "cuda:N" (MoolaError if CUDA is unavailable)."""
    if isinstance(name, torch.device):
        name = str(name)
    choice = str(name).strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MoolaError(
                f"--device {name}: CUDA is not available on this machine ({cuda_unavailable_reason()})"
            )
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise MoolaError(f"--device {name}: not a valid device ({exc})") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MoolaError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    raise MoolaError(f"--device {name}: unknown device; valid: {', '.join(VALID_DEVICES)}")
