"""Sub-pixel distance fields of polylines and egg-shaped blobs in a local bounding box (vectorized).

Everything the renderer and the raters draw is a function of two fields: for a polyline (tail, line, spill) the
signed distance ``d`` to the centreline and the arc length ``s`` of the nearest centreline point; for a blob
(head, debris, bubble) an approximate signed distance ``sd`` to its outline and the polar angle ``theta``. The
fields are computed only for pixels within ``radius`` of the object, so cost grows with the object, not the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PolylineField:
    """Geometry of the pixels near a polyline.

    Attributes:
        idx: (M,) int64 flat indices ``y * W + x`` of pixels inside the frame and within ``radius``.
        s: (M,) float32 arc length (pixels from the first vertex) of the nearest centreline point.
        d: (M,) float32 signed distance to the centreline (positive on the left of the direction of travel).
    """

    idx: np.ndarray
    s: np.ndarray
    d: np.ndarray


@dataclass
class BlobField:
    """Geometry of the pixels near a blob.

    Attributes:
        idx: (M,) int64 flat indices of pixels inside the frame and within ``radius`` outside the outline.
        sd: (M,) float32 approximate signed distance to the outline (negative inside).
        theta: (M,) float32 polar angle in the blob's frame (0 toward the long axis' positive end).
        u: (M,) float32 coordinate along the long axis, divided by the semi-axis (-1 .. 1 inside).
    """

    idx: np.ndarray
    sd: np.ndarray
    theta: np.ndarray
    u: np.ndarray


def polyline_field(points: np.ndarray, height: int, width: int, radius: float | np.ndarray) -> PolylineField | None:
    """Distance field of an open polyline, exact to the segments, within ``radius`` pixels.

    The nearest centreline pixel comes from OpenCV's Voronoi labelling of a rasterized centreline (fast, in C);
    the exact distance is then taken to the few true segments around that pixel's vertex, which keeps sub-pixel
    precision and gives the arc length and the side of each pixel.

    Args:
        points: (N, 2) vertices (x, y) in pixels, N >= 2, roughly evenly spaced.
        height, width: frame size.
        radius: pixels farther than this from the centreline are left out; a scalar or (N,) per vertex (a
            blurrier part of a tail shades a wider neighbourhood).

    Returns:
        The field, or None when no pixel of the frame lies within ``radius``.
    """
    import cv2

    pts = np.asarray(points, dtype=np.float64)
    rad_v = np.broadcast_to(np.asarray(radius, dtype=np.float32), (len(pts),))
    r = int(math.ceil(float(rad_v.max()))) + 1
    # the canvas may extend r pixels beyond the frame: a centreline just outside still shades pixels inside
    bx0 = max(int(math.floor(pts[:, 0].min())) - r, -r)
    by0 = max(int(math.floor(pts[:, 1].min())) - r, -r)
    bx1 = min(int(math.ceil(pts[:, 0].max())) + r + 1, width + r)
    by1 = min(int(math.ceil(pts[:, 1].max())) + r + 1, height + r)
    if bx1 <= max(bx0, 0) or by1 <= max(by0, 0) or bx0 >= width or by0 >= height:
        return None
    canvas = np.full((by1 - by0, bx1 - bx0), 255, dtype=np.uint8)
    local = np.round((pts - (bx0, by0)) * 16.0).astype(np.int32)
    cv2.polylines(canvas, [local], False, 0, 1, cv2.LINE_8, 4)
    zy, zx = np.nonzero(canvas == 0)
    if zy.size == 0:
        return None
    dist, labels = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # label -> nearest vertex of each centreline pixel
    zd = (zx[:, None] + bx0 - pts[None, :, 0]) ** 2 + (zy[:, None] + by0 - pts[None, :, 1]) ** 2
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lut[labels[zy, zx]] = np.argmin(zd, axis=1)
    # the part of the canvas inside the frame; keep pixels within the radius of their nearest vertex
    ix0, iy0 = -bx0 if bx0 < 0 else 0, -by0 if by0 < 0 else 0
    ix1 = canvas.shape[1] - max(bx1 - width, 0)
    iy1 = canvas.shape[0] - max(by1 - height, 0)
    vert_all = lut[labels[iy0:iy1, ix0:ix1]]
    ys, xs = np.nonzero(dist[iy0:iy1, ix0:ix1] <= rad_v[vert_all] + 1.0)
    if ys.size == 0:
        return None
    vert = vert_all[ys, xs]
    ys += iy0
    xs += ix0
    # exact distance to the 4 segments around that vertex (x and y kept apart: numpy reductions over a
    # length-2 axis are an order of magnitude slower than plain element-wise arithmetic)
    n_seg = len(pts) - 1
    segs = np.clip(vert[:, None] + np.arange(-2, 2)[None, :], 0, n_seg - 1)  # (M, 4)
    vx, vy = pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32)
    sx, sy = np.diff(vx), np.diff(vy)
    seg_len2 = np.maximum(sx * sx + sy * sy, np.float32(1e-12))
    apx = (xs + bx0).astype(np.float32)[:, None] - vx[segs]
    apy = (ys + by0).astype(np.float32)[:, None] - vy[segs]
    abx, aby = sx[segs], sy[segs]
    tt = np.clip((apx * abx + apy * aby) / seg_len2[segs], 0.0, 1.0)
    ex, ey = apx - tt * abx, apy - tt * aby
    d2 = ex * ex + ey * ey
    k = np.argmin(d2, axis=1)
    rows = np.arange(len(k))
    seg = segs[rows, k]
    t_best = tt[rows, k]
    dist_exact = np.sqrt(d2[rows, k])
    cross = abx[rows, k] * apy[rows, k] - aby[rows, k] * apx[rows, k]
    keep = dist_exact <= rad_v[vert]
    seg_len = np.sqrt(seg_len2)
    s_vert = np.concatenate([[0.0], np.cumsum(seg_len)]).astype(np.float32)
    s = s_vert[seg] + t_best * seg_len[seg]
    d = np.where(cross < 0, -dist_exact, dist_exact)
    idx = (ys + by0).astype(np.int64) * width + (xs + bx0)
    return PolylineField(idx=idx[keep], s=s[keep], d=d[keep])


def blob_field(
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    height: int,
    width: int,
    radius: float,
    *,
    egg: float = 0.0,
    harmonics: np.ndarray | None = None,
) -> BlobField | None:
    """Approximate signed distance field of an ellipse, optionally egg-shaped and with a wavy outline.

    The outline is the zero level of ``rho(u, v) - m(theta)`` with ``rho = hypot(u / a, v / b(u))``,
    ``b(u) = b (1 + egg u / a)`` (narrower at negative ``u``) and ``m = 1 + sum_k c_k cos(k theta + phi_k)``;
    the distance is that level divided by the gradient norm of ``rho`` (first order, exact on the outline).

    Args:
        center: (x, y) in pixels.
        axes: semi-axes (a along ``angle``, b across), pixels.
        angle: direction of the long axis, radians.
        height, width: frame size.
        radius: how far outside the outline pixels are kept.
        egg: narrowing toward negative ``u`` (0: ellipse).
        harmonics: optional (K, 2) amplitudes and phases of outline orders 2 .. K+1.

    Returns:
        The field, or None when it does not touch the frame.
    """
    a, b = float(axes[0]), float(axes[1])
    amp = 0.0 if harmonics is None else float(np.abs(harmonics[:, 0]).sum())
    ext = max(a, b) * (1.0 + amp) + radius + 1.0
    cx, cy = center
    x0, x1 = max(int(math.floor(cx - ext)), 0), min(int(math.ceil(cx + ext)) + 1, width)
    y0, y1 = max(int(math.floor(cy - ext)), 0), min(int(math.ceil(cy + ext)) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    ca, sa = math.cos(angle), math.sin(angle)
    u = xs * ca + ys * sa
    v = -xs * sa + ys * ca
    bu = b * np.clip(1.0 + egg * u / a, 0.3, None)
    un, vn = u / a, v / bu
    rho = np.sqrt(un**2 + vn**2)
    theta = np.arctan2(vn, un)
    m = np.ones_like(rho)
    if harmonics is not None:
        for k, (c, phi) in enumerate(harmonics):
            m += np.float32(c) * np.cos((k + 2) * theta + np.float32(phi))
    grad = np.sqrt((un / a) ** 2 + (vn / bu) ** 2) / np.maximum(rho, 1e-6)
    sd = (rho - m) / np.maximum(grad, 1e-6)
    sel = sd <= radius
    yy, xx = np.nonzero(sel)
    idx = (yy + y0).astype(np.int64) * width + (xx + x0)
    return BlobField(
        idx=idx, sd=sd[sel].astype(np.float32), theta=theta[sel].astype(np.float32), u=un[sel].astype(np.float32)
    )
