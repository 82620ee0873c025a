"""Moola: classify windows of 105 OHLC bars into pattern classes, optionally regressing pattern pointers."""

__version__ = "0.1.0"
