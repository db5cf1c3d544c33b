"""Device selection shared by training and inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spermseg.errors import SpermsegError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N|mps`` to a ``torch.device``; ``auto`` prefers CUDA, then the CPU.

    Raises:
        SpermsegError: when the requested accelerator is not available.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpermsegError(f"--device {name} requested but CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SpermsegError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
