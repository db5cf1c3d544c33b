"""Overlap measures of binary masks: IoU and the paper's IoU' (Eq. 1), plus its threshold-sweep form.

IoU' with a k x k square kernel (k odd)::

    R'   = |t(Mr) & d(Mp, k)| / |t(Mr)|
    P'   = |d(Mr, k) & e(Mp, k)| / |e(Mp, k)|
    IoU' = R' P' / (R' + P' - R' P')

``t`` is scikit-image's 2-D ``skeletonize``; ``d``/``e`` are binary dilation/erosion with the square, pixels
outside the image counting as background (so erosion removes a band of width k // 2 at the image border, as
``scipy.ndimage.binary_erosion(..., border_value=0)`` does). Counts are pooled over images before dividing
(:class:`IoUPrimeCounts`).

Empty rule (one rule for every ratio in this package): when a denominator is 0 the ratio is 1 if the reference
and the prediction are both empty, else 0; IoU' is 1 when both are empty and 0 when R' = P' = 0 otherwise.

Threshold sweep without re-binarizing: for a flat structuring element, grey dilation/erosion commute with
thresholding, ``d(S >= t) = (maxfilter(S) >= t)`` and ``e(S >= t) = (minfilter(S) >= t)``. So the four counts of
IoU' at *every* threshold come from histograms of ``maxfilter(S)`` on the skeleton, ``minfilter(S)`` on
``d(Mr)`` and ``minfilter(S)`` everywhere (:func:`iou_prime_histograms`), one pass per image and kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spermseg.metrics.ranking import DEFAULT_BINS, quantize, safe_ratio

__all__ = [
    "IoUPrimeCounts",
    "IoUPrimeHistogram",
    "check_kernel",
    "combine_iou_prime",
    "dilate",
    "erode",
    "grey_dilate",
    "grey_erode",
    "iou",
    "iou_prime",
    "iou_prime_counts",
    "skeleton",
]


def check_kernel(k: int) -> int:
    """Validate an IoU' kernel size: an odd integer >= 1."""
    if int(k) != k or k < 1 or k % 2 == 0:
        raise ValueError(f"IoU' kernel size must be an odd integer >= 1, got {k}")
    return int(k)


