"""Nearest neighbours of z-scored windows: exact blocked matmuls for small sets, a FAISS index beyond.

Exact search costs |Q| x |R| x T*F multiply-adds: 64 M pairs (20,000 windows, 80/20) take seconds, 6.4 G
pairs (200,000) would take an hour. Beyond ``EXACT_PAIRS`` pairs the search goes through an index:

1. every window is z-scored (as in the exact path) and projected, in chunks, onto the top ``PCA_DIMS``
   principal axes of a seeded sample of the reference windows. An orthonormal projection never lengthens a
   distance, so a near-copy stays a near-copy (closer, in fact) in the projected space;
2. a FAISS inverted-file index (``IndexIVFFlat``, k-means cells) over the projected reference windows
   returns each query's ``CANDIDATES`` nearest candidates from the ``NPROBE`` cells nearest to it;
3. each candidate's distance is recomputed exactly on the full z-scored windows and the nearest kept.

The distances returned are exact distances to a real reference window, so they are never below the true
nearest-neighbour distance: a window reported as a near-copy is one. What the index can miss is a partner
sitting in a cell that is not among the query's ``NPROBE`` nearest; a near-copy (far closer to its partner
than windows are to each other) shares its partner's cell or a neighbouring one. Byte-identical copies never
depend on this: the leakage check finds them by hashing every row (``diagnostics.rowhash``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_PAIRS = 2e8  # |Q| x |R| searched exactly (20,000 windows split 80/20: 6.4e7)
NN_BLOCK = 1024  # query rows per exact distance block: 1024 x 20,000 float32 = 82 MB
CHUNK = 8192  # windows z-scored/projected at a time on the index path (8192 x 420 float32 = 14 MB)
PCA_DIMS = 64
PCA_SAMPLE = 20_000  # reference windows the principal axes are fitted on
CANDIDATES = 8
NPROBE = 16


def zscore_windows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Z float32 (N, T*F): each window minus its mean over all values, over its std; valid mask).

    Removes price level and scale, so a rescaled or shifted copy of a window is as close as an exact one.
    Constant windows (std 0) have no shape to compare and are marked invalid.
    """
    flat = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    mean = flat.mean(axis=1, keepdims=True, dtype=np.float64)
    std = flat.std(axis=1, keepdims=True, dtype=np.float64)
    scale = np.maximum(np.abs(mean), 1.0)
    valid = (std[:, 0] > 1e-6 * scale[:, 0]) & np.isfinite(std[:, 0])
    Z = ((flat - mean) / np.where(valid[:, None], std, 1.0)).astype(np.float32)
    Z[~valid] = 0.0
    return np.ascontiguousarray(Z), valid


