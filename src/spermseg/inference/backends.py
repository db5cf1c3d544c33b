"""Batch callables of prediction: each maps raw gray frames (B, H, W) float32 in [0, 1] to probabilities (B, H, W)
float32 (part networks: (B, 6, H, W)): the PyTorch backend and the wrappers (flip TTA, tiling, chunks) that chain
onto any backend, the ONNX one (:func:`spermseg.inference.onnx.onnx_backend`) included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

BatchFn = Callable[[np.ndarray], np.ndarray]


def torch_backend(predictor: Any, device: str = "auto", channels_last: bool = True, precision: str = "auto") -> BatchFn:
    """Run a :class:`~spermseg.inference.bundle.Predictor` on the chosen device.

    ``precision``: ``auto`` (bf16 autocast on CUDA, float32 on the CPU), ``fp32`` or ``bf16``
    (:func:`~spermseg.inference.forward.resolve_precision`).

    channels_last is on by default: for inference it measured 1.6-1.8x faster than NCHW on this CPU too
    (``benchmarks/bench_predict.py``), unlike training steps, where it was slower on the CPU.
    """
    import torch

    from spermseg.inference.forward import autocast_context, resolve_precision
    from spermseg.utils.device import resolve_device

    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)  # errors (unknown, bf16 on an old GPU) before any input is read
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    predictor.to(dev, memory_format=fmt).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None].to(dev)
        with torch.inference_mode(), autocast_context(dev, precision):
            prob = predictor(x.contiguous(memory_format=fmt))
        out = prob.float().cpu().numpy()
        return out[:, 0] if out.shape[1] == 1 else out  # part networks: (B, 6, H, W) per-code sigmoids

    return run


def with_flip_tta(fn: BatchFn) -> BatchFn:
    """Average probabilities over identity, horizontal, vertical and both flips (flipped back).

    The same rule as ``predict_probs(tta=True)`` (:func:`spermseg.inference.forward.flip_average`), on NumPy batches.
    """
    from spermseg.inference.forward import flip_average

    def flip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return np.ascontiguousarray(np.flip(a, axes))

    def run(batch: np.ndarray) -> np.ndarray:
        return flip_average(fn, (batch,), flip).astype(np.float32)  # (B, H, W), or (B, C, H, W): part networks

    return run


def with_tiling(fn: BatchFn, tile: int, overlap: int, batch_size: int) -> BatchFn:
    """Process each image in overlapping tiles (see :mod:`spermseg.inference.tiling`)."""
    from spermseg.inference.tiling import tiled_apply

    def run(batch: np.ndarray) -> np.ndarray:
        return np.stack([tiled_apply(fn, img, tile=tile, overlap=overlap, batch_size=batch_size) for img in batch])

    return run


def in_chunks(fn: BatchFn, batch_size: int) -> BatchFn:
    """Call ``fn`` on at most ``batch_size`` images at a time."""

    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([fn(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)])

    return run
