"""Feature sets computed from raw OHLC windows: ``transform(X, name)``, ``FEATURE_SETS``, ``FEATURE_DOCS``."""

from moola.features.transforms import FEATURE_DOCS, FEATURE_SETS, n_features, ohlc4, relative11, transform

__all__ = ["FEATURE_DOCS", "FEATURE_SETS", "n_features", "ohlc4", "relative11", "transform"]
