"""Static int8 quantization of an exported model (``spermseg export --int8``) with ONNX Runtime.

Weights are quantized per channel and activations per tensor (uint8) in the QDQ format, with activation ranges
calibrated on real frames (:func:`quantize_onnx`'s ``images``: a few dozen frames like the ones the model will see).
Weights use 7 of their 8 bits by default (``reduce_range``): ONNX Runtime's x86 kernels for uint8 x int8 without VNNI
(AVX2, AVX-512 without VNNI) add pairs of products in int16 (``vpmaddubsw``), which saturates with full 8-bit weights:
on an AVX2-only EPYC the fpn w16 student fell from test AP 0.89 to 0.54, and under ``qemu-x86_64 -cpu Haswell`` a
trained fpn's int8 masks had IoU 0.77 with its fp32 masks (0.98 with 7-bit weights).
The file is meant to run on any machine, so it is written in the form that is exact on all of them;
:func:`int8_parity` measures what it costs on the machine at hand. The quantized file keeps the exported model's
metadata (threshold, divisor, normalizations, the whole-sperm radius), so ``predict --backend onnx`` uses it exactly
like the float model. What it costs in accuracy is measured, not assumed: ``benchmarks/bench_predict.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


def quantize_onnx(src: str | Path, out: str | Path, images: Sequence[np.ndarray], *, reduce_range: bool = True) -> Path:
    """Write an int8 (QDQ) copy of the exported model ``src`` to ``out``, calibrated on ``images``.

    Args:
        src: a ``.onnx`` file written by :func:`spermseg.inference.onnx.export_onnx`.
        out: the ``.onnx`` file to write (atomically).
        images: calibration frames, each (H, W) float32 in [0, 1] (raw, as ``predict`` reads them).
        reduce_range: 7-bit weights, exact on CPUs without VNNI (see the module docstring); ``False`` keeps 8 bits,
            which only VNNI CPUs (and ARM) compute without saturating.

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
                reduce_range=reduce_range,
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises many types; the user needs one clear line
            raise SpermsegError(f"int8 quantization of {src} failed: {type(exc).__name__}: {exc}") from exc
        quantized = onnx.load(str(tmp))
        del quantized.metadata_props[:]
        precision = {"spermseg_precision": "int8", "spermseg_int8_weight_bits": "7" if reduce_range else "8"}
        for key, value in {**meta, **precision}.items():
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(quantized, str(tmp))
    return out


# The int8 model is accepted when its masks agree with the float model's this closely on the calibration frames:
# IoU of the thresholded foregrounds (what predict writes) and the mean change of the soft mask (what AP ranks).
PARITY_MIN_IOU = 0.95
PARITY_MAX_MEAN_ABS = 0.01


@dataclass(frozen=True)
class Int8Parity:
    """int8 vs fp32 soft masks over some frames: ``mean_abs``/``max_abs`` of |int8 - fp32| over all pixels and
    ``mask_iou``, the pooled IoU of the two foregrounds at the exported threshold (1.0 when both are empty)."""

    mean_abs: float
    max_abs: float
    mask_iou: float

    @property
    def ok(self) -> bool:
        """Within ``PARITY_MIN_IOU`` and ``PARITY_MAX_MEAN_ABS``."""
        return self.mask_iou >= PARITY_MIN_IOU and self.mean_abs <= PARITY_MAX_MEAN_ABS


def int8_parity(float_path: str | Path, int8_path: str | Path, images: Sequence[np.ndarray]) -> Int8Parity:
    """How far the int8 model's masks are from the float model's, on this machine's ONNX Runtime kernels.

    Args:
        float_path: the exported float ``.onnx``.
        int8_path: its quantized twin from :func:`quantize_onnx`.
        images: frames to compare on, each (H, W) float32 in [0, 1] (the calibration frames will do).

    Returns:
        The differences, pooled over all pixels of all frames.
    """
    from spermseg.inference.onnx import onnx_backend, onnx_threshold
    from spermseg.metrics.overlap import iou

    if not images:
        raise SpermsegError("int8 parity needs frames to compare on: pass the calibration images")
    threshold = onnx_threshold(float_path)
    ref_fn, got_fn = onnx_backend(float_path), onnx_backend(int8_path)
    refs, gots = [], []
    for img in images:  # one frame at a time: calibration frames may differ in size
        batch = np.ascontiguousarray(img, dtype=np.float32)[None]
        refs.append(ref_fn(batch).ravel())
        gots.append(got_fn(batch).ravel())
    ref, got = np.concatenate(refs), np.concatenate(gots)
    diff = np.abs(got - ref)
    return Int8Parity(float(diff.mean()), float(diff.max()), iou(got >= threshold, ref >= threshold))
