"""``segment_layers``: an image or a stack in, napari layers out (no Qt, no napari import: testable anywhere).

A 2-D image gives, as napari ``LayerDataTuple`` s ``(data, meta, layer_type)``:

* ``NAME sperm prob`` (Image, hidden): the soft mask, float32 in [0, 1];
* ``NAME sperm`` (Labels): one id per sperm, separated exactly as ``spermseg predict --instances`` does; the ids are
  the ``sperm_id`` of the per-sperm table in ``meta["metadata"]["spermseg"]`` (the rows of ``sperm.csv``);
* ``NAME parts`` (Labels): part codes (1 acrosome, 2 nucleus, 3 vacuole, 4 midpiece, 5 tail), part networks only.

A stack ``(T, H, W)`` gives the soft-mask stack, ``NAME sperm`` (Labels, ids = track ids, as ``spermseg track``'s
``labels.tif``), the parts stack for part networks, and ``NAME tracks`` (Tracks: ``track_id, frame, y, x`` of each
head); the table is ``kinematics.csv`` (one row per track). Tracking needs the frame rate and the pixel size.

The work is the library's: the ``predict`` backends (``build_batch_fn``: bundles, run directories, checkpoints,
ONNX, flip TTA), the instance separation and morphometry of ``predict --instances``, the detector, linker and
kinematics of ``track --masks`` (see :mod:`spermseg.napari._core`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spermseg.errors import SpermsegError
from spermseg.napari import _core

LayerDataTuple = tuple[Any, dict[str, Any], str]
#: ``progress(done, total, stage)``; it may raise (e.g. :class:`Cancelled`) to stop the work between steps.
ProgressFn = Callable[[int, int, str], None]

META_KEY = "spermseg"  # layer.metadata[META_KEY]: the table and what made it


class Cancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a progress callback to stop :func:`segment_layers` between two steps."""


