"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch is imported anywhere: idle OpenMP threads sleep instead of spinning. Spinning threads make small
# convolutions 5-20x slower whenever the machine runs anything else (parallel tests, CI neighbours).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

# The real three-rater dataset lies beside the repository (never inside it); tests using it skip when absent.
SPERMPARSING = Path(
    os.environ.get("SPERMSEG_SPERMPARSING", Path(__file__).resolve().parents[2] / "shared" / "data" / "spermparsing")
)


@pytest.fixture(scope="session")
def spermparsing_root() -> Path:
    """Path of ../shared/data/spermparsing (SegSperm layout, 640x512, GT1-GT3); skips when not present."""
    if not (SPERMPARSING / "test_small" / "images").is_dir():
        pytest.skip(f"real dataset not found at {SPERMPARSING}")
    return SPERMPARSING


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """One intra-op thread: the tests' tiny tensors gain nothing from threads, and on a busy machine extra threads
    make small convolutions many times slower."""
    import torch

    torch.set_num_threads(1)
