"""Leakage: does anything the model is tested on also sit in what it was trained on?

Findings (each a public function of the same name returning a CheckResult -- ``near_duplicate_windows``
and ``shared_bar_windows`` for the two whose names the array-level functions hold; each compares a
measurement on THIS split with what a clean split gives; those comparing pairs of splits share
``pair_finding``):
  split_choice       WARN when the split is random for lack of time information (market windows overlap)
  split_rows         a --split-file judged with --judge-split: rows listed in two parts
  identical_windows  byte-identical windows (float32 rows) across train/test(/val)
  shared_ids         window_ids present in more than one split (FAIL: copies of one annotation, e.g. the
                     earlier pipeline's row per expansion, trained on and tested on)
  near_duplicates    windows closer (z-scored per window, Euclidean) to a window of another split than
                     ``near_duplicate_fraction`` x the median nearest-neighbour distance within train
  window_overlap     windows of one source whose bar ranges [bar_start, bar_start + T) intersect across
                     splits (provenance; with epoch-ns starts the bar length is inferred, so an overlap
                     FAILs only when shared_bars confirms it, else WARN)
  shared_bars        the same, from content alone: a window whose bars k..T-1 equal another's 0..T-1-k
                     (>= Thresholds.min_shared_bars equal bars at one consistent offset)
  temporal_order     for temporal/purged/file splits: test after train (by bar_start, or row order with
                     --time-order row), same-source gaps >= the embargo
  accuracy_gap       test accuracy far above train accuracy after the short training run
  majority_baseline  is the test accuracy distinguishable from always predicting the majority class?
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from diagnostics.context import Thresholds
from diagnostics.neighbors import (
    EXACT_PAIRS,
    RowView,
    build_index,
    materialize,
    nearest_neighbors,
    zscore_windows,
)
from diagnostics.registry import register
from diagnostics.result import CheckResult, Status, plot_data, skip
from diagnostics.rowhash import identical_rows

CHECK = "leakage"
REFERENCE_SAMPLE = 2000  # train rows whose within-train NN distance sets the scale
MAX_EXAMPLES = 5
MAX_NAMED = 10_000  # copies named in a finding's values (the JSON report)


# --------------------------------------------------------------------------- split bookkeeping


def pairs(ctx) -> list[tuple[str, np.ndarray, str, np.ndarray]]:
    """(reference name, rows, query name, rows): train vs each held-out split, and val vs test."""
    parts = ctx.parts()
    out = [("train", parts["train"], "test", parts["test"])]
    if "val" in parts:
        out += [("train", parts["train"], "val", parts["val"]), ("val", parts["val"], "test", parts["test"])]
    return out


def _ids(ctx, rows: np.ndarray) -> list[str]:
    return [str(v) for v in ctx.dataset.window_id[rows]]


@dataclass
class PairCount:
    """One pair of splits measured: held-out windows flagged, evidence lines, extra values."""

    count: int
    lines: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def pair_finding(
    ctx,
    name: str,
    measure: Callable[[str, np.ndarray, str, np.ndarray], PairCount | None],
    *,
    status_if_found: Status,
    measured: Callable[[int], str],
    expected: str,
    hint: str,
    total_key: str,
    head: tuple[str, ...] = (),
) -> CheckResult:
    """The one skeleton of the findings that compare pairs of splits: measure each pair (None: not
    measurable), count, judge (any flagged window -> ``status_if_found``), and give the evidence."""
    total, lines, values = 0, list(head), {}
    for ref_name, ref, q_name, query in pairs(ctx):
        found = measure(ref_name, ref, q_name, query)
        if found is None:
            continue
        values[f"{q_name}_in_{ref_name}"] = found.count
        values.update(found.values)
        total += found.count
        lines += found.lines
    return CheckResult(
        CHECK,
        name,
        status_if_found if total else Status.PASS,
        measured=measured(total),
        expected=expected,
        hint=hint,
        evidence=tuple(lines),
        values={total_key: total, **values},
    )


# --------------------------------------------------------------------------- the split itself


def split_choice(ctx) -> CheckResult | None:
    """A random split chosen for lack of time information: WARN (None when the split respects time or
    the data cannot overlap). Overlapping market windows on both sides of a random split leak."""
    if ctx.split_kind != "random" or ctx.dataset.path is None or ctx.dataset.bar_start is not None:
        return None
    return CheckResult(
        CHECK,
        "split_choice",
        Status.WARN,
        f"random split of {len(ctx.dataset)} windows with no time information",
        "a split in time: bar_start, --split-file, or --time-order row",
        hint="a random split of market windows can leak (neighbouring windows share bars): pass the split "
        "you train with (--split-file) or --time-order row if the rows are in time order",
        evidence=(ctx.split_reason,) if ctx.split_reason else (),
    )


def split_rows(ctx) -> CheckResult | None:
    """A --split-file judged with --judge-split: file rows listed in two of its parts FAIL (None when the
    parts are disjoint)."""
    if ctx.split_kind != "file":
        return None
    parts = list(ctx.parts().values())
    if not any(len(np.intersect1d(a, b)) for i, a in enumerate(parts) for b in parts[i + 1 :]):
        return None  # disjoint, as the loader enforces unless --judge-split: a PASS here would say nothing

    def measure(ref_name, ref, q_name, query) -> PairCount:
        common = np.intersect1d(ref, query)
        lines = [f"{len(common)} row(s) in both {ref_name} and {q_name}: {', '.join(_ids(ctx, common[:5]))}"]
        return PairCount(len(common), lines if len(common) else [])

    return pair_finding(
        ctx,
        "split_rows",
        measure,
        status_if_found=Status.FAIL,
        measured=lambda n: f"{n} row(s) listed in two parts of the split file",
        expected="0: every row in at most one part",
        hint="remove each shared row from all but one part of the split file",
        total_key="shared_rows",
        head=(ctx.split_reason,),
    )


# --------------------------------------------------------------------------- identical windows


def identical_pairs(X_ref: np.ndarray, X_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query mask: row has a byte-identical reference row, reference row index per flagged query row)."""
    X = np.concatenate([X_ref, X_query])
    return identical_rows(X, np.arange(len(X_ref)), np.arange(len(X_ref), len(X)))


