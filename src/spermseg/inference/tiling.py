"""Tiled inference with overlap for images larger than a model's working size.

Tiles of ``tile x tile`` pixels overlap by ``overlap`` pixels; each tile's soft mask is weighted by a separable
ramp that falls to a small value at tile edges (where a CNN sees the least context), and the weighted sum is
divided by the summed weights. An image no larger than one tile is processed whole.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``size`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blending weight: linear ramp over ``overlap`` pixels at each end, 1 inside, never 0."""
    w = np.ones(length, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 1.0) / (overlap + 1.0)
        n = min(overlap, length // 2)
        w[:n] = ramp[:n]
        w[length - n :] = ramp[:n][::-1]
    return w


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int = 512, overlap: int = 64, batch_size: int = 4
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``image`` and blend the results.

    Args:
        fn: maps a batch of tiles (B, t, t) float32 to soft masks (B, t, t) float32.
        image: (H, W) float32.
        tile: tile size in pixels (a multiple of the model divisor avoids extra padding).
        overlap: overlap between neighbouring tiles in pixels.
        batch_size: tiles per call of ``fn``.

    Returns:
        (H, W) float32 blended soft mask.
    """
    h, w = image.shape
    if h <= tile and w <= tile:
        return fn(image[None])[0]
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]
    weight = np.outer(_ramp(th, overlap), _ramp(tw, overlap))
    acc = np.zeros((h, w), dtype=np.float64)
    norm = np.zeros((h, w), dtype=np.float64)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        tiles = np.stack([image[y : y + th, x : x + tw] for y, x in chunk])
        probs = fn(tiles)
        for (y, x), prob in zip(chunk, probs):
            acc[y : y + th, x : x + tw] += prob * weight
            norm[y : y + th, x : x + tw] += weight
    return (acc / norm).astype(np.float32)
