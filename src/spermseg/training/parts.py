"""The ``parts`` training target: a multi-class network over the six part codes (``data.target: parts``).

Targets are the rater's ``GT{r}_parts`` label images (0 background, 1 acrosome, 2 nucleus, 3 vacuole, 4 midpiece,
5 tail); the network has six output channels trained with softmax cross-entropy + multi-class Dice
(:func:`spermseg.training.losses.parts_loss`). Augmentation moves the codes as a one-hot stack through the data
layer's Augmenter (whose masks stay binary) and takes the arg-max back. Validation scores the arg-max codes with
:class:`spermseg.metrics.multiclass.PartsAccumulator`; the best epoch is the one with the highest mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_CODES = 6


def augment_parts(augmenter: Any, images: Any, codes: Any, gen: Any, normalization: str | None) -> tuple[Any, Any]:
    """Augment images (B, 1, H, W) and part codes (B, 1, H, W) together; returns (images, codes) of those shapes.

    A pixel that no one-hot channel covers after a rotation or zoom (possible at part borders once the Augmenter
    re-binarizes) becomes background.
    """
    import torch
    import torch.nn.functional as F

    onehot = F.one_hot(codes[:, 0].round().long(), N_CODES).permute(0, 3, 1, 2).float()
    images, onehot = augmenter(images, onehot, gen, normalization)
    covered = onehot.sum(dim=1, keepdim=True) > 0
    out = torch.where(covered, onehot.argmax(dim=1, keepdim=True), torch.zeros_like(covered, dtype=torch.long))
    return images, out.float()


def augment_parts_batch(
    augmenter: Any, images: Any, codes: Any, masks: Any, gen: Any, normalization: str | None
) -> tuple[Any, Any, None]:
    """:func:`augment_parts` in the loop's augmentation-step form ``(images, target, masks)`` (part networks take
    no soft masks: ``masks`` is ignored and None comes back)."""
    return (*augment_parts(augmenter, images, codes, gen, normalization), None)


def predict_codes_and_foreground(
    model: Any, images: Sequence[np.ndarray], normalization: str, device: Any, batch_size: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: arg-max part codes (H, W) uint8 and the foreground probability ``1 - softmax[background]``
    (H, W) float32 of a part network (float32, eval mode, no TTA)."""
    import torch

    from spermseg.data.transforms import normalize
    from spermseg.inference.forward import forward_logits

    was_training = model.training
    model.to(device).eval()
    out: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        with torch.inference_mode():
            for img in images:  # one at a time: sizes may differ, and CPU batches gain little
                x = torch.from_numpy(np.asarray(img, np.float32))[None, None].to(device)
                logits = forward_logits(model, normalize(x, normalization)).float()
                fg = 1.0 - torch.softmax(logits, dim=1)[0, 0]
                codes = logits.argmax(dim=1)[0].to("cpu", torch.uint8).numpy()
                out.append((codes, fg.to("cpu").numpy().astype(np.float32)))
    finally:
        model.train(was_training)
    del batch_size
    return out


def score_codes(preds: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> dict[str, Any]:
    """``{"miou", "miou_bg", "iou_<part>"..., "head", "tail", "full"}`` of predicted vs reference code images."""
    from spermseg.metrics.multiclass import PartsAccumulator

    acc = PartsAccumulator()
    for p, r in zip(preds, refs, strict=True):
        acc.update(p, r)
    res = acc.result()
    flat = {f"iou_{k}": v for k, v in res["parts"].items()}
    return {"miou": res["miou"], "miou_bg": res["miou_bg"], **flat, **{k: res[k] for k in ("head", "tail", "full")}}


def validate_parts(model: Any, data: Any, normalization: str, device: Any, batch_size: int = 4) -> dict[str, Any]:
    """Validation measures of a part network on a :class:`~spermseg.training.trainer.SplitData` with code targets:
    :func:`score_codes` of the arg-max codes, plus ``t_opt`` / ``fg_iou_opt``: the threshold of the foreground
    probability with the best whole-sperm IoU and that IoU (recorded as the run's ``threshold``; ``predict`` keeps
    the arg-max codes, which scored as well on validation: docs/instances.md)."""
    from spermseg.training.validation import evaluate_probs

    pairs = predict_codes_and_foreground(model, data.images, normalization, device, batch_size)
    res = score_codes([codes for codes, _ in pairs], data.targets)
    fg = evaluate_probs([f for _, f in pairs], [np.asarray(t) > 0 for t in data.targets])
    return {**res, "t_opt": fg["t_opt"], "fg_iou_opt": fg["iou_opt"]}
