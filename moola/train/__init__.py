"""Training: device selection, metrics, the fit loop (``moola.train.trainer``) and run directories (``moola.train.run``).

Submodules import torch; this package file does not, so importing ``moola.train`` stays cheap.
"""
