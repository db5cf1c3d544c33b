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
        path: a checkpoint stem, its ``.safetensors`` or ``.json`` file, a run directory (its best checkpoint), or
            ``"builtin"``: the network of the model that ships with spermseg (checksums verified).

    Returns:
        The model in eval mode, on the CPU (float32), with its metadata dict attached as ``model.spermseg_meta``.
    """
    from spermseg.models.checkpoints import load_model as _load_model

    if path == "builtin":
        from spermseg.inference.bundle import load_predictor as _load_predictor

        return _load_predictor(path).bases[0]  # the built-in bundle holds one network
    return _load_model(path)


def load_predictor(model: str = "builtin", *, threshold: float | None = None) -> torch.nn.Module:
    """The whole prediction pipeline of a model: raw images (B, 1, H, W) in [0, 1] -> probabilities (B, 1, H, W).

    Args:
        model: ``"builtin"`` (the model that ships with spermseg; default), a bundle directory, a run directory or a
            checkpoint.
        threshold: override the model's decision threshold (``predictor.threshold``).

    Returns:
        A :class:`spermseg.inference.bundle.Predictor` in eval mode on the CPU (``.threshold``,
        ``.min_head_radius``).
    """
    from spermseg.inference.bundle import load_predictor as _load_predictor

    return _load_predictor(model, threshold=threshold)


def __getattr__(name: str) -> Any:  # lazy access to the model registry
    if name in ("create_model", "list_models", "create_ensemble", "list_ensembles"):
        from spermseg import models

        return getattr(models, name)
    raise AttributeError(name)
