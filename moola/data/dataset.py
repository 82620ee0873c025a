"""The in-memory form of a labeled window set: plain, contiguous numpy arrays, no object dtype."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

WINDOW_LENGTH = 105  # bars per window
OHLC_COLUMNS = ("open", "high", "low", "close")
DEFAULT_CLASSES = ("consolidation", "retracement")


def row_keys(X: np.ndarray) -> np.ndarray:
    """One opaque void scalar per window: the bytes of its float32 values (equal bytes <=> identical).

    Comparable, sortable and usable with np.unique / np.isin: the one way windows are hashed (the data
    check's duplicates, the leakage check's identical windows).
    """
    X = np.asarray(X, dtype=np.float32)
    flat = np.ascontiguousarray(X.reshape(len(X), int(np.prod(X.shape[1:], dtype=np.int64))))
    if flat.shape[1] == 0:  # no values: every window is the same (empty) window
        return np.zeros(len(X), dtype=np.dtype((np.void, 1)))
    return flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()


# eq=False: field-wise == on numpy arrays is ambiguous; compare arrays explicitly where needed.
@dataclass(frozen=True, eq=False)
class WindowDataset:
    """N labeled windows of T bars with F features each.

    X          float32 (N, T, F), C-contiguous
    y          int64 (N,), index into ``classes``
    classes    class names; ``classes[y[i]]`` is window i's label (as str)
    window_id  fixed-width unicode (N,) -- never object dtype
    pointers   int64 (N, 2) [start, end] bar indices, or None when the file has none
    source     unicode (N,) series name, or None
    bar_start  int64 (N,) index (or epoch-ns timestamp) of each window's first bar, or None
    path       where it was loaded from (for error messages), or None
    feature_type  None: X holds raw OHLC prices; else the name of the precomputed feature set X already
               holds (the file's ``feature_type`` column), which is used as is, never re-transformed
    row        int64 (N,) each window's row in the file it came from (split files index file rows, and
               ``drop_null_rows`` removes some), or None when rows are the file's rows in order
    columns    (role, description) pairs: which file column was used for what (``moola data inspect``)
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    window_id: np.ndarray
    pointers: np.ndarray | None = None
    source: np.ndarray | None = None
    bar_start: np.ndarray | None = None
    path: str | None = None
    feature_type: str | None = None
    row: np.ndarray | None = None
    columns: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def file_rows(self) -> np.ndarray:
        """Each window's row number in its file (the index a split file refers to)."""
        return self.row if self.row is not None else np.arange(len(self), dtype=np.int64)

    @property
    def has_provenance(self) -> bool:
        return self.source is not None and self.bar_start is not None

    def subset(self, index: np.ndarray) -> WindowDataset:
        """Rows ``index`` (an int array or boolean mask), keeping the class list unchanged."""
        index = np.asarray(index)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.ascontiguousarray(a[index])

        return replace(
            self,
            X=np.ascontiguousarray(self.X[index]),
            y=np.ascontiguousarray(self.y[index]),
            window_id=np.ascontiguousarray(self.window_id[index]),
            pointers=take(self.pointers),
            source=take(self.source),
            bar_start=take(self.bar_start),
            row=np.ascontiguousarray(self.file_rows[index]),
        )

    def with_features(self, X: np.ndarray) -> WindowDataset:
        """The same windows with another feature representation (same N and T)."""
        if X.shape[:2] != self.X.shape[:2]:
            raise ValueError(f"feature array {X.shape} does not match windows {self.X.shape}")
        return replace(self, X=np.ascontiguousarray(X, dtype=np.float32))
