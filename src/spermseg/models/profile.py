"""Parameter counts and MACs of the registered models (``spermseg models``, benchmarks).

MACs (multiply-accumulates) are counted with :class:`torch.utils.flop_counter.FlopCounterMode` for one image of
the requested size (default 512x512) at each family's default width, as FLOPs / 2. Only matrix products and
convolutions count (normalization, activations and pooling are a few percent at most). The model and its input
live on the ``meta`` device, so nothing is computed and even 512x512 takes well under a second per model; a model
that cannot run on ``meta`` falls back to a real CPU forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (works on ``meta`` modules too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one eval-mode forward pass, FLOPs / 2 from ``FlopCounterMode``.

    Args:
        model: the module (any device; ``meta`` computes nothing).
        inputs: positional inputs of ``model.forward`` on the same device, e.g. ``(image,)`` with image (B, C, H, W).

    Returns:
        MACs for the whole batch.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def profile_model(
    name: str,
    size: tuple[int, int] = (512, 512),
    kind: str = "base",
    n_masks: int = 3,
    in_channels: int = 1,
    macs: bool = True,
) -> dict[str, Any]:
    """Parameter count and MACs of one model at its default width.

    Args:
        name: a base model (:func:`spermseg.models.list_models`) or, with ``kind="ensemble"``, an ensembling kind.
        size: (H, W) of the input image.
        kind: ``"base"`` or ``"ensemble"``.
        n_masks: number of soft masks fed to an ensembling network.
        in_channels: image channels.
        macs: also count MACs (parameters only when False).

    Returns:
        ``{"name", "kind", "params", "macs" (int or None), "size": [H, W], "defaults": {...}}``; ensembles add
        ``"n_masks"``.
    """
    import torch

    from spermseg.models import create_ensemble, create_model, model_kwargs

    def build() -> nn.Module:
        if kind == "ensemble":
            return create_ensemble(name, n_masks, in_channels=in_channels)
        return create_model(name, in_channels=in_channels)

    def example(device: str) -> tuple[torch.Tensor, ...]:
        image = torch.zeros(1, in_channels, *size, device=device)
        if kind == "ensemble":
            return image, torch.zeros(1, n_masks, *size, device=device)
        return (image,)

    with torch.device("meta"):
        model = build()
    info: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "params": count_parameters(model),
        "macs": None,
        "size": list(size),
    }
    if kind == "ensemble":
        info["n_masks"] = n_masks
    else:
        info["defaults"] = {k: v for k, v in model_kwargs(name).items() if k not in ("in_channels", "out_channels")}
    if macs:
        try:
            info["macs"] = count_macs(model, example("meta"))
        except (NotImplementedError, RuntimeError):
            # Some operators have no meta kernel: count on a real CPU model instead (slower, same result).
            info["macs"] = count_macs(build(), example("cpu"))
    return info
