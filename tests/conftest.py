"""Shared test set-up."""

import torch

# One intra-op thread: the models are tiny, so this costs nothing on a quiet machine and keeps the suite
# fast and steady when the 2 cores are shared (torch's default 2 threads thrash under load).
torch.set_num_threads(1)
