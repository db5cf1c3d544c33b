"""Batched inference: soft masks from raw images, used by validation, evaluation, the mask cache and prediction.

``predict_probs`` is the one place where a trained network meets images: it normalizes each image exactly as
training did (:func:`spermseg.data.transforms.normalize`), runs the model in eval mode with gradients off
(bf16 autocast and channels_last on CUDA), optionally averages over flips (test-time augmentation), and returns
float32 probabilities. Images of different sizes are batched by size; the models pad and crop internally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

# Flip sets for test-time augmentation: identity, horizontal, vertical, both (the paper's flip augmentations).
_TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def autocast_context(device: torch.device, enabled: bool = True) -> Any:
    """bf16 autocast on CUDA (Ampere and newer run it at full speed); a no-op context elsewhere.

    On the CPU bf16 autocast is slower than float32 for convolutions on most machines and changes results, so it
    is never used there.
    """
    import contextlib

    import torch

    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _as_list(images: np.ndarray | Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            raise DataError(f"{what}: expected (N, H, W) or a list of (H, W) arrays, got one (H, W) array")
        return [images[i] for i in range(images.shape[0])]
    return list(images)


def forward_logits(model: nn.Module, image: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """One forward pass returning the main logits: ``model(image)`` or, for ensembles, ``model(image, masks)``."""
    from spermseg.models.blocks import split_outputs

    out = model(image) if masks is None else model(image, masks)
    return split_outputs(out)[0]


def predict_probs(
    model: nn.Module,
    images: np.ndarray | Sequence[np.ndarray],
    normalization: str,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    tta: bool = False,
    masks: np.ndarray | Sequence[np.ndarray] | None = None,
    channels_last: bool | None = None,
) -> np.ndarray:
    """Soft masks of ``model`` for raw [0, 1] gray images.

    Args:
        model: a base model (``model(image)``) or, with ``masks``, an ensembling network (``model(image, masks)``).
            It is put in eval mode for the call and returned to its previous mode afterwards.
        images: (N, H, W) float array or a list of (H, W) arrays (sizes may differ) in [0, 1].
        normalization: ``none``, ``mean`` or ``minmax`` (as in training; stored in the checkpoint).
        device: where to run (the model is moved there).
        batch_size: images per forward pass.
        tta: average the probabilities over horizontal/vertical flips (4 passes).
        masks: for ensembling networks, the input soft masks: (N, n_masks, H, W) or a list of (n_masks, H, W).
        channels_last: use channels_last memory format; default: on CUDA only (where it is faster).

    Returns:
        (N, H, W) float32 probabilities in [0, 1] when all images have one size, else an object array of
        (H_i, W_i) float32 arrays.
    """
    import torch

    from spermseg.data.transforms import normalize

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    imgs = _as_list(images, "predict_probs images")
    mask_list = _as_list(masks, "predict_probs masks") if masks is not None else None
    if mask_list is not None and len(mask_list) != len(imgs):
        raise DataError(f"predict_probs: {len(imgs)} images but {len(mask_list)} mask stacks")
    if channels_last is None:
        channels_last = dev.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    was_training = model.training
    model.to(dev, memory_format=fmt)
    model.eval()

    # Group indices by image size so that each batch stacks; order is restored at the end.
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(imgs):
        if img.ndim != 2:
            raise DataError(f"predict_probs: image {i} has shape {img.shape}, expected (H, W)")
        by_size.setdefault(tuple(img.shape), []).append(i)
    out: list[np.ndarray | None] = [None] * len(imgs)
    try:
        with torch.inference_mode():
            for idxs in by_size.values():
                for start in range(0, len(idxs), max(1, batch_size)):
                    chunk = idxs[start : start + batch_size]
                    x = torch.from_numpy(np.stack([np.asarray(imgs[i], dtype=np.float32) for i in chunk]))
                    x = normalize(x[:, None].to(dev), normalization).contiguous(memory_format=fmt)
                    m = None
                    if mask_list is not None:
                        m = torch.from_numpy(np.stack([np.asarray(mask_list[i], dtype=np.float32) for i in chunk]))
                        m = m.to(dev).contiguous(memory_format=fmt)
                    prob = _predict_batch(model, x, m, dev, tta)
                    for j, i in enumerate(chunk):
                        out[i] = prob[j]
    finally:
        model.train(was_training)
    shapes = {o.shape for o in out if o is not None}
    if len(shapes) <= 1:
        return np.stack(out) if out else np.zeros((0, 0, 0), dtype=np.float32)  # type: ignore[arg-type]
    arr = np.empty(len(out), dtype=object)
    for i, o in enumerate(out):
        arr[i] = o
    return arr


def _predict_batch(
    model: nn.Module, x: torch.Tensor, masks: torch.Tensor | None, dev: torch.device, tta: bool
) -> np.ndarray:
    """Probabilities (B, H, W) float32 for one normalized batch (B, 1, H, W), optionally flip-averaged."""
    import torch

    flips = _TTA_FLIPS if tta else ((),)
    total = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        mi = torch.flip(masks, dims) if (dims and masks is not None) else masks
        with autocast_context(dev):
            logits = forward_logits(model, xi, mi)
        prob = torch.sigmoid(logits.float())
        if dims:
            prob = torch.flip(prob, dims)
        total = prob if total is None else total + prob
    assert total is not None
    prob = (total / len(flips))[:, 0]
    return prob.to("cpu", torch.float32).numpy()
