"""CLI options -> ``DiagContext``: load the data, split it, validate the model/device/--fit choices.

Every user mistake becomes a one-line ``MoolaError`` naming the option, file or label; nothing here
trains or touches the GPU. Imported only when a command runs (it pulls in numpy and the loaders).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from diagnostics.checks.config import moola_cli_default_model
from diagnostics.context import DiagContext, FitFn, Thresholds
from moola.config import TrainConfig
from moola.data.dataset import WindowDataset
from moola.data.splits import check_split_classes
from moola.errors import MoolaError

SPLITS = ("random", "temporal", "purged")
DEVICES = ("auto", "cpu", "cuda")
TIME_ORDERS = ("bar_start", "row")

PathLike = str | os.PathLike[str]


def parse_fit(spec: str) -> FitFn:
    """Resolve ``MODULE:FUNC`` (importable from the current directory) to a callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip() or ":" in attr:
        raise MoolaError(f"--fit {spec!r}: expected MODULE:FUNC, e.g. my_training:fit")
    module_name, attr = module_name.strip(), attr.strip()
    # A user's training module usually sits in the directory they run from, like `python -m`.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's module, not ours
        raise MoolaError(
            f"--fit {spec}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise MoolaError(f"--fit {spec}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise MoolaError(
            f"--fit {spec}: {module_name}.{attr} is a {type(target).__name__}, not a function "
            "FUNC(model, X, y, epochs, device)"
        )
    return target


def _load(
    path: PathLike, option: str, pointer_convention: str | None = None, drop_null_rows: bool = False
) -> WindowDataset:
    from moola.data.loader import load_windows

    if not Path(path).exists():
        raise MoolaError(f"{option} {path}: file not found")
    return load_windows(path, pointer_convention=pointer_convention, drop_null_rows=drop_null_rows)


def concat_datasets(parts: Sequence[tuple[str, WindowDataset]]) -> tuple[WindowDataset, list[np.ndarray]]:
    """Stack separately loaded files into one dataset with one class list (the first file's).

    ``parts`` is ``[(label_for_errors, dataset), ...]``, the first being the training file. Returns the
    combined dataset and each part's row indices. A label that appears only in a later file cannot be
    learned from the training file, so it is a user error naming that file and label.
    """
    if not parts:
        raise ValueError("concat_datasets needs at least one dataset")
    first_name, first = parts[0]
    for name, ds in parts[1:]:  # one feature representation for all files: raw OHLC or one precomputed set
        if ds.feature_type != first.feature_type:
            raise MoolaError(
                f"{name}: features are {ds.feature_type or 'raw OHLC'}, but {first_name} holds "
                f"{first.feature_type or 'raw OHLC'}: every file must hold the same feature set"
            )
    classes = tuple(first.classes)
    shape = first.X.shape[1:]
    ys, index, offset = [], [], 0
    for name, ds in parts:
        if ds.X.shape[1:] != shape:
            raise MoolaError(
                f"{name}: windows have shape (T, F) = {tuple(ds.X.shape[1:])}, "
                f"but {first_name} has {tuple(shape)}"
            )
        present = np.unique(ds.y)
        used = [ds.classes[i] for i in present]
        unknown = [label for label in used if label not in classes]
        if unknown:
            raise MoolaError(
                f"{name}: label {unknown[0]!r} does not occur in {first_name} "
                f"(training classes: {', '.join(classes)})"
            )
        # Map this file's class indices onto the training file's class list by name.
        lookup = np.array([classes.index(c) if c in classes else -1 for c in ds.classes], dtype=np.int64)
        ys.append(lookup[ds.y])
        index.append(np.arange(offset, offset + len(ds), dtype=np.int64))
        offset += len(ds)

    datasets = [ds for _, ds in parts]

    def stack(attr: str) -> np.ndarray | None:
        arrays = [getattr(ds, attr) for ds in datasets]
        # Optional columns survive only when every file has them.
        return None if any(a is None for a in arrays) else np.ascontiguousarray(np.concatenate(arrays))

    combined = WindowDataset(
        X=np.ascontiguousarray(np.concatenate([ds.X for ds in datasets]), dtype=np.float32),
        y=np.ascontiguousarray(np.concatenate(ys)),
        classes=classes,
        window_id=np.ascontiguousarray(np.concatenate([ds.window_id for ds in datasets])),
        pointers=stack("pointers"),
        source=stack("source"),
        bar_start=stack("bar_start"),
        path=" + ".join(name for name, _ in parts),
        feature_type=first.feature_type,
    )
    return combined, index


def _validate_choice(value: str, choices: Sequence[str], option: str) -> str:
    if value not in choices:
        raise MoolaError(f"{option} {value!r}: unknown; choose from {', '.join(choices)}")
    return value


def build_context(
    data: PathLike | None = None,
    train: PathLike | None = None,
    test: PathLike | None = None,
    val: PathLike | None = None,
    split: str | None = None,
    model: str | None = None,
    device: str = "auto",
    fit: str | None = None,
    seed: int = 0,
    *,
    split_file: PathLike | None = None,
    judge_split: bool = False,
    time_order: str | None = None,
    pointer_convention: str | None = None,
    drop_null_rows: bool = False,
    max_train_windows: int | None = None,
    max_test_windows: int | None = None,
    test_fraction: float = 0.2,
    thresholds: Thresholds | None = None,
    config: TrainConfig | None = None,
) -> DiagContext:
    """Everything a check needs, from the CLI's options.

    No data options: the embedded synthetic set, split with ``split`` (default random). ``data``: that
    file, split by ``split_file`` (kind "file"), else ``split``, else by time when the file has bar_start
    (purged) or ``time_order="row"`` (temporal by row), else stratified random -- with the reason
    recorded in ``split_reason``. ``train``/``test`` (and ``val``): the files as given (kind "given").
    """
    from moola.models import list_models

    defaults = TrainConfig()
    model = defaults.model if model is None else model
    names = [spec.name for spec in list_models()]
    _validate_choice(model, names, "--model")
    _validate_choice(device, DEVICES, "--device")
    if split is not None:
        _validate_choice(split, SPLITS, "--split")
    if time_order is not None:
        _validate_choice(time_order, TIME_ORDERS, "--time-order")
    if split_file is not None and split is not None:
        raise MoolaError(f"--split {split}: --split-file already says which rows are which; drop --split")
    for option, value in (
        ("--max-train-windows", max_train_windows),
        ("--max-test-windows", max_test_windows),
    ):
        if value is not None and value < 0:
            raise MoolaError(f"{option} {value}: expected a number of windows >= 0 (0 = every row)")
    if judge_split and split_file is None:
        raise MoolaError("--judge-split judges a --split-file: pass the split file too")

    given = train is not None or test is not None or val is not None
    if data is not None and given:
        raise MoolaError(
            "--data cannot be combined with --train/--test/--val: pass one file or the split files"
        )
    if given and (train is None or test is None):
        missing = "--test" if train is not None else "--train"
        raise MoolaError(f"{missing} is required with --train/--test/--val (pass both; --val is optional)")
    if given and split is not None:
        raise MoolaError(f"--split {split}: --train/--test are already split; drop --split")
    if given and split_file is not None:
        raise MoolaError(f"--split-file {split_file}: --train/--test are already split; pass --data instead")

    fit_fn = parse_fit(fit) if fit is not None else None

    load = {"pointer_convention": pointer_convention, "drop_null_rows": drop_null_rows}
    if given:
        assert train is not None and test is not None  # checked above
        parts = [
            (f"--train {train}", _load(train, "--train", **load)),
            (f"--test {test}", _load(test, "--test", **load)),
        ]
        if val is not None:
            parts.append((f"--val {val}", _load(val, "--val", **load)))
        dataset, index = concat_datasets(parts)
        train_idx, test_idx = index[0], index[1]
        val_idx = index[2] if val is not None else None
        split_kind, reason = "given", "separate --train/--test files"
    else:
        if data is None:
            from moola.data.synthetic import default_dataset

            dataset = default_dataset()
        else:
            dataset = _load(data, "--data", **load)
        train_idx, test_idx, val_idx, split_kind, reason = choose_split(
            dataset, data is None, split, split_file, judge_split, time_order, test_fraction, seed
        )
    check_split_classes(dataset, train_idx, {"test": test_idx, "validation": val_idx}, split_kind)

    base = config if config is not None else defaults
    # The seed reaches the checks' training runs too (fresh_model, short_training), not only the split.
    cfg = replace(base, model=model, device=device, seed=seed)  # type: ignore[arg-type]
    if split_kind in SPLITS:
        cfg = replace(cfg, split=split_kind)  # type: ignore[arg-type]
    ctx = DiagContext(
        dataset=dataset,
        train_idx=np.asarray(train_idx, dtype=np.int64),
        test_idx=np.asarray(test_idx, dtype=np.int64),
        val_idx=None if val_idx is None else np.asarray(val_idx, dtype=np.int64),
        split_kind=split_kind,
        model_name=model,
        device=device,
        fit=fit_fn,
        fit_spec=fit,
        config=cfg,
        thresholds=thresholds or Thresholds(),
        cli_default_model=moola_cli_default_model(),
        split_reason=reason,
        time_order=time_order or "bar_start",
        max_train_windows=max_train_windows,
        max_test_windows=max_test_windows,
    )
    if dataset.feature_type is not None:
        _trust_precomputed(ctx)
    return ctx


def _trust_precomputed(ctx: DiagContext) -> None:
    """A file of precomputed features feeds the model as is: seed the memo every check reads its features
    from (``features:<set>``) with them, so nothing re-transforms raw prices that are not there."""
    from moola.features import FEATURE_SETS
    from moola.models import get_spec

    name = ctx.config.features or get_spec(ctx.model_name).feature_set
    width = len(FEATURE_SETS[name])
    if ctx.dataset.n_features != width:
        raise MoolaError(
            f"{ctx.dataset.path}: column 'features': precomputed {ctx.dataset.feature_type!r} bars have "
            f"{ctx.dataset.n_features} values, but {ctx.model_name} reads {name} ({width} values per bar)"
        )
    ctx.cache[f"features:{name}"] = ctx.dataset.X


def choose_split(
    dataset: WindowDataset,
    embedded: bool,
    split: str | None,
    split_file: PathLike | None,
    judge_split: bool,
    time_order: str | None,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str, str]:
    """(train, test, val or None, split kind, why this split): the split and its reason, for the report."""
    from moola.data.splits import make_split, read_split_file

    if split_file is not None:
        sf = read_split_file(split_file, dataset, allow_overlap=judge_split)
        # A train/val file (the earlier pipeline's) is judged with val as the held-out set.
        test = sf.parts["test"] if "test" in sf.parts else sf.parts["val"]
        val = sf.parts["val"] if "test" in sf.parts and "val" in sf.parts else None
        return sf.parts["train"], test, val, "file", sf.describe()
    if split is not None:
        kind, reason = split, f"--split {split}"
    elif embedded:
        kind = "random"
        reason = "embedded synthetic set: windows never share bars (by construction), so stratified random"
    elif dataset.bar_start is not None:
        kind = "purged"
        reason = "the file has bar_start: purged temporal split (latest 20% as test, embargoed train windows dropped)"
    elif time_order == "row":
        kind, reason = "temporal", "--time-order row: the last 20% of rows as test"
        ordered = replace(dataset, bar_start=dataset.file_rows)
        train_idx, test_idx = make_split(ordered, kind, test_fraction=test_fraction, seed=seed)
        return train_idx, test_idx, None, kind, reason
    else:
        kind = "random"
        reason = (
            "no bar_start, no --split-file, no --time-order row: stratified random split "
            "(market windows that overlap in time can leak across it)"
        )
    train_idx, test_idx = make_split(dataset, kind, test_fraction=test_fraction, seed=seed)
    return train_idx, test_idx, None, kind, reason


def data_source(ctx: DiagContext) -> str:
    """Where the windows came from, for reports."""
    return ctx.dataset.path or f"embedded synthetic default ({len(ctx.dataset)} windows)"
