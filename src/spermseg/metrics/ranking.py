"""Threshold-sweep measures of soft masks: AP, PR curve, IoU curve, IoU_opt.

Every measure here is computed from one representation, :class:`RankCounts`: the distinct thresholds in
decreasing order and, for each threshold ``t``, the number of pixels predicted positive (``score >= t``) and the
number of those that are reference positives. Two ways build it:

* **exact**: sort-based over every distinct score (as scikit-learn's ``precision_recall_curve``); AP equals
  ``sklearn.metrics.average_precision_score`` within floating-point rounding (1e-9 tested).
* **fast**: a histogram of quantized scores (:class:`ScoreHistogram`, ``n_bins`` = 2**16 by default) built with
  ``np.bincount``; constant memory, streams over images. Bin ``i`` holds the scores ``s`` with
  ``floor(s * n_bins) == i`` (``s == 1`` gets its own bin ``n_bins``), so the bin edges ``i / n_bins`` are the
  thresholds and ``score >= i / n_bins`` is exactly "bin index >= i" (``n_bins`` is a power of two, so the
  product is exact in floating point). Scores that are already quantized to 8 or 16 bits (PNG soft masks) fall in
  distinct bins, which makes fast mode exact for them.

Empty cases (see docs/evaluation.md): AP is NaN when there is no reference positive (scikit-learn returns 0 with a
warning; NaN lets means over images skip it). IoU at a threshold is 1 when reference and prediction are both
empty. The IoU_opt sweep includes "predict nothing" (a threshold above every score), so IoU_opt is never below
the IoU at any threshold; with a non-empty reference that candidate never wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 2**16

__all__ = [
    "DEFAULT_BINS",
    "RankCounts",
    "ScoreHistogram",
    "average_precision",
    "average_precision_from_counts",
    "iou_at",
    "iou_from_counts",
    "iou_curve",
    "iou_opt",
    "iou_opt_from_counts",
    "precision_recall_curve",
    "quantize",
    "rank_counts",
    "safe_ratio",
]


def safe_ratio(num: np.ndarray | float, den: np.ndarray | float, both_empty: np.ndarray | bool) -> np.ndarray:
    """``num / den`` with the project's empty rule: where ``den == 0`` the ratio is 1 if ``both_empty`` else 0.

    Args:
        num: numerators (any shape).
        den: denominators (broadcastable to ``num``).
        both_empty: where the reference and the prediction are both empty (broadcastable).

    Returns:
        float64 array of ratios.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return np.where(den > 0, out, np.where(both_empty, 1.0, 0.0))


