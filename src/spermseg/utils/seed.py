"""Seeding for reproducibility: same seed, same result."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch; optionally ask PyTorch for deterministic algorithms.

    Args:
        seed: the seed.
        deterministic: call ``torch.use_deterministic_algorithms(True, warn_only=True)`` and disable cuDNN
            benchmarking, so that the same seed on the same device gives the same weights.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may still draw from the legacy global RNG
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