def identical_windows(ctx) -> CheckResult:
    X = ctx.dataset.X

    def measure(ref_name, ref, q_name, query) -> PairCount:
        mask, partner = identical_rows(X, ref, query)
        n = int(mask.sum())
        if not n:
            return PairCount(0)
        q_ids, r_ids = _ids(ctx, query[mask][:MAX_NAMED]), _ids(ctx, ref[partner][:MAX_NAMED])
        lines = [f"{n} of {len(query)} {q_name} windows are byte-identical to a {ref_name} window:"]
        lines += [f"  {q_name} {a} == {ref_name} {b}" for a, b in zip(q_ids, r_ids, strict=True)][
            :MAX_EXAMPLES
        ]
        # Every copy by name in the JSON report (the table shows the first few).
        named = [[a, b] for a, b in zip(q_ids, r_ids, strict=True)]
        return PairCount(n, lines, {f"{q_name}_{ref_name}_pairs": named})

    result = pair_finding(
        ctx,
        "identical_windows",
        measure,
        status_if_found=Status.FAIL,
        measured=lambda n: f"{n} held-out window(s) byte-identical to a window of another split",
        expected="0 (a test window that is also a training window is memorised, not predicted)",
        hint="deduplicate the windows before splitting (hash each window's values)",
        total_key="identical",
    )
    return _trim(result, 2 + MAX_EXAMPLES * 3)


def _trim(result: CheckResult, n: int) -> CheckResult:
    return replace(result, evidence=result.evidence[:n])


def shared_ids(ctx) -> CheckResult:
    """window_ids on both sides of a split: the same annotation (the earlier pipeline repeats an id per
    expansion) trained on and tested on -- leakage, whatever the bars."""
    ids = ctx.dataset.window_id

    def measure(ref_name, ref, q_name, query) -> PairCount:
        common = np.intersect1d(ids[ref], ids[query])
        n_rows = int(np.isin(ids[query], common).sum())
        if not n_rows:
            return PairCount(0)
        shown = ", ".join(str(c) for c in common[:MAX_EXAMPLES])
        return PairCount(n_rows, [f"{len(common)} window_id(s) in both {ref_name} and {q_name}: {shown}"])

    return pair_finding(
        ctx,
        "shared_ids",
        measure,
        status_if_found=Status.FAIL,
        measured=lambda n: f"{n} held-out window(s) whose window_id also occurs in another split",
        expected="0: every window_id (all copies of an annotation) in exactly one split",
        hint="split by window_id so all copies of an annotation land in one split",
        total_key="shared_ids",
    )


