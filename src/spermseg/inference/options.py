"""The options of ``spermseg predict`` (:class:`PredictOptions`) and their check, shared by the prediction pipeline
and its output-folder rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spermseg.errors import SpermsegError


@dataclass
class PredictOptions:
    """Options of :func:`predict_inputs` (the ``spermseg predict`` flags)."""

    threshold: float | None = None  # default: the bundle's
    soft_format: Literal["png16", "npy"] = "png16"
    batch_size: int = 4
    device: str = "auto"
    backend: Literal["torch", "onnx"] = "torch"
    tta: bool = False
    precision: str = "auto"  # auto: bf16 on CUDA, float32 on the CPU; fp32; bf16
    tile: int = 0  # 0: whole images; else tile size in pixels
    tile_overlap: int = 64
    pixel_size: float | None = None  # micrometres per pixel, for sperm.csv
    overlay: bool = True
    min_area: int = 10
    instances: bool = False  # separate touching/crossing sperm and write NAME_instances (inference.label_outputs)
    roi: bool = False  # also an ImageJ ROI zip per image
    label_format: Literal["png", "tif"] = "png"
    instance_method: str = "skeleton"
    existing: Literal["refuse", "overwrite", "append"] = "refuse"  # when OUT holds an earlier run's results
    # whole-sperm filter (inference.postprocess): None = the model's radius (from its training labels), 0 = off
    min_head_radius: float | None = None


def validate_options(options: PredictOptions) -> None:
    """Reject impossible option values before any model or input is read.

    Raises:
        SpermsegError: one line naming the flag.
    """
    if options.batch_size < 1:
        raise SpermsegError(f"--batch-size must be >= 1, got {options.batch_size}")
    if options.tile < 0:
        raise SpermsegError(f"--tile must be >= 0 (0: whole images), got {options.tile}")
    if options.tile and not 0 <= options.tile_overlap < options.tile:
        # overlap >= tile makes the stride 1 pixel (hundreds of times more tiles); a negative one leaves pixels
        # that no tile covers (0/0 = NaN in the blend)
        raise SpermsegError(
            f"--tile-overlap must be in [0, --tile) = [0, {options.tile}), got {options.tile_overlap}; "
            f"e.g. --tile-overlap {options.tile // 8}"
        )
    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        raise SpermsegError(f"--threshold {options.threshold} is outside [0, 1]")
    if options.pixel_size is not None and not 0.0 < options.pixel_size < float("inf"):
        raise SpermsegError(
            f"--pixel-size must be a positive number of micrometres per pixel, got {options.pixel_size}"
        )
    if options.soft_format not in ("png16", "npy"):
        raise SpermsegError(f"unknown soft-mask format '{options.soft_format}'; use png16 or npy")
    if options.min_head_radius is not None and not 0.0 <= options.min_head_radius < float("inf"):
        raise SpermsegError(f"--min-head-radius must be >= 0 px (0: keep every piece), got {options.min_head_radius}")
    if options.existing not in ("refuse", "overwrite", "append"):
        raise SpermsegError(f"unknown existing-output rule '{options.existing}'; use refuse, overwrite or append")
