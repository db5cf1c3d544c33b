"""Ground-truth aggregation of several raters (paper Fig. 6, Table 4) and STAPLE.

* ``union`` ("feeling lucky"): a pixel is positive when at least one rater marks it.
* ``majority`` ("majority voting"): positive when more than half of the raters mark it.
* ``intersection`` ("full agreement"): positive when every rater marks it.
* ``staple``: STAPLE (Warfield et al. 2004), an EM estimate of every rater's sensitivity p and specificity q and
  of the probability W that a pixel is truly positive; the aggregate is ``W >= 0.5``. Implemented here in numpy
  following the formulation of ITK's ``STAPLEImageFilter`` (initial W = mean of the raters, prior = mean of that
  W, stop when every p and q moves by less than 1e-7), and tested equal to SimpleITK's ``STAPLE``. Run per image,
  like SimpleITK.

Parts are aggregated independently (head from the raters' heads, tail from their tails, full from their full
masks), so an aggregate's full mask need not equal the union of its aggregated parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spermseg.errors import SpermsegError

__all__ = ["AGGREGATES", "StapleResult", "aggregate", "aggregate_masks", "staple"]

AGGREGATES = ("union", "majority", "intersection", "staple")
# the paper's names for the three heuristics
PAPER_NAMES = {
    "union": "Feeling lucky",
    "majority": "Majority voting",
    "intersection": "Full agreement",
    "staple": "STAPLE",
}


@dataclass
class StapleResult:
    """STAPLE output for one image.

    Attributes:
        probability: float64 (H, W), posterior probability W that each pixel is truly positive.
        sensitivity: (R,) per-rater sensitivity p.
        specificity: (R,) per-rater specificity q.
        iterations: EM iterations run.
    """

    probability: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    iterations: int


def staple(
    masks: Sequence[np.ndarray], max_iterations: int = 1000, tolerance: float = 1e-14, confidence_weight: float = 1.0
) -> StapleResult:
    """Binary STAPLE by expectation-maximization.

    E-step: ``W = g a / (g a + (1 - g) b)`` with ``a = prod_r p_r^D (1 - p_r)^(1 - D)`` and
    ``b = prod_r q_r^(1 - D) (1 - q_r)^D``; M-step: ``p_r = sum(W D_r) / sum(W)``,
    ``q_r = sum((1 - W)(1 - D_r)) / sum(1 - W)``. The prior ``g`` is the mean of the initial W (the mean rater
    mask) times ``confidence_weight``, as in ITK.

    Args:
        masks: R bool (H, W) rater masks of one image.
        max_iterations: EM iteration cap.
        tolerance: convergence when every squared change of p and q is at most this (ITK: 1e-14).
        confidence_weight: multiplies the prior.

    Returns:
        :class:`StapleResult`.
    """
    d = np.stack([np.asarray(m, dtype=bool).ravel() for m in masks]).astype(np.float64)  # (R, N)
    if d.shape[0] == 0:
        raise ValueError("STAPLE needs at least one rater mask")
    shape = np.asarray(masks[0]).shape
    w = d.mean(axis=0)
    g = float(w.mean()) * confidence_weight
    p = np.zeros(d.shape[0])
    q = np.zeros(d.shape[0])
    last_p = np.full(d.shape[0], -10.0)
    last_q = np.full(d.shape[0], -10.0)
    it = 0
    for it in range(max_iterations):  # noqa: B007 (the last value is reported)
        sw = w.sum()
        sw1 = (1.0 - w).sum()
        # 0/0 when W is all 0 or all 1 (nobody marks anything / everybody marks everything): ITK divides anyway;
        # nan_to_num keeps the image's W as it is in that degenerate case.
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.nan_to_num((d * w).sum(axis=1) / sw)
            q = np.nan_to_num(((1.0 - d) * (1.0 - w)).sum(axis=1) / sw1)
        a = np.prod(np.where(d > 0, p[:, None], 1.0 - p[:, None]), axis=0)
        b = np.prod(np.where(d > 0, 1.0 - q[:, None], q[:, None]), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.nan_to_num(g * a / (g * a + (1.0 - g) * b))
        if it > 0 and np.all((p - last_p) ** 2 <= tolerance) and np.all((q - last_q) ** 2 <= tolerance):
            break
        last_p, last_q = p.copy(), q.copy()
    return StapleResult(w.reshape(shape), p, q, it)


def aggregate_masks(masks: Sequence[np.ndarray], method: str) -> np.ndarray:
    """Aggregate the R bool (H, W) masks of one image into one bool (H, W) mask with ``method``."""
    if method not in AGGREGATES:
        raise SpermsegError(f"unknown aggregation '{method}'; choose one of {', '.join(AGGREGATES)}")
    if not masks:
        raise SpermsegError("aggregation needs at least one rater mask")
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks])
    if method == "union":
        return stack.any(axis=0)
    if method == "intersection":
        return stack.all(axis=0)
    if method == "majority":
        return 2 * stack.sum(axis=0) > stack.shape[0]  # strictly more than half
    return staple(list(stack)).probability >= 0.5


def aggregate(per_rater: Sequence[Sequence[np.ndarray]], method: str) -> list[np.ndarray]:
    """Aggregate a set: ``per_rater[r][i]`` is rater r's bool mask of image i; returns one mask per image."""
    n = {len(m) for m in per_rater}
    if len(n) != 1:
        raise SpermsegError(f"raters have different numbers of masks: {sorted(n)}")
    return [aggregate_masks([m[i] for m in per_rater], method) for i in range(n.pop())]
