"""Segmentation models: ten base families and the paper's ensembling networks, in plain PyTorch.

Conventions (every model):

* input (B, C, H, W) float, any H and W: :class:`spermseg.models.blocks.SegmentationModel` pads centrally to
  the family's divisor (reflect padding) and crops the output back;
* output: logits (B, out_channels, H, W). Models with deep supervision (and the ensembling networks) return
  ``(logits, [aux_logits, ...])`` in training mode, where aux maps may have lower resolution (the loss upsamples
  them); in eval mode they return the logits tensor only (inference and ONNX export see one output).
"""

from spermseg.models.registry import create_model, list_models, model_kwargs, register_model

__all__ = ["create_model", "list_models", "model_kwargs", "register_model", "create_ensemble", "list_ensembles"]


def create_ensemble(kind: str, n_masks: int, **kwargs):  # noqa: ANN201 - thin lazy wrapper
    """Build an ensembling network; see :mod:`spermseg.models.ensemble`."""
    from spermseg.models.ensemble import create_ensemble as _create

    return _create(kind, n_masks, **kwargs)


def list_ensembles() -> list[str]:
    """Names of the ensembling kinds: ``avg``, ``ens_s``, ``ens_is``, ``ens_concat``, ``ens_att_v1``, ``ens_att_v2``."""
    from spermseg.models.ensemble import ENSEMBLE_KINDS

    return list(ENSEMBLE_KINDS)