def quantize(scores: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin index ``floor(score * n_bins)`` clipped to ``[0, n_bins]`` (score 1.0 gets the last bin ``n_bins``).

    Args:
        scores: float scores in [0, 1], any shape.
        n_bins: histogram resolution; a power of two keeps the bin edges exact.

    Returns:
        int64 array of the same shape with values in ``0..n_bins``.
    """
    s = np.asarray(scores)
    if s.dtype != np.float32 and s.dtype != np.float64:
        s = s.astype(np.float32)
    idx = (s * np.float32(n_bins)).astype(np.int64) if s.dtype == np.float32 else (s * n_bins).astype(np.int64)
    np.clip(idx, 0, n_bins, out=idx)
    return idx


@dataclass
class RankCounts:
    """Counts at every candidate threshold, thresholds in decreasing order.

    Attributes:
        thresholds: (T,) float64, decreasing; positive prediction means ``score >= threshold``.
        tp: (T,) int64, reference positives with ``score >= threshold`` (non-decreasing).
        pp: (T,) int64, pixels with ``score >= threshold`` (predicted positives, increasing).
        n_pos: number of reference positives.
        n_total: number of pixels.
        above: a threshold above every score ("predict nothing"); ``nan`` when there is no pixel.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    n_pos: int
    n_total: int
    above: float


class ScoreHistogram:
    """Streaming histogram of scores split by label: the fast, constant-memory representation.

    Args:
        n_bins: resolution (bins ``0..n_bins``, i.e. ``n_bins + 1`` counters per label).

    Attributes:
        pos: (n_bins + 1,) int64 counts of reference-positive pixels per bin.
        tot: (n_bins + 1,) int64 counts of all pixels per bin.
    """

    def __init__(self, n_bins: int = DEFAULT_BINS) -> None:
        self.n_bins = int(n_bins)
        self.pos = np.zeros(self.n_bins + 1, dtype=np.int64)
        self.tot = np.zeros(self.n_bins + 1, dtype=np.int64)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add pixels. ``scores`` float in [0, 1] and ``labels`` bool, same shape (any)."""
        idx = quantize(scores, self.n_bins).ravel()
        self.update_indices(idx, np.asarray(labels, dtype=bool).ravel())

    def update_indices(self, idx: np.ndarray, labels: np.ndarray) -> None:
        """Add already quantized pixels (``idx`` from :func:`quantize`, ``labels`` bool, both 1-D)."""
        # One bincount over (bin, label) pairs: a single pass instead of one per label.
        both = np.bincount(idx * 2 + labels, minlength=2 * (self.n_bins + 1))
        both = both.reshape(-1, 2)
        self.tot += both[:, 0] + both[:, 1]
        self.pos += both[:, 1]

    def merge(self, other: ScoreHistogram) -> None:
        """Add the counts of another histogram of the same resolution."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge histograms of {self.n_bins} and {other.n_bins} bins")
        self.pos += other.pos
        self.tot += other.tot

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_total(self) -> int:
        return int(self.tot.sum())

    def counts(self) -> RankCounts:
        """The :class:`RankCounts` over the non-empty bins (thresholds = their lower edges, decreasing)."""
        nz = np.flatnonzero(self.tot)[::-1]
        tp = np.cumsum(self.pos[nz])
        pp = np.cumsum(self.tot[nz])
        above = (nz[0] + 1) / self.n_bins if nz.size else float("nan")
        return RankCounts(
            nz / self.n_bins, tp, pp, int(tp[-1]) if nz.size else 0, int(pp[-1]) if nz.size else 0, float(above)
        )

    def count_at(self, threshold: float) -> tuple[int, int]:
        """(true positives, predicted positives) for ``score >= threshold``, threshold rounded up to a bin edge."""
        i = int(np.ceil(threshold * self.n_bins))
        i = max(i, 0)
        return int(self.pos[i:].sum()), int(self.tot[i:].sum())


