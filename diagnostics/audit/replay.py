"""Re-measure a moola run: its data (fingerprint), its recorded split, and its checkpoint in eval mode.

The checkpoint is read with ``torch.load(weights_only=True)`` only: a file that is not a plain state dict
of tensors is refused with one line, never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diagnostics.audit.reader import RunRecord
from moola.errors import MoolaError


@dataclass
class Replay:
    """What could be re-measured; each ``None`` comes with its reason in ``why``."""

    dataset: Any = None  # the raw windows, as loaded now
    data_source: str = ""
    fingerprint_now: str | None = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    split_source: str = ""
    model: Any = None  # the checkpoint's weights in the recorded architecture
    n_features: int | None = None
    features: Any = None  # the model's input features of ``dataset``
    val: dict[str, Any] | None = None  # eval-mode loss / acc / macro_f1 on the recorded validation rows
    train: dict[str, Any] | None = None  # ... on the recorded training rows
    why: dict[str, str] = field(default_factory=dict)


def load_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MoolaError(
            f"{path}: not a checkpoint torch.load(weights_only=True) can read ({first[:160]})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = type(state).__name__
        raise MoolaError(f"{path}: not a state dict of tensors (a {kind}); save model.state_dict()")
    return state


def _load_data(record: RunRecord, data: Path | None) -> tuple[Any, str]:
    if data is not None:
        from moola.data.loader import load_windows

        return load_windows(data), str(data)
    recorded = record.data.get("path")
    if recorded:
        if not Path(recorded).exists():
            return None, f"the run's data file {recorded} is not here (pass --data PATH)"
        from moola.data.loader import load_windows

        return load_windows(recorded), str(recorded)
    from moola.data.synthetic import default_dataset

    return default_dataset(), "embedded default dataset"


def _split(record: RunRecord, ds: Any) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    n = len(ds)
    if record.split is not None:
        parts = [np.asarray(record.split.get(k, []), dtype=np.int64) for k in ("train", "val")]
        if any(len(p) and (p.min() < 0 or p.max() >= n) for p in parts):
            return None, None, f"split.json indexes rows beyond the {n} windows of the data now"
        return parts[0], parts[1], "split.json (recorded by the run)"
    # Runs made before split.json: the split is a seeded function of the data and the config.
    from moola.config import TrainConfig
    from moola.data.splits import make_split, read_split_file

    cfg = TrainConfig.from_dict(record.config or {})
    if cfg.split_file is not None:
        if not Path(cfg.split_file).exists():
            return None, None, f"the run's split file {cfg.split_file} is not here"
        parts = read_split_file(cfg.split_file, ds)
        return parts.parts["train"], parts.held_out, f"{cfg.split_file} (the run's --split-file)"
    train, val = make_split(ds, cfg.split, cfg.val_fraction, cfg.seed, cfg.embargo_bars)
    return train, val, f"re-derived: {cfg.split} split, seed {cfg.seed} (the run predates split.json)"


def replay(record: RunRecord, data: Path | None = None) -> Replay:
    """Load the data and the recorded split; when the data is unchanged, evaluate the checkpoint."""
    out = Replay()
    if record.kind != "moola":
        out.why["data"] = out.why["model"] = f"a foreign {record.kind} run records neither data nor weights"
        if data is not None:
            from moola.data.loader import load_windows

            out.dataset, out.data_source = load_windows(data), str(data)
        return out
    out.dataset, out.data_source = _load_data(record, data)
    if out.dataset is None:
        out.why["data"] = out.why["model"] = out.data_source
        return out
    from moola.train.record import data_fingerprint

    out.fingerprint_now = data_fingerprint(out.dataset)["arrays_sha256"]
    recorded = (record.data.get("fingerprint") or {}).get("arrays_sha256")
    if recorded is not None and recorded != out.fingerprint_now:
        out.why["model"] = "the data changed since the run: re-evaluating on other windows proves nothing"
        return out
    out.train_idx, out.val_idx, out.split_source = _split(record, out.dataset)
    if out.train_idx is None:
        out.why["model"] = out.split_source
        return out
    if record.model_path is None:
        out.why["model"] = "no model.pt (the run was cut short before it saved its weights)"
        return out
    state = load_state_dict(record.model_path)
    _evaluate(record, out, state)
    return out


def _evaluate(record: RunRecord, out: Replay, state: dict[str, Any]) -> None:
    import torch

    from moola.config import TrainConfig
    from moola.features import FEATURE_SETS, transform
    from moola.models import get_model
    from moola.train.trainer import evaluate_dataset

    cfg = TrainConfig.from_dict(record.config or {})
    ds = out.dataset
    feature_set = record.data.get("feature_set") or cfg.features
    feats = ds if ds.feature_type is not None else ds.with_features(transform(ds.X, feature_set))
    out.features, out.n_features = feats, len(FEATURE_SETS.get(feature_set, ())) or feats.n_features
    torch.manual_seed(0)
    model = get_model(cfg.model, n_features=feats.n_features, n_classes=ds.n_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        out.why["model"] = f"model.pt does not fit the recorded {cfg.model}: {first[:200]}"
        out.why["mismatch"] = "architecture"
        return
    model.eval()
    out.model = model
    out.val = evaluate_dataset(model, feats.subset(out.val_idx), cfg, "cpu")
    out.train = evaluate_dataset(model, feats.subset(out.train_idx), cfg, "cpu")
