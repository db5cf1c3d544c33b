"""Validation and test scores of a training run: predict a split in float32 and score it (AP, IoU_0.5, IoU_opt,
t_opt, Brier) with :func:`spermseg.metrics.score`; the best epoch is the one with the highest validation AP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spermseg.errors import DataError
from spermseg.training.train_data import SplitData, attach_cached_masks, load_config_split

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from spermseg.training.config import TrainConfig

METRIC_KEYS = ("ap", "iou_0.5", "iou_opt", "t_opt")


def evaluate_probs(probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], mode: str = "fast") -> dict[str, float]:
    """AP, IoU_0.5, IoU_opt, t_opt and Brier of soft masks against bool references (full part, no IoU')."""
    from spermseg.metrics import full_scores, score

    return full_scores(score(probs, refs, mode=mode), (*METRIC_KEYS, "brier"))


def validate_model(
    model: nn.Module,
    data: SplitData,
    normalization: str,
    device: torch.device,
    *,
    batch_size: int = 4,
    tta: bool = False,
    mode: str = "fast",
) -> dict[str, float]:
    """Predict ``data`` with ``model`` (eval mode) and score it: ``{"ap", "iou_0.5", "iou_opt", "t_opt", ...}``."""
    from spermseg.inference.forward import predict_probs

    # float32 whatever the training precision: the scores select the best epoch and its threshold.
    probs = predict_probs(
        model,
        data.images,
        normalization,
        device=device,
        batch_size=batch_size,
        tta=tta,
        masks=data.masks,
        precision="fp32",
    )
    return evaluate_probs(probs, data.targets, mode)


def evaluate_test(
    cfg: TrainConfig, model: nn.Module, device: torch.device, inputs_ids: list[str], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """Score the best checkpoint on ``cfg.data.test_split`` (IoU also at the validation threshold)."""
    try:
        test = load_config_split(cfg, cfg.data.test_split)
    except DataError as exc:
        log(f"spermseg train: no test evaluation: {exc}")
        return None
    if cfg.data.target == "parts":
        from spermseg.training.parts import validate_parts

        res = validate_parts(model, test, cfg.data.normalization, device)
        return {**res, "split": cfg.data.test_split, "n_images": len(test)}
    if cfg.model.ensemble:
        attach_cached_masks(test, cfg.model.masks, cfg.model.mask_test_split or cfg.data.test_split, inputs_ids)
    from spermseg.inference.forward import predict_probs

    probs = predict_probs(
        model,
        test.images,
        cfg.data.normalization,
        device=device,
        batch_size=cfg.validation.batch_size,
        tta=cfg.validation.tta,
        masks=test.masks,
        precision="fp32",
    )
    metrics: dict[str, Any] = evaluate_probs(probs, test.targets, cfg.validation.metric_mode)
    t_val = model.spermseg_meta.get("threshold", 0.5)  # type: ignore[union-attr]
    inter = union = 0
    for prob, ref in zip(probs, test.targets):
        pred = prob >= t_val
        inter += int(np.logical_and(pred, ref).sum())
        union += int(np.logical_or(pred, ref).sum())
    metrics["iou_t_val"] = inter / union if union else 1.0
    metrics["split"] = cfg.data.test_split
    metrics["n_images"] = len(test)
    return metrics
