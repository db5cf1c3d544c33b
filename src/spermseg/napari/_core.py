"""The one place where the napari plugin touches spermseg's internals (model loading, instances, measurements,
tracking, the synthetic generator, output readers).

Everything else in :mod:`spermseg.napari` goes through these small functions, so a move of the library modules
(as when ``spermseg.engine`` became ``spermseg.inference`` and ``training``) is a change of the imports in this
file only. Imports are inside the functions: importing the plugin costs nothing until it runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import DataError, SpermsegError

BatchFn = Callable[[np.ndarray], np.ndarray]

#: The model name that means "the model that ships with spermseg" (``spermseg.inference.bundle.BUILTIN``).
BUILTIN = "builtin"


def builtin_model_path() -> Path | None:
    """The built-in model's folder when this installation has its weights, else None (the widget then hides it).

    Returns:
        A bundle directory, or None when the installed spermseg ships no built-in weights.
    """
    from spermseg.inference.bundle import builtin_model_path as _path

    return _path()


def resolve_model(model: str | Path) -> Path:
    """A model argument (``builtin``, a bundle or run directory, a checkpoint, an ``.onnx`` file) as a path.

    Raises:
        SpermsegError: ``builtin`` without a built-in model, or a path that does not exist.
    """
    if str(model) == BUILTIN:
        from spermseg.inference.bundle import builtin_dir

        return builtin_dir()  # one line when none ships or the files fail their checksums
    path = Path(model).expanduser()
    if not str(model).strip():
        raise SpermsegError("no model chosen: give a bundle directory, a run directory or an .onnx file")
    if not path.exists():
        raise SpermsegError(f"model not found: {path}; give a bundle directory, a run directory or an .onnx file")
    return path


def load_batch_fn(
    model: str | Path,
    *,
    threshold: float | None = None,
    device: str = "auto",
    tta: bool = False,
    batch_size: int = 4,
    precision: str = "auto",
    tile: int = 0,
) -> tuple[BatchFn, float]:
    """The ``spermseg predict`` prediction callable and decision threshold for a model.

    Args:
        model: see :func:`resolve_model`.
        threshold: decision threshold; None: the model's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        tta: average over flips.
        batch_size: frames per forward pass.
        precision: ``auto``, ``fp32`` or ``bf16``.
        tile: tile size in pixels (0: whole images).

    Returns:
        ``(fn, threshold)``: ``fn`` maps (B, H, W) float32 in [0, 1] to (B, H, W) probabilities, or (B, 6, H, W)
        per-code sigmoids for a part network.
    """
    from spermseg.inference.options import PredictOptions, validate_options
    from spermseg.inference.predict import build_batch_fn

    options = PredictOptions(
        threshold=threshold, device=device, tta=tta, batch_size=batch_size, precision=precision, tile=tile
    )
    validate_options(options)
    return build_batch_fn(resolve_model(model), options)


def split_parts(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(part codes uint8 (H, W), whole-sperm probability (H, W)) of a part network's (6, H, W) output."""
    from spermseg.inference.label_outputs import split_parts_prob

    return split_parts_prob(prob)


def separate(mask: np.ndarray, parts: np.ndarray | None, method: str = "skeleton") -> np.ndarray:
    """One id per sperm, exactly as ``spermseg predict --instances`` (``write_label_outputs``) separates them.

    Args:
        mask: (H, W) bool whole-sperm mask.
        parts: (H, W) uint8 part codes of a part network (heads = codes 1-3), or None (heads estimated).
        method: ``skeleton``, ``watershed`` or ``components``.

    Returns:
        (H, W) uint16 labels, 0 background, 1..N.
    """
    from spermseg.inference.instances import METHODS
    from spermseg.inference.label_outputs import separate_frame

    if method not in METHODS:
        raise SpermsegError(f"unknown instance method '{method}'; choose one of {', '.join(METHODS)}")
    return separate_frame(mask, parts, method)


def sperm_columns() -> list[str]:
    """The per-sperm columns of ``sperm.csv`` after ``input`` and ``frame``."""
    from spermseg.inference.predict_outputs import _sperm_columns

    return [c for c in _sperm_columns() if c not in ("input", "frame")]


def measure(labels: np.ndarray, parts: np.ndarray | None, pixel_size_um: float | None) -> list[dict[str, Any]]:
    """One ``sperm.csv`` row (without ``input``/``frame``) per sperm of a label image, ``sperm_id`` = label id."""
    from spermseg.inference.morphometry import measure_sperm

    return [m.as_dict() for m in measure_sperm(labels, parts, pixel_size_um)]


