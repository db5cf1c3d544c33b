"""Per-sperm measurements (WHO laboratory manual, 6th ed., 2021: head, midpiece and tail dimensions).

Input: an instance label image (one id per sperm, e.g. from :func:`spermseg.inference.instances.separate_instances`)
and optionally a part-code image (0 background, 1 acrosome, 2 nucleus, 3 vacuole, 4 midpiece, 5 tail). A binary
mask is also accepted by :func:`measure_instances` (its 8-connected components are the instances, as before).

Per sperm (pixels; ``*_um`` / ``*_um2`` fields with a pixel size in micrometres per pixel):

* ``area``, ``centroid_y``, ``centroid_x``;
* head (codes 1-3, or without parts the *thick-end rule*: the pixels within ``1.6 r_max`` of the thickest point,
  where ``r_max`` is the largest inscribed radius, accepted only when ``r_max`` is at least 1.8 times the tail's
  radius): ``head_area``, ``head_length`` / ``head_width`` (major / minor axis of the ellipse with the head's
  second moments, skimage ``regionprops``), ``head_ellipticity`` = length / width (WHO's length-to-width ratio),
  ``head_perimeter`` (skimage's 4-connected contour estimate), ``head_y``, ``head_x`` (thickest point);
* ``acrosome_share`` = acrosome area / head area; ``vacuole_count`` (8-connected vacuole regions in the head)
  and ``vacuole_share`` = vacuole area / head area (parts only, else nan);
* ``midpiece_length`` = skeleton length of the midpiece, ``midpiece_width`` = midpiece area / its length
  (parts only);
* ``tail_length`` = skeleton length of everything but the head (midpiece and principal piece), orthogonal links 1,
  diagonal links sqrt(2) (:func:`skeleton_length`); ``touches_border``: the tail (or the whole sperm without a
  tail) touches the image border, so the length is a lower bound;
* ``touches_other`` / ``contact_px``: pixels of this sperm 8-adjacent to another sperm (touching or crossing:
  in a label image a crossing pixel belongs to one sperm, so overlap shows as contact).

Scaling: every sperm is measured in its own bounding box (``scipy.ndimage.find_objects``), so the work is linear
in the number of foreground pixels. Skeletons are computed only where the distance to the background is at most
:data:`MAX_TAIL_RADIUS` px (tails are ~2 px thick in radius): thinning costs time proportional to thickness, so a
thick blob (an all-ones mask) would otherwise take quadratic time; thicker regions contribute no tail length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

HEAD_RADIUS_FACTOR = 1.6  # the head is egg-shaped, its long half-axis about 1.5x its short one
MIN_HEAD_TO_TAIL_RATIO = 1.8  # a thick end must be clearly thicker than the tail to count as a head
MAX_TAIL_RADIUS = 8.0  # px; thinning is restricted to regions at most this far from the background
_EIGHT = np.ones((3, 3), dtype=bool)
NAN = float("nan")


@dataclass(frozen=True)
class SpermMeasurement:
    """Measurements of one sperm (pixels; ``*_um``/``*_um2`` fields are None without a pixel size)."""

    instance: int
    area: int
    head_area: int
    head_found: bool
    tail_length: float
    touches_border: bool
    centroid_y: float
    centroid_x: float
    head_y: float
    head_x: float
    area_um2: float | None = None
    head_area_um2: float | None = None
    tail_length_um: float | None = None
    sperm_id: int = 0
    head_length: float = NAN
    head_width: float = NAN
    head_ellipticity: float = NAN
    head_perimeter: float = NAN
    acrosome_share: float = NAN
    vacuole_count: int = -1
    vacuole_share: float = NAN
    midpiece_length: float = NAN
    midpiece_width: float = NAN
    touches_other: bool = False
    contact_px: int = 0
    head_length_um: float | None = None
    head_width_um: float | None = None
    head_perimeter_um: float | None = None
    midpiece_length_um: float | None = None
    midpiece_width_um: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def skeleton_length(skeleton: np.ndarray) -> float:
    """Length of a 1-pixel-wide skeleton (H, W) bool: orthogonal links 1, diagonal links sqrt(2).

    A diagonal link is skipped when its two pixels are also joined through an orthogonal corner pixel, so an
    L-shaped corner is not counted twice.
    """
    sk = np.asarray(skeleton, dtype=bool)
    if not sk.any():
        return 0.0
    p = np.pad(sk, 1)
    c = p[1:-1, 1:-1]
    right = c & p[1:-1, 2:]
    down = c & p[2:, 1:-1]
    diag_dr = c & p[2:, 2:] & ~p[1:-1, 2:] & ~p[2:, 1:-1]
    diag_dl = c & p[2:, :-2] & ~p[1:-1, :-2] & ~p[2:, 1:-1]
    return float(right.sum() + down.sum()) + np.sqrt(2.0) * float(diag_dr.sum() + diag_dl.sum())


def thin_skeleton(region: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Skeleton (H, W) bool of the thin part of ``region`` (distance to background <= :data:`MAX_TAIL_RADIUS`)."""
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    region = np.asarray(region, bool)
    if not region.any():
        return region.copy()
    if dist is None:
        dist = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    return skeletonize(region & (dist <= MAX_TAIL_RADIUS))


