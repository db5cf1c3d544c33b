"""Static int8 quantization of an exported model (``spermseg export --int8``) with ONNX Runtime.

Weights are quantized per channel (int8) and activations per tensor (uint8) in the QDQ format, with activation
ranges calibrated on real frames (:func:`quantize_onnx`'s ``images``: a few dozen frames like the ones the model
will see). The quantized file keeps the exported model's metadata (threshold, divisor, normalizations, the
whole-sperm radius), so ``predict --backend onnx`` uses it exactly like the float model. What it costs in
accuracy is measured, not assumed: ``benchmarks/bench_predict.py`` and docs/inference.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from spermseg.errors import SpermsegError


def _calibration_feeds(images: Sequence[np.ndarray], divisor: int) -> Iterator[dict[str, np.ndarray]]:
    """ONNX inputs for each raw gray frame (H, W) in [0, 1], padded exactly as the ONNX backend pads them."""
    import torch

    from spermseg.models.blocks import pad_to_divisor

    for img in images:
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
        padded, (top, left, h, w) = pad_to_divisor(x, divisor)
        valid = np.zeros(padded.shape, dtype=np.float32)
        valid[..., top : top + h, left : left + w] = 1.0
        yield {"image": padded.numpy(), "valid": valid}


def quantize_onnx(src: str | Path, out: str | Path, images: Sequence[np.ndarray]) -> Path:
    """Write an int8 (QDQ) copy of the exported model ``src`` to ``out``, calibrated on ``images``.

    Args:
        src: a ``.onnx`` file written by :func:`spermseg.inference.onnx.export_onnx`.
        out: the ``.onnx`` file to write (atomically).
        images: calibration frames, each (H, W) float32 in [0, 1] (raw, as ``predict`` reads them).

    Returns:
        The path written.

    Raises:
        SpermsegError: no calibration frames, or ONNX Runtime failed to quantize the graph (one line).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from spermseg.utils.atomic import atomic_path

    if not images:
        raise SpermsegError("int8 quantization needs calibration frames: pass --calibration DIR (a few dozen images)")
    source = onnx.load(str(src))
    meta = {p.key: p.value for p in source.metadata_props}
    divisor = int(meta.get("spermseg_divisor", 1))

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = _calibration_feeds(images, divisor)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            quantize_static(
                str(src),
                str(tmp),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises many types; the user needs one clear line
            raise SpermsegError(f"int8 quantization of {src} failed: {type(exc).__name__}: {exc}") from exc
        quantized = onnx.load(str(tmp))
        del quantized.metadata_props[:]
        for key, value in {**meta, "spermseg_precision": "int8"}.items():
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(quantized, str(tmp))
    return out
