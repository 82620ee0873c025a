"""Data integrity on the raw windows and on the features the model actually consumes.

The loader already rejects most bad files, so the functions here take plain arrays as well: the same
checks catch an object/float64/NaN array built in a notebook or produced by a feature transform.
Everything is vectorized (one pass of numpy per property, duplicate rows by hashing bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from diagnostics.registry import register
from diagnostics.result import CheckResult, Status
from moola.data.dataset import WINDOW_LENGTH

if TYPE_CHECKING:
    from diagnostics.context import DiagContext

CHECK = "data"
MAX_ROWS_SHOWN = 5


def _ids(rows: np.ndarray, window_id: np.ndarray | None, limit: int = MAX_ROWS_SHOWN) -> str:
    rows = np.asarray(rows)[:limit]
    shown = ", ".join(
        f"row {int(r)}" + (f" ({window_id[int(r)]})" if window_id is not None else "") for r in rows
    )
    return shown


def _ragged_lengths(X: np.ndarray) -> list[int] | None:
    """Row lengths of an object array of sequences, or None when its elements are not sequences."""
    flat = X.reshape(-1)
    try:
        return sorted({len(item) for item in flat[: min(len(flat), 10_000)]})  # lengths, not values
    except TypeError:
        return None


def inspect_layout(
    X: Any,
    label: str,
    expected_T: int | None = WINDOW_LENGTH,
    expected_F: int | None = None,
    feature_set: str | None = None,
) -> CheckResult:
    """dtype (float32 expected), shape (N, T, F) with T == expected_T and F == expected_F."""
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    name = f"{label}.layout"
    expected = f"float32 (N, {expected_T or 'T'}, {expected_F or 'F'})"
    values: dict[str, Any] = {"dtype": str(X.dtype), "shape": list(X.shape)}
    if X.dtype == object:
        lengths = _ragged_lengths(X)
        ragged = lengths is not None and len(lengths) > 1
        measured = f"object dtype {X.shape}" + (f", ragged rows (lengths {lengths[:6]})" if ragged else "")
        return CheckResult(
            CHECK,
            name,
            Status.FAIL,
            measured,
            expected,
            hint="build X with np.stack(windows).astype(np.float32) after making every window "
            f"{expected_T or 'T'} bars long (object arrays are copied element by element and cannot go to torch)",
            evidence=(f"dtype object, shape {X.shape}",),
            values={**values, "ragged_lengths": lengths},
        )
    if not np.issubdtype(X.dtype, np.floating):
        return CheckResult(
            CHECK,
            name,
            Status.FAIL,
            f"{X.dtype} {X.shape}",
            expected,
            hint="prices and features are real numbers: cast with X.astype(np.float32) (integer prices lose "
            "ratios; bool/str means the wrong column was read)",
            values=values,
        )
    if X.ndim != 3:
        return CheckResult(
            CHECK,
            name,
            Status.FAIL,
            f"{X.dtype} {X.shape} ({X.ndim}-d)",
            expected,
            hint="stack windows as (N, T, F): one row per window, one column per bar, one channel per feature",
            values=values,
        )
    n, t, f = X.shape
    problems: list[tuple[Status, str, str]] = []  # (status, evidence, hint)
    if expected_T is not None and t != expected_T:
        problems.append(
            (
                Status.FAIL,
                f"T = {t} bars per window, expected {expected_T}",
                f"cut windows to exactly {expected_T} bars (moola.data.windowing.make_windows)",
            )
        )
    if expected_F is not None and f != expected_F:
        if f == 4 and expected_F != 4:
            hint = (
                f"the model wants {expected_F} features ({feature_set or 'its feature set'}), not raw OHLC: "
                f"X = moola.features.transform(X_ohlc, {feature_set or '...'!r})"
            )
        else:
            hint = f"feed the model its feature set ({feature_set or '?'}: {expected_F} dims) or rebuild it with n_features={f}"
        problems.append((Status.FAIL, f"F = {f} features per bar, the model expects {expected_F}", hint))
    if X.dtype != np.float32:
        problems.append(
            (
                Status.WARN,
                f"dtype {X.dtype}: {X.nbytes / 2**20:.2f} MiB vs {X.size * 4 / 2**20:.2f} MiB as float32",
                "cast once with X.astype(np.float32): float64 doubles memory and torch's float32 LSTM rejects "
                "Double inputs (or silently upcasts the model)",
            )
        )
    if not X.flags.c_contiguous:
        problems.append((Status.WARN, "array is not C-contiguous", "np.ascontiguousarray(X) before batching"))
    status = max((p[0] for p in problems), key=lambda s: s.severity, default=Status.PASS)
    worst_hint = next((p[2] for p in problems if p[0] is status), "")
    return CheckResult(
        CHECK,
        name,
        status,
        f"{X.dtype} ({n}, {t}, {f})",
        expected,
        hint=worst_hint,
        evidence=tuple(p[1] for p in problems),
        values=values,
    )


def inspect_finite(X: np.ndarray, label: str, window_id: np.ndarray | None = None) -> CheckResult:
    """NaN / +-inf anywhere: count, and the first offending windows and bars."""
    name = f"{label}.finite"
    bad = ~np.isfinite(X)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return CheckResult(CHECK, name, Status.PASS, f"0 NaN/inf in {X.size:,} values", "0 NaN/inf")
    n_nan = int(np.isnan(X).sum())
    bad_rows = np.flatnonzero(bad.reshape(len(X), -1).any(axis=1))
    first = np.argwhere(bad)[:MAX_ROWS_SHOWN]
    evidence = [f"{len(bad_rows)} window(s) affected: {_ids(bad_rows, window_id)}"]
    evidence += [f"window {r[0]}, bar {r[1]}, feature {r[2]}: {X[tuple(r)]}" for r in first]
    return CheckResult(
        CHECK,
        name,
        Status.FAIL,
        f"{n_nan:,} NaN + {n_bad - n_nan:,} inf in {len(bad_rows)} window(s)",
        "0 NaN/inf",
        hint="drop or repair those windows before training: one NaN turns every loss and gradient into NaN",
        evidence=tuple(evidence),
        values={"nan": n_nan, "inf": n_bad - n_nan, "rows": bad_rows[:100].tolist()},
    )


def inspect_labels(y: np.ndarray, n_classes: int, window_id: np.ndarray | None = None) -> CheckResult:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        return CheckResult(
            CHECK,
            "labels",
            Status.FAIL,
            f"labels dtype {y.dtype}",
            f"integer class indices in [0, {n_classes})",
            hint="encode labels as int64 indices into the class list",
        )
    out = np.flatnonzero((y < 0) | (y >= n_classes))
    if len(out):
        return CheckResult(
            CHECK,
            "labels",
            Status.FAIL,
            f"{len(out)} label(s) outside [0, {n_classes})",
            f"integer class indices in [0, {n_classes})",
            hint="labels must index the class list; re-encode them",
            evidence=(_ids(out, window_id),),
        )
    return CheckResult(
        CHECK, "labels", Status.PASS, f"{len(y)} labels in [0, {n_classes})", f"in [0, {n_classes})"
    )


def inspect_pointers(pointers: np.ndarray, T: int, window_id: np.ndarray | None = None) -> CheckResult:
    """Pattern pointers [start, end]: integer bars with 0 <= start <= end <= T - 1."""
    expected = f"0 <= start <= end <= {T - 1}"
    p = np.asarray(pointers)
    if p.ndim != 2 or p.shape[1] != 2:
        return CheckResult(
            CHECK,
            "pointers",
            Status.FAIL,
            f"shape {p.shape}",
            f"(N, 2) {expected}",
            hint="pointers are [start, end] per window",
        )
    if not np.issubdtype(p.dtype, np.integer):
        return CheckResult(
            CHECK,
            "pointers",
            Status.FAIL,
            f"dtype {p.dtype}",
            f"integer bars, {expected}",
            hint="pointers are bar indices (int64), not fractions",
        )
    bad = np.flatnonzero((p[:, 0] < 0) | (p[:, 1] > T - 1) | (p[:, 0] > p[:, 1]))
    if len(bad):
        ev = [f"{_ids(bad, window_id)}"] + [
            f"row {int(r)}: [{p[r, 0]}, {p[r, 1]}]" for r in bad[:MAX_ROWS_SHOWN]
        ]
        return CheckResult(
            CHECK,
            "pointers",
            Status.FAIL,
            f"{len(bad)} of {len(p)} pointer pairs invalid",
            expected,
            hint="fix the annotations: pointers are bar indices inside the window, start before end",
            evidence=tuple(ev),
            values={"invalid_rows": bad[:100].tolist()},
        )
    return CheckResult(CHECK, "pointers", Status.PASS, f"{len(p)} pairs valid", expected)


def inspect_arrays(
    X: Any,
    y: np.ndarray | None = None,
    *,
    label: str = "raw",
    n_classes: int | None = None,
    pointers: np.ndarray | None = None,
    window_id: np.ndarray | None = None,
    expected_T: int | None = WINDOW_LENGTH,
    expected_F: int | None = None,
    feature_set: str | None = None,
) -> list[CheckResult]:
    """All array-level findings for one representation (raw OHLC or model features)."""
    layout = inspect_layout(X, label, expected_T=expected_T, expected_F=expected_F, feature_set=feature_set)
    results = [layout]
    X = np.asarray(X)
    if X.dtype != object and np.issubdtype(X.dtype, np.number):
        results.append(inspect_finite(X, label, window_id))
    if y is not None:
        results.append(
            inspect_labels(y, n_classes if n_classes is not None else int(np.max(y)) + 1, window_id)
        )
    if pointers is not None and X.ndim == 3:
        results.append(inspect_pointers(pointers, X.shape[1], window_id))
    return results


def class_balance(
    y: np.ndarray,
    classes: Sequence[str],
    splits: Mapping[str, np.ndarray],
    min_share: float = 0.10,  # the check passes Thresholds.min_class_share
) -> CheckResult:
    """Per split: class counts, minority share, imbalance ratio; WARN if a class is < min_share or absent."""
    k = len(classes)
    evidence, problems = [], []
    shares: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for split, idx in splits.items():
        counts = np.bincount(np.asarray(y)[idx], minlength=k)[:k]
        total = int(counts.sum())
        if total == 0:
            continue
        share = counts / total
        shares[split] = float(share.min())
        ratios[split] = float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")
        evidence.append(
            f"{split}: "
            + ", ".join(f"{c} {n} ({s:.0%})" for c, n, s in zip(classes, counts, share, strict=True))
        )
        for c, n, s in zip(classes, counts, share, strict=True):
            if n == 0:
                problems.append(f"{split} has no {c!r} windows")
            elif s < min_share:
                problems.append(f"{split}: {c!r} is {s:.1%} of {total}")
    measured = "; ".join(
        f"{s} minority {shares[s]:.0%}" + (f" (ratio {ratios[s]:.1f}:1)" if np.isfinite(ratios[s]) else "")
        for s in shares
    )
    status = Status.WARN if problems else Status.PASS
    hint = ""
    if problems:
        hint = (
            "stratify the split and weight the loss by inverse class frequency (or collect more "
            f"windows of the rare class): {problems[0]}"
        )
    return CheckResult(
        CHECK,
        "class_balance",
        status,
        measured or "no labeled windows",
        f"every class >= {min_share:.0%} of every split",
        hint=hint,
        evidence=tuple(problems + evidence),
        values={
            "minority_share": shares,
            "imbalance_ratio": {s: r for s, r in ratios.items() if np.isfinite(r)},
        },
    )


def duplicate_groups(X: np.ndarray, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Groups (positions in ``rows``, default every row; size >= 2) of byte-identical windows: digests in
    chunks, confirmed byte for byte (diagnostics.rowhash), so every row is looked at in bounded memory."""
    from diagnostics.rowhash import identical_groups

    return identical_groups(X, np.arange(len(X)) if rows is None else rows)


