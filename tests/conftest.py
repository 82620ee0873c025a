"""Shared test set-up."""

import atexit
import os
import shutil
import tempfile

import torch

# One intra-op thread: the models are tiny, so this costs nothing on a quiet machine and keeps the suite
# fast and steady when the 2 cores are shared (torch's default 2 threads thrash under load).
torch.set_num_threads(1)

# The quality estimator caches runs across calls; the tests get a cache of their own, fresh per session,
# so no result computed outside the suite (another revision, another machine) reaches an assertion.
os.environ["MOOLA_QUALITY_CACHE"] = tempfile.mkdtemp(prefix="moola-quality-cache-")
atexit.register(shutil.rmtree, os.environ["MOOLA_QUALITY_CACHE"], True)