def _head_by_thick_end(comp: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Head mask of one component without parts (thick-end rule) and the thickest point (row, col)."""
    r_max = float(dist.max())
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    yy, xx = np.ogrid[0 : comp.shape[0], 0 : comp.shape[1]]
    region = (yy - cy) ** 2 + (xx - cx) ** 2 <= (HEAD_RADIUS_FACTOR * r_max) ** 2
    tail_skeleton = thin_skeleton(comp & ~region, dist) & ~region
    radii = dist[tail_skeleton]
    tail_radius = float(np.median(radii)) if radii.size else 0.0
    found = radii.size > 0 and r_max >= MIN_HEAD_TO_TAIL_RATIO * max(tail_radius, 0.5)
    return (comp & region) if found else np.zeros_like(comp), (int(cy), int(cx))


def _head_shape(head: np.ndarray) -> tuple[float, float, float]:
    """(length, width, perimeter) of the largest connected part of a head mask (nan when empty)."""
    from skimage.measure import label, regionprops

    if not head.any():
        return NAN, NAN, NAN
    props = max(regionprops(label(head, connectivity=2)), key=lambda p: p.area)
    return float(props.axis_major_length), float(props.axis_minor_length), float(props.perimeter)


def _measure_one(
    crop_labels: np.ndarray, crop_parts: np.ndarray | None, sperm_id: int, origin: tuple[int, int], shape
) -> dict[str, object]:
    """Every measure of one sperm from its padded bounding-box crop (pixels)."""
    from scipy import ndimage as ndi

    comp = crop_labels == sperm_id
    dist = ndi.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
    if crop_parts is not None:
        head = comp & np.isin(crop_parts, (1, 2, 3))
        thick = np.unravel_index(int(np.argmax(np.where(head, dist, -1))), dist.shape) if head.any() else (0, 0)
    else:
        head, thick = _head_by_thick_end(comp, dist)
    tail = comp & ~head
    length, width, perimeter = _head_shape(head)
    head_area = int(head.sum())
    out: dict[str, object] = {
        "sperm_id": sperm_id,
        "area": int(comp.sum()),
        "head_area": head_area,
        "head_found": bool(head.any()),
        "tail_length": round(skeleton_length(thin_skeleton(tail)), 3),
        "head_length": length,
        "head_width": width,
        "head_ellipticity": length / width if width and width > 0 else NAN,
        "head_perimeter": perimeter,
        "head_y": float(thick[0] + origin[0]) if head.any() else NAN,
        "head_x": float(thick[1] + origin[1]) if head.any() else NAN,
    }
    ys, xs = np.nonzero(comp)
    out["centroid_y"], out["centroid_x"] = float(ys.mean() + origin[0]), float(xs.mean() + origin[1])
    if crop_parts is not None and head_area:
        vac = comp & (crop_parts == 3)
        out["acrosome_share"] = float((comp & (crop_parts == 1)).sum() / head_area)
        out["vacuole_count"] = int(ndi.label(vac, structure=_EIGHT)[1])
        out["vacuole_share"] = float(vac.sum() / head_area)
    if crop_parts is not None:
        mid = comp & (crop_parts == 4)
        mid_len = skeleton_length(thin_skeleton(mid))
        out["midpiece_length"] = round(mid_len, 3) if mid.any() else NAN
        out["midpiece_width"] = float(mid.sum() / max(mid_len, 1.0)) if mid.any() else NAN
    other = (crop_labels > 0) & ~comp
    contact = int((comp & ndi.binary_dilation(other, structure=_EIGHT)).sum()) if other.any() else 0
    out["contact_px"], out["touches_other"] = contact, contact > 0
    out["touches_border"] = _touches_border(tail if tail.any() else comp, origin, shape)
    return out


def _with_units(row: dict[str, object], px: float | None) -> dict[str, object]:
    if px is None:
        return row
    lengths = ("head_length", "head_width", "head_perimeter", "midpiece_length", "midpiece_width", "tail_length")
    for key in lengths:
        row[f"{key}_um"] = float(row.get(key, NAN)) * px  # type: ignore[arg-type]
    row["area_um2"] = float(row["area"]) * px**2  # type: ignore[arg-type]
    row["head_area_um2"] = float(row["head_area"]) * px**2  # type: ignore[arg-type]
    return row


def measure_sperm(
    labels: np.ndarray,
    parts: np.ndarray | None = None,
    pixel_size_um: float | None = None,
    *,
    min_area: int = 0,
    progress_bar: bool | None = None,
) -> list[SpermMeasurement]:
    """Measure every sperm of an instance label image.

    Args:
        labels: (H, W) integer instance labels (0 background).
        parts: optional (H, W) part codes 0-5 (same size); without it the head comes from the thick-end rule and
            the part-based measures are nan.
        pixel_size_um: micrometres per pixel; fills the ``*_um`` fields.
        min_area: sperm smaller than this are skipped.
        progress_bar: show a progress bar over sperm (default: only on a terminal with more than 200 sperm).

    Returns:
        One :class:`SpermMeasurement` per id, in id order; ``sperm_id`` (and ``instance``) is the label id.
    """
    from scipy import ndimage as ndi

    from spermseg.utils.progress import progress

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    if parts is not None and np.shape(parts) != labels.shape:
        raise ValueError(f"parts {np.shape(parts)} and labels {labels.shape} differ in size")
    h, w = labels.shape
    boxes = ndi.find_objects(labels.astype(np.int32)) if labels.any() else []
    n = sum(b is not None for b in boxes)
    bar = progress(
        total=n, desc="measuring", unit="sperm", disable=(n <= 200) if progress_bar is None else not progress_bar
    )
    out: list[SpermMeasurement] = []
    try:
        for sperm_id, sl in enumerate(boxes, start=1):
            if sl is None:
                continue
            y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
            x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
            crop = labels[y0:y1, x0:x1]
            if int((crop == sperm_id).sum()) >= max(min_area, 1):
                crop_parts = None if parts is None else np.asarray(parts)[y0:y1, x0:x1]
                row = _measure_one(crop, crop_parts, sperm_id, (y0, x0), (h, w))
                out.append(SpermMeasurement(instance=sperm_id, **_with_units(row, pixel_size_um)))  # type: ignore[arg-type]
            bar.update(1)
    finally:
        bar.close()
    return out


def measure_instances(
    mask: np.ndarray, pixel_size_um: float | None = None, *, min_area: int = 10
) -> list[SpermMeasurement]:
    """Measure every 8-connected component of a binary mask as one sperm (touching sperm merge).

    Args:
        mask: (H, W) bool (or 0/1) segmentation of whole sperm.
        pixel_size_um: micrometres per pixel; when given, ``*_um`` fields are filled.
        min_area: components smaller than this many pixels are ignored as specks.

    Returns:
        One :class:`SpermMeasurement` per component, ordered by decreasing area (``instance`` 1, 2, ...;
        ``sperm_id`` is the component's label).
    """
    from scipy import ndimage as ndi

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    labels, _ = ndi.label(mask, structure=_EIGHT)
    ms = sorted(measure_sperm(labels, None, pixel_size_um, min_area=min_area), key=lambda m: -m.area)
    return [SpermMeasurement(**{**m.as_dict(), "instance": i + 1}) for i, m in enumerate(ms)]


def as_table(measurements: Sequence[SpermMeasurement]) -> dict[str, list[object]]:
    """Column-oriented table ``{field: [value per sperm]}`` (e.g. ``pandas.DataFrame(as_table(ms))``)."""
    return {f.name: [getattr(m, f.name) for m in measurements] for f in fields(SpermMeasurement)}


def _touches_border(part: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> bool:
    """Whether a crop-local mask placed at ``origin`` touches the border of an image of ``shape``."""
    ys, xs = np.nonzero(part)
    if ys.size == 0:
        return False
    ys = ys + origin[0]
    xs = xs + origin[1]
    return bool(ys.min() == 0 or xs.min() == 0 or ys.max() == shape[0] - 1 or xs.max() == shape[1] - 1)