# --------------------------------------------------------------------------- near-duplicates


@dataclass(frozen=True)
class NearDuplicates:
    reference_nn: float  # median within-reference NN distance (the typical spacing of the data)
    threshold: float
    distance: np.ndarray  # each query row's NN distance to the reference
    partner: np.ndarray  # its reference row (local index)
    flagged: np.ndarray  # bool: distance < threshold (valid rows only)
    method: str = "exact"  # how the nearest neighbours were found


def near_duplicates(
    X_ref: np.ndarray | RowView,
    X_query: np.ndarray | RowView,
    fraction: float,
    seed: int = 0,
    reference_sample: int = REFERENCE_SAMPLE,
    exact_pairs: float = EXACT_PAIRS,
) -> NearDuplicates:
    """Query windows whose nearest reference window is closer than ``fraction`` x the median
    within-reference NN distance (measured on up to ``reference_sample`` reference rows vs all of them).

    Every query window is searched. Up to ``exact_pairs`` query x reference pairs the search is exact;
    beyond, through a FAISS index whose candidates are re-ranked exactly (diagnostics.neighbors)."""
    rng = np.random.default_rng(seed)
    if float(len(X_ref)) * max(len(X_query), reference_sample) > exact_pairs and len(X_ref) >= 256:
        return _near_duplicates_indexed(X_ref, X_query, fraction, seed, reference_sample, rng)
    Z_ref, ok_ref = zscore_windows(materialize(X_ref))
    Z_q, ok_q = zscore_windows(materialize(X_query))
    ref_rows = np.flatnonzero(ok_ref)
    Z_ref_ok = Z_ref[ref_rows]
    sample = rng.choice(len(ref_rows), size=min(reference_sample, len(ref_rows)), replace=False)
    sample.sort()
    if len(ref_rows) >= 2:
        within, _ = nearest_neighbors(Z_ref_ok[sample], Z_ref_ok, exclude=sample)
        within = within[np.isfinite(within)]
        typical = float(np.median(within)) if len(within) else float("nan")
    else:
        typical = float("nan")
    dist, idx = nearest_neighbors(Z_q, Z_ref_ok)
    partner = np.full(len(idx), -1, dtype=np.int64)  # -1: no valid (non-constant) reference window
    found = idx >= 0
    partner[found] = ref_rows[idx[found]]
    threshold = fraction * typical if math.isfinite(typical) else 0.0
    flagged = ok_q & (dist < threshold)
    return NearDuplicates(typical, threshold, dist, partner, flagged)


def _near_duplicates_indexed(X_ref, X_query, fraction, seed, reference_sample, rng) -> NearDuplicates:
    index = build_index(X_ref, seed=seed)
    sample = np.sort(rng.choice(index.rows, size=min(reference_sample, len(index.rows)), replace=False))
    within, _ = index.nearest(X_ref[sample], exclude=sample)
    within = within[np.isfinite(within)]
    typical = float(np.median(within)) if len(within) else float("nan")
    dist, partner = index.nearest(X_query)
    ok_q = _valid(X_query)
    threshold = fraction * typical if math.isfinite(typical) else 0.0
    flagged = ok_q & (dist < threshold)
    return NearDuplicates(typical, threshold, dist, partner, flagged, method=index.describe())


