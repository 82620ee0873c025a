"""The in-memory form of a labeled window set: plain, contiguous numpy arrays, no object dtype."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

WINDOW_LENGTH = 105  # bars per window
OHLC_COLUMNS = ("open", "high", "low", "close")
DEFAULT_CLASSES = ("consolidation", "retracement")


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
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    window_id: np.ndarray
    pointers: np.ndarray | None = None
    source: np.ndarray | None = None
    bar_start: np.ndarray | None = None
    path: str | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

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
        )

    def with_features(self, X: np.ndarray) -> WindowDataset:
        """The same windows with another feature representation (same N and T)."""
        if X.shape[:2] != self.X.shape[:2]:
            raise ValueError(f"feature array {X.shape} does not match windows {self.X.shape}")
        return replace(self, X=np.ascontiguousarray(X, dtype=np.float32))
