"""Temporal consistency of segmentations of a frame sequence (paper Fig. 14).

For consecutive binarized masks ``M_t`` and ``M_{t+1}`` (soft mask >= threshold): their IoU, and the fraction of
the foreground of frame t that is still foreground in frame t+1, ``|M_t & M_{t+1}| / |M_t|`` ("kept"). A method
whose masks flicker (broken or vanishing tails, eroded heads) scores low on both. Empty frames follow the
project's rule: a ratio with a zero denominator is 1 when both masks are empty, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spermseg.metrics.ranking import safe_ratio

__all__ = ["temporal_consistency"]


def temporal_consistency(probs: Sequence[np.ndarray], threshold: float = 0.5) -> dict[str, Any]:
    """IoU and kept fraction between consecutive frames.

    Args:
        probs: T soft masks (H, W) in [0, 1] (or bool masks), in frame order.
        threshold: binarization threshold (a pixel is foreground when its score >= threshold).

    Returns:
        ``{"n_frames", "threshold", "iou": [T-1 floats], "kept": [T-1 floats], "mean_iou", "mean_kept",
        "min_iou"}`` (means are NaN for fewer than two frames).
    """
    masks = [np.asarray(p) >= threshold for p in probs]
    ious, kept = [], []
    for a, b in zip(masks[:-1], masks[1:]):
        if a.shape != b.shape:
            raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
        inter = int(np.count_nonzero(a & b))
        union = int(np.count_nonzero(a | b))
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        ious.append(float(safe_ratio(inter, union, union == 0)))
        kept.append(float(safe_ratio(inter, na, na == 0 and nb == 0)))
    nan = float("nan")
    return {
        "n_frames": len(masks),
        "threshold": threshold,
        "iou": ious,
        "kept": kept,
        "mean_iou": float(np.mean(ious)) if ious else nan,
        "mean_kept": float(np.mean(kept)) if kept else nan,
        "min_iou": float(np.min(ious)) if ious else nan,
    }
