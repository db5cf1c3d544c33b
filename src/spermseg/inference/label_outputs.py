"""Per-frame label outputs of ``spermseg predict``: NAME_instances, NAME_parts and an ImageJ ROI zip.

* ``NAME_instances.png|.tif``: uint16 label image, 0 = background, ids = ``sperm_id`` in sperm.csv;
* ``NAME_parts.png|.tif``: uint8 part codes (0 background, 1 acrosome, 2 nucleus, 3 vacuole, 4 midpiece,
  5 tail), written for part networks;
* ``NAME_rois.zip``: one ImageJ polygon ROI per sperm (its outer contour), named ``sperm_<id>``, for Fiji's ROI
  Manager (``--roi``).

Both label images open as label layers in napari and as 16-/8-bit images in Fiji.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LabelOutputs:
    """What :func:`write_label_outputs` produced for one frame."""

    labels: np.ndarray | None = None
    instances_path: Path | None = None
    parts_path: Path | None = None
    roi_path: Path | None = None


def split_parts_prob(prob: np.ndarray, fg_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Part codes and the whole-sperm probability of a part network's per-code sigmoid outputs.

    The predictor applies a sigmoid to every logit; sigmoids are monotonic, so the code is their arg-max, and the
    softmax over codes is recovered from the logits ``log(p / (1 - p))``.

    Args:
        prob: (6, H, W) float per-code sigmoids.
        fg_threshold: ``None``: every pixel takes its arg-max code. A probability: a pixel is sperm when its
            foreground probability reaches it, and then takes its most likely *part* (codes 1-5). A thin tail pixel
            whose mass is split between tail and midpiece can lose the arg-max to the background although it is
            more likely sperm than not; the threshold (a run's validation t_opt) keeps it.

    Returns:
        ``(codes uint8 (H, W), foreground probability float32 (H, W) = 1 - softmax[background])``.
    """
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(p / (1 - p))
    logits -= logits.max(axis=0, keepdims=True)
    e = np.exp(logits)
    soft = e / e.sum(axis=0, keepdims=True)
    fg = (1.0 - soft[0]).astype(np.float32)
    if fg_threshold is None:
        return np.argmax(prob, axis=0).astype(np.uint8), fg
    codes = (np.argmax(prob[1:], axis=0) + 1).astype(np.uint8)
    codes[fg < fg_threshold] = 0
    return codes, fg


def instance_rois(labels: np.ndarray) -> list[object]:
    """One ImageJ polygon ROI (``roifile.ImagejRoi``) per instance: the outer contour of its largest part."""
    import cv2
    import roifile
    from scipy import ndimage as ndi

    rois: list[object] = []
    for i, sl in enumerate(ndi.find_objects(labels.astype(np.int32)), start=1):
        if sl is None:
            continue
        crop = np.pad((labels[sl] == i).astype(np.uint8), 1)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        pts = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
        pts += np.array([sl[1].start - 1, sl[0].start - 1], np.float64)  # crop (x, y) -> image (x, y)
        roi = roifile.ImagejRoi.frompoints(pts)
        roi.name = f"sperm_{i}"
        rois.append(roi)
    return rois


def write_rois(path: Path, labels: np.ndarray) -> Path:
    """Write the ImageJ ROI zip of a label image atomically (an empty zip when there is no sperm)."""
    import zipfile

    from spermseg.utils.atomic import atomic_path

    rois = instance_rois(labels)
    # the zip closes (inner context) before atomic_path renames it into place
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for roi in rois:
            zf.writestr(f"{roi.name}.roi", roi.tobytes())  # type: ignore[attr-defined]
    return path


def separate_frame(mask: np.ndarray, parts: np.ndarray | None, method: str = "skeleton") -> np.ndarray:
    """One label per sperm of a frame, as ``predict --instances`` writes them (also the napari plugin's labels).

    Args:
        mask: (H, W) bool whole-sperm mask.
        parts: (H, W) uint8 part codes of a part network (heads = codes 1-3), or None (heads estimated).
        method: instance method (:data:`spermseg.inference.instances.METHODS`).

    Returns:
        (H, W) integer labels, 0 background.
    """
    from spermseg.inference.instances import InstanceOptions, separate_instances

    head = None if parts is None else np.isin(parts, (1, 2, 3)) & mask
    # a part network's midpiece (code 4) says at which tip of the head its own tail leaves (docs/instances.md);
    # pieces without a head are no whole sperm (InstanceOptions.keep_headless, off by default)
    neck = None if parts is None else (parts == 4) & mask
    return separate_instances(mask, head, InstanceOptions(method=method), neck)  # type: ignore[arg-type]


def write_label_outputs(
    stem: Path,
    mask: np.ndarray,
    parts: np.ndarray | None,
    *,
    instances: bool,
    roi: bool,
    label_format: str = "png",
    method: str = "skeleton",
) -> LabelOutputs:
    """Separate the sperm of one frame and write its label images (see the module docstring).

    Args:
        stem: output path without suffix (``OUT/NAME``).
        mask: (H, W) bool whole-sperm mask.
        parts: (H, W) uint8 part codes of a part network, or None for a binary network (heads then estimated).
        instances: separate and write ``NAME_instances``.
        roi: also write ``NAME_rois.zip`` (implies ``instances``).
        label_format: ``png`` or ``tif``.
        method: instance method (:data:`spermseg.inference.instances.METHODS`).

    Returns:
        :class:`LabelOutputs` (``labels`` None when no instances were requested).
    """
    from spermseg.data.labels import label_suffix, write_labels

    suffix = label_suffix(label_format)
    out = LabelOutputs()
    if parts is not None:
        out.parts_path = write_labels(stem.with_name(stem.name + "_parts" + suffix), parts, "parts")
    if not (instances or roi):
        return out
    out.labels = separate_frame(mask, parts, method)
    out.instances_path = write_labels(stem.with_name(stem.name + "_instances" + suffix), out.labels)
    if roi:
        out.roi_path = write_rois(stem.with_name(stem.name + "_rois.zip"), out.labels)
    return out
