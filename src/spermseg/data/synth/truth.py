"""Tracking truth of a synthetic video: per-sperm label images, exact head positions and kinematics.

Written by :func:`spermseg.data.synth.dataset.generate_dataset` for every ``--videos`` video::

    videos/{video}/truth/instances/{frame}.png   16-bit labels, sperm i of the scene has id i + 1 in every frame
    videos/{video}/truth/tracks.csv              sperm_id,frame,head_x,head_y (pixels; rows where the head centre
                                                 lies inside the frame, the positions a tracker can see)
    videos/{video}/truth/kinematics.csv          spermseg.kinematics.KINEMATICS_COLUMNS, track_id = sperm_id

Labels: tails are painted first and heads over them (a pixel that is head in the part masks is head here too),
later sperm over earlier ones, so the union of the labels is exactly ``truth/full``.

Kinematics come from the generator's exact head centre at the frame times (``spermseg.kinematics`` with the
default :class:`~spermseg.kinematics.KinematicsConfig`), restricted to the in-frame rows, with
``beat_hz`` = the sperm's beat frequency (0 for immotile sperm) and ``tail_length_um`` = midpiece + flagellum.
How the motion parameters map to each measure is documented in docs/tracking.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from spermseg.data.synth.render import Frame
from spermseg.data.synth.scene import Scene

TRUTH_TRACK_COLUMNS: tuple[str, ...] = ("sperm_id", "frame", "head_x", "head_y")


def instance_labels(frame: Frame) -> np.ndarray:
    """(H, W) uint16 label image of one rendered frame: sperm ``i`` (scene order) has id ``i + 1``."""
    h, w = frame.truth["full"].shape
    flat = np.zeros(h * w, np.uint16)
    for i, fp in enumerate(frame.sperm):  # tails first ...
        if fp.tail is not None:
            mw = np.interp(fp.tail.s, fp.pose.s, fp.mask_width)
            flat[fp.tail.idx[np.abs(fp.tail.d) <= 0.5 * mw]] = i + 1
    for i, fp in enumerate(frame.sperm):  # ... then heads, which win where they overlap a tail
        if fp.head is not None:
            flat[fp.head.idx[fp.head.sd <= 0.0]] = i + 1
    return flat.reshape(h, w)


def head_rows(frame: Frame, index: int) -> list[dict[str, float | int]]:
    """tracks.csv rows of one frame: every sperm whose head centre lies inside the frame."""
    return [
        {"sperm_id": i + 1, "frame": index, "head_x": fp.pose.head_center[0], "head_y": fp.pose.head_center[1]}
        for i, fp in enumerate(frame.sperm)
        if fp.head_inside
    ]


def truth_kinematics(scene: Scene, rows: list[dict[str, float | int]], fps: float, pixel_size_um: float) -> list[dict]:
    """kinematics.csv rows (one per sperm seen in at least one frame) from the exact head path."""
    from spermseg.kinematics import track_kinematics

    out = []
    for i, sp in enumerate(scene.sperm):
        mine = [r for r in rows if r["sperm_id"] == i + 1]
        if not mine:
            continue
        frames = np.array([r["frame"] for r in mine], float)
        xy = np.array([[r["head_x"], r["head_y"]] for r in mine], float) * pixel_size_um
        k = track_kinematics(frames, xy, fps, beat_hz=sp.beat_omega / (2 * math.pi))
        k["tail_length_um"] = (sp.midpiece_length + sp.tail_length) * pixel_size_um
        out.append({"track_id": i + 1, **k})
    return out


def write_labels_png(path: Path, labels: np.ndarray) -> None:
    """A 16-bit gray PNG of a label image (lossless; opens in Fiji and napari, read back by
    :func:`spermseg.data.io.read_image_native` as uint16)."""
    import cv2

    from spermseg.utils.atomic import atomic_path

    with atomic_path(path) as tmp:  # the temporary name keeps the .png suffix cv2 needs
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(labels, dtype=np.uint16)):
            raise OSError(f"cannot write {path}")
