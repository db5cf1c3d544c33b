"""Per-sperm measurements from a binary segmentation mask (toward CASA; beyond the paper).

Each 8-connected component of the binary mask is taken as one sperm instance (touching sperm merge: the count
is a lower bound in crowded frames). For each instance we report:

* ``area``: pixels of the component;
* ``head_area``: pixels of the head, found by the *thick-end rule*: the head is the part of the component
  within ``head_radius_factor * r_max`` of the component's thickest point, where ``r_max`` is the largest
  inscribed radius (Euclidean distance transform maximum). A head is reported only when the thick end is
  clearly thicker than the tail (``r_max >= min_head_to_tail_ratio * median tail radius``); otherwise the
  instance is flagged ``head_found = False`` and all of it counts as tail;
* ``tail_length``: the length of the 2-D skeleton (scikit-image ``skeletonize``) outside the head region,
  with orthogonal steps counting 1 and diagonal steps sqrt(2) (diagonals that close a triangle with two
  orthogonal steps are not counted twice);
* ``touches_border``: the tail (or the whole instance when it has no head) touches the image border, so its
  length is a lower bound;
* ``centroid_y``, ``centroid_x``, ``head_y``, ``head_x``: positions in pixels.

With a pixel size (micrometres per pixel), lengths are also given in um and areas in um^2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HEAD_RADIUS_FACTOR = 1.6  # the head is egg-shaped, its long half-axis about 1.5x its short one
MIN_HEAD_TO_TAIL_RATIO = 1.8  # a thick end must be clearly thicker than the tail to count as a head


@dataclass(frozen=True)
class SpermMeasurement:
    """Measurements of one connected component (pixels; ``*_um`` fields when a pixel size is given)."""

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


def measure_instances(
    mask: np.ndarray, pixel_size_um: float | None = None, *, min_area: int = 10
) -> list[SpermMeasurement]:
    """Measure every sperm instance (connected component) of a binary mask.

    Args:
        mask: (H, W) bool (or 0/1) segmentation of whole sperm.
        pixel_size_um: micrometres per pixel; when given, ``*_um`` fields are filled.
        min_area: components smaller than this many pixels are ignored as specks.

    Returns:
        One :class:`SpermMeasurement` per component, ordered by decreasing area.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    labels, n = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    slices = ndi.find_objects(labels)
    h, w = mask.shape
    out: list[SpermMeasurement] = []
    for index, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        # Work in a padded crop so that the distance transform sees background around the component, except at the
        # image border (where the sperm is cut and its thickness there is unknown).
        y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
        comp = labels[y0:y1, x0:x1] == index
        area = int(comp.sum())
        if area < min_area:
            continue
        dist = ndi.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
        r_max = float(dist.max())
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        skeleton = skeletonize(comp)
        yy, xx = np.mgrid[0 : comp.shape[0], 0 : comp.shape[1]]
        head_region = (yy - cy) ** 2 + (xx - cx) ** 2 <= (HEAD_RADIUS_FACTOR * r_max) ** 2
        tail_radii = dist[skeleton & ~head_region]
        tail_radius = float(np.median(tail_radii)) if tail_radii.size else 0.0
        head_found = tail_radii.size > 0 and r_max >= MIN_HEAD_TO_TAIL_RATIO * max(tail_radius, 0.5)
        head = comp & head_region if head_found else np.zeros_like(comp)
        tail = comp & ~head
        tail_skeleton = skeleton & ~head_region if head_found else skeleton
        touches = _touches_border(tail if tail.any() else comp, (y0, x0), (h, w))
        ys, xs = np.nonzero(comp)
        length = skeleton_length(tail_skeleton)
        scale = pixel_size_um
        out.append(
            SpermMeasurement(
                instance=len(out) + 1,
                area=area,
                head_area=int(head.sum()),
                head_found=bool(head_found),
                tail_length=round(length, 3),
                touches_border=touches,
                centroid_y=float(ys.mean() + y0),
                centroid_x=float(xs.mean() + x0),
                head_y=float(cy + y0) if head_found else float("nan"),
                head_x=float(cx + x0) if head_found else float("nan"),
                area_um2=None if scale is None else area * scale**2,
                head_area_um2=None if scale is None else int(head.sum()) * scale**2,
                tail_length_um=None if scale is None else length * scale,
            )
        )
    out.sort(key=lambda m: -m.area)
    return [SpermMeasurement(**{**m.as_dict(), "instance": i + 1}) for i, m in enumerate(out)]


def _touches_border(part: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> bool:
    """Whether a crop-local mask placed at ``origin`` touches the border of an image of ``shape``."""
    ys, xs = np.nonzero(part)
    if ys.size == 0:
        return False
    ys = ys + origin[0]
    xs = xs + origin[1]
    return bool(ys.min() == 0 or xs.min() == 0 or ys.max() == shape[0] - 1 or xs.max() == shape[1] - 1)