def table_meta(kind: str, columns: list[str], rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The ``layer.metadata[META_KEY]`` of a Labels layer whose ids key a table.

    Args:
        kind: ``sperm`` (rows of ``sperm.csv``, ids = ``sperm_id``) or ``kinematics`` (rows of ``kinematics.csv``,
            ids = ``track_id``).
        columns: table columns in order.
        rows: one dict per sperm or track.
        extra: recorded as well (model, threshold, pixel size, source files, ...).

    Returns:
        A dict with ``kind``, ``id_column``, ``columns``, ``rows`` and the extras.
    """
    id_column = {"sperm": "sperm_id", "kinematics": "track_id"}[kind]
    return {"kind": kind, "id_column": id_column, "columns": list(columns), "rows": list(rows), **extra}


def prob_layer(prob: np.ndarray, name: str, **meta: Any) -> LayerDataTuple:
    """The soft mask as a hidden Image layer (magma, additive, contrast [0, 1])."""
    return prob, {"name": f"{name} sperm prob", "visible": False, "colormap": "magma", "blending": "additive",
                  "contrast_limits": (0.0, 1.0), **meta}, "image"  # fmt: skip


def labels_layer(labels: np.ndarray, name: str, table: dict[str, Any] | None = None, **meta: Any) -> LayerDataTuple:
    """A Labels layer, with its table in ``metadata[META_KEY]``."""
    md = {META_KEY: table} if table is not None else {}
    return labels, {"name": name, "metadata": md, "opacity": 0.6, **meta}, "labels"


def parts_layer(parts: np.ndarray, name: str, **meta: Any) -> LayerDataTuple:
    """Part codes as a Labels layer (hidden, so the sperm stay visible)."""
    return parts, {"name": f"{name} parts", "visible": False, "opacity": 0.6, **meta}, "labels"


def tracks_layer(rows: list[dict[str, Any]], name: str, table: dict[str, Any] | None = None) -> LayerDataTuple | None:
    """A Tracks layer (``track_id, frame, y, x`` per head) from ``tracks.csv`` rows; None without rows."""
    if not rows:
        return None
    data = np.array([[r["track_id"], r["frame"], r["head_y"], r["head_x"]] for r in rows], np.float64)
    md = {META_KEY: table} if table is not None else {}
    return data, {"name": f"{name} tracks", "tail_length": 50, "tail_width": 3, "metadata": md}, "tracks"


def segment_layers(
    image: np.ndarray,
    model: str | Path = _core.BUILTIN,
    *,
    threshold: float | None = None,
    device: str = "auto",
    tta: bool = False,
    pixel_size_um: float | None = None,
    fps: float | None = None,
    batch_size: int = 4,
    instance_method: str = "skeleton",
    rgb: bool = False,
    name: str = "image",
    progress: ProgressFn | None = None,
) -> list[LayerDataTuple]:
    """Segment, separate, measure (2-D) or track (a stack) sperm; the results as napari layer data.

    Args:
        image: (H, W) image, (H, W, 3|4) colour image with ``rgb``, or (T, H, W) stack; uint8 / uint16 / float
            (see :func:`spermseg.napari._core.to_gray_float`).
        model: ``builtin`` (when this spermseg ships one), a bundle or run directory, a checkpoint, an ``.onnx``.
        threshold: decision threshold; None: the model's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        tta: average over flips (4x slower).
        pixel_size_um: micrometres per pixel (``*_um`` columns; required for stacks).
        fps: frames per second (required for stacks).
        batch_size: frames per forward pass.
        instance_method: ``skeleton``, ``watershed`` or ``components`` (docs/instances.md).
        rgb: the last axis of ``image`` is colour.
        name: prefix of the layer names (the image layer's name).
        progress: ``progress(done, total, stage)`` after each step; raise :class:`Cancelled` in it to stop.

    Returns:
        The layers of the module docstring, in the order soft mask, labels, parts (if any), tracks (stacks).

    Raises:
        SpermsegError: a bad image shape, model, option, or a stack without calibration.
    """
    arr = np.asarray(image)
    frame_ndim = 3 if rgb else 2
    if arr.ndim not in (frame_ndim, frame_ndim + 1) or arr.size == 0:
        raise SpermsegError(
            f"image layer '{name}' has shape {arr.shape}; segment a 2-D image (H, W) or a time series (T, H, W)"
        )
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise SpermsegError(f"pixel size must be > 0 micrometres per pixel, got {pixel_size_um}")
    stack = arr.ndim == frame_ndim + 1
    if stack and not (fps and fps > 0 and pixel_size_um):
        raise SpermsegError(
            f"'{name}' is a time series of {arr.shape[0]} frames: tracking needs the frame rate and the pixel size; "
            "set fps and pixel size (um) in the widget (or fps=..., pixel_size_um=...)"
        )
    report = progress or (lambda done, total, stage: None)
    fn, thr = _core.load_batch_fn(model, threshold=threshold, device=device, tta=tta, batch_size=batch_size)
    info = {"model": str(model), "threshold": float(thr), "pixel_size_um": pixel_size_um}
    frames = _core.to_gray_float(arr, rgb)
    if not stack:
        return _frame_layers(frames, fn, thr, name, pixel_size_um, instance_method, report, info)
    return _stack_layers(frames, fn, thr, name, float(pixel_size_um), float(fps), batch_size, report, info)


def _split(out: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(soft mask, mask, parts or None) of one frame's network output, as ``predict`` decides them."""
    if out.ndim == 3:  # a part network: the mask is the arg-max code > 0
        parts, prob = _core.split_parts(out)
        return prob, parts > 0, parts
    return out.astype(np.float32, copy=False), out >= thr, None


def _frame_layers(
    image: np.ndarray,
    fn: _core.BatchFn,
    thr: float,
    name: str,
    px: float | None,
    method: str,
    report: ProgressFn,
    info: dict[str, Any],
) -> list[LayerDataTuple]:
    report(0, 3, "segmenting")
    prob, mask, parts = _split(fn(image[None])[0], thr)
    report(1, 3, "separating sperm")
    labels = _core.separate(mask, parts, method)
    report(2, 3, "measuring")
    rows = _core.measure(labels, parts, px)
    report(3, 3, "done")
    table = table_meta("sperm", _core.sperm_columns(), rows, instance_method=method, **info)
    layers = [prob_layer(prob, name), labels_layer(labels, f"{name} sperm", table)]
    if parts is not None:
        layers.append(parts_layer(parts, name))
    return layers


def _stack_layers(
    frames: np.ndarray,
    fn: _core.BatchFn,
    thr: float,
    name: str,
    px: float,
    fps: float,
    batch_size: int,
    report: ProgressFn,
    info: dict[str, Any],
) -> list[LayerDataTuple]:
    t = len(frames)
    n_batches = -(-t // batch_size)
    total = n_batches + t
    probs = np.zeros(frames.shape, np.float32)
    masks = np.zeros(frames.shape, bool)
    parts_stack: np.ndarray | None = None
    report(0, total, "segmenting")
    for b, first in enumerate(range(0, t, batch_size)):
        for j, out in enumerate(fn(frames[first : first + batch_size])):
            probs[first + j], masks[first + j], parts = _split(out, thr)
            if parts is not None:
                parts_stack = np.zeros(frames.shape, np.uint8) if parts_stack is None else parts_stack
                parts_stack[first + j] = parts
        report(b + 1, total, "segmenting")
    labels, track_rows, kin_rows = _core.track_masks(
        masks, fps, px, on_frame=lambda i: report(n_batches + i + 1, total, "tracking")
    )
    table = table_meta("kinematics", _core.kinematics_columns(), kin_rows, fps=fps, tracks=track_rows, **info)
    layers = [prob_layer(probs, name), labels_layer(labels, f"{name} sperm", table)]
    if parts_stack is not None:
        layers.append(parts_layer(parts_stack, name))
    tracks = tracks_layer(track_rows, name, table)
    if tracks is not None:
        layers.append(tracks)
    return layers