def _valid(X: np.ndarray) -> np.ndarray:
    """Non-constant windows (the ones z-scoring can compare), in chunks."""
    parts = [zscore_windows(X[s : s + 8192])[1] for s in range(0, len(X), 8192)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def near_duplicate_windows(ctx) -> CheckResult:
    X = ctx.dataset.X
    frac = float(ctx.thresholds.near_duplicate_fraction)
    ratios: list[float] = []
    spread: dict[str, list[float]] = {}  # per pair: the distance ratios, for the report's histogram

    def measure(ref_name, ref, q_name, query) -> PairCount | None:
        if len(ref) < 2 or len(query) == 0:
            return None
        nd = near_duplicates(RowView(X, ref), RowView(X, query), frac, seed=0)
        if not math.isfinite(nd.reference_nn) or nd.reference_nn <= 0:
            return None
        # Exact copies are reported by identical_windows; here only the near ones.
        near = nd.flagged & ~identical_rows(X, ref, query)[0]
        ratio = nd.distance / nd.reference_nn
        finite = ratio[np.isfinite(ratio)]
        closest = float(finite.min()) if len(finite) else float("nan")
        if len(finite):
            ratios.append(closest)
        spread[f"{q_name}_{ref_name}"] = plot_data(finite)
        lines = [
            f"{q_name} vs {ref_name}: typical {ref_name} NN distance {nd.reference_nn:.3g} (z-scored windows), "
            f"threshold {nd.threshold:.3g}; closest {q_name} window at {closest:.3g}x"
            + ("" if nd.method == "exact" else f"; {nd.method}")
        ]
        rows = np.flatnonzero(near)
        rows = rows[np.argsort(ratio[rows])][:MAX_EXAMPLES]
        lines += [
            f"  {q_name} {ctx.dataset.window_id[query[r]]} ~ {ref_name} {ctx.dataset.window_id[ref[nd.partner[r]]]}"
            f": distance {nd.distance[r]:.3g} = {ratio[r]:.3f}x typical"
            for r in rows
        ]
        return PairCount(int(near.sum()), lines, {f"{q_name}_{ref_name}_median_nn": nd.reference_nn})

    result = pair_finding(
        ctx,
        "near_duplicates",
        measure,
        status_if_found=Status.FAIL,
        measured=lambda n: (
            f"{n} held-out window(s) within {frac:g}x the typical NN distance of another split"
            + (f" (closest: {min(ratios):.3f}x)" if ratios else "")
        ),
        expected=f"0 windows closer than {frac:g}x the median within-train NN distance",
        hint="remove near-copies (noisy or rescaled duplicates) before splitting",
        total_key="near_duplicates",
    )
    closest = min(ratios) if ratios else None
    return replace(
        result,
        values={**result.values, "closest_ratio": closest, "fraction": frac, "distance_ratios": spread},
    )


# --------------------------------------------------------------------------- overlap (provenance)


def _bar_positions(ctx, rows_allowed: bool = True) -> tuple[np.ndarray | None, str, bool]:
    """(bar_start in bars or None, how it was read, exact).

    Bar indices are exact. Epoch-ns starts are divided by the bar length inferred as the gcd of the
    start gaps within a source (moola.data.splits.infer_bar_ns): with strided windows that is a multiple
    of the true bar length, so distances come out too small by that factor -- not exact.
    """
    ds = ctx.dataset
    if rows_allowed and ctx.time_order == "row":
        # The user says rows are in time order: positions are row numbers, not bars (not exact).
        return ds.file_rows.astype(np.int64), "row order (--time-order row; rows, not bars)", False
    if ds.bar_start is None:
        return None, "no bar_start column", False
    starts = ds.bar_start.astype(np.int64)
    from moola.data.splits import EPOCH_NS_THRESHOLD, infer_bar_ns
    from moola.errors import MoolaError

    if len(starts) and np.abs(starts).max() >= EPOCH_NS_THRESHOLD:
        try:
            unit = infer_bar_ns(ds)
        except MoolaError as exc:
            return None, str(exc), False
        how = (
            f"epoch-ns bar_start in units of {unit} ns (the gcd of window start gaps: the bar length "
            "or a multiple of it, so bar counts below are lower bounds on distance)"
        )
        return (starts - starts.min()) // unit, how, False
    return starts, "bar_start in bars", True


def nearest_gaps(starts: np.ndarray, source: np.ndarray, ref: np.ndarray, query: np.ndarray, length: int):
    """Per query row: (gap in bars to the nearest same-source reference window, that window's row).

    gap = |start_q - start_r| - length: negative when the windows share bars (-gap of them). inf when the
    source has no reference window. One searchsorted per source.
    """
    gap = np.full(len(query), np.inf)
    partner = np.full(len(query), -1, dtype=np.int64)
    for src in np.unique(source[query]):
        r = ref[source[ref] == src]
        if len(r) == 0:
            continue
        order = np.argsort(starts[r], kind="stable")
        r_sorted, s_sorted = r[order], starts[r][order]
        q_local = np.flatnonzero(source[query] == src)
        qs = starts[query[q_local]]
        pos = np.searchsorted(s_sorted, qs)
        left = np.clip(pos - 1, 0, len(r) - 1)
        right = np.clip(pos, 0, len(r) - 1)
        d_left, d_right = np.abs(qs - s_sorted[left]), np.abs(qs - s_sorted[right])
        use_left = d_left <= d_right
        gap[q_local] = np.where(use_left, d_left, d_right) - length
        partner[q_local] = np.where(use_left, r_sorted[left], r_sorted[right])
    return gap, partner


def window_overlap(ctx, content_confirms: bool = True) -> CheckResult:
    # Overlap needs bar positions: row order says which window is first, not how many bars they share.
    starts, how, exact = _bar_positions(ctx, rows_allowed=False)
    if starts is None or ctx.dataset.source is None:
        why = how if starts is None else "no source column"
        return skip(CHECK, "window_overlap", f"no usable provenance ({why}); see shared_bars")
    length = int(ctx.dataset.X.shape[1])
    source = ctx.dataset.source
    most = [0]
    gaps: dict[str, list[float]] = {}  # per pair: nearest gaps in bars, for the report's histogram

    def measure(ref_name, ref, q_name, query) -> PairCount:
        gap, partner = nearest_gaps(starts, source, ref, query, length)
        gaps[f"{q_name}_{ref_name}"] = plot_data(gap)
        over = gap < 0
        n = int(over.sum())
        if not n:
            return PairCount(0)
        shared = (-gap[over]).astype(np.int64)
        most[0] = max(most[0], int(shared.max()))
        lines = [
            f"{n} of {len(query)} {q_name} windows share bars with a {ref_name} window "
            f"(up to {int(shared.max())} of {length} bars)"
        ]
        lines += [
            f"  {q_name} {ctx.dataset.window_id[query[i]]} (bar {starts[query[i]]}) overlaps {ref_name} "
            f"{ctx.dataset.window_id[partner[i]]} (bar {starts[partner[i]]}) by {int(-gap[i])} bars"
            for i in np.flatnonzero(over)[:MAX_EXAMPLES]
        ]
        return PairCount(n, lines)

    # With an inferred bar length an apparent overlap may be windows a few bars apart: FAIL only when the
    # bars themselves confirm it (shared_bars), else WARN.
    result = pair_finding(
        ctx,
        "window_overlap",
        measure,
        status_if_found=Status.FAIL if exact or content_confirms else Status.WARN,
        measured=lambda n: f"{n} held-out window(s) overlapping a window of another split in time",
        expected="0: sliding windows that share bars must stay in one split",
        hint="split by time with an embargo: `--split purged` (drops train windows within the embargo)",
        total_key="overlapping",
        head=(f"{how}; window length {length}",),
    )
    return replace(result, values={**result.values, "max_shared_bars": most[0], "gaps": gaps})


# --------------------------------------------------------------------------- overlap (content)


_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64
)


