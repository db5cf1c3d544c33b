"""spermseg: whole-sperm (head and tail) segmentation in blurry ICSI microscopy.

Importing the package is cheap: heavy modules (torch, scipy, skimage, cv2) are imported inside the functions
that need them, so ``spermseg --help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spermseg._version import __version__ as __version__

if TYPE_CHECKING:  # pragma: no cover
    import torch


def load_model(path: str) -> torch.nn.Module:
    """Rebuild a trained model (base model or ensembling network) from a checkpoint with no other input.

    Args:
        path: a checkpoint stem, its ``.safetensors`` or ``.json`` file, or a run directory (its best checkpoint).

    Returns:
        The model in eval mode, on the CPU, with its metadata dict attached as ``model.spermseg_meta``.
    """
    from spermseg.models.checkpoints import load_model as _load_model

    return _load_model(path)


def __getattr__(name: str) -> Any:  # lazy access to the model registry
    if name in ("create_model", "list_models", "create_ensemble", "list_ensembles"):
        from spermseg import models

        return getattr(models, name)
    raise AttributeError(name)
