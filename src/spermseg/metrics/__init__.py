"""Segmentation measures of the paper (Sections 3, 5, 6): pure numpy functions and streaming accumulators.

* :mod:`.ranking`: AP (scikit-learn's step-wise definition), PR and IoU-vs-threshold curves, IoU_opt / t_opt,
  exact (sort-based) and fast (2**16-bin histogram) modes.
* :mod:`.overlap`: IoU and IoU' (Eq. 1) with their pooled counts.
* :mod:`.parts`: the head / tail scoring regions.
* :mod:`.calibration`: Brier and stratified Brier scores.
* :mod:`.accumulators`: :class:`SegmentationAccumulator`, every measure for full / head / tail in one pass.
* :mod:`.score`: :func:`score`, the one scoring function (validation, mask cache, Table 3, reproduce), and
  :func:`mean_std` over seeds.

Empty cases and rules are documented in docs/evaluation.md.
"""

from spermseg.metrics.accumulators import PARTS, SegmentationAccumulator, metric_keys
from spermseg.metrics.calibration import BrierAccumulator, brier_scores
from spermseg.metrics.overlap import (
    IoUPrimeCounts,
    IoUPrimeHistogram,
    combine_iou_prime,
    dilate,
    erode,
    iou,
    iou_prime,
    iou_prime_counts,
    skeleton,
)
from spermseg.metrics.parts import part_regions, restrict
from spermseg.metrics.ranking import (
    DEFAULT_BINS,
    RankCounts,
    ScoreHistogram,
    average_precision,
    iou_at,
    iou_curve,
    iou_opt,
    precision_recall_curve,
    rank_counts,
    safe_ratio,
)
from spermseg.metrics.score import SCORE_KEYS, full_scores, mean_std, score

__all__ = [
    "DEFAULT_BINS",
    "PARTS",
    "SCORE_KEYS",
    "BrierAccumulator",
    "IoUPrimeCounts",
    "IoUPrimeHistogram",
    "RankCounts",
    "ScoreHistogram",
    "SegmentationAccumulator",
    "average_precision",
    "brier_scores",
    "combine_iou_prime",
    "dilate",
    "erode",
    "full_scores",
    "iou",
    "iou_at",
    "iou_curve",
    "iou_opt",
    "iou_prime",
    "iou_prime_counts",
    "mean_std",
    "metric_keys",
    "part_regions",
    "precision_recall_curve",
    "rank_counts",
    "restrict",
    "safe_ratio",
    "score",
    "skeleton",
]