def kinematics_columns() -> list[str]:
    """The columns of ``kinematics.csv``."""
    from spermseg.kinematics import KINEMATICS_COLUMNS

    return ["track_id", *KINEMATICS_COLUMNS]


def track_masks(
    masks: np.ndarray,
    fps: float,
    pixel_size_um: float,
    *,
    on_frame: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """Track per-frame masks exactly as ``spermseg track --masks`` does (same detector, linker and kinematics).

    The outputs ``spermseg track`` writes go to a temporary folder and are read back.

    Args:
        masks: (T, H, W) bool (or instance labels) per frame.
        fps: frames per second.
        pixel_size_um: micrometres per pixel.
        on_frame: called with each linked frame's index (progress; it may raise to stop).

    Returns:
        ``(track_labels (T, H, W) uint16 (ids = track ids), tracks.csv rows, kinematics.csv rows)``.
    """
    import tifffile

    from spermseg.inference.stacks import StackInfo
    from spermseg.inference.tracking import TrackConfig, track
    from spermseg.utils.table import read_rows_csv

    t, h, w = masks.shape
    info = StackInfo(Path("<napari>"), "napari", t, h, w, fps=fps, fps_source="widget",
                     pixel_size_um=pixel_size_um, pixel_size_source="widget")  # fmt: skip
    items = ((i, None, masks[i]) for i in range(t))
    with tempfile.TemporaryDirectory(prefix="spermseg-napari-") as tmp:
        track(items, info, tmp, TrackConfig(overlay=False), on_frame=on_frame)
        labels_path = Path(tmp) / "labels.tif"
        labels = tifffile.imread(labels_path) if labels_path.is_file() else np.zeros((t, h, w), np.uint16)
        labels = np.asarray(labels, np.uint16).reshape(t, h, w)
        return labels, read_rows_csv(Path(tmp) / "tracks.csv"), read_rows_csv(Path(tmp) / "kinematics.csv")


def to_gray_float(data: np.ndarray, rgb: bool = False) -> np.ndarray:
    """Image data as spermseg reads it: gray float32 in [0, 1] (uint8 / 255, uint16 / 65535, float as is).

    RGB(A) data (``rgb``, last axis 3 or 4) become gray with ITU-R BT.601 weights. Floats outside [0, 1] and other
    integer types are scaled by their minimum and maximum (napari holds images of any range).

    Raises:
        DataError: NaN/Inf pixels.
    """
    from spermseg.data.io import _color_to_gray, to_float

    arr = np.asarray(data)
    if rgb and arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype)
        gray = _color_to_gray(arr)
        if scale is not None:  # as read_image does for colour files
            return gray / np.float32(scale)
        arr = gray
    if arr.dtype in (np.uint8, np.uint16):
        return to_float(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError("the image layer has NaN/Inf pixels; replace them (e.g. np.nan_to_num) before segmenting")
    lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 1.0)
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return out
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def read_label_image(path: Path, kind: str = "instances") -> np.ndarray:
    """A label image written by ``predict`` (``instances`` uint16 or ``parts`` uint8), checked."""
    from spermseg.data.labels import read_labels

    return read_labels(path, kind)


def read_prob_image(path: Path) -> np.ndarray:
    """A soft mask written by ``predict`` (16-bit PNG or ``.npy``) as float32 in [0, 1]."""
    from spermseg.data.io import read_soft_mask

    return read_soft_mask(path)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a spermseg CSV (numbers as int/float, empty cells NaN); [] when the file is missing."""
    from spermseg.utils.table import read_rows_csv

    return read_rows_csv(path) if Path(path).is_file() else []


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write table rows as CSV atomically (floats with up to 6 decimals, NaN as an empty cell)."""
    from spermseg.utils.table import write_rows_csv

    write_rows_csv(path, columns, rows)


def synthetic_frames(n_frames: int, *, seed: int = 0, video: int = 0, size: int = 512) -> tuple[np.ndarray, dict]:
    """Consecutive frames of one synthetic video from ``spermseg synth``'s generator.

    Args:
        n_frames: number of frames (1: a single frame).
        seed, video: the generator's seed and video index.
        size: frame height and width in pixels.

    Returns:
        ``(frames (T, H, W) uint8, calibration {"pixel_size_um", "fps"})``.
    """
    from spermseg.data.synth import SynthConfig, render_item, scene_for

    cfg = SynthConfig(height=size, width=size)
    scene = scene_for(cfg, seed, video)
    frames = np.stack([render_item(cfg, scene, seed, video, i).image for i in range(n_frames)])
    return frames, {"pixel_size_um": scene.pixel_size_um, "fps": cfg.fps}