def nearest_neighbors(
    Q: np.ndarray, R: np.ndarray, exclude: np.ndarray | None = None, block: int = NN_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each Q row's nearest R row (Euclidean), in blocks of matmuls.

    d^2 = |q|^2 + |r|^2 - 2 q.r with torch (multithreaded BLAS), float32, clipped at 0. ``exclude[i]`` is
    an R index that Q row i must not match (itself, for within-set distances), or -1.
    """
    import torch

    q_all = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(R, dtype=np.float32))
    r_sq = (r * r).sum(dim=1)
    dist = np.empty(len(Q), dtype=np.float32)
    index = np.empty(len(Q), dtype=np.int64)
    if len(R) == 0:
        dist.fill(np.inf)
        index.fill(-1)
        return dist, index
    with torch.no_grad():
        for start in range(0, len(Q), block):
            q = q_all[start : start + block]
            d2 = torch.addmm(r_sq[None, :], q, r.T, beta=1.0, alpha=-2.0)
            d2 += (q * q).sum(dim=1, keepdim=True)
            if exclude is not None:
                ex = torch.from_numpy(np.asarray(exclude[start : start + block], dtype=np.int64))
                rows = torch.nonzero(ex >= 0).flatten()
                d2[rows, ex[rows]] = float("inf")
            best, arg = d2.min(dim=1)
            dist[start : start + len(q)] = best.clamp_min_(0).sqrt_().numpy()
            index[start : start + len(q)] = arg.numpy()
    return dist, index


class RowView:
    """Rows ``rows`` of X without copying them: ``view[k]`` is ``X[rows[k]]`` (a slice or an index array), so
    the index path reads 200,000 windows chunk by chunk instead of holding a copy of each split."""

    def __init__(self, X: np.ndarray, rows: np.ndarray):
        self.X, self.rows = X, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *X.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: slice | np.ndarray) -> np.ndarray:
        return self.X[self.rows[k]]


def materialize(X: np.ndarray | RowView) -> np.ndarray:
    return X[:] if isinstance(X, RowView) else X


@dataclass(frozen=True)
class WindowIndex:
    """Projected reference windows in a FAISS IVF index, and how to project and re-rank against them."""

    X_ref: np.ndarray  # the reference windows (raw), for exact re-ranking
    rows: np.ndarray  # reference rows held (the valid, non-constant ones), local indices into X_ref
    mean: np.ndarray  # PCA centre (T*F,)
    axes: np.ndarray  # (T*F, PCA_DIMS) orthonormal columns
    index: object  # faiss.IndexIVFFlat
    nlist: int

    def describe(self) -> str:
        return (
            f"searched with a FAISS IVF index ({self.nlist} cells, {NPROBE} probed, {CANDIDATES} candidates "
            f"per window re-ranked exactly) on {self.axes.shape[1]} principal axes"
        )

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(projected float32 (N, PCA_DIMS), valid mask), in chunks so no full z-scored copy is held."""
        out = np.empty((len(X), self.axes.shape[1]), dtype=np.float32)
        valid = np.empty(len(X), dtype=bool)
        for s in range(0, len(X), CHUNK):
            Z, ok = zscore_windows(X[s : s + CHUNK])
            out[s : s + len(Z)] = (Z - self.mean) @ self.axes
            valid[s : s + len(Z)] = ok
        return out, valid

    def nearest(
        self, X_query: np.ndarray, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(exact distance, local reference index) of each query window's best candidate; inf / -1 when
        none. ``exclude[i]``: a reference index query i must not match (itself), or -1."""
        P, _ = self.project(X_query)
        k = CANDIDATES + (1 if exclude is not None else 0)
        _, cand = self.index.search(P, k)  # type: ignore[attr-defined]
        dist = np.full(len(X_query), np.inf, dtype=np.float32)
        best = np.full(len(X_query), -1, dtype=np.int64)
        for s in range(0, len(X_query), CHUNK // k):
            c = cand[s : s + CHUNK // k]
            ok = c >= 0
            ref = np.where(ok, self.rows[np.where(ok, c, 0)], -1)
            if exclude is not None:
                ok &= ref != np.asarray(exclude[s : s + len(c)])[:, None]
            Zq, _ = zscore_windows(X_query[s : s + len(c)])
            Zr, _ = zscore_windows(self.X_ref[np.where(ok, ref, 0).ravel()])
            d = np.linalg.norm(Zr.reshape(len(c), k, -1) - Zq[:, None, :], axis=2)
            d[~ok] = np.inf
            j = d.argmin(axis=1)
            dist[s : s + len(c)] = d[np.arange(len(c)), j]
            best[s : s + len(c)] = np.where(np.isfinite(dist[s : s + len(c)]), ref[np.arange(len(c)), j], -1)
        return dist, best


def build_index(X_ref: np.ndarray, seed: int = 0) -> WindowIndex:
    """A FAISS IVF index over the principal-axis projections of the valid reference windows."""
    import faiss

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(X_ref), size=min(PCA_SAMPLE, len(X_ref)), replace=False))
    Zs, ok = zscore_windows(X_ref[sample])
    Zs = Zs[ok]
    mean = Zs.mean(axis=0)
    # Principal axes from the sample's covariance (T*F x T*F: 420 x 420 for OHLC windows).
    cov = np.cov((Zs - mean).T.astype(np.float64))
    _, vecs = np.linalg.eigh(cov)
    dims = min(PCA_DIMS, Zs.shape[1])
    axes = np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)
    index_like = WindowIndex(X_ref, np.zeros(0, np.int64), mean.astype(np.float32), axes, None, 0)
    P, valid = index_like.project(X_ref)
    rows = np.flatnonzero(valid)
    # ~4 sqrt(N) cells, each with >= 39 training points (what FAISS k-means asks for)
    nlist = int(max(1, min(1024, 4 * math.sqrt(len(rows)), len(rows) // 39)))
    quantizer = faiss.IndexFlatL2(dims)
    index = faiss.IndexIVFFlat(quantizer, dims, nlist)
    index.cp.seed = int(seed)
    train = P[rows[rng.permutation(len(rows))[: 64 * nlist]]]
    index.train(np.ascontiguousarray(train))
    index.add(np.ascontiguousarray(P[rows]))
    index.nprobe = min(NPROBE, nlist)
    return WindowIndex(X_ref, rows, index_like.mean, axes, index, nlist)