def _square(k: int) -> np.ndarray:
    return np.ones((k, k), dtype=np.uint8)


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary dilation of a bool (H, W) mask with a k x k square; outside pixels are background.

    Equals ``scipy.ndimage.binary_dilation(mask, np.ones((k, k)), border_value=0)`` (tested), via OpenCV.
    """
    import cv2

    k = check_kernel(k)
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if k == 1:
        return m.astype(bool)
    # OpenCV's default border for dilation never wins the max: the same as a zero (background) border.
    return cv2.dilate(m, _square(k)).astype(bool)


def erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion of a bool (H, W) mask with a k x k square; outside pixels are background.

    Equals ``scipy.ndimage.binary_erosion(mask, np.ones((k, k)), border_value=0)`` (tested), via OpenCV with
    an explicit zero border (OpenCV's default border would treat the outside as foreground).
    """
    import cv2

    k = check_kernel(k)
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if k == 1:
        return m.astype(bool)
    return cv2.erode(m, _square(k), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def grey_dilate(scores: np.ndarray, k: int) -> np.ndarray:
    """Max filter of float (H, W) scores over a k x k square, outside ignored: ``grey_dilate(S) >= t == d(S >= t)``."""
    import cv2

    k = check_kernel(k)
    s = np.ascontiguousarray(scores, dtype=np.float32)
    return s.copy() if k == 1 else cv2.dilate(s, _square(k))


def grey_erode(scores: np.ndarray, k: int) -> np.ndarray:
    """Min filter of float (H, W) scores over a k x k square with the outside at -1 (below every threshold).

    ``grey_erode(S, k) >= t`` equals ``erode(S >= t, k)`` for every ``t >= 0``, including ``t = 0``.
    """
    import cv2

    k = check_kernel(k)
    s = np.ascontiguousarray(scores, dtype=np.float32)
    if k == 1:
        return s.copy()
    out = cv2.erode(s, _square(k), borderType=cv2.BORDER_CONSTANT, borderValue=-1.0)
    return out


def skeleton(mask: np.ndarray) -> np.ndarray:
    """2-D skeleton (scikit-image ``skeletonize``) of a bool (H, W) mask; empty for an empty mask.

    Computed on the bounding box of the mask (the outside is background either way, so the result is identical,
    tested) because sperm masks are sparse and thinning costs per pixel.
    """
    m = np.asarray(mask, dtype=bool)
    out = np.zeros(m.shape, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(m.any(axis=0))
    from skimage.morphology import skeletonize

    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    out[box] = skeletonize(m[box])
    return out


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Strict IoU of two bool masks of equal shape; 1 when both are empty."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {r.shape}")
    union = int(np.count_nonzero(p | r))
    return float(safe_ratio(np.count_nonzero(p & r), union, union == 0))


def combine_iou_prime(r: np.ndarray | float, p: np.ndarray | float, both_empty: np.ndarray | bool) -> np.ndarray:
    """IoU' = R'P' / (R' + P' - R'P'); 1 where both masks are empty, 0 where R' = P' = 0 otherwise."""
    r = np.asarray(r, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    den = r + p - r * p
    return safe_ratio(r * p, den, both_empty)


@dataclass
class IoUPrimeCounts:
    """Pooled counts of Eq. (1) for one kernel: add per image, divide once.

    Attributes:
        rec_num: |t(Mr) & d(Mp)|, rec_den: |t(Mr)|, prec_num: |d(Mr) & e(Mp)|, prec_den: |e(Mp)|,
        ref_px: |Mr|, pred_px: |Mp| (for the both-empty rule).
    """

    rec_num: int = 0
    rec_den: int = 0
    prec_num: int = 0
    prec_den: int = 0
    ref_px: int = 0
    pred_px: int = 0

    def __iadd__(self, other: IoUPrimeCounts) -> IoUPrimeCounts:
        self.rec_num += other.rec_num
        self.rec_den += other.rec_den
        self.prec_num += other.prec_num
        self.prec_den += other.prec_den
        self.ref_px += other.ref_px
        self.pred_px += other.pred_px
        return self

    def result(self) -> dict[str, float]:
        """``{"r": R', "p": P', "iou": IoU'}`` with the empty rule."""
        both = self.ref_px == 0 and self.pred_px == 0
        r = float(safe_ratio(self.rec_num, self.rec_den, both))
        p = float(safe_ratio(self.prec_num, self.prec_den, both))
        return {"r": r, "p": p, "iou": float(combine_iou_prime(r, p, both))}


def iou_prime_counts(
    pred: np.ndarray, ref: np.ndarray, k: int, ref_skeleton: np.ndarray | None = None
) -> IoUPrimeCounts:
    """The counts of Eq. (1) for one image, computed literally on binary masks.

    Args:
        pred: bool (H, W) prediction Mp.
        ref: bool (H, W) reference Mr.
        k: odd kernel size.
        ref_skeleton: precomputed ``skeleton(ref)`` (reused across kernels and thresholds).

    Returns:
        :class:`IoUPrimeCounts`.
    """
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {r.shape}")
    t = skeleton(r) if ref_skeleton is None else ref_skeleton
    e = erode(p, k)
    return IoUPrimeCounts(
        rec_num=int(np.count_nonzero(t & dilate(p, k))),
        rec_den=int(np.count_nonzero(t)),
        prec_num=int(np.count_nonzero(dilate(r, k) & e)),
        prec_den=int(np.count_nonzero(e)),
        ref_px=int(np.count_nonzero(r)),
        pred_px=int(np.count_nonzero(p)),
    )


def iou_prime(pred: np.ndarray, ref: np.ndarray, k: int = 3) -> dict[str, float]:
    """IoU' of Eq. (1) for one pair of bool (H, W) masks: ``{"r": R', "p": P', "iou": IoU'}``."""
    return iou_prime_counts(pred, ref, k).result()


@dataclass
class IoUPrimeHistogram:
    """Streaming IoU' counts at every histogram threshold for one kernel (fast mode).

    For threshold index ``i`` (threshold ``i / n_bins``): rec_num(i) = #skeleton pixels with
    ``bin(maxfilter S) >= i``, prec_num(i) = #d(Mr) pixels with ``bin(minfilter S) >= i``, prec_den(i) = #pixels
    with ``bin(minfilter S) >= i``. Pixels whose erosion window leaves the image never count.

    Attributes:
        k: kernel size; n_bins: resolution; rec_hist, dref_hist, ero_hist: (n_bins + 1,) int64 histograms;
        rec_den: |t(Mr)| pooled.
    """

    k: int
    n_bins: int = DEFAULT_BINS
    rec_hist: np.ndarray = field(init=False)
    dref_hist: np.ndarray = field(init=False)
    ero_hist: np.ndarray = field(init=False)
    rec_den: int = 0

    def __post_init__(self) -> None:
        check_kernel(self.k)
        self.rec_hist = np.zeros(self.n_bins + 1, dtype=np.int64)
        self.dref_hist = np.zeros(self.n_bins + 1, dtype=np.int64)
        self.ero_hist = np.zeros(self.n_bins + 1, dtype=np.int64)

    def update(self, scores: np.ndarray, ref: np.ndarray, ref_skeleton: np.ndarray | None = None) -> None:
        """Add one image.

        Args:
            scores: float (H, W) in [0, 1]; negative (:data:`spermseg.metrics.parts.OUTSIDE`) outside the scored
                region, so that those pixels are never predicted.
            ref: bool (H, W) reference.
            ref_skeleton: precomputed ``skeleton(ref)``.
        """
        r = np.asarray(ref, dtype=bool)
        t = skeleton(r) if ref_skeleton is None else ref_skeleton
        nb = self.n_bins + 1
        if t.any():
            mx = grey_dilate(scores, self.k)[t]
            # a skeleton pixel whose whole window is outside the region is never covered by the prediction
            self.rec_hist += np.bincount(quantize(mx[mx >= 0], self.n_bins), minlength=nb)
            self.rec_den += int(np.count_nonzero(t))
        mn = grey_erode(scores, self.k)
        inside = mn >= 0  # -1 marks windows that leave the image: eroded away at every threshold
        dref = dilate(r, self.k)
        idx = quantize(mn[inside], self.n_bins)
        both = np.bincount(idx * 2 + dref[inside], minlength=2 * nb).reshape(-1, 2)
        self.ero_hist += both[:, 0] + both[:, 1]
        self.dref_hist += both[:, 1]

    def counts_at(self, i: int, ref_px: int, pred_px: int) -> IoUPrimeCounts:
        """Pooled counts at threshold index ``i`` (prediction ``bin(S) >= i``); ref/pred sizes for the empty rule."""
        i = max(int(i), 0)
        return IoUPrimeCounts(
            rec_num=int(self.rec_hist[i:].sum()),
            rec_den=self.rec_den,
            prec_num=int(self.dref_hist[i:].sum()),
            prec_den=int(self.ero_hist[i:].sum()),
            ref_px=ref_px,
            pred_px=pred_px,
        )

    def curve(self, ref_px: int, pred_px_per_bin: np.ndarray) -> dict[str, np.ndarray]:
        """R', P', IoU' at every threshold index ``0..n_bins`` (arrays of n_bins + 1, increasing threshold).

        Args:
            ref_px: pooled reference size.
            pred_px_per_bin: (n_bins + 1,) predicted-pixel counts at each threshold index (for the empty rule).
        """
        rec_num = np.cumsum(self.rec_hist[::-1])[::-1]
        prec_num = np.cumsum(self.dref_hist[::-1])[::-1]
        prec_den = np.cumsum(self.ero_hist[::-1])[::-1]
        both = (ref_px == 0) & (np.asarray(pred_px_per_bin) == 0)
        r = safe_ratio(rec_num, self.rec_den, both)
        p = safe_ratio(prec_num, prec_den, both)
        return {"r": r, "p": p, "iou": combine_iou_prime(r, p, both)}