def bar_hashes(X: np.ndarray) -> np.ndarray:
    """uint64 (N, T): a 64-bit hash of each bar's F float32 values (exact equality -> equal hash)."""
    bits = np.ascontiguousarray(np.asarray(X, dtype=np.float32)).view(np.uint32).astype(np.uint64)
    mix = np.resize(_MIX, bits.shape[-1])
    with np.errstate(over="ignore"):
        h = (bits * mix).sum(axis=-1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


@dataclass(frozen=True)
class SharedBars:
    shared: np.ndarray  # per query window: most bars shared with one reference window at one offset
    partner: np.ndarray  # that reference window (local index), -1 if none
    offset: np.ndarray  # query bar position minus reference bar position


def shared_bars(
    X_ref: np.ndarray, X_query: np.ndarray, min_shared: int = Thresholds.min_shared_bars, chunk: int = 20_000
) -> SharedBars:
    """For each query window, the most bars it shares with a reference window at a consistent offset
    (query bar q == reference bar q - offset), counting only pairs with >= ``min_shared`` equal bars.

    Every run of >= min_shared shared bars contains a query position that is a multiple of min_shared,
    so only those anchor bars are looked up (sorted reference hashes + searchsorted); each (query,
    reference, offset) candidate is then verified by comparing all its aligned bars.
    """
    n_q, T = X_query.shape[:2]
    best = np.zeros(n_q, dtype=np.int64)
    partner = np.full(n_q, -1, dtype=np.int64)
    offset = np.zeros(n_q, dtype=np.int64)
    if len(X_ref) == 0 or n_q == 0:
        return SharedBars(best, partner, offset)
    H_ref, H_q = bar_hashes(X_ref), bar_hashes(X_query)
    flat_ref = H_ref.ravel()
    order = np.argsort(flat_ref, kind="stable")
    sorted_ref = flat_ref[order]

    anchors = np.arange(0, T, max(1, min_shared))
    a_hash = H_q[:, anchors].ravel()
    a_win = np.repeat(np.arange(n_q), len(anchors))
    a_pos = np.tile(anchors, n_q)
    lo = np.searchsorted(sorted_ref, a_hash, side="left")
    hi = np.searchsorted(sorted_ref, a_hash, side="right")
    counts = hi - lo
    # A bar value repeated in very many windows (e.g. a flat market) says nothing about alignment.
    counts[counts > 2 * T] = 0
    if counts.sum() == 0:
        return SharedBars(best, partner, offset)
    rep = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    ref_flat = order[lo[rep] + within]
    q_win, r_win = a_win[rep], ref_flat // T
    off = a_pos[rep] - ref_flat % T
    key = (q_win * len(X_ref) + r_win) * (2 * T) + (off + T)
    key = np.unique(key)
    off = key % (2 * T) - T
    r_win = (key // (2 * T)) % len(X_ref)
    q_win = key // (2 * T) // len(X_ref)

    positions = np.arange(T)
    for start in range(0, len(key), chunk):
        sl = slice(start, start + chunk)
        qw, rw, d = q_win[sl], r_win[sl], off[sl]
        p = positions[None, :] - d[:, None]
        valid = (p >= 0) & (p < T)
        eq = (H_q[qw[:, None], positions[None, :]] == H_ref[rw[:, None], np.clip(p, 0, T - 1)]) & valid
        matches = eq.sum(axis=1)
        keep = matches >= min_shared
        if not keep.any():
            continue
        qw, rw, d, matches = qw[keep], rw[keep], d[keep], matches[keep]
        # Best candidate per query window: sort by (window, matches) and take each window's last.
        o = np.lexsort((matches, qw))
        last = np.r_[qw[o][1:] != qw[o][:-1], True]
        sel = o[last]
        better = matches[sel] > best[qw[sel]]
        w = qw[sel][better]
        best[w], partner[w], offset[w] = matches[sel][better], rw[sel][better], d[sel][better]
    return SharedBars(best, partner, offset)


def shared_bar_windows(ctx) -> CheckResult:
    X = ctx.dataset.X
    T = int(X.shape[1])
    min_shared = int(ctx.thresholds.min_shared_bars)
    most = [0]

    def measure(ref_name, ref, q_name, query) -> PairCount:
        sb = shared_bars(X[ref], X[query], min_shared=min_shared)
        hit = sb.shared >= min_shared
        n = int(hit.sum())
        if not n:
            return PairCount(0)
        most[0] = max(most[0], int(sb.shared.max()))
        lines = [
            f"{n} of {len(query)} {q_name} windows repeat >= {min_shared} bars of a {ref_name} window "
            f"(up to {int(sb.shared.max())} of {T})"
        ]
        rows = np.flatnonzero(hit)[np.argsort(-sb.shared[hit], kind="stable")][:MAX_EXAMPLES]
        lines += [
            f"  {q_name} {ctx.dataset.window_id[query[i]]} bars {max(0, int(sb.offset[i]))}.."
            f"{min(T, T + int(sb.offset[i])) - 1} == {ref_name} {ctx.dataset.window_id[ref[sb.partner[i]]]}"
            f" bars {max(0, -int(sb.offset[i]))}..{min(T, T - int(sb.offset[i])) - 1}"
            f" ({int(sb.shared[i])} equal bars)"
            for i in rows
        ]
        return PairCount(n, lines)

    result = pair_finding(
        ctx,
        "shared_bars",
        measure,
        status_if_found=Status.FAIL,
        measured=lambda n: f"{n} held-out window(s) repeating >= {min_shared} bars of another split's window",
        expected="0: a held-out window must not contain bars the model trained on",
        hint="windows were cut with stride < window length and split at random: split by time with an embargo"
        " (`--split purged`)",
        total_key="windows_sharing_bars",
    )
    return replace(result, values={**result.values, "max_shared_bars": most[0]})


# --------------------------------------------------------------------------- temporal order


def temporal_order(ctx) -> CheckResult:
    kind = ctx.split_kind
    if kind not in ("temporal", "purged", "file"):
        return skip(CHECK, "temporal_order", f"split is {kind!r}, not temporal/purged/file")
    starts, how, exact = _bar_positions(ctx)
    if starts is None:
        return skip(CHECK, "temporal_order", f"no usable provenance ({how})")
    length = int(ctx.dataset.X.shape[1])
    embargo = int(ctx.config.embargo_bars)
    source = ctx.dataset.source if ctx.dataset.source is not None else np.zeros(len(ctx.dataset), dtype="U1")
    train, test = np.asarray(ctx.train_idx), np.asarray(ctx.test_idx)
    # The split is global in time: every test window should start no earlier than the latest train window.
    latest_train = starts[train].max()
    early = test[starts[test] < latest_train]
    if ctx.time_order == "row":
        return _row_order(ctx, early, int(latest_train), len(test), how)
    gap, partner = nearest_gaps(starts, source, train, test, length)
    finite = np.isfinite(gap)
    min_gap = float(gap[finite].min()) if finite.any() else math.inf
    lines = [f"{how}; embargo {embargo} bars; gap = bars strictly between two windows (negative: overlap)"]
    if len(early):
        lines.append(
            f"{len(early)} of {len(test)} test windows start before the latest train window (bar {latest_train}), "
            f"e.g. {', '.join(str(ctx.dataset.window_id[i]) for i in early[:MAX_EXAMPLES])}"
        )
    if finite.any():
        i = int(np.argmin(np.where(finite, gap, np.inf)))
        lines.append(
            f"smallest same-source train/test gap: {min_gap:.0f} bars (test {ctx.dataset.window_id[test[i]]}, "
            f"train {ctx.dataset.window_id[partner[i]]})"
        )
    too_close = int((gap < embargo).sum())
    if len(early) or min_gap < 0:
        status = Status.FAIL
    elif too_close:
        # An embargo measured in inferred units may be too strict: only exact bar counts FAIL it.
        status = Status.FAIL if kind == "purged" and exact else Status.WARN
    else:
        status = Status.PASS
    return CheckResult(
        CHECK,
        "temporal_order",
        status,
        measured=f"{len(early)} test window(s) before train; min gap {min_gap:.0f} bars; "
        f"{too_close} test window(s) within the embargo",
        expected=f"test after train, same-source gaps >= {embargo} bars ({kind} split)",
        hint=""
        if status is Status.PASS
        else "use `--split purged` (embargo_bars) or re-cut the split so train ends before test begins",
        evidence=tuple(lines),
        values={
            "test_before_train": len(early),
            "min_gap_bars": min_gap if math.isfinite(min_gap) else None,
            "within_embargo": too_close,
        },
    )


def _row_order(ctx, early: np.ndarray, latest_train: int, n_test: int, how: str) -> CheckResult:
    """temporal_order by row order: rows say which window is first, not how many bars lie between, so
    only the order is judged (no gaps, no embargo)."""
    lines = [how]
    if len(early):
        lines.append(
            f"{len(early)} of {n_test} test windows come before the last train row ({latest_train}), e.g. "
            + ", ".join(str(ctx.dataset.window_id[i]) for i in early[:MAX_EXAMPLES])
        )
    return CheckResult(
        CHECK,
        "temporal_order",
        Status.FAIL if len(early) else Status.PASS,
        measured=f"{len(early)} test window(s) before the last train row",
        expected=f"test rows after every train row ({ctx.split_kind} split, --time-order row)",
        hint="re-cut the split so train ends before test begins (a forward split)",
        evidence=tuple(lines),
        values={"test_before_train": len(early)},
    )


# --------------------------------------------------------------------------- symptoms


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95% for z = 1.96)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def _fmt_acc(acc: float, n: int) -> str:
    lo, hi = wilson_interval(round(acc * n), n)
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}] (n={n})"


