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

from spermseg.metrics.ranking import DEFAULT_BINS, safe_ratio

__all__ = [
    "IoUPrimeCounts",
    "IoUPrimeHistogram",
    "check_kernel",
    "combine_iou_prime",
    "dilate",
    "erode",
    "iou",
    "iou_prime",
    "iou_prime_counts",
    "offset_bins",
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


def offset_bins(scores: np.ndarray, n_bins: int = DEFAULT_BINS, out: np.ndarray | None = None) -> np.ndarray:
    """Histogram bins shifted by one, as float32: ``1 + floor(S * n_bins)`` where ``S >= 0``, else 0.

    The fast IoU' path works on this form: min/max filters commute with the monotone map ``S -> bin(S)``, the
    values are small integers (exact in float32), and 0 marks pixels that are never predicted (outside the scored
    region, or outside the image through the filters' constant zero border) without any further masking.

    Args:
        scores: float (H, W), in [0, 1] where scored and negative where never predicted.
        n_bins: histogram resolution (a power of two, so that ``S * n_bins`` is exact).
        out: optional float32 (H, W) buffer.

    Returns:
        float32 (H, W) with values in ``0..n_bins + 1``.
    """
    s = np.asarray(scores, dtype=np.float32)
    ob = np.multiply(s, np.float32(n_bins), out=out)
    np.floor(ob, out=ob)
    np.clip(ob, -1.0, float(n_bins), out=ob)  # negative scores -> -1 -> 0 below
    ob += np.float32(1)
    return ob


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
        """Add one image (convenience form; the accumulator uses :meth:`add_binned`).

        Args:
            scores: float32 (H, W) in [0, 1]; negative (:data:`spermseg.metrics.parts.OUTSIDE`) outside the scored
                region, so that those pixels are never predicted.
            ref: bool (H, W) reference.
            ref_skeleton: precomputed ``skeleton(ref)``.
        """
        r = np.asarray(ref, dtype=bool)
        t = skeleton(r) if ref_skeleton is None else ref_skeleton
        ob = offset_bins(scores, self.n_bins)
        self.add_binned(ob, np.flatnonzero(t.ravel()), np.flatnonzero(dilate(r, self.k).ravel()))

    def add_binned(
        self,
        ob: np.ndarray,
        skel_idx: np.ndarray,
        dref_idx: np.ndarray,
        padded: np.ndarray | None = None,
        work: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Add one image given as offset bins (see :func:`offset_bins`) and the reference's flat pixel indices.

        Args:
            ob: float32 (H, W) offset bins: ``1 + bin(S)`` where scored, 0 where never predicted.
            skel_idx: flat indices of t(Mr) in the (H, W) image.
            dref_idx: flat indices of d(Mr, k).
            padded: ``ob`` zero-padded by some ``r >= k // 2`` on every side (reused across kernels), or None.
            work: optional reusable buffers (float32 (H, W), int64 (H * W,)); large temporaries otherwise cost
                page faults on every image.
        """
        import cv2

        nb = self.n_bins
        r = self.k // 2
        if skel_idx.size:
            # grey dilation read only at the skeleton: the max over the k x k window around each skeleton pixel
            if padded is None:
                padded = np.pad(ob, r)
            pad = (padded.shape[0] - ob.shape[0]) // 2
            width = padded.shape[1]
            rows, cols = np.divmod(skel_idx, ob.shape[1])
            centre = (rows + pad) * width + (cols + pad)
            flat = padded.ravel()
            mx = flat[centre]
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if dy or dx:
                        np.maximum(mx, flat[centre + dy * width + dx], out=mx)
            # bin 0: the whole window lies outside the scored region, never covered
            self.rec_hist += np.bincount(mx.astype(np.int64), minlength=nb + 2)[1:]
            self.rec_den += int(skel_idx.size)
        # grey erosion with the outside (image border, other region) at 0, i.e. below every scored bin
        f_buf, q_buf = work if work is not None else (None, None)
        if self.k == 1:
            mn = ob
        else:
            mn = cv2.erode(ob, _square(self.k), dst=f_buf, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        if q_buf is None:
            q = mn.astype(np.int64).ravel()
        else:
            q = q_buf
            np.copyto(q, mn.ravel(), casting="unsafe")
        self.ero_hist += np.bincount(q, minlength=nb + 2)[1:]
        if dref_idx.size:
            self.dref_hist += np.bincount(q[dref_idx], minlength=nb + 2)[1:]

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