def _exact_counts(scores: np.ndarray, labels: np.ndarray) -> RankCounts:
    """Sort-based counts at every distinct score (what scikit-learn's ``_binary_clf_curve`` computes)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
    if s.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return RankCounts(np.zeros(0), empty, empty, 0, 0, float("nan"))
    # Sorting the scores and the positive scores separately (no argsort) is faster and gives the same counts:
    # #{s >= t} = n - searchsorted(sorted, t, 'left').
    all_sorted = np.sort(s)
    pos_sorted = np.sort(s[y])
    last = np.ones(all_sorted.size, dtype=bool)
    last[:-1] = all_sorted[1:] != all_sorted[:-1]
    thresholds = all_sorted[last][::-1]
    pp = s.size - np.searchsorted(all_sorted, thresholds, side="left")
    tp = pos_sorted.size - np.searchsorted(pos_sorted, thresholds, side="left")
    above = float(np.nextafter(thresholds[0], np.inf))
    return RankCounts(thresholds, tp.astype(np.int64), pp.astype(np.int64), int(pos_sorted.size), int(s.size), above)


def rank_counts(scores: np.ndarray, labels: np.ndarray, mode: str = "exact", n_bins: int = DEFAULT_BINS) -> RankCounts:
    """Counts at every candidate threshold.

    Args:
        scores: float scores in [0, 1], any shape.
        labels: bool reference, same shape.
        mode: ``"exact"`` (every distinct score) or ``"fast"`` (histogram bin edges).
        n_bins: histogram resolution for fast mode.

    Returns:
        :class:`RankCounts`.
    """
    if mode == "exact":
        return _exact_counts(scores, labels)
    if mode == "fast":
        h = ScoreHistogram(n_bins)
        h.update(scores, labels)
        return h.counts()
    raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}")


def average_precision_from_counts(c: RankCounts) -> float:
    """Step-wise AP ``sum_j (R_j - R_{j-1}) P_j`` over decreasing thresholds (scikit-learn's definition).

    Returns:
        AP in [0, 1]; NaN when there is no reference positive.
    """
    if c.n_pos == 0:
        return float("nan")
    precision = c.tp / c.pp  # pp >= 1 at every threshold that holds a score
    recall = c.tp / c.n_pos
    d_recall = np.diff(recall, prepend=0.0)
    return float(np.sum(d_recall * precision))


def average_precision(scores: np.ndarray, labels: np.ndarray, mode: str = "exact", n_bins: int = DEFAULT_BINS) -> float:
    """Average precision of ``scores`` against bool ``labels`` (any equal shapes).

    Args:
        scores: float scores in [0, 1].
        labels: bool reference.
        mode: ``"exact"`` (equals scikit-learn's ``average_precision_score``) or ``"fast"`` (histogram).
        n_bins: histogram resolution for fast mode.

    Returns:
        AP; NaN when ``labels`` has no positive.
    """
    return average_precision_from_counts(rank_counts(scores, labels, mode, n_bins))


def precision_recall_curve(
    scores: np.ndarray, labels: np.ndarray, mode: str = "exact", n_bins: int = DEFAULT_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every candidate threshold.

    Returns:
        ``(precision, recall, thresholds)``, each (T,), thresholds decreasing (recall non-decreasing). Recall is
        NaN when there is no reference positive.
    """
    c = rank_counts(scores, labels, mode, n_bins)
    precision = c.tp / np.maximum(c.pp, 1)
    recall = c.tp / c.n_pos if c.n_pos else np.full(c.tp.shape, np.nan)
    return precision, recall, c.thresholds


def iou_from_counts(tp: np.ndarray, pp: np.ndarray, n_pos: int) -> np.ndarray:
    """IoU at each threshold from (tp, pp) counts and the reference size; 1 where both are empty."""
    union = pp + n_pos - tp
    return safe_ratio(tp, union, (pp == 0) & (n_pos == 0))


def iou_curve(
    scores: np.ndarray, labels: np.ndarray, mode: str = "exact", n_bins: int = DEFAULT_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """IoU of ``score >= t`` against the reference at every candidate threshold (paper Fig. 7).

    Returns:
        ``(thresholds, iou)``, each (T,), thresholds decreasing.
    """
    c = rank_counts(scores, labels, mode, n_bins)
    return c.thresholds, iou_from_counts(c.tp, c.pp, c.n_pos)


def iou_opt_from_counts(c: RankCounts) -> tuple[float, float]:
    """Maximum IoU over the candidate thresholds plus "predict nothing", and the threshold attaining it.

    Ties go to the highest threshold. Returns ``(iou_opt, t_opt)``; ``(nan, nan)`` when there is no pixel.
    """
    if c.n_total == 0:
        return float("nan"), float("nan")
    iou = iou_from_counts(c.tp, c.pp, c.n_pos)
    j = int(np.argmax(iou))  # first maximum = highest threshold
    nothing = 1.0 if c.n_pos == 0 else 0.0  # IoU of the empty prediction
    if nothing > iou[j]:
        return nothing, c.above
    return float(iou[j]), float(c.thresholds[j])


def iou_opt(
    scores: np.ndarray, labels: np.ndarray, mode: str = "exact", n_bins: int = DEFAULT_BINS
) -> tuple[float, float]:
    """IoU_opt and t_opt: the best IoU over every distinct score (exact) or every bin edge (fast).

    Returns:
        ``(iou_opt, t_opt)``.
    """
    return iou_opt_from_counts(rank_counts(scores, labels, mode, n_bins))


def iou_at(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of the prediction ``scores >= threshold`` against bool ``labels``; 1 when both are empty."""
    pred = np.asarray(scores) >= threshold
    ref = np.asarray(labels, dtype=bool)
    inter = int(np.count_nonzero(pred & ref))
    union = int(np.count_nonzero(pred | ref))
    return float(safe_ratio(inter, union, union == 0))