def _sample_note(st) -> tuple[str, ...]:
    """What the accuracies were measured on, when it is a sample of the split (diagnostics.sampling)."""
    sample = getattr(st, "sample", None)
    return (sample.describe(),) if sample is not None and sample.sampled else ()


def accuracy_gap(ctx, st) -> CheckResult:
    from moola.train.metrics import majority_class

    gap = st.test_acc - st.train_acc
    limit = float(ctx.thresholds.accuracy_gap)
    lo_test, _ = wilson_interval(round(st.test_acc * st.n_test), st.n_test)
    _, hi_train = wilson_interval(round(st.train_acc * st.n_train), st.n_train)
    maj = majority_class(st.y_train)
    const_train = float(np.mean(st.y_train == maj)) if st.n_train else float("nan")
    const_test = float(np.mean(st.y_test == maj)) if st.n_test else float("nan")
    # FAIL only when significant: even the pessimistic test accuracy beats the optimistic train accuracy.
    significant = lo_test > hi_train
    status = Status.PASS if gap <= limit else (Status.FAIL if significant else Status.WARN)
    return CheckResult(
        CHECK,
        "accuracy_gap",
        status,
        measured=f"test {_fmt_acc(st.test_acc, st.n_test)} - train {_fmt_acc(st.train_acc, st.n_train)} = {gap:+.3f}",
        expected=f"test accuracy <= train accuracy + {limit:g} (a model does not do better on unseen data)",
        hint=""
        if status is Status.PASS
        else "test windows resemble training windows or the class balance differs: see the other leakage findings",
        evidence=(
            f"after {st.epochs} epoch(s) of {st.fit_name} on {st.n_train} train windows (95% Wilson intervals)",
            f"always predicting train-majority class {maj} scores train {const_train:.3f} / test {const_test:.3f}",
            *_sample_note(st),
        ),
        values={
            "train_acc": st.train_acc,
            "test_acc": st.test_acc,
            "gap": gap,
            "constant_test_acc": const_test,
        },
    )


