"""Blur robustness (paper Fig. 12): re-evaluate a predictor on inputs blurred with Gaussian kernels of size 1..15.

The paper names kernel sizes only. The sigma rule used here is OpenCV's default for a given kernel size,
``sigma(n) = 0.3 * ((n - 1) / 2 - 1) + 0.8`` (what ``cv2.GaussianBlur(img, (n, n), 0)`` uses), continued to even
sizes, with the kernel support ``n`` for odd ``n`` and ``n + 1`` for even ``n`` (a Gaussian kernel needs a
centre pixel); for sizes up to 9 OpenCV's own ``sigma=0`` path uses fixed tables instead, the formula is kept
here for every size so that sigma grows smoothly. Size 1 is the identity (the unblurred baseline). Borders are
reflected (OpenCV's ``BORDER_REFLECT_101``). So sigma grows strictly with the size: 0.65 (n=2), 0.8 (3),
1.1 (5), 1.4 (7), 1.7 (9), 2.0 (11), 2.3 (13), 2.6 (15).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spermseg.metrics.accumulators import SegmentationAccumulator

__all__ = ["DEFAULT_SIZES", "blur_image", "blur_robustness", "blur_sigma"]

DEFAULT_SIZES = tuple(range(1, 16))


def blur_sigma(size: int) -> float:
    """Gaussian sigma of kernel size ``size`` (OpenCV's rule; 0 for size 1 = no blur)."""
    if int(size) != size or size < 1:
        raise ValueError(f"blur kernel size must be an integer >= 1, got {size}")
    if size == 1:
        return 0.0
    from spermseg.data.transforms import blur_sigma as opencv_sigma

    return float(opencv_sigma(size))


def blur_image(image: np.ndarray, size: int) -> np.ndarray:
    """Blur a float32 (H, W) image with the Gaussian kernel of ``size`` (see the module rule); float32 out."""
    import cv2

    img = np.asarray(image, dtype=np.float32)
    sigma = blur_sigma(size)
    if sigma == 0.0:
        return img.copy()
    support = size if size % 2 else size + 1
    return cv2.GaussianBlur(img, (support, support), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def blur_robustness(
    predict: Callable[[list[np.ndarray]], Sequence[np.ndarray] | np.ndarray],
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray | dict[str, Any]],
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    mode: str = "fast",
    kernels: Sequence[int] = (),
    parts: bool = True,
) -> dict[int, dict[str, Any]]:
    """Evaluate ``predict`` on every blur level.

    Args:
        predict: maps a list of float32 (H, W) images in [0, 1] to soft masks (N, H, W) in [0, 1].
        images: the unblurred images.
        references: one reference per image (bool full mask or ``{"full", "head", "tail"}``).
        sizes: kernel sizes (default 1..15).
        mode, kernels, parts: passed to :class:`~spermseg.metrics.SegmentationAccumulator`.

    Returns:
        ``{size: result}`` with the accumulator's result per size plus ``"sigma"``.
    """
    if len(images) != len(references):
        raise ValueError(f"{len(images)} images but {len(references)} references")
    out: dict[int, dict[str, Any]] = {}
    for size in sizes:
        blurred = [blur_image(im, size) for im in images]
        probs = predict(blurred)
        acc = SegmentationAccumulator(mode, tuple(kernels), parts)
        for prob, ref in zip(probs, references):
            acc.update(np.asarray(prob, dtype=np.float32), ref)
        out[int(size)] = {"sigma": blur_sigma(size), **acc.result()}
    return out