def duplicates_within(
    X: np.ndarray,
    y: np.ndarray,
    splits: Mapping[str, np.ndarray],
    window_id: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> CheckResult:
    """Byte-identical windows inside one split (cross-split duplicates are the leakage check's job)."""
    evidence: list[str] = []
    n_dup = n_conflict = 0
    per_split: dict[str, int] = {}
    for split, idx in splits.items():
        idx = np.asarray(idx)
        groups = duplicate_groups(X, idx)
        per_split[split] = int(sum(len(g) - 1 for g in groups))
        n_dup += per_split[split]
        for g in groups:
            rows = idx[g]
            labels = np.unique(y[rows])
            conflict = len(labels) > 1
            n_conflict += int(conflict)
            if len(evidence) < MAX_ROWS_SHOWN * 2:
                names = [classes[int(v)] if classes is not None else str(v) for v in y[rows]]
                evidence.append(
                    f"{split}: {_ids(rows, window_id)} identical"
                    + (f", labels {names} CONFLICT" if conflict else f", label {names[0]}")
                )
    if n_dup == 0:
        sizes = ", ".join(f"{s} {len(i)}" for s, i in splits.items())
        return CheckResult(
            CHECK, "duplicates", Status.PASS, f"0 duplicate windows ({sizes})", "0 within a split"
        )
    status = Status.FAIL if n_conflict else Status.WARN
    return CheckResult(
        CHECK,
        "duplicates",
        status,
        f"{n_dup} extra cop{'y' if n_dup == 1 else 'ies'} of identical windows"
        + (f", {n_conflict} group(s) with conflicting labels" if n_conflict else ""),
        "0 within a split",
        hint=(
            "identical windows with different labels cannot both be right: fix the annotations"
            if n_conflict
            else "de-duplicate before splitting: copies over-weight those windows and inflate accuracy"
        ),
        evidence=tuple(evidence),
        values={"duplicates": per_split, "conflicting_groups": n_conflict},
    )


def duplicate_ids(
    window_id: np.ndarray,
    y: np.ndarray,
    pointers: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> CheckResult | None:
    """Window ids that repeat (the earlier pipeline writes one row per expansion of an annotation): how
    many, and whether the copies disagree on label or pointers. None when every id is unique."""
    ids = np.asarray(window_id)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    repeated = counts > 1
    if not repeated.any():
        return None
    rows_repeated = np.flatnonzero(repeated[inverse])
    # A group disagrees when its label (or a pointer) is not the same in every row: compare with the
    # group's first row, vectorized.
    first_row = np.full(len(uniq), -1, dtype=np.int64)
    first_row[inverse[::-1]] = np.arange(len(ids))[::-1]
    ref = first_row[inverse]
    label_diff = np.zeros(len(uniq), dtype=bool)
    np.logical_or.at(label_diff, inverse, y != y[ref])
    pointer_diff = np.zeros(len(uniq), dtype=bool)
    if pointers is not None:
        np.logical_or.at(pointer_diff, inverse, (pointers != pointers[ref]).any(axis=1))
    n_groups = int(repeated.sum())
    evidence = []
    for g in np.flatnonzero(repeated)[:MAX_ROWS_SHOWN]:
        rows = np.flatnonzero(inverse == g)
        names = [classes[int(v)] if classes is not None else str(v) for v in y[rows]]
        what = f"labels {names}" + (f", pointers {pointers[rows].tolist()}" if pointers is not None else "")
        evidence.append(f"window_id {str(uniq[g])!r}: rows {rows.tolist()}, {what}")
    return CheckResult(
        CHECK,
        "duplicate_ids",
        Status.WARN,
        f"{n_groups} window_id(s) repeat ({len(rows_repeated)} rows); {int(label_diff.sum())} with different "
        f"labels, {int(pointer_diff.sum())} with different pointers",
        "unique window_ids, or copies that stay in one split",
        hint="one annotation with several expansions gives one row each: keep the copies in one split "
        "(split by window_id; the leakage check FAILs copies on both sides)",
        evidence=tuple(evidence),
        values={
            "repeated_ids": n_groups,
            "rows": len(rows_repeated),
            "label_conflicts": int(label_diff.sum()),
            "pointer_conflicts": int(pointer_diff.sum()),
        },
    )


def model_input(ctx: DiagContext) -> tuple[str, int]:
    """The model's feature set and the input width the built model actually has."""
    from moola.models import get_model, get_spec

    spec = get_spec(ctx.model_name)
    n_classes = ctx.dataset.n_classes
    model = ctx.memo(
        f"params:model:{ctx.model_name}:{n_classes}", lambda: get_model(ctx.model_name, n_classes=n_classes)
    )
    width = getattr(getattr(model, "encoder", None), "input_size", None)
    if width is None:  # a model without an LSTM encoder: trust the registry
        from moola.features import FEATURE_SETS

        width = len(FEATURE_SETS[spec.feature_set])
    return spec.feature_set, int(width)


def _loader_guarantees(results: list[CheckResult], ds: Any) -> list[CheckResult]:
    """Through the CLI the loader (or the generator) has already refused non-finite values, labels
    outside the class list and pointers outside the window: say so on those PASSes, so none reads as
    more than it is. They stay real checks for arrays built elsewhere (``inspect_arrays``)."""
    by = "the loader (it refuses such files)" if ds.path else "the synthetic generator"
    out = []
    for r in results:
        if r.status is Status.PASS and r.name in ("raw.finite", "labels", "pointers"):
            r = replace(r, measured=f"{r.measured}: guaranteed by {by}")
        out.append(r)
    return out


def pointer_columns(ds: Any) -> str | None:
    """How the pointers were read (columns, convention), from the loader's column roles."""
    return dict(ds.columns).get("pointers")


def trusted_features(ds: Any, feature_set: str, width: int, model: str) -> CheckResult:
    """A file of precomputed features: confirm the width the model reads, and name what is trusted."""
    from moola.features import FEATURE_SETS

    ok = ds.n_features == width
    return CheckResult(
        CHECK,
        "features.transform",
        Status.PASS if ok else Status.FAIL,
        f"{ds.n_features} values per bar precomputed in the file (feature_type {ds.feature_type!r}), used as "
        f"is: moola trusts the file's transform and does not recompute {feature_set}",
        f"{width} values per bar ({feature_set}, what {model} reads)",
        hint="" if ok else f"give the model {width}-value bars ({feature_set}) or the raw OHLC prices",
        evidence=(
            f"{feature_set} dimensions: {', '.join(FEATURE_SETS[feature_set])}",
            "without raw prices the values cannot be checked against moola's definition; a model trained "
            "on them expects the same transform at inference",
        ),
        values={"feature_type": ds.feature_type, "width": ds.n_features, "trusted_as": feature_set},
    )


@register("data")
def check_data(ctx: DiagContext) -> list[CheckResult]:
    from diagnostics.training import transform_chunked
    from moola.errors import MoolaError

    ds = ctx.dataset
    feature_set, width = model_input(ctx)
    precomputed = ds.feature_type is not None
    results = inspect_arrays(
        ds.X,
        ds.y,
        label="features" if precomputed else "raw",
        n_classes=ds.n_classes,
        pointers=ds.pointers,
        window_id=ds.window_id,
        expected_F=width if precomputed else 4,
        feature_set=feature_set if precomputed else "ohlc4",
    )
    results = _loader_guarantees(results, ds)
    if pointer_columns(ds) is not None:
        results = [
            replace(r, evidence=(*r.evidence, f"read from {pointer_columns(ds)}"))
            if r.name == "pointers"
            else r
            for r in results
        ]
    if precomputed:
        results.append(trusted_features(ds, feature_set, width, ctx.model_name))
    else:
        try:
            feats = ctx.memo(f"features:{feature_set}", lambda: transform_chunked(ds.X, feature_set))
        except MoolaError as err:
            results.append(
                CheckResult(
                    CHECK,
                    "features.layout",
                    Status.FAIL,
                    f"{feature_set} cannot be computed: {err}",
                    f"float32 (N, {WINDOW_LENGTH}, {width})",
                    hint="repair or drop the offending window (prices must be finite and > 0 for log ratios)",
                )
            )
        else:
            results += inspect_arrays(
                feats, label="features", expected_F=width, feature_set=feature_set, window_id=ds.window_id
            )
    splits = ctx.parts()
    results.append(class_balance(ds.y, ds.classes, splits, ctx.thresholds.min_class_share))
    results.append(duplicates_within(ds.X, ds.y, splits, ds.window_id, ds.classes))
    repeated = duplicate_ids(ds.window_id, ds.y, ds.pointers, ds.classes)
    if repeated is not None:
        results.append(repeated)
    return results