def majority_baseline(ctx, st) -> CheckResult:
    from moola.train.metrics import majority_class

    if st.n_test == 0:
        return skip(CHECK, "majority_baseline", "empty test set")
    maj = majority_class(st.y_train)
    classes = ctx.dataset.classes
    share_test = float(np.mean(st.y_test == maj))
    share_train = float(np.mean(st.y_train == maj))
    best_const = float(np.bincount(st.y_test, minlength=st.n_classes).max() / st.n_test)
    lo, hi = wilson_interval(round(st.test_acc * st.n_test), st.n_test)
    pred_counts = np.bincount(st.pred_test, minlength=st.n_classes)
    one_class = float(pred_counts.max() / st.n_test)
    beats = lo > max(share_test, best_const)
    return CheckResult(
        CHECK,
        "majority_baseline",
        Status.PASS if beats else Status.WARN,
        measured=f"test accuracy {st.test_acc:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] on {st.n_test} windows",
        expected=f"CI above the majority-class share of the test set ({share_test:.3f}, "
        f"'{classes[maj] if maj < len(classes) else maj}' always)",
        hint=""
        if beats
        else "on this many test windows this accuracy is what always predicting one class gets: "
        "report it next to the majority baseline",
        evidence=(
            f"majority class of train: '{classes[maj] if maj < len(classes) else maj}' = {share_train:.3f} of train, "
            f"{share_test:.3f} of test; best constant guess on test {best_const:.3f}",
            f"{one_class:.0%} of the model's test predictions are one class",
            f"after {st.epochs} epoch(s) of {st.fit_name}",
            *_sample_note(st),
        ),
        values={
            "test_acc": st.test_acc,
            "ci_low": lo,
            "ci_high": hi,
            "majority_share_test": share_test,
            "majority_share_train": share_train,
            "best_constant_test": best_const,
        },
    )


