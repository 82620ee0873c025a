"""Byte-identical windows over every row: 64-bit digests computed in chunks, confirmed byte for byte.

``moola.data.dataset.row_keys`` (one void scalar of the window's bytes) is exact but sorts 1,680-byte keys
and copies the rows it is given: fine for thousands of windows, slow for hundreds of thousands. Here each
window gets a 64-bit digest (a position-weighted sum of its float32 bit patterns, mixed), in chunks so
memory stays bounded; windows with equal digests are then compared byte for byte, so a reported copy is
always a real one and a digest collision can only cost a comparison.
"""

from __future__ import annotations

import numpy as np

CHUNK = 16_384  # rows digested at a time: 16,384 x 420 uint64 = 55 MB

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _weights(width: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per value position (fixed: digests are comparable across calls)."""
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2**63, size=width, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def digests(X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """uint64 (n,): a digest of each window's float32 bytes (equal windows -> equal digests)."""
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, dtype=np.int64)
    width = int(np.prod(X.shape[1:], dtype=np.int64))
    w = _weights(width)
    out = np.empty(len(rows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, len(rows), CHUNK):
            block = np.ascontiguousarray(X[rows[s : s + CHUNK]], dtype=np.float32).reshape(-1, width)
            h = (block.view(np.uint32).astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(31)
            h *= _M1
            h ^= h >> np.uint64(29)
            h *= _M2
            h ^= h >> np.uint64(32)
            out[s : s + len(h)] = h
    return out


def same_bytes(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool (n,): window a[i] is byte-identical to window b[i] (in chunks)."""
    out = np.empty(len(a), dtype=bool)
    width = int(np.prod(X.shape[1:], dtype=np.int64))
    for s in range(0, len(a), CHUNK):
        xa = np.ascontiguousarray(X[a[s : s + CHUNK]], dtype=np.float32).reshape(-1, width).view(np.uint32)
        xb = np.ascontiguousarray(X[b[s : s + CHUNK]], dtype=np.float32).reshape(-1, width).view(np.uint32)
        out[s : s + len(xa)] = (xa == xb).all(axis=1)
    return out


def identical_rows(X: np.ndarray, ref: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask over ``query``: the window has a byte-identical window among ``ref``, that window's position in
    ``ref`` per flagged query row). ``ref``/``query`` are rows of X."""
    ref, query = np.asarray(ref, dtype=np.int64), np.asarray(query, dtype=np.int64)
    mask = np.zeros(len(query), dtype=bool)
    if len(ref) == 0 or len(query) == 0:
        return mask, np.zeros(0, dtype=np.int64)
    d_ref, d_q = digests(X, ref), digests(X, query)
    order = np.argsort(d_ref, kind="stable")
    sorted_ref = d_ref[order]
    lo = np.searchsorted(sorted_ref, d_q, side="left")
    hi = np.searchsorted(sorted_ref, d_q, side="right")
    cand = np.flatnonzero(hi > lo)
    # Confirm each candidate against every reference window with its digest (almost always exactly one).
    partner = np.full(len(query), -1, dtype=np.int64)
    todo = cand
    step = 0
    while len(todo):
        pos = lo[todo] + step
        live = pos < hi[todo]
        todo, pos = todo[live], pos[live]
        if not len(todo):
            break
        same = same_bytes(X, query[todo], ref[order[pos]])
        partner[todo[same]] = order[pos[same]]
        todo = todo[~same]
        step += 1
    mask = partner >= 0
    return mask, partner[mask]


def identical_groups(X: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Groups (positions in ``rows``, size >= 2) of byte-identical windows among ``rows`` of X."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return []
    d = digests(X, rows)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    same_next = ds[1:] == ds[:-1]
    if not same_next.any():
        return []
    # Runs of equal digests, each confirmed: keep the members byte-identical to the run's first window.
    starts = np.flatnonzero(np.r_[True, ~same_next])
    ends = np.r_[starts[1:], len(ds)]
    groups = []
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        members = order[s:e]
        while len(members) >= 2:
            same = same_bytes(X, np.full(len(members), rows[members[0]]), rows[members])
            if same.sum() >= 2:
                groups.append(np.sort(members[same]))
            members = members[~same]
    return groups