def row_level(ctx) -> list[CheckResult]:
    """The findings asked of every row (no training): split bookkeeping, copies, ids, overlap, order."""
    content = shared_bar_windows(ctx)
    results = [r for r in (split_choice(ctx), split_rows(ctx)) if r is not None]
    return [
        *results,
        identical_windows(ctx),
        shared_ids(ctx),
        near_duplicate_windows(ctx),
        window_overlap(ctx, content_confirms=content.status is Status.FAIL),
        content,
        temporal_order(ctx),
    ]


@register(CHECK)
def check_leakage(ctx) -> list[CheckResult]:
    from concurrent.futures import ThreadPoolExecutor

    # Both cores: the row-level findings (numpy, FAISS and BLAS, which release the GIL) run on a worker
    # thread while the shared training run (whose --fit time limit needs the main thread's SIGALRM) trains.
    # One core each: torch's intra-op threads would otherwise fight the row thread for both cores (measured
    # on 2 cores: 42 s of wall time and 14 s of system time for `moola-diag leakage`, against 15 s and 0.5 s).
    import torch

    from diagnostics.training import short_training

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moola-leakage-rows")
    try:
        rows = pool.submit(row_level, ctx)
        st = short_training(ctx)
        results = rows.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(threads)
    results += [accuracy_gap(ctx, st), majority_baseline(ctx, st)]
    return results
